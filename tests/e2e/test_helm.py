"""End to end: the Helm chart installed with the real helm, the operator running with the chart's
ServiceAccount identity, FlowRuns driven with the real kubectl.

The chart is installed with ``operator.enabled=false`` and the operator runs out of cluster (there is no
image to run in the embedded control plane), but with a token of the chart's ServiceAccount: if the chart's
RBAC misses a permission the operator needs, the runs below do not complete or its log shows 403s.
A last test installs the operator's Deployment itself into a namespace enforcing the restricted Pod
Security Standard and checks that its Pod is admitted.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.kube import Kubectl, pod_template, unique_name, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flowrun-operator"
LIMIT = "e2e-limit"
LABELS = {"team": "e2e"}
# Generous for real clusters (image pulls); on the embedded control plane runs take seconds.
TIMEOUT = 180.0
ACTIVE = {"Submitted", "Running"}


# ------------------------------------------------------------------------------------------------ helpers


def helm_binary() -> str:
    cache = Path(os.environ.get("FLOWRUN_CACHE") or Path.home() / ".cache" / "flowrun-operator").expanduser()
    candidate = cache / "bin" / "helm"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail(f"helm not found at {candidate} nor on PATH: run `make tools` to build it", pytrace=False)


@dataclass
class Helm:
    binary: str
    kubeconfig: Path
    home: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        result = subprocess.run([self.binary, *args], capture_output=True, text=True, env=env, timeout=180, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
        return result


def limit_values(limit: int) -> dict[str, Any]:
    return {
        "operator": {"enabled": False},
        "concurrencyLimits": [{"name": LIMIT, "selector": {"matchLabels": LABELS}, "limit": limit}],
    }


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def service_account_kubeconfig(admin: Path, token: str, namespace: str, path: Path) -> Path:
    """A kubeconfig for the same API server as ``admin`` (server URL, CA, TLS settings) that
    authenticates with ``token`` only."""
    config = yaml.safe_load(admin.read_text())
    context_name = config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = dict(next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"]))
    if "certificate-authority" in cluster:  # a path, possibly relative to the admin kubeconfig
        ca = Path(cluster["certificate-authority"]).expanduser()
        cluster["certificate-authority"] = str(ca if ca.is_absolute() else (admin.parent / ca).resolve())
    sa_config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": "cluster", "user": "operator", "namespace": namespace}}
        ],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(sa_config))
    path.chmod(0o600)
    return path


def service_account_kubeconfig_for(
    kubectl: Kubectl, admin: Path, service_account: str, namespace: str, directory: Path
) -> Path:
    """A kubeconfig with a fresh token of ``service_account`` (TokenRequest API, one hour)."""
    token = kubectl("create", "token", service_account, "--duration=1h", namespace=namespace).stdout.strip()
    assert token, f"no token for ServiceAccount {service_account}"
    return service_account_kubeconfig(admin, token, namespace, directory / f"{service_account}.kubeconfig")


def assert_no_permission_errors(log: str) -> None:
    lines = forbidden_lines(log)
    assert not lines, "the operator was denied requests:\n" + "\n".join(lines[:20])
    assert "Not enough permissions" not in log, log[-5000:]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_operator(kubeconfig: Path, log_path: Path, args: list[str], env: dict[str, str] | None = None) -> Operator:
    """The operator as a subprocess (``flowrun-operator *args``, plus ``env``) with the credentials in
    ``kubeconfig``; returns once its health endpoint answers, that is once its startup handlers are done."""
    health = f"http://127.0.0.1:{free_port()}/healthz"
    full_env = {k: v for k, v in os.environ.items() if k not in ("WATCH_NAMESPACES", "LOG_LEVEL", "LIVENESS_ENDPOINT")}
    full_env.update(env or {})
    full_env["KUBECONFIG"] = str(kubeconfig)
    full_env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, "-m", "flowrun_operator.main", *args, f"--liveness={health}"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
    operator = Operator(process, log_path)
    try:
        wait_for(
            lambda: process.poll() is not None or healthy(health),
            timeout=60,
            interval=0.2,
            message=f"the operator's health endpoint {health}",
        )
        if process.poll() is not None:
            raise AssertionError(f"the operator exited with {process.returncode}:\n{operator.log()[-5000:]}")
    except BaseException:
        operator.stop()
        raise
    return operator


def flowrun(name: str, duration: float) -> dict[str, Any]:
    return {
        "apiVersion": "flowrun.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name, "labels": dict(LABELS)},
        "spec": {"flow": "hello", "template": pod_template(duration=duration)},
    }


def phases(kubectl: Kubectl, namespace: str) -> dict[str, str | None]:
    items = kubectl.json("get", "flowruns", namespace=namespace)["items"]
    return {item["metadata"]["name"]: (item.get("status") or {}).get("phase") for item in items}


def true_conditions(obj: dict[str, Any]) -> set[str]:
    return {c["type"] for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


def unfinished_jobs(kubectl: Kubectl, namespace: str, runs: set[str]) -> set[str]:
    """Jobs of these runs that exist and have neither finished condition: the slots actually held."""
    jobs = kubectl.json("get", "jobs", "-l", "flowrun.io/run", namespace=namespace)["items"]
    return {
        job["metadata"]["name"]
        for job in jobs
        if job["metadata"]["labels"].get("flowrun.io/run") in runs and not {"Complete", "Failed"} & true_conditions(job)
    }


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class Observations:
    samples: int = 0
    max_active_runs: int = 0
    max_unfinished_jobs: int = 0
    seen_pending: set[str] = field(default_factory=set)


def watch_runs(
    kubectl: Kubectl, namespace: str, runs: set[str], until: Callable[[dict[str, str | None]], bool], limit: int
) -> tuple[dict[str, str | None], Observations]:
    """Sample the runs' phases and Jobs until ``until(phases)``, asserting at every sample that no more than
    ``limit`` of them hold a slot (by phase and by unfinished Jobs)."""
    seen = Observations()
    deadline = time.monotonic() + TIMEOUT
    while True:
        current = {name: phase for name, phase in phases(kubectl, namespace).items() if name in runs}
        jobs = unfinished_jobs(kubectl, namespace, runs)
        active = {name for name, phase in current.items() if phase in ACTIVE}
        seen.samples += 1
        seen.max_active_runs = max(seen.max_active_runs, len(active))
        seen.max_unfinished_jobs = max(seen.max_unfinished_jobs, len(jobs))
        seen.seen_pending |= {name for name, phase in current.items() if phase == "Pending"}
        assert len(active) <= limit, f"{len(active)} runs active at once with limit {limit}: {current}"
        assert len(jobs) <= limit, f"{len(jobs)} unfinished Jobs at once with limit {limit}: {sorted(jobs)}"
        failed = {name: phase for name, phase in current.items() if phase in ("Failed", "Cancelled")}
        assert not failed, f"runs ended badly: {failed}"
        if len(current) == len(runs) and until(current):
            return current, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT:g}s; phases: {current}")
        time.sleep(0.2)


# "403" as a status code, not as the milliseconds of a log line's timestamp ("21:15:59,403 INFO").
DENIED = re.compile(r"forbidden|(?<![,.:\d])403(?!\d)", re.IGNORECASE)


def forbidden_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if DENIED.search(line)]


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def helm(kubeconfig: Path, tmp_path: Path) -> Helm:
    return Helm(helm_binary(), kubeconfig, tmp_path / "helm-home")


@pytest.fixture
def release(helm: Helm, namespace: str) -> Iterator[str]:
    """A release name for the test; the release is uninstalled afterwards if the test left it installed
    (its ClusterRole and ClusterRoleBinding are cluster-scoped: the namespace's deletion would not remove
    them)."""
    name = unique_name("e2e", max_length=20)
    try:
        yield name
    finally:
        if helm("status", name, "--namespace", namespace, check=False).returncode == 0:
            helm("uninstall", name, "--namespace", namespace, "--wait", check=False)


# ---------------------------------------------------------------------------------------------------- test


def test_chart_install_limit_upgrade_uninstall(
    helm: Helm, release: str, namespace: str, kubectl: Kubectl, kubeconfig: Path, tmp_path: Path
) -> None:
    # --- install: CRDs (from crds/, unless the cluster has them already), ServiceAccount, RBAC, the limit.
    values = write_json(tmp_path / "values-limit-1.json", limit_values(1))
    helm("install", release, str(CHART), "--namespace", namespace, "--values", str(values))

    for crd in ("flowruns.flowrun.io", "concurrencylimits.flowrun.io"):
        assert "Established" in true_conditions(kubectl.json("get", "crd", crd)), crd
    limit = kubectl.json("get", "concurrencylimit", LIMIT, namespace=namespace)
    assert limit["spec"] == {"selector": {"matchLabels": LABELS}, "limit": 1}
    assert limit["metadata"]["labels"]["app.kubernetes.io/instance"] == release
    assert not kubectl("get", "deployments", "-o", "name", namespace=namespace).stdout.strip()

    service_account = f"{release}-flowrun-operator"
    kubectl("get", "serviceaccount", service_account, namespace=namespace)
    user = f"system:serviceaccount:{namespace}:{service_account}"

    def can_i(verb: str, resource: str) -> bool:
        resource, _, subresource = resource.partition("/")
        args = ["auth", "can-i", verb, resource, f"--as={user}"]
        if subresource:
            args.append(f"--subresource={subresource}")
        result = kubectl(*args, check=False, namespace=namespace)
        return result.stdout.strip() == "yes"

    granted = [
        ("watch", "flowruns.flowrun.io"),
        ("delete", "flowruns.flowrun.io"),
        ("patch", "flowruns.flowrun.io/status"),
        ("update", "flowruns.flowrun.io/finalizers"),
        ("list", "concurrencylimits.flowrun.io"),
        ("patch", "concurrencylimits.flowrun.io/status"),
        ("create", "jobs.batch"),
        ("delete", "jobs.batch"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
        # FlowSchedules: their runs are created (and, with concurrencyPolicy Replace, cancelled) by the operator.
        ("create", "flowruns.flowrun.io"),
        ("patch", "flowruns.flowrun.io"),
        ("watch", "flowschedules.flowrun.io"),
        ("patch", "flowschedules.flowrun.io/status"),
    ]
    denied = [
        ("update", "flowruns.flowrun.io"),
        ("create", "flowschedules.flowrun.io"),
        ("patch", "flowschedules.flowrun.io"),
        ("create", "concurrencylimits.flowrun.io"),
        ("get", "pods"),
        ("get", "pods/log"),
        ("get", "secrets"),
        ("patch", "jobs.batch"),
    ]
    assert [p for p in granted if not can_i(*p)] == [], "the chart's RBAC misses permissions"
    assert [p for p in denied if can_i(*p)] == [], "the chart's RBAC grants more than the operator needs"

    # --- the operator, out of cluster, authenticated as the chart's ServiceAccount.
    sa_kubeconfig = service_account_kubeconfig_for(kubectl, kubeconfig, service_account, namespace, tmp_path)
    probe = Kubectl(sa_kubeconfig)
    probe("get", "flowruns", namespace=namespace)  # the token works ...
    denied_read = probe("get", "secrets", namespace=namespace, check=False)
    assert denied_read.returncode != 0 and "forbidden" in denied_read.stderr.lower()  # ... and is not admin

    operator = start_operator(sa_kubeconfig, tmp_path / "operator.log", ["-n", namespace])
    try:
        # --- three runs through a limit of 1: one at a time, the others Pending, all Succeeded.
        first = {f"one-{i}" for i in range(3)}
        kubectl.apply([flowrun(name, duration=2) for name in sorted(first)], namespace=namespace)
        final, seen = watch_runs(
            kubectl, namespace, first, until=lambda p: all(v == "Succeeded" for v in p.values()), limit=1
        )
        assert final == dict.fromkeys(first, "Succeeded")
        assert seen.max_active_runs == 1, seen
        assert seen.seen_pending, f"no run was ever seen Pending behind the limit: {seen}"
        jobs = kubectl.json("get", "jobs", "-l", "flowrun.io/run", namespace=namespace)["items"]
        spans = sorted(
            (parse_time(j["status"]["startTime"]), parse_time(j["status"]["completionTime"]))
            for j in jobs
            if j["metadata"]["labels"]["flowrun.io/run"] in first
        )
        assert len(spans) == 3, spans
        for (_, previous_end), (start, _) in itertools.pairwise(spans):
            assert start >= previous_end, f"Jobs overlapped under a limit of 1: {spans}"
        wait_for(
            lambda: (
                (kubectl.json("get", "concurrencylimit", LIMIT, namespace=namespace).get("status") or {}).get("inUse")
                == 0
            ),
            timeout=30,
            message="the limit's status.inUse back to 0",
        )

        # --- runs wait behind the limit of 1; `helm upgrade` to 3 admits them while the first still runs.
        second = ["two-0", "two-1", "two-2"]
        kubectl.apply(flowrun(second[0], duration=20), namespace=namespace)
        wait_for(
            lambda: phases(kubectl, namespace).get(second[0]) == "Running",
            timeout=TIMEOUT,
            message=f"{second[0]} Running",
        )
        kubectl.apply([flowrun(name, duration=2) for name in second[1:]], namespace=namespace)
        wait_for(
            lambda: all(phases(kubectl, namespace).get(name) == "Pending" for name in second[1:]),
            timeout=30,
            message=f"{second[1:]} Pending behind the limit",
        )
        time.sleep(1)  # still waiting a moment later: held by the limit, not merely slow
        current = phases(kubectl, namespace)
        assert [current.get(name) for name in second] == ["Running", "Pending", "Pending"], current

        values = write_json(tmp_path / "values-limit-3.json", limit_values(3))
        helm("upgrade", release, str(CHART), "--namespace", namespace, "--values", str(values))
        assert kubectl.json("get", "concurrencylimit", LIMIT, namespace=namespace)["spec"]["limit"] == 3

        def waiting_runs_admitted() -> dict[str, str | None] | None:
            current = phases(kubectl, namespace)
            return current if all(current.get(name) in ACTIVE | {"Succeeded"} for name in second[1:]) else None

        admitted = wait_for(
            waiting_runs_admitted,
            timeout=30,
            interval=0.1,
            message=f"{second[1:]} admitted after raising the limit to 3",
        )
        assert admitted.get(second[0]) == "Running", f"admitted only once the first run ended: {admitted}"
        final, _ = watch_runs(
            kubectl,
            namespace,
            set(second),
            until=lambda p: all(v == "Succeeded" for v in p.values()),
            limit=3,
        )
        assert final == dict.fromkeys(second, "Succeeded")

        # --- the operator's credentials were enough for everything it did.
        assert operator.process.poll() is None, f"the operator exited:\n{operator.log()[-5000:]}"
    finally:
        operator.stop()
    assert_no_permission_errors(operator.log())

    # --- uninstall: the release's ConcurrencyLimit goes; the CRDs and the FlowRuns stay.
    helm("uninstall", release, "--namespace", namespace, "--wait")
    wait_for(
        lambda: kubectl("get", "concurrencylimit", LIMIT, namespace=namespace, check=False).returncode != 0,
        timeout=60,
        message=f"ConcurrencyLimit {LIMIT} removed by helm uninstall",
    )
    for crd in ("flowruns.flowrun.io", "concurrencylimits.flowrun.io"):
        kubectl("get", "crd", crd)
    remaining = phases(kubectl, namespace)
    assert remaining == dict.fromkeys(first | set(second), "Succeeded"), remaining
    assert kubectl("get", "serviceaccount", service_account, namespace=namespace, check=False).returncode != 0
    assert kubectl("get", "clusterrole", service_account, check=False).returncode != 0
    assert kubectl("get", "clusterrolebinding", service_account, check=False).returncode != 0


def test_watch_namespaces_roles_are_enough(
    helm: Helm, release: str, namespace: str, kubectl: Kubectl, kubeconfig: Path, tmp_path: Path
) -> None:
    """With ``watchNamespaces`` the ServiceAccount has only a Role in the watched namespace, and the operator
    is configured through ``WATCH_NAMESPACES`` as the chart's Deployment does: that must be enough."""
    values = {**limit_values(1), "watchNamespaces": [namespace]}
    helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(write_json(tmp_path / "v.json", values)),
    )
    service_account = f"{release}-flowrun-operator"
    assert kubectl("get", "clusterrole", service_account, check=False).returncode != 0
    kubectl("get", "role", service_account, namespace=namespace)

    sa_kubeconfig = service_account_kubeconfig_for(kubectl, kubeconfig, service_account, namespace, tmp_path)
    # With leader election, as the chart's Deployment runs it: the Lease Role in the release namespace.
    election = {"LEADER_ELECT": "true", "POD_NAME": f"{release}-0", "POD_NAMESPACE": namespace}
    operator = start_operator(
        sa_kubeconfig, tmp_path / "operator.log", [], env={"WATCH_NAMESPACES": namespace, **election}
    )
    try:
        runs = {"solo-0", "solo-1"}
        kubectl.apply([flowrun(name, duration=1) for name in sorted(runs)], namespace=namespace)
        final, _ = watch_runs(
            kubectl, namespace, runs, until=lambda p: all(v == "Succeeded" for v in p.values()), limit=1
        )
        assert final == dict.fromkeys(runs, "Succeeded")
        assert operator.process.poll() is None, f"the operator exited:\n{operator.log()[-5000:]}"
        assert "became leader" in operator.log()
        holder = kubectl.json("get", "lease", "flowrun-operator", namespace=namespace)["spec"]["holderIdentity"]
        assert holder == f"{release}-0"
    finally:
        operator.stop()
    assert_no_permission_errors(operator.log())


def test_operator_pod_is_admitted_under_restricted_pod_security(
    helm: Helm, release: str, namespace: str, kubectl: Kubectl
) -> None:
    """The chart's Deployment (operator.enabled=true) creates its Pod in a namespace that enforces the
    restricted Pod Security Standard. Only admission is checked: the image is not expected to exist."""
    kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    # The namespace really enforces it: a privileged Pod is refused.
    refused = kubectl(
        "run",
        "privileged",
        "--image=busybox:1.36",
        "--privileged",
        "--dry-run=server",
        check=False,
        namespace=namespace,
    )
    assert refused.returncode != 0 and "PodSecurity" in refused.stderr, refused.stderr

    installed = helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "image.repository=flowrun-operator-e2e.invalid/flowrun-operator",
        "--set",
        f"watchNamespaces={{{namespace}}}",
    )
    assert "would violate PodSecurity" not in installed.stderr, installed.stderr
    selector = f"app.kubernetes.io/instance={release}"

    def operator_pods() -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = kubectl.json("get", "pods", "-l", selector, namespace=namespace)["items"]
        return pods

    # Two replicas by default (one leads through the Lease, the other waits): both Pods are admitted.
    pods = wait_for(
        lambda: found if len(found := operator_pods()) == 2 else None,
        timeout=60,
        message="the operator's two Pods created by its ReplicaSet",
    )
    pod = pods[0]
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert pod["spec"]["serviceAccountName"] == f"{release}-flowrun-operator"
    (replica_set,) = kubectl.json("get", "replicasets", "-l", selector, namespace=namespace)["items"]
    failures = [c for c in replica_set.get("status", {}).get("conditions") or [] if c["type"] == "ReplicaFailure"]
    assert not failures, failures
