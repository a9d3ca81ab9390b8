"""Which API errors are worth retrying, in one place.

Every caller asks `classify` instead of testing status codes itself, so a 403 from a ResourceQuota and
a 403 from an admission webhook are told apart the same way everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from kubernetes.client.exceptions import ApiException


class ErrorKind(StrEnum):
    TRANSIENT = "Transient"  # retry with backoff: the same request can succeed later
    PERMANENT = "Permanent"  # the request itself is wrong: retrying repeats the refusal
    NOT_FOUND = "NotFound"
    CONFLICT = "Conflict"


@dataclass(frozen=True, slots=True)
class ApiError:
    kind: ErrorKind
    reason: str  # short CamelCase, for metrics, conditions and Events
    message: str

    @property
    def transient(self) -> bool:
        return self.kind is ErrorKind.TRANSIENT


def api_message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "{}")
        return str(body.get("message") or error.reason or error.status)
    except (ValueError, TypeError, AttributeError):
        return str(error.reason or error.status)


def classify(error: BaseException) -> ApiError:
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        message = api_message(error)
        if status == 404:
            return ApiError(ErrorKind.NOT_FOUND, "NotFound", message)
        if status == 409:
            return ApiError(ErrorKind.CONFLICT, "Conflict", message)
        if status == 429:
            return ApiError(ErrorKind.TRANSIENT, "TooManyRequests", message)
        if status == 403:
            # A ResourceQuota refusal lifts when other work finishes; an admission webhook's or RBAC's does not.
            if "exceeded quota" in message:
                return ApiError(ErrorKind.TRANSIENT, "QuotaExceeded", message)
            return ApiError(ErrorKind.PERMANENT, "Forbidden", message)
        if status in (400, 422):
            return ApiError(ErrorKind.PERMANENT, "Invalid", message)
        if status >= 500 or status == 0:
            return ApiError(ErrorKind.TRANSIENT, f"ServerError{status}" if status else "ConnectionError", message)
        return ApiError(ErrorKind.PERMANENT, f"Status{status}", message)
    if isinstance(error, TimeoutError | ConnectionError | OSError):
        return ApiError(
            ErrorKind.TRANSIENT, "Timeout" if isinstance(error, TimeoutError) else "ConnectionError", str(error)
        )
    return ApiError(ErrorKind.TRANSIENT, type(error).__name__, str(error))
