"""The chart's replicas, leader election, metrics Service and ServiceMonitor, rendered with the real helm
binary (``helm template``); no cluster needed. Like tests/unit/test_chart.py, these fail without helm."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flowrun-operator"
RELEASE = "flowrun"
NAMESPACE = "flowrun-system"
FULLNAME = "flowrun-flowrun-operator"
SELECTOR = {"app.kubernetes.io/name": "flowrun-operator", "app.kubernetes.io/instance": RELEASE}

Objects = list[dict[str, Any]]
Template = Callable[..., subprocess.CompletedProcess[str]]


def helm_binary() -> str:
    cache = Path(os.environ.get("FLOWRUN_CACHE") or Path.home() / ".cache" / "flowrun-operator").expanduser()
    candidate = cache / "bin" / "helm"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail(f"helm not found at {candidate} nor on PATH: run `make tools` to build it", pytrace=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    binary = helm_binary()
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    counter = iter(range(1_000_000))

    def run(values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        args = [binary, "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        if values is not None:
            path = home / f"values-{next(counter)}.json"
            path.write_text(json.dumps(values))
            args += ["--values", str(path)]
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)

    return run


@pytest.fixture(scope="module")
def render(template: Template) -> Callable[..., Objects]:
    def run(values: dict[str, Any] | None = None) -> Objects:
        result = template(values)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return run


def of_kind(objects: Objects, kind: str) -> Objects:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(objects: Objects) -> dict[str, Any]:
    (main,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = main
    return result


def env_of(objects: Objects) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects).get("env", [])}


# --------------------------------------------------------------------------------- replicas and election


def test_default_runs_two_replicas_with_leader_election_and_a_rolling_update(render: Callable[..., Objects]) -> None:
    objects = render()
    spec = one(objects, "Deployment")["spec"]
    assert spec["replicas"] == 2
    # A surge Pod starts as a standby; none of the old ones goes before a new one is ready.
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    env = env_of(objects)
    assert env["LEADER_ELECT"] == "true"
    # Shorter than client-go's 15/10/2, for a takeover within 15 s; same ordering rules.
    assert (env["LEADER_ELECTION_LEASE_DURATION"], env["LEADER_ELECTION_RENEW_DEADLINE"]) == ("8", "6")
    assert env["LEADER_ELECTION_RETRY_PERIOD"] == "1"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["LIVENESS_STALL_SECONDS"] == "60"
    assert env["POSITION_REFRESHES_PER_DEPARTURE"] == "0.25"
    assert env_of(render({"positionRefreshesPerDeparture": 0}))["POSITION_REFRESHES_PER_DEPARTURE"] == "0"


def test_replicas_are_spread_over_nodes_unless_affinity_is_given(render: Callable[..., Objects]) -> None:
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == SELECTOR
    given = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    assert one(render({"affinity": given}), "Deployment")["spec"]["template"]["spec"]["affinity"] == given
    assert "affinity" not in one(render({"replicas": 1}), "Deployment")["spec"]["template"]["spec"]


def test_lease_rbac_is_a_role_in_the_release_namespace_only(render: Callable[..., Objects]) -> None:
    objects = render()
    role = one(objects, "Role", f"{FULLNAME}-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["flowrun-operator"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = one(objects, "RoleBinding", f"{FULLNAME}-leader-election")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    # Nothing about leases anywhere cluster-wide.
    for cluster_role in of_kind(objects, "ClusterRole"):
        assert all("leases" not in rule["resources"] for rule in cluster_role["rules"])


def test_watched_namespaces_get_no_lease_rights(render: Callable[..., Objects]) -> None:
    objects = render({"watchNamespaces": ["a", "b"]})
    lease_roles = [r for r in of_kind(objects, "Role") if any("leases" in x["resources"] for x in r["rules"])]
    assert [r["metadata"]["namespace"] for r in lease_roles] == [NAMESPACE]


def test_leader_election_off_runs_one_pod_with_recreate_and_no_lease_rbac(render: Callable[..., Objects]) -> None:
    objects = render({"replicas": 1, "leaderElection": {"enabled": False}})
    spec = one(objects, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert env_of(objects)["LEADER_ELECT"] == "false"
    assert "LEADER_ELECTION_LEASE_DURATION" not in env_of(objects)
    assert not [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-leader-election")]


def test_several_replicas_without_leader_election_is_refused(template: Template) -> None:
    result = template({"replicas": 2, "leaderElection": {"enabled": False}})
    assert result.returncode != 0
    assert "replicas > 1 needs leaderElection.enabled=true" in result.stderr


@pytest.mark.parametrize(
    ("timings", "message"),
    [
        ((6, 6, 1), "leaseDurationSeconds must be greater than leaderElection.renewDeadlineSeconds"),
        ((15, 2.4, 2), "renewDeadlineSeconds must be greater than 1.2 x leaderElection.retryPeriodSeconds"),
    ],
)
def test_unsafe_election_timings_are_refused(
    template: Template, timings: tuple[float, float, float], message: str
) -> None:
    lease, renew, retry = timings
    election = {"leaseDurationSeconds": lease, "renewDeadlineSeconds": renew, "retryPeriodSeconds": retry}
    result = template({"leaderElection": election})
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_election_durations_reach_the_pod(render: Callable[..., Objects]) -> None:
    election = {"enabled": True, "leaseDurationSeconds": 30, "renewDeadlineSeconds": 20, "retryPeriodSeconds": 4}
    env = env_of(render({"leaderElection": election, "livenessStallSeconds": 120}))
    assert env["LEADER_ELECTION_LEASE_DURATION"] == "30"
    assert env["LEADER_ELECTION_RENEW_DEADLINE"] == "20"
    assert env["LEADER_ELECTION_RETRY_PERIOD"] == "4"
    assert env["LIVENESS_STALL_SECONDS"] == "120"


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicas": -1}, "/replicas"),
        ({"replicas": "2"}, "/replicas"),
        ({"leaderElection": {"enabled": "yes"}}, "/leaderElection/enabled"),
        ({"leaderElection": {"leaseDuration": 15}}, "/leaderElection"),
        ({"metrics": {"port": 8080}}, "/metrics/port"),
        ({"metrics": {"serviceMonitor": {"interval": "thirty"}}}, "/metrics/serviceMonitor/interval"),
        ({"livenessStallSeconds": 0}, "/livenessStallSeconds"),
        ({"positionRefreshesPerDeparture": -0.5}, "/positionRefreshesPerDeparture"),
        ({"positionRefreshesPerDeparture": "often"}, "/positionRefreshesPerDeparture"),
    ],
)
def test_schema_rejects_bad_values(template: Template, values: dict[str, Any], where: str) -> None:
    result = template(values)
    assert result.returncode != 0
    assert where in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_port_on_by_default_without_service_or_monitor(render: Callable[..., Objects]) -> None:
    objects = render()
    main = container(objects)
    assert {"name": "metrics", "containerPort": 8000, "protocol": "TCP"} in main["ports"]
    assert env_of(objects)["METRICS_PORT"] == "8000"
    assert not of_kind(objects, "Service")
    assert not of_kind(objects, "ServiceMonitor")


def test_metrics_disabled(render: Callable[..., Objects]) -> None:
    objects = render({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    assert env_of(objects)["METRICS_PORT"] == "0"
    assert "metrics" not in {p["name"] for p in container(objects)["ports"]}
    assert not of_kind(objects, "Service") and not of_kind(objects, "ServiceMonitor")


def test_metrics_service(render: Callable[..., Objects]) -> None:
    objects = render({"metrics": {"port": 9100, "service": {"enabled": True, "annotations": {"a": "b"}}}})
    service = one(objects, "Service")
    assert service["metadata"]["name"] == f"{FULLNAME}-metrics"
    assert service["metadata"]["namespace"] == NAMESPACE
    assert service["metadata"]["annotations"] == {"a": "b"}
    assert service["spec"]["selector"] == SELECTOR
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container(objects)["ports"]
    assert not of_kind(objects, "ServiceMonitor")


def test_service_monitor_only_when_enabled_and_it_brings_its_service(render: Callable[..., Objects]) -> None:
    objects = render(
        {"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}}}}
    )
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    service = one(objects, "Service")
    # The monitor selects exactly the metrics Service.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"


def test_operator_disabled_renders_no_metrics_objects(render: Callable[..., Objects]) -> None:
    objects = render({"operator": {"enabled": False}, "metrics": {"serviceMonitor": {"enabled": True}}})
    assert not of_kind(objects, "Deployment")
    assert not of_kind(objects, "Service") and not of_kind(objects, "ServiceMonitor")
