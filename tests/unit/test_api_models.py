"""Unit tests of the flowrun.io API models: parsing, dumping, defaults and the pure helpers."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from flowrun_operator.api import (
    API_VERSION,
    ConcurrencyLimit,
    ConcurrencyLimitSpec,
    Condition,
    ConditionStatus,
    FlowRun,
    FlowRunPhase,
    FlowRunSpec,
    FlowRunStatus,
    LabelSelector,
    LabelSelectorRequirement,
    SelectorOperator,
    Task,
    TaskRun,
    TaskRunPhase,
    find_condition,
    format_duration,
    format_time,
    is_terminal,
    parse_time,
    remove_condition,
    set_condition,
)

POD: dict[str, Any] = {
    "metadata": {"labels": {"app": "demo"}},
    "spec": {"containers": [{"name": "main", "image": "busybox", "args": ["true"]}], "restartPolicy": "Never"},
}

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def raw_flowrun() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "FlowRun",
        "metadata": {"name": "etl-1", "namespace": "default", "labels": {"team": "data"}, "generation": 2},
        "spec": {
            "flow": "etl",
            "parameters": {"date": "2026-01-01", "n": 3, "nested": {"x": [1, None]}},
            "tasks": [
                {"name": "extract", "template": POD, "dependsOn": [], "tags": ["db"]},
                {"name": "load", "template": POD, "dependsOn": ["extract"], "tags": [], "retries": 3},
            ],
            "scheduledStart": "2026-01-01T00:00:00Z",
            "priority": 10,
            "retries": 1,
            "retryDelaySeconds": 30,
            "timeoutSeconds": 600,
            "ttlSecondsAfterFinished": 3600,
            "cancel": False,
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {
                    "type": "Admitted",
                    "status": "True",
                    "reason": "SlotsFree",
                    "message": "admitted",
                    "lastTransitionTime": "2026-01-01T00:00:05Z",
                    "observedGeneration": 2,
                }
            ],
            "observedGeneration": 2,
            "attempt": 1,
            "startTime": "2026-01-01T00:00:05Z",
            "waitingFor": [],
            "taskRuns": [
                {
                    "name": "extract",
                    "phase": "Running",
                    "attempt": 1,
                    "jobName": "etl-1-extract-1",
                    "startTime": "2026-01-01T00:00:05Z",
                    "waitingFor": [],
                },
                {
                    "name": "load",
                    "phase": "Pending",
                    "attempt": 0,
                    "reason": "DependenciesNotDone",
                    "waitingFor": [{"name": "db", "position": 2, "inUse": 1, "limit": 1}],
                },
            ],
        },
    }


# ------------------------------------------------------------------------------------------ FlowRun


def test_flowrun_parses_raw_object() -> None:
    run = FlowRun.model_validate(raw_flowrun())
    assert run.name == "etl-1"
    assert run.namespace == "default"
    assert run.labels == {"team": "data"}
    spec = run.spec
    assert spec.flow == "etl"
    assert spec.parameters["nested"] == {"x": [1, None]}
    assert spec.template is None
    assert spec.tasks is not None and [t.name for t in spec.tasks] == ["extract", "load"]
    assert spec.tasks[1].depends_on == ["extract"]
    assert spec.tasks[0].tags == ["db"]
    assert spec.scheduled_start == T0
    assert spec.scheduled_start is not None and spec.scheduled_start.tzinfo is not None
    assert (spec.priority, spec.retries, spec.retry_delay_seconds) == (10, 1, 30)
    assert (spec.timeout_seconds, spec.ttl_seconds_after_finished) == (600, 3600)
    status = run.status
    assert status.phase is FlowRunPhase.RUNNING
    assert status.condition("Admitted") is not None
    assert status.condition("Admitted").status is ConditionStatus.TRUE  # type: ignore[union-attr]
    load = status.task_run("load")
    assert load is not None and load.phase is TaskRunPhase.PENDING
    assert load.waiting_for[0].in_use == 1
    assert status.task_run("missing") is None


def test_flowrun_round_trip_is_lossless() -> None:
    raw = raw_flowrun()
    assert FlowRun.model_validate(raw).to_api() == raw
    # Sub-objects too, from the spec/status dicts the handlers get.
    assert FlowRunSpec.model_validate(raw["spec"]).to_api() == raw["spec"]
    assert FlowRunStatus.model_validate(raw["status"]).to_api() == raw["status"]


def test_unknown_fields_are_ignored() -> None:
    raw = raw_flowrun()
    raw["spec"]["somethingNew"] = 1
    raw["status"]["kopf"] = {"progress": {}}
    run = FlowRun.model_validate(raw)
    assert "somethingNew" not in run.spec.to_api()
    assert "kopf" not in run.status.to_api()


def test_spec_defaults_and_missing_status() -> None:
    run = FlowRun.model_validate({"metadata": {"name": "a"}, "spec": {"flow": "f", "template": POD}, "status": None})
    spec = run.spec
    assert spec.parameters == {}
    assert (spec.priority, spec.retries, spec.retry_delay_seconds, spec.cancel) == (0, 0, 0, False)
    assert spec.tasks is None and spec.timeout_seconds is None and spec.ttl_seconds_after_finished is None
    assert run.status == FlowRunStatus()
    assert run.status.phase is None and not run.status.is_terminal
    assert run.api_version == API_VERSION and run.kind == "FlowRun"
    dumped = spec.to_api()
    assert "tasks" not in dumped and "scheduledStart" not in dumped
    assert dumped["retryDelaySeconds"] == 0
    assert spec.template is not None
    assert spec.template.to_api() == POD


def test_task_defaults_and_retries_inheritance() -> None:
    task = Task.model_validate({"name": "a", "template": {"spec": {}}})
    assert task.depends_on == [] and task.tags == [] and task.retries is None
    spec = FlowRunSpec(flow="f", tasks=[task, Task(name="b", template=task.template, retries=0)], retries=4)
    assert spec.task_retries(spec.tasks[0]) == 4  # type: ignore[index]
    assert spec.task_retries(spec.tasks[1]) == 0  # type: ignore[index]
    assert spec.task("b") is not None and spec.task("zzz") is None


def test_construct_by_python_names_dumps_camel_case() -> None:
    spec = FlowRunSpec(flow="f", template=None, retry_delay_seconds=5, ttl_seconds_after_finished=10)
    assert spec.to_api() == {
        "flow": "f",
        "parameters": {},
        "priority": 0,
        "retries": 0,
        "retryDelaySeconds": 5,
        "ttlSecondsAfterFinished": 10,
        "cancel": False,
    }
    assert spec.to_api(exclude_none=False)["timeoutSeconds"] is None


@pytest.mark.parametrize(
    "patch",
    [
        {"flow": ""},
        {"flow": "-bad"},
        {"flow": "x" * 64},
        {"priority": 1001},
        {"retries": 11},
        {"retryDelaySeconds": -1},
        {"timeoutSeconds": 0},
        {"tasks": [{"name": "Bad_Name", "template": {"spec": {}}}]},
        {"tasks": [{"name": "a", "template": {"metadata": {}}}]},
        {"tasks": [{"name": "a", "template": {"spec": {}}, "tags": [""]}]},
        {"scheduledStart": "not a time"},
    ],
)
def test_schema_constraints_are_enforced_in_python(patch: dict[str, Any]) -> None:
    spec = {"flow": "ok", "template": {"spec": {}}, **patch}
    with pytest.raises(ValidationError):
        FlowRunSpec.model_validate(spec)


def _spec(**kw: Any) -> FlowRunSpec:
    return FlowRunSpec.model_validate({"flow": "f", **kw})


def _task(name: str, *deps: str) -> dict[str, Any]:
    return {"name": name, "template": {"spec": {}}, "dependsOn": list(deps)}


def test_spec_validation_errors_mirror_cel_rules() -> None:
    assert _spec(template={"spec": {}}).validation_errors() == []
    assert _spec(tasks=[_task("a"), _task("b", "a")]).validation_errors() == []
    assert _spec().validation_errors() == ["exactly one of spec.template or spec.tasks must be set"]
    both = _spec(template={"spec": {}}, tasks=[_task("a")])
    assert both.validation_errors() == ["exactly one of spec.template or spec.tasks must be set"]
    assert _spec(tasks=[_task("a"), _task("a")]).validation_errors() == [
        "spec.tasks[].name must be unique within the run"
    ]
    assert _spec(tasks=[_task("a", "a")]).validation_errors() == ["task 'a' cannot depend on itself"]
    assert _spec(tasks=[_task("a", "x", "y")]).validation_errors() == ["task 'a' depends on unknown task(s): x, y"]


# --------------------------------------------------------------------------------------------- times


def test_times_are_rfc3339_utc_on_the_wire() -> None:
    cond = Condition(
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="Done",
        last_transition_time=datetime(2026, 1, 1, 2, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
    )
    assert cond.to_api()["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    naive = Condition(type="Ready", status="True", reason="Done", last_transition_time=datetime(2026, 1, 1))
    assert naive.last_transition_time == T0
    parsed = Condition.model_validate(
        {"type": "Ready", "status": "True", "reason": "Done", "lastTransitionTime": "2026-01-01T01:00:00+01:00"}
    )
    assert parsed.last_transition_time == T0
    assert parsed.last_transition_time is not None and parsed.last_transition_time.utcoffset() == timedelta(0)
    assert format_time(T0) == "2026-01-01T00:00:00Z"
    assert parse_time("2026-01-01T00:00:00Z") == T0
    # model_dump() in python mode keeps datetimes (and uses the wire names).
    assert isinstance(cond.model_dump()["lastTransitionTime"], datetime)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0s"), (0.4, "0s"), (45, "45s"), (63, "1m3s"), (3600, "1h0m0s"), (3725, "1h2m5s"), (-5, "0s")],
)
def test_format_duration(value: float, text: str) -> None:
    assert format_duration(value) == text
    assert format_duration(timedelta(seconds=value)) == text


# -------------------------------------------------------------------------------------------- phases


def test_phase_helpers() -> None:
    terminal = {"Succeeded", "Failed", "Cancelled"}
    for phase in FlowRunPhase:
        assert is_terminal(phase) is (phase.value in terminal)
        assert phase.is_terminal is (phase.value in terminal)
    for task_phase in TaskRunPhase:
        assert is_terminal(task_phase) is (task_phase.value in terminal | {"Skipped"})
        assert task_phase.is_terminal is is_terminal(task_phase)
    assert "Skipped" not in {p.value for p in FlowRunPhase}
    assert [p.value for p in FlowRunPhase] == [p.value for p in TaskRunPhase][:-1]
    assert is_terminal(None) is False
    assert is_terminal("Failed") is True and is_terminal("Running") is False
    assert TaskRun(name="a").phase is TaskRunPhase.PENDING
    assert TaskRun(name="a", phase=TaskRunPhase.SKIPPED).is_terminal
    assert FlowRunStatus(phase=FlowRunPhase.CANCELLED).is_terminal
    assert FlowRunPhase("Running") is FlowRunPhase.RUNNING and str(FlowRunPhase.RUNNING) == "Running"


# ---------------------------------------------------------------------------------------- conditions


def _cond(status: str = "False", reason: str = "Waiting", message: str = "", gen: int | None = 1) -> Condition:
    return Condition.model_validate(
        {"type": "Admitted", "status": status, "reason": reason, "message": message, "observedGeneration": gen}
    )


def test_set_condition_appends_new_type_with_now() -> None:
    other = Condition(type="Other", status=ConditionStatus.TRUE, reason="X", last_transition_time=T0)
    result = set_condition([other], _cond(), now=T0 + timedelta(minutes=1))
    assert [c.type for c in result] == ["Other", "Admitted"]
    assert result[1].last_transition_time == T0 + timedelta(minutes=1)
    assert result[0] is other


def test_set_condition_keeps_transition_time_when_status_unchanged() -> None:
    first = set_condition([], _cond(), now=T0)
    second = set_condition(first, _cond(reason="LimitReached", message="2/2 in use", gen=2), now=T0 + timedelta(1))
    assert len(second) == 1
    cond = second[0]
    assert cond.last_transition_time == T0
    assert (cond.reason, cond.message, cond.observed_generation) == ("LimitReached", "2/2 in use", 2)
    # The input list and its items are untouched.
    assert first[0].reason == "Waiting" and first[0].observed_generation == 1


def test_set_condition_keeps_an_unchanged_condition_as_it_is() -> None:
    first = set_condition([], _cond(), now=T0)
    again = set_condition(first, _cond(), now=T0 + timedelta(minutes=5))
    assert again[0] is first[0] and again[0].last_transition_time == T0
    # Any other difference makes a new item.
    for changed in (_cond(reason="Other"), _cond(message="m"), _cond(gen=2), _cond(status="True")):
        assert set_condition(first, changed, now=T0 + timedelta(minutes=5))[0] is not first[0]


def test_set_condition_moves_transition_time_when_status_changes() -> None:
    first = set_condition([], _cond(), now=T0)
    later = T0 + timedelta(seconds=30)
    changed = set_condition(first, _cond(status="True", reason="Admitted"), now=later)
    assert changed[0].status is ConditionStatus.TRUE and changed[0].last_transition_time == later
    explicit = _cond(status="Unknown", reason="Lost").model_copy(update={"last_transition_time": T0})
    assert set_condition(changed, explicit, now=later)[0].last_transition_time == T0


def test_find_and_remove_condition() -> None:
    conds = set_condition([], _cond(), now=T0)
    assert find_condition(conds, "Admitted") is conds[0]
    assert find_condition(conds, "Nope") is None
    assert remove_condition(conds, "Admitted") == []
    assert conds[0].to_api() == {
        "type": "Admitted",
        "status": "False",
        "reason": "Waiting",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }


@pytest.mark.parametrize("reason", ["", "has space", "1Starts", "Ends-"])
def test_condition_reason_must_be_camel_case(reason: str) -> None:
    with pytest.raises(ValidationError):
        _cond(reason=reason)


# ------------------------------------------------------------------------------------ label selector

LABELS = {"team": "data", "tier": "gold", "env": "prod"}


def _sel(raw: dict[str, Any]) -> LabelSelector:
    return LabelSelector.model_validate(raw)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        ({"matchLabels": {}, "matchExpressions": []}, True),
        ({"matchLabels": {"team": "data"}}, True),
        ({"matchLabels": {"team": "data", "env": "prod"}}, True),
        ({"matchLabels": {"team": "web"}}, False),
        ({"matchLabels": {"missing": "x"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["silver"]}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "In", "values": ["x"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["silver"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "missing", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"team": "data"},
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod"]},
                    {"key": "tier", "operator": "Exists"},
                ],
            },
            True,
        ),
        (
            {
                "matchLabels": {"team": "data"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}],
            },
            False,
        ),
        # Invalid selectors match nothing.
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": []}]}, False),
        ({"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["prod"]}]}, False),
    ],
)
def test_label_selector_matches(selector: dict[str, Any], expected: bool) -> None:
    assert _sel(selector).matches(LABELS) is expected


def test_empty_selector_matches_objects_without_labels() -> None:
    assert LabelSelector().matches({}) and LabelSelector().is_empty
    assert not _sel({"matchLabels": {"a": "b"}}).matches({})
    assert LabelSelector.from_labels({"a": "b"}).matches({"a": "b", "c": "d"})


def test_label_selector_validation_errors() -> None:
    assert _sel({"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}).validation_errors() == []
    errors = _sel(
        {
            "matchExpressions": [
                {"key": "a", "operator": "NotIn"},
                {"key": "b", "operator": "DoesNotExist", "values": ["x"]},
            ]
        }
    ).validation_errors()
    assert len(errors) == 2 and "NotIn" in errors[0] and "DoesNotExist" in errors[1]
    with pytest.raises(ValidationError):
        _sel({"matchExpressions": [{"key": "a", "operator": "Like", "values": ["x"]}]})


def test_label_selector_round_trip() -> None:
    raw = {"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "k", "operator": "Exists", "values": []}]}
    sel = _sel(raw)
    assert sel.match_expressions is not None
    assert sel.match_expressions[0].operator is SelectorOperator.EXISTS
    assert sel.to_api() == raw
    req = LabelSelectorRequirement(key="k", operator=SelectorOperator.IN, values=["v"])
    assert req.to_api() == {"key": "k", "operator": "In", "values": ["v"]}


# ---------------------------------------------------------------------------------- ConcurrencyLimit


def test_concurrency_limit_parse_and_round_trip() -> None:
    raw = {
        "apiVersion": API_VERSION,
        "kind": "ConcurrencyLimit",
        "metadata": {"name": "gpu", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"gpu": "true"}}, "limit": 2},
        "status": {
            "inUse": 2,
            "pending": 3,
            "active": ["run-a", "run-b"],
            "conditions": [],
            "observedGeneration": 1,
        },
    }
    limit = ConcurrencyLimit.model_validate(copy.deepcopy(raw))
    assert limit.name == "gpu" and limit.namespace == "default"
    assert limit.spec.limit == 2 and limit.spec.tag is None
    assert limit.status.in_use == 2 and limit.status.active == ["run-a", "run-b"]
    assert limit.to_api() == raw
    assert limit.spec.matches_run({"gpu": "true"}) and not limit.spec.matches_run({})
    assert not limit.spec.matches_task(["gpu"])
    assert limit.status.condition("Ready") is None


def test_concurrency_limit_defaults_and_validation() -> None:
    limit = ConcurrencyLimit.model_validate({"spec": {"tag": "gpu", "limit": 0}})
    assert limit.status.in_use == 0 and limit.status.pending == 0 and limit.status.active == []
    assert limit.spec.matches_task(["db", "gpu"]) and not limit.spec.matches_task([])
    assert not limit.spec.matches_run({"gpu": "true"})
    assert limit.spec.validation_errors() == []
    neither = ConcurrencyLimitSpec(limit=1)
    assert neither.validation_errors() == ["exactly one of spec.selector or spec.tag must be set"]
    both = ConcurrencyLimitSpec(limit=1, tag="x", selector=LabelSelector())
    assert both.validation_errors() == ["exactly one of spec.selector or spec.tag must be set"]
    bad_sel = ConcurrencyLimitSpec.model_validate(
        {"limit": 1, "selector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}
    )
    assert len(bad_sel.validation_errors()) == 1
    for bad in ({"tag": "x", "limit": -1}, {"tag": "", "limit": 1}, {"tag": "x"}):
        with pytest.raises(ValidationError):
            ConcurrencyLimitSpec.model_validate(bad)
