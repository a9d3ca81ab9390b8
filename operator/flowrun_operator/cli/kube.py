"""The CLI's few calls to the Kubernetes API, with every expected failure turned into a `CliError`."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from flowrun_operator.api.common import FLOWRUN_PLURAL, GROUP, VERSION
from flowrun_operator.cli.views import CliError, api_error_message, api_error_names_object, not_found

MERGE_PATCH = "application/merge-patch+json"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# (connect, read) seconds for every call except a followed log stream.
REQUEST_TIMEOUT = (10.0, 60.0)
CRDS_MISSING = (
    f"the FlowRun API ({FLOWRUN_PLURAL}.{GROUP}/{VERSION}) is not served by this cluster; "
    "install the CRDs first (kubectl apply -f crds/, or the Helm chart)"
)


def _kubeconfig_paths(explicit: str | None) -> list[Path]:
    if explicit is not None:
        return [Path(explicit).expanduser()]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def _reason(error: BaseException) -> str:
    """A short reason for a connection failure, without urllib3's pool and object details."""
    reason: BaseException = error
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        reason = error.reason
    text = str(reason)
    if text.startswith("<") and ">: " in text:  # NewConnectionError: "<HTTPSConnection object at 0x..>: ..."
        text = text.split(">: ", 1)[1]
    return text or type(reason).__name__


class CliKube:
    """A connection to the cluster of a kubeconfig (or in-cluster credentials) and its default namespace."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        configuration = kubernetes.client.Configuration()
        paths = _kubeconfig_paths(kubeconfig)
        try:
            if kubeconfig is not None and not paths[0].exists():
                raise CliError(f'kubeconfig "{kubeconfig}" does not exist')
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
            raise CliError(f"cannot load the Kubernetes configuration: {error}") from error
        # Fail fast when the API server is unreachable instead of retrying for a long time.
        configuration.retries = 1
        self.server: str = configuration.host
        self.default_namespace: str = namespace or "default"
        self.api = kubernetes.client.ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)

    def close(self) -> None:
        self.api.close()

    @contextlib.contextmanager
    def _errors(self, namespace: str, run: str | None = None) -> Iterator[None]:
        """Turn API and connection errors into CliErrors; a 404 naming ``run`` means the run does not exist."""
        try:
            yield
        except ApiException as error:
            raise self._api_error(error, namespace, run) from error
        except urllib3.exceptions.HTTPError as error:
            raise CliError(f"cannot reach the Kubernetes API server at {self.server}: {_reason(error)}") from error

    def _api_error(self, error: ApiException, namespace: str, run: str | None) -> CliError:
        message = api_error_message(error.body, error.reason)
        if error.status == 404:
            if run is not None and api_error_names_object(error.body):
                return not_found("flowrun", run, namespace)
            return CliError(CRDS_MISSING)
        if error.status == 401:
            return CliError(f"the API server at {self.server} rejected the credentials (401 Unauthorized): {message}")
        if error.status == 403:
            return CliError(f"forbidden: {message}")
        return CliError(f"the API server answered {error.status} {error.reason or ''}: {message}".replace("  ", " "))

    # ----------------------------------------------------------------------------------------- FlowRuns

    def get_run(self, namespace: str, name: str) -> dict[str, Any]:
        with self._errors(namespace, name):
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, FLOWRUN_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        return obj

    def list_runs(self, namespace: str | None) -> list[dict[str, Any]]:
        """FlowRuns of one namespace, or of all namespaces for None."""
        with self._errors(namespace or ""):
            if namespace is None:
                result = self.custom.list_cluster_custom_object(
                    GROUP, VERSION, FLOWRUN_PLURAL, _request_timeout=REQUEST_TIMEOUT
                )
            else:
                result = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, FLOWRUN_PLURAL, _request_timeout=REQUEST_TIMEOUT
                )
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    def patch_run(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch a FlowRun (spec or metadata, not status)."""
        with self._errors(namespace, name):
            obj: dict[str, Any] = self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                FLOWRUN_PLURAL,
                name,
                patch,
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )
        return obj

    # --------------------------------------------------------------------------------------------- pods

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        with self._errors(namespace):
            response = self.core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def pod_log(
        self, namespace: str, pod: str, container: str, *, follow: bool = False, tail: int | None = None
    ) -> Iterator[bytes]:
        """The container's log as chunks of bytes. API errors are raised as ApiException for the caller to
        explain (the pod exists, so a 404 here means its node did not serve the log)."""
        kwargs: dict[str, Any] = {"container": container, "follow": follow, "_preload_content": False}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if not follow:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        try:
            response = self.core.read_namespaced_pod_log(pod, namespace, **kwargs)
        except urllib3.exceptions.HTTPError as error:
            raise CliError(f"cannot reach the Kubernetes API server at {self.server}: {_reason(error)}") from error
        try:
            yield from response.stream(4096, decode_content=True)
        except urllib3.exceptions.HTTPError as error:
            raise CliError(f"the log stream of pod {pod} broke off: {_reason(error)}") from error
        finally:
            response.release_conn()
