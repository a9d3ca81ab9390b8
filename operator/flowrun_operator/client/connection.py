"""One connection to a cluster: credentials from a kubeconfig (or in-cluster), the default namespace, and the
translation of every API or connection failure into a :mod:`~flowrun_operator.client.errors` exception."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from flowrun_operator.client.errors import (
    CRDS_MISSING,
    ApiError,
    ClientError,
    ConfigError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    NotInstalled,
    Unauthorized,
    Unreachable,
    api_error_message,
    api_error_names_object,
)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# (connect, read) seconds for every call except watches and followed log streams.
REQUEST_TIMEOUT = (10.0, 60.0)


def _kubeconfig_paths(explicit: str | None) -> list[Path]:
    if explicit is not None:
        return [Path(explicit).expanduser()]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def connection_reason(error: BaseException) -> str:
    """A short reason for a connection failure, without urllib3's pool and object details."""
    reason: BaseException = error
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        reason = error.reason
    text = str(reason)
    if text.startswith("<") and ">: " in text:  # NewConnectionError: "<HTTPSConnection object at 0x..>: ..."
        text = text.split(">: ", 1)[1]
    return text or type(reason).__name__


class Connection:
    """Credentials and API handles for one cluster. ``kubeconfig``/``context`` default to ``$KUBECONFIG``
    (else ``~/.kube/config``) and its current context; inside a Pod without a kubeconfig, the Pod's
    ServiceAccount is used."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        configuration = kubernetes.client.Configuration()
        paths = _kubeconfig_paths(kubeconfig)
        try:
            if kubeconfig is not None and not paths[0].exists():
                raise ConfigError(f'kubeconfig "{kubeconfig}" does not exist')
            if kubeconfig is None and not any(p.exists() for p in paths) and os.environ.get("KUBERNETES_SERVICE_HOST"):
                kubernetes.config.load_incluster_config(client_configuration=configuration)
                namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.exists() else ""
            else:
                kubernetes.config.load_kube_config(
                    config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
                )
                contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
                chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
                namespace = ((chosen or {}).get("context") or {}).get("namespace") or ""
        except kubernetes.config.ConfigException as error:
            raise ConfigError(f"cannot load the Kubernetes configuration: {error}") from error
        # Fail fast when the API server is unreachable instead of retrying for a long time.
        configuration.retries = 1
        # Watches of a dashboard and concurrent waits share the pool.
        configuration.connection_pool_maxsize = 16
        self.server: str = configuration.host
        self.default_namespace: str = namespace or "default"
        self.api = kubernetes.client.ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.batch = kubernetes.client.BatchV1Api(self.api)

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def errors(self, namespace: str, kind: str = "flowrun", name: str | None = None) -> Iterator[None]:
        """Turn API and connection errors into client errors; a 404 naming ``name`` means it does not exist."""
        try:
            yield
        except ApiException as error:
            raise self.api_error(error, namespace, kind, name) from error
        except urllib3.exceptions.HTTPError as error:
            raise self.unreachable(error) from error

    def unreachable(self, error: BaseException) -> Unreachable:
        return Unreachable(f"cannot reach the Kubernetes API server at {self.server}: {connection_reason(error)}")

    def api_error(self, error: ApiException, namespace: str, kind: str, name: str | None) -> ClientError:
        message = api_error_message(error.body, error.reason)
        status = error.status
        if status == 404:
            if name is not None and api_error_names_object(error.body):
                return NotFound(kind, name, namespace)
            return NotInstalled(CRDS_MISSING)
        if status == 401:
            return Unauthorized(
                f"the API server at {self.server} rejected the credentials (401 Unauthorized): {message}"
            )
        if status == 403:
            return Forbidden(f"forbidden: {message}")
        if status == 409:
            return Conflict(message)
        if status in (400, 422):
            return Invalid(message)
        return ApiError(f"the API server answered {status} {error.reason or ''}: {message}".replace("  ", " "), status)
