"""The client's error vocabulary: every expected failure is a :class:`ClientError` with a message a person can
act on, and a subclass a program can catch (``except NotFound``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flowrun_operator.api.common import FLOWRUN_PLURAL, GROUP, VERSION


class ClientError(Exception):
    """An expected failure. ``message`` is meant for people; ``code`` is the exit code a command-line
    program should end with (2 for a usage error, else 1)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ConfigError(ClientError):
    """No usable kubeconfig or in-cluster credentials."""


class Unreachable(ClientError):
    """The API server did not answer (connection refused, TLS failure, read timeout)."""


class NotInstalled(ClientError):
    """The cluster does not serve the flowrun.io API: the CRDs are not installed."""


class NotFound(ClientError):
    """The object does not exist (or was deleted while waiting for it)."""

    def __init__(self, kind: str, name: str, namespace: str, detail: str = "") -> None:
        text = f'{kind} "{name}" not found in namespace "{namespace}"'
        super().__init__(f"{text}{detail}")
        self.kind = kind
        self.name = name
        self.namespace = namespace


class Unauthorized(ClientError):
    """The API server rejected the credentials (401)."""


class Forbidden(ClientError):
    """RBAC denies the call (403)."""


class Conflict(ClientError):
    """The object already exists, or changed since it was read (409)."""


class Invalid(ClientError):
    """The API server refused the object (400/422: schema or CEL validation)."""


class InvalidState(ClientError):
    """The run is not in a state that allows the action (cancel a finished run, retry a running one)."""


class NoLogs(ClientError):
    """There is no log to read: no such task or attempt, no pod yet, or the node did not serve it."""


class Timeout(ClientError):
    """``wait`` gave up before the condition held; ``last`` is the run as last seen (a FlowRunView)."""

    def __init__(self, message: str, last: Any = None) -> None:
        super().__init__(message)
        self.last = last


class ApiError(ClientError):
    """Any other error answer of the API server."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


CRDS_MISSING = (
    f"the FlowRun API ({FLOWRUN_PLURAL}.{GROUP}/{VERSION}) is not served by this cluster; "
    "install the CRDs first (kubectl apply -f crds/, or the Helm chart)"
)


def _parsed(body: str | bytes | None) -> object:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def api_error_message(body: str | bytes | None, reason: str | None = None) -> str:
    """The human message of an API error: the ``message`` of a Status body, else the body or the reason."""
    parsed = _parsed(body)
    if isinstance(parsed, Mapping) and parsed.get("message"):
        return str(parsed["message"])
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    return text.strip() or (reason or "unknown error")


def api_error_names_object(body: str | bytes | None) -> bool:
    """Whether a 404 Status names the missing object (vs. an unknown resource type, e.g. CRDs not installed)."""
    parsed = _parsed(body)
    if not isinstance(parsed, Mapping):
        return False
    details = parsed.get("details")
    return isinstance(details, Mapping) and bool(details.get("name"))
