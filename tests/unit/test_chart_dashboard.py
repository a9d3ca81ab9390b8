"""The chart's optional dashboard, rendered with the real helm binary: off by default; when on, a read-only
ServiceAccount and RBAC of its own, a restricted Pod, and a Service that selects only the dashboard."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart import CHART, RELEASE, RELEASE_NAMESPACE, helm_binary

Objects = list[dict[str, Any]]
READ_VERBS = {"get", "list", "watch"}


def render(tmp_path: Path, values: dict[str, Any] | None = None) -> Objects:
    env = {**os.environ, "HELM_CONFIG_HOME": str(tmp_path / "c"), "HELM_CACHE_HOME": str(tmp_path / "k")}
    env.pop("KUBECONFIG", None)
    args = [helm_binary(), "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE]
    if values is not None:
        path = tmp_path / "values.json"
        path.write_text(json.dumps(values))
        args += ["--values", str(path)]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def dashboard_objects(objects: Objects) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects if o["metadata"]["name"].endswith("-dashboard")}


def test_no_dashboard_by_default(tmp_path: Path) -> None:
    assert dashboard_objects(render(tmp_path)) == {}


def test_dashboard_is_read_only_restricted_and_separate(tmp_path: Path) -> None:
    objects = render(tmp_path, {"dashboard": {"enabled": True}})
    found = dashboard_objects(objects)

    assert set(found) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}
    rules = found["ClusterRole"]["rules"]
    assert all(set(rule["verbs"]) <= READ_VERBS for rule in rules), rules
    granted = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {
        ("flowrun.io", "flowruns"),
        ("flowrun.io", "concurrencylimits"),
        ("batch", "jobs"),
        ("", "events"),
    }
    binding = found["ClusterRoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": found["ServiceAccount"]["metadata"]["name"], "namespace": RELEASE_NAMESPACE}
    ]

    pod = found["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == found["ServiceAccount"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["command"][:3] == ["python", "-m", "flowrun_operator.ui"]
    assert "--allow-writes" not in container["command"]

    # The operator's selector never matches the dashboard's Pods, and the Service selects only them.
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    operator = next(o for o in objects if o["kind"] == "Deployment" and o is not found["Deployment"])
    operator_selector = operator["spec"]["selector"]["matchLabels"]
    assert not all(labels.get(k) == v for k, v in operator_selector.items())
    assert found["Service"]["spec"]["selector"] == found["Deployment"]["spec"]["selector"]["matchLabels"]
    assert found["Service"]["spec"]["ports"][0]["port"] == 80


def test_dashboard_with_watch_namespaces_gets_roles(tmp_path: Path) -> None:
    found = render(tmp_path, {"dashboard": {"enabled": True}, "watchNamespaces": ["a", "b"]})
    roles = [o for o in found if o["kind"] == "Role" and o["metadata"]["name"].endswith("-dashboard")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    assert not [o for o in found if o["kind"] == "ClusterRole" and o["metadata"]["name"].endswith("-dashboard")]


def test_dashboard_values_are_checked(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="dashboard"):
        render(tmp_path, {"dashboard": {"enabled": True, "port": 1}})
