"""The Helm chart, rendered with the real helm binary (`helm lint`, `helm template`); no cluster needed.

The helm binary is ``$FLOWRUN_CACHE/bin/helm`` (built by ``make tools``), else ``helm`` on PATH. Without it
these tests fail rather than skip: the chart must never go untested.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "flowrun-operator"
RELEASE = "flowrun"
RELEASE_NAMESPACE = "flowrun-system"
FULLNAME = "flowrun-flowrun-operator"
LIVENESS_ARG = "--liveness=http://0.0.0.0:8080/healthz"

# The operator's API calls, exactly: (apiGroup, resource) -> verbs.
EXPECTED_RULES: dict[tuple[str, str], set[str]] = {
    ("flowrun.io", "flowruns"): {"get", "list", "watch", "delete", "create", "patch"},
    ("flowrun.io", "flowruns/status"): {"get", "patch"},
    ("flowrun.io", "flowruns/finalizers"): {"update"},
    ("flowrun.io", "concurrencylimits"): {"get", "list", "watch"},
    ("flowrun.io", "concurrencylimits/status"): {"get", "patch"},
    ("flowrun.io", "flowschedules"): {"get", "list", "watch"},
    ("flowrun.io", "flowschedules/status"): {"get", "patch"},
    ("flowrun.io", "flowschedules/finalizers"): {"update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}

Objects = list[dict[str, Any]]


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
def helm(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run helm with its config/cache/data directories in a temporary directory."""
    binary = helm_binary()
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    env.pop("KUBECONFIG", None)  # `helm template` and `helm lint` need no cluster

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=60, check=False)

    return run


@pytest.fixture(scope="module")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[dict[str, Any]], Path]]:
    directory = tmp_path_factory.mktemp("values")
    counter = iter(range(1_000_000))

    def write(values: dict[str, Any]) -> Path:
        # JSON is YAML, and leaves no room for YAML 1.1 surprises (an unquoted `y` is a boolean to helm).
        path = directory / f"values-{next(counter)}.yaml"
        path.write_text(json.dumps(values))
        return path

    yield write


@pytest.fixture(scope="module")
def template(
    helm: Callable[..., subprocess.CompletedProcess[str]], values_file: Callable[[dict[str, Any]], Path]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``helm template`` of the chart with a values dict; returns the completed process."""

    def run(values: dict[str, Any] | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, *extra]
        if values is not None:
            args += ["--values", str(values_file(values))]
        return helm(*args)

    return run


@pytest.fixture(scope="module")
def render(template: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[..., Objects]:
    """The objects ``helm template`` renders with a values dict (it must succeed)."""

    def run(values: dict[str, Any] | None = None, *extra: str) -> Objects:
        result = template(values, *extra)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return run


@pytest.fixture(scope="module")
def default_objects(render: Callable[..., Objects]) -> Objects:
    return render()


def of_kind(objects: Objects, kind: str) -> Objects:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: Objects, kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata'].get('name') for o in found]}"
    return found[0]


def container(objects: Objects) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def operator_roles(objects: Objects, kind: str) -> Objects:
    """Roles or RoleBindings of the operator's rules, without the leader-election ones."""
    return [o for o in of_kind(objects, kind) if not o["metadata"]["name"].endswith("-leader-election")]


def env_of(objects: Objects) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(objects).get("env", [])}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """A Role's rules as (apiGroup, resource) -> verbs; fails on wildcards and on split duplicates."""
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames / nonResourceURLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource, *rule["verbs"]), rule
                key = (group, resource)
                assert key not in rules, f"{key} appears in two rules"
                rules[key] = set(rule["verbs"])
    return rules


# ------------------------------------------------------------------------------------------ chart basics


def test_helm_lint(helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_helm_lint_with_values(
    helm: Callable[..., subprocess.CompletedProcess[str]], values_file: Callable[[dict[str, Any]], Path]
) -> None:
    values = {
        "watchNamespaces": ["a", "b"],
        "operator": {"enabled": False},
        "concurrencyLimits": [{"name": "gpu", "selector": {"matchLabels": {"gpu": "true"}}, "limit": 2}],
    }
    result = helm("lint", "--strict", str(CHART), "--values", str(values_file(values)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "flowrun-operator"
    assert chart["type"] == "application"
    assert chart["appVersion"] == "0.1.0"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject, "appVersion differs from the package version"


def test_schema_is_draft_07_json() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"]), "values.yaml keys missing from values.schema.json"


def test_chart_crds_equal_repo_crds(render: Callable[..., Objects]) -> None:
    repo = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert (
        repo
        == chart
        == ["flowrun.io_concurrencylimits.yaml", "flowrun.io_flowruns.yaml", "flowrun.io_flowschedules.yaml"]
    )
    for name in repo:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/flowrun-operator/crds/{name} differs from crds/{name}: run `make crds`"
        )
    crds = of_kind(render(None, "--include-crds"), "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "concurrencylimits.flowrun.io",
        "flowruns.flowrun.io",
        "flowschedules.flowrun.io",
    ]


def test_templates_render_no_crds_by_default(default_objects: Objects) -> None:
    """CRDs live in crds/ only: Helm installs them once and never upgrades or deletes them."""
    assert not of_kind(default_objects, "CustomResourceDefinition")


def test_every_object_has_standard_labels(default_objects: Objects) -> None:
    assert default_objects
    for obj in default_objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "flowrun-operator", obj["kind"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "flowrun-operator"
        assert labels["helm.sh/chart"] == "flowrun-operator-0.1.0"


def test_default_objects(default_objects: Objects) -> None:
    kinds = sorted(obj["kind"] for obj in default_objects)
    # Role and RoleBinding: the leader-election Lease, in the release namespace (tests/unit/test_chart_ha.py).
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "ServiceAccount"]
    for obj in default_objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == RELEASE_NAMESPACE, obj["kind"]


# ------------------------------------------------------------------------------------------------- RBAC


def test_default_rbac_is_a_cluster_role_with_exactly_the_operators_rules(default_objects: Objects) -> None:
    role = one(default_objects, "ClusterRole")
    assert role["metadata"]["name"] == FULLNAME
    assert rules_of(role) == EXPECTED_RULES
    binding = one(default_objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NAMESPACE}]
    assert not operator_roles(default_objects, "Role")
    assert not operator_roles(default_objects, "RoleBinding")
    assert "WATCH_NAMESPACES" not in env_of(default_objects)


def test_rbac_does_not_grant_pods() -> None:
    resources = {resource for _, resource in EXPECTED_RULES}
    assert not {"pods", "pods/log", "secrets", "configmaps"} & resources


def test_watch_namespaces_gives_roles_in_each_namespace(render: Callable[..., Objects]) -> None:
    objects = render({"watchNamespaces": ["a", "b"]})
    assert not of_kind(objects, "ClusterRole")
    assert not of_kind(objects, "ClusterRoleBinding")
    roles = operator_roles(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    for role in roles:
        assert role["metadata"]["name"] == FULLNAME
        assert rules_of(role) == EXPECTED_RULES
    bindings = operator_roles(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": FULLNAME}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": RELEASE_NAMESPACE}]
    assert env_of(objects)["WATCH_NAMESPACES"] == "a,b"


def test_rbac_create_false_renders_no_rbac(render: Callable[..., Objects]) -> None:
    for values in ({"rbac": {"create": False}}, {"rbac": {"create": False}, "watchNamespaces": ["a"]}):
        objects = render(values)
        assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & {o["kind"] for o in objects}
        one(objects, "Deployment")


def test_existing_service_account(render: Callable[..., Objects]) -> None:
    objects = render({"serviceAccount": {"create": False, "name": "mine"}})
    assert not of_kind(objects, "ServiceAccount")
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "mine"
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


def test_service_account_name_override(render: Callable[..., Objects]) -> None:
    objects = render({"serviceAccount": {"name": "runner", "annotations": {"a/b": "c"}}})
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["name"] == "runner"
    assert account["metadata"]["annotations"] == {"a/b": "c"}
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "runner"


def test_existing_service_account_needs_a_name(template: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = template({"serviceAccount": {"create": False}})
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr


# ------------------------------------------------------------------------------------------- Deployment


def test_deployment_selector_and_service_account(default_objects: Objects) -> None:
    # Replicas, strategy and leader election: tests/unit/test_chart_ha.py.
    deployment = one(default_objects, "Deployment")
    assert deployment["metadata"]["name"] == FULLNAME
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector == {"app.kubernetes.io/name": "flowrun-operator", "app.kubernetes.io/instance": RELEASE}
    assert selector.items() <= pod_labels.items()
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME
    assert one(default_objects, "ServiceAccount")["metadata"]["name"] == FULLNAME


def test_container_command_env_and_image(default_objects: Objects) -> None:
    main = container(default_objects)
    assert [*main.get("command", []), *main.get("args", [])] == ["flowrun-operator", LIVENESS_ARG]
    assert main["image"] == "flowrun-operator:0.1.0"
    assert main["imagePullPolicy"] == "IfNotPresent"
    assert env_of(default_objects)["LOG_LEVEL"] == "INFO"
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in main["ports"]


def test_probes_use_kopfs_health_endpoint(default_objects: Objects) -> None:
    main = container(default_objects)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        http = main[probe]["httpGet"]
        assert http["path"] == "/healthz", probe
        assert ports.get(http["port"], http["port"]) == 8080, probe


def test_restricted_security_context(default_objects: Objects) -> None:
    pod = one(default_objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container(default_objects)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context.get("privileged") is not True
    assert context.get("runAsNonRoot", True) is True
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_tmp_is_a_writable_empty_dir(default_objects: Objects) -> None:
    pod = one(default_objects, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container(default_objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "/tmp" in mounts
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert not container(default_objects)["volumeMounts"][0].get("readOnly", False)


def test_default_resources(default_objects: Objects) -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["resources"]
    assert container(default_objects)["resources"] == defaults
    assert defaults["requests"] and defaults["limits"]["memory"]


def test_values_reach_the_pod(render: Callable[..., Objects]) -> None:
    values = {
        "image": {"repository": "registry.example/flowrun", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "pull"}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "logLevel": "debug",
        "nodeSelector": {"pool": "ops"},
        "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
        "podAnnotations": {"example.com/scrape": "false"},
    }
    objects = render(values)
    pod_template = one(objects, "Deployment")["spec"]["template"]
    pod = pod_template["spec"]
    main = container(objects)
    assert main["image"] == "registry.example/flowrun:1.2.3"
    assert main["imagePullPolicy"] == "Always"
    assert main["resources"] == values["resources"]
    assert env_of(objects)["LOG_LEVEL"] == "DEBUG"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["nodeSelector"] == {"pool": "ops"}
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod_template["metadata"]["annotations"] == {"example.com/scrape": "false"}


def test_operator_disabled_renders_no_deployment(render: Callable[..., Objects]) -> None:
    objects = render({"operator": {"enabled": False}})
    assert not of_kind(objects, "Deployment")
    one(objects, "ServiceAccount")
    assert rules_of(one(objects, "ClusterRole")) == EXPECTED_RULES


# ------------------------------------------------------------------------------------ ConcurrencyLimits


def test_concurrency_limits(render: Callable[..., Objects]) -> None:
    expressions = [
        {"key": "tier", "operator": "In", "values": ["batch", "etl"]},
        {"key": "paused", "operator": "DoesNotExist"},
    ]
    objects = render(
        {
            "concurrencyLimits": [
                {"name": "gpu", "selector": {"matchLabels": {"resource": "gpu"}}, "limit": 2},
                {"name": "warehouse", "namespace": "analytics", "tag": "warehouse", "limit": 5},
                {"name": "paused", "selector": {}, "limit": 0},
                {"name": "etl", "selector": {"matchExpressions": expressions}, "limit": 2147483647},
            ]
        }
    )
    limits = {obj["metadata"]["name"]: obj for obj in of_kind(objects, "ConcurrencyLimit")}
    assert sorted(limits) == ["etl", "gpu", "paused", "warehouse"]
    for limit in limits.values():
        assert limit["apiVersion"] == "flowrun.io/v1alpha1"
        assert limit["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert limits["gpu"]["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert limits["gpu"]["spec"] == {"selector": {"matchLabels": {"resource": "gpu"}}, "limit": 2}
    assert limits["warehouse"]["metadata"]["namespace"] == "analytics"
    assert limits["warehouse"]["spec"] == {"tag": "warehouse", "limit": 5}
    assert limits["paused"]["spec"] == {"selector": {}, "limit": 0}
    assert limits["etl"]["spec"] == {"selector": {"matchExpressions": expressions}, "limit": 2147483647}


def test_no_concurrency_limits_by_default(default_objects: Objects) -> None:
    assert not of_kind(default_objects, "ConcurrencyLimit")


def test_concurrency_limits_valid_for_the_crd(render: Callable[..., Objects]) -> None:
    """The rendered specs validate against the ConcurrencyLimit model the CRD is generated from."""
    from flowrun_operator.api import ConcurrencyLimitSpec

    objects = render(
        {
            "concurrencyLimits": [
                {"name": "a", "selector": {"matchLabels": {"x": "y"}}, "limit": 1},
                {"name": "b", "tag": "t", "limit": 0},
            ]
        }
    )
    for obj in of_kind(objects, "ConcurrencyLimit"):
        spec = ConcurrencyLimitSpec.model_validate(obj["spec"])
        assert spec.validation_errors() == []


# ------------------------------------------------------------------------------------------- bad values

BAD_VALUES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "negative-limit",
        {"concurrencyLimits": [{"name": "x", "tag": "t", "limit": -1}]},
        ["/concurrencyLimits/0/limit", "minimum"],
    ),
    (
        "limit-not-integer",
        {"concurrencyLimits": [{"name": "x", "tag": "t", "limit": "3"}]},
        ["/concurrencyLimits/0/limit", "want integer"],
    ),
    (
        "limit-fractional",
        {"concurrencyLimits": [{"name": "x", "tag": "t", "limit": 1.5}]},
        ["/concurrencyLimits/0/limit", "want integer"],
    ),
    (
        "selector-and-tag",
        {"concurrencyLimits": [{"name": "x", "selector": {}, "tag": "t", "limit": 1}]},
        ["/concurrencyLimits/0", "either selector or tag, not both"],
    ),
    (
        "neither-selector-nor-tag",
        {"concurrencyLimits": [{"name": "x", "limit": 1}]},
        ["/concurrencyLimits/0", "missing property 'selector'", "missing property 'tag'"],
    ),
    (
        "limit-missing",
        {"concurrencyLimits": [{"name": "x", "tag": "t"}]},
        ["/concurrencyLimits/0", "missing property 'limit'"],
    ),
    (
        "unknown-limit-key",
        {"concurrencyLimits": [{"name": "x", "tag": "t", "limit": 1, "limits": 2}]},
        ["/concurrencyLimits/0", "additional properties 'limits' not allowed"],
    ),
    (
        "unknown-selector-key",
        {"concurrencyLimits": [{"name": "x", "selector": {"matchLabel": {"a": "b"}}, "limit": 1}]},
        ["/concurrencyLimits/0/selector", "additional properties 'matchLabel' not allowed"],
    ),
    (
        "in-without-values",
        {
            "concurrencyLimits": [
                {"name": "x", "selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}, "limit": 1}
            ]
        },
        ["/concurrencyLimits/0/selector/matchExpressions/0", "missing property 'values'"],
    ),
    (
        "bad-limit-name",
        {"concurrencyLimits": [{"name": "Not_A_Name", "tag": "t", "limit": 1}]},
        ["/concurrencyLimits/0/name"],
    ),
    ("unknown-top-level-key", {"watchNamespace": ["a"]}, ["additional properties 'watchNamespace' not allowed"]),
    ("unknown-nested-key", {"image": {"tagg": "1"}}, ["/image", "additional properties 'tagg' not allowed"]),
    ("watch-namespaces-string", {"watchNamespaces": "a,b"}, ["/watchNamespaces", "want array"]),
    ("enabled-string", {"operator": {"enabled": "yes"}}, ["/operator/enabled", "want boolean"]),
    ("bad-pull-policy", {"image": {"pullPolicy": "Sometimes"}}, ["/image/pullPolicy"]),
    ("bad-log-level", {"logLevel": "LOUD"}, ["/logLevel"]),
    ("resources-list", {"resources": []}, ["/resources", "want object"]),
]


@pytest.mark.parametrize(("values", "expected"), [(v, e) for _, v, e in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES])
def test_bad_values_fail_with_a_clear_message(
    template: Callable[..., subprocess.CompletedProcess[str]], values: dict[str, Any], expected: list[str]
) -> None:
    result = template(values)
    assert result.returncode != 0, f"helm template accepted {values}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


def test_duplicate_concurrency_limits_fail(template: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = template(
        {
            "concurrencyLimits": [
                {"name": "x", "tag": "a", "limit": 1},
                {"name": "x", "namespace": RELEASE_NAMESPACE, "tag": "b", "limit": 1},
            ]
        }
    )
    assert result.returncode != 0
    assert f"duplicate ConcurrencyLimit {RELEASE_NAMESPACE}/x" in result.stderr


def test_set_flags_are_validated_too(template: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = template(None, "--set", "concurrencyLimits[0].name=x", "--set", "concurrencyLimits[0].tag=t",
                      "--set", "concurrencyLimits[0].limit=-2")  # fmt: skip
    assert result.returncode != 0
    assert "/concurrencyLimits/0/limit" in result.stderr
