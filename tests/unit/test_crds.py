"""The CRDs in crds/ and the chart match the pydantic models, and their schemas are structural."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowrun_operator.api import (
    ConcurrencyLimitSpec,
    ConcurrencyLimitStatus,
    FlowRunPhase,
    FlowRunSpec,
    FlowRunStatus,
    TaskRunPhase,
)
from flowrun_operator.api.common import ApiModel
from flowrun_operator.api.crdgen import HEADER, main, render_crds
from flowrun_operator.api.flowschedule import FlowScheduleSpec, FlowScheduleStatus

ROOT = Path(__file__).resolve().parents[2]
CRD_DIRS = [ROOT / "crds", ROOT / "charts" / "flowrun-operator" / "crds"]
FLOWRUNS = "flowrun.io_flowruns.yaml"
LIMITS = "flowrun.io_concurrencylimits.yaml"
SCHEDULES = "flowrun.io_flowschedules.yaml"

RENDERED = render_crds()


def load(filename: str) -> dict[str, Any]:
    obj = yaml.safe_load(RENDERED[filename])
    assert isinstance(obj, dict)
    return obj


def version(filename: str) -> dict[str, Any]:
    versions = load(filename)["spec"]["versions"]
    assert len(versions) == 1
    result: dict[str, Any] = versions[0]
    return result


def root_schema(filename: str) -> dict[str, Any]:
    result: dict[str, Any] = version(filename)["schema"]["openAPIV3Schema"]
    return result


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{key}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def aliases(model: type[ApiModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def test_rendered_files() -> None:
    assert sorted(RENDERED) == sorted([FLOWRUNS, LIMITS, SCHEDULES])
    assert render_crds() == RENDERED, "output must be deterministic"
    for text in RENDERED.values():
        assert text.startswith(HEADER) and "make crds" in HEADER
        assert "&id" not in text and "*id" not in text, "no YAML anchors/aliases"


@pytest.mark.parametrize("directory", CRD_DIRS, ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize("filename", [FLOWRUNS, LIMITS, SCHEDULES])
def test_committed_crds_are_up_to_date(directory: Path, filename: str) -> None:
    path = directory / filename
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make crds`"
    assert path.read_text(encoding="utf-8") == RENDERED[filename], (
        f"{path.relative_to(ROOT)} differs from the pydantic models: run `make crds`"
    )


def test_generator_cli_writes_files(tmp_path: Path) -> None:
    assert main([str(tmp_path / "out")]) == 0
    for filename, text in RENDERED.items():
        assert (tmp_path / "out" / filename).read_text(encoding="utf-8") == text
    assert main([]) == 2


@pytest.mark.parametrize("filename", [FLOWRUNS, LIMITS, SCHEDULES])
def test_schema_is_structural(filename: str) -> None:
    forbidden = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "nullable", "const"}
    for path, node in walk(root_schema(filename)):
        assert "type" in node, f"{path or '<root>'} has no type"
        assert not forbidden & set(node), f"{path} has {forbidden & set(node)}"
        assert node.get("additionalProperties", {}) is not True, path
        assert "default" not in node or node["default"] is not None, path
        for key in node.get("required", []):
            assert key in node.get("properties", {}), f"{path}: required {key} is not a property"
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []), f"{path}: map key {key} must be required"
        if node["type"] == "object" and path:
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields")
                or path == ".metadata"
            ), f"{path}: object without properties"
        if path.startswith(".status"):
            assert "default" not in node, f"{path}: no defaults in status"


@pytest.mark.parametrize(
    ("filename", "spec", "status"),
    [
        (FLOWRUNS, FlowRunSpec, FlowRunStatus),
        (LIMITS, ConcurrencyLimitSpec, ConcurrencyLimitStatus),
        (SCHEDULES, FlowScheduleSpec, FlowScheduleStatus),
    ],
)
def test_schema_declares_every_model_field(filename: str, spec: type[ApiModel], status: type[ApiModel]) -> None:
    schema = root_schema(filename)
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert schema["required"] == ["spec"]
    assert set(schema["properties"]["spec"]["properties"]) == aliases(spec)
    assert set(schema["properties"]["status"]["properties"]) == aliases(status)
    for path, node in walk(schema):
        if path.startswith((".spec", ".status")) and path.count(".") >= 2 and not path.endswith(("[]", "{}")):
            in_pod_template = ".template." in path
            assert in_pod_template or node.get("description"), f"{path} has no description"


def test_flowrun_crd() -> None:
    crd = load(FLOWRUNS)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "flowruns.flowrun.io"
    assert crd["spec"]["group"] == "flowrun.io" and crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == ("FlowRun", "flowruns", "flowrun")
    assert names["shortNames"] == ["fr"]
    assert names["categories"] and not {names["plural"], names["singular"]} & set(names["categories"])
    v = version(FLOWRUNS)
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in v["additionalPrinterColumns"]}
    assert columns == {
        "Flow": ("string", ".spec.flow"),
        "Phase": ("string", ".status.phase"),
        "Attempt": ("integer", ".status.attempt"),
        "Started": ("date", ".status.startTime"),
        "Duration": ("string", ".status.duration"),
        "Message": ("string", ".status.message"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }

    spec = root_schema(FLOWRUNS)["properties"]["spec"]
    props = spec["properties"]
    assert spec["required"] == ["flow"]
    assert props["flow"]["pattern"] == "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
    assert (props["flow"]["minLength"], props["flow"]["maxLength"]) == (1, 63)
    assert props["parameters"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["parameters"]["default"] == {}
    for template in (props["template"], props["tasks"]["items"]["properties"]["template"]):
        assert template["x-kubernetes-preserve-unknown-fields"] is True
        assert template["x-kubernetes-embedded-resource"] is False
        assert template["required"] == ["spec"]
    assert props["tasks"]["maxItems"] == 50
    assert props["tasks"]["x-kubernetes-list-type"] == "map"
    task = props["tasks"]["items"]
    assert task["required"] == ["name", "template"]
    assert task["properties"]["dependsOn"]["default"] == []
    assert task["properties"]["dependsOn"]["maxItems"] == 50
    assert task["properties"]["tags"]["maxItems"] == 20
    assert "default" not in task["properties"]["retries"]
    assert props["scheduledStart"]["format"] == "date-time"
    assert props["priority"] == {**props["priority"], "default": 0, "minimum": -1000, "maximum": 1000}
    assert props["cancel"]["default"] is False
    messages = [r["message"] for r in spec["x-kubernetes-validations"]]
    assert "exactly one of spec.template or spec.tasks must be set" in messages
    transition = [r for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]]
    assert len(transition) == 1 and "spec.cancel" in transition[0]["message"]
    assert task["x-kubernetes-validations"][0]["message"].startswith("a task cannot depend on itself")
    for _, node in walk(root_schema(FLOWRUNS)):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["rule"] and rule["message"]

    status = root_schema(FLOWRUNS)["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [p.value for p in FlowRunPhase]
    assert status["taskRuns"]["items"]["properties"]["phase"]["enum"] == [p.value for p in TaskRunPhase]
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["taskRuns"]["x-kubernetes-list-map-keys"] == ["name"]
    assert status["startTime"]["format"] == "date-time"
    assert status["observedGeneration"]["format"] == "int64"
    assert set(status["waitingFor"]["items"]["properties"]) == {"name", "position", "inUse", "limit"}
    condition = status["conditions"]["items"]
    assert condition["required"] == ["type", "status", "reason"]
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_concurrency_limit_crd() -> None:
    crd = load(LIMITS)
    assert crd["metadata"]["name"] == "concurrencylimits.flowrun.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"]) == ("ConcurrencyLimit", "concurrencylimits")
    assert names["shortNames"] == ["cl"]
    assert names["categories"] == load(FLOWRUNS)["spec"]["names"]["categories"]
    v = version(LIMITS)
    assert v["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in v["additionalPrinterColumns"]]
    assert columns == [
        ("Limit", ".spec.limit", 0),
        ("In-Use", ".status.inUse", 0),
        ("Pending", ".status.pending", 0),
        ("Tag", ".spec.tag", 1),
        ("Age", ".metadata.creationTimestamp", 0),
    ]
    spec = root_schema(LIMITS)["properties"]["spec"]
    assert spec["required"] == ["limit"]
    assert spec["properties"]["limit"]["minimum"] == 0
    assert spec["properties"]["limit"]["format"] == "int32"
    assert spec["x-kubernetes-validations"] == [
        {
            "rule": "has(self.selector) != has(self.tag)",
            "message": "exactly one of spec.selector or spec.tag must be set",
        }
    ]
    selector = spec["properties"]["selector"]
    assert selector["x-kubernetes-map-type"] == "atomic"
    assert selector["properties"]["matchLabels"]["additionalProperties"]["type"] == "string"
    requirement = selector["properties"]["matchExpressions"]["items"]
    assert requirement["properties"]["operator"]["enum"] == ["In", "NotIn", "Exists", "DoesNotExist"]
    assert requirement["required"] == ["key", "operator"]
    assert len(requirement["x-kubernetes-validations"]) == 1


def test_flow_schedule_crd() -> None:
    crd = load(SCHEDULES)
    assert crd["metadata"]["name"] == "flowschedules.flowrun.io"
    assert crd["spec"]["names"]["shortNames"] == ["fsch"]
    columns = [c["name"].upper() for c in version(SCHEDULES)["additionalPrinterColumns"]]
    for name in ("SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "NEXT"):
        assert name in columns
    assert version(SCHEDULES)["subresources"] == {"status": {}}
    root = root_schema(SCHEDULES)
    assert any("metadata.name" in v["rule"] for v in root["x-kubernetes-validations"])
    spec = root["properties"]["spec"]
    assert any(v["rule"] == "has(self.schedule) != has(self.interval)" for v in spec["x-kubernetes-validations"])
    assert spec["properties"]["concurrencyPolicy"]["enum"] == ["Allow", "Forbid", "Replace"]
    assert spec["properties"]["timeZone"]["default"] == "UTC"
    template = spec["properties"]["flowRunTemplate"]
    assert (
        template["properties"]["spec"]["properties"]["flow"]
        == root_schema(FLOWRUNS)["properties"]["spec"]["properties"]["flow"]
    )
