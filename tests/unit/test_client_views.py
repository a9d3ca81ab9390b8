"""Unit tests of the client's pure parts: views of runs, Jobs, Events and limits, the waiting line, the
dependency order, and the selectors the client sends. No cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowrun_operator.client.errors import InvalidState, NoLogs
from flowrun_operator.client.flowruns import field_selector, label_selector, until_predicate
from flowrun_operator.client.views import (
    MAIN_TASK,
    EventView,
    FlowRunView,
    LimitView,
    attempt_from_job,
    check_cancel,
    dependency_order,
    next_rerun,
    resolve_task,
    waiting_line,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TEMPLATE: dict[str, Any] = {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(
    name: str,
    *,
    created: float = 100,
    priority: int = 0,
    tasks: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
) -> FlowRunView:
    spec: dict[str, Any] = {"flow": "etl", "priority": priority}
    if tasks is None:
        spec["template"] = TEMPLATE
    else:
        spec["tasks"] = [{"template": TEMPLATE, **t} for t in tasks]
    obj = {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": ts(created), "resourceVersion": "7"},
        "spec": spec,
        "status": status or {},
    }
    return FlowRunView.from_api(obj)


def waiting(limit: str, position: int, *, since: float = 50) -> dict[str, Any]:
    return {
        "phase": "Pending",
        "waitingFor": [{"name": limit, "position": position, "inUse": 2, "limit": 2}],
        "conditions": [
            {
                "type": "Admitted",
                "status": "False",
                "reason": "ConcurrencyLimitReached",
                "message": "waiting",
                "lastTransitionTime": ts(since),
            }
        ],
    }


def test_view_of_a_dag_run_lists_task_runs_in_spec_order_with_their_graph() -> None:
    view = run(
        "etl",
        tasks=[
            {"name": "extract", "tags": ["db"]},
            {"name": "load", "dependsOn": ["extract"], "retries": 2},
        ],
        status={
            "phase": "Running",
            "attempt": 1,
            "taskRuns": [{"name": "extract", "phase": "Succeeded", "attempt": 1, "jobName": "etl-extract-1"}],
        },
    )

    assert (view.name, view.namespace, view.flow, str(view.phase), view.resource_version) == (
        "etl",
        "ns",
        "etl",
        "Running",
        "7",
    )
    assert view.has_tasks and not view.finished
    extract, load = view.task_runs
    assert (extract.name, extract.phase, extract.attempt, extract.tags) == ("extract", "Succeeded", 1, ("db",))
    assert (load.phase, load.depends_on, load.retries) == (None, ("extract",), 2)
    assert load.message == "no task run reported in the status"
    assert view.to_dict()["taskRuns"][1]["dependsOn"] == ["extract"]


def test_view_of_a_run_without_tasks_has_the_main_task_run() -> None:
    view = run("hello", status={"phase": "Failed", "attempt": 2, "jobName": "hello-2", "reruns": 1})

    (main,) = view.task_runs
    assert (main.name, main.phase, main.attempt, main.job_name) == (MAIN_TASK, "Failed", 2, "hello-2")
    assert view.finished and view.reruns == 1


def test_a_malformed_status_is_reported_not_raised() -> None:
    view = run("bad", status={"attempt": "many"})

    assert view.phase is None
    assert view.status_error is not None and "1 invalid field" in view.status_error


def test_dependency_order_puts_every_task_after_its_dependencies() -> None:
    view = run(
        "dag",
        tasks=[
            {"name": "load", "dependsOn": ["clean", "enrich"]},
            {"name": "enrich", "dependsOn": ["extract"]},
            {"name": "extract"},
            {"name": "clean", "dependsOn": ["extract"]},
        ],
    )

    assert [t.name for t in dependency_order(view.task_runs)] == ["extract", "enrich", "clean", "load"]


def test_dependency_order_puts_a_cycle_last() -> None:
    view = run("cyc", tasks=[{"name": "a", "dependsOn": ["b"]}, {"name": "b", "dependsOn": ["a"]}, {"name": "c"}])

    assert [t.name for t in dependency_order(view.task_runs)] == ["c", "a", "b"]


def test_waiting_line_follows_positions_then_admission_order() -> None:
    runs = [
        run("late", created=10, status=waiting("gpu", 3)),
        run("first", created=30, status=waiting("gpu", 1)),
        # Two runs briefly at the same position: the higher priority, then the older, goes first.
        run("old", created=90, status=waiting("gpu", 2)),
        run("urgent", created=5, priority=10, status=waiting("gpu", 2)),
        run("other-limit", status=waiting("db", 1)),
        run(
            "done",
            status={"phase": "Succeeded", "waitingFor": [{"name": "gpu", "position": 1, "inUse": 0, "limit": 2}]},
        ),
    ]

    line = waiting_line("gpu", runs)

    assert [w.run for w in line] == ["first", "urgent", "old", "late"]
    assert [w.position for w in line] == [1, 2, 2, 3]
    assert line[0].waited(NOW) == 50.0  # since the Admitted condition turned False


def test_waiting_line_of_a_tag_limit_lists_task_runs() -> None:
    view = run(
        "etl",
        tasks=[{"name": "extract"}, {"name": "load", "dependsOn": ["extract"], "tags": ["db"]}],
        status={
            "phase": "Running",
            "startTime": ts(80),
            "taskRuns": [
                {"name": "extract", "phase": "Succeeded", "attempt": 1, "completionTime": ts(20)},
                {
                    "name": "load",
                    "phase": "Pending",
                    "waitingFor": [{"name": "db", "position": 1, "inUse": 1, "limit": 1}],
                },
            ],
        },
    )
    limit = LimitView.from_api(
        {"metadata": {"name": "db", "namespace": "ns"}, "spec": {"tag": "db", "limit": 1}, "status": {"inUse": 1}},
        [view],
    )

    (waiter,) = limit.waiting
    assert (waiter.run, waiter.task, waiter.key) == ("etl", "load", "etl/load")
    assert waiter.waited(NOW) == 20.0  # from when its dependency finished
    assert limit.selects == "task runs tagged db"
    assert limit.to_dict(NOW)["waiting"][0]["waitedSeconds"] == 20.0


def test_limit_view_summarizes_its_selector_and_holders() -> None:
    limit = LimitView.from_api(
        {
            "metadata": {"name": "gpu", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"team": "ml"}}, "limit": 2},
            "status": {"inUse": 2, "pending": 1, "active": ["a", "b"]},
        }
    )

    assert (limit.limit, limit.in_use, limit.pending, limit.holders) == (2, 2, 1, ["a", "b"])
    assert limit.selects == "runs with team=ml"


def test_attempt_from_a_failed_job() -> None:
    job = {
        "metadata": {
            "name": "etl-load-2",
            "creationTimestamp": ts(30),
            "labels": {"flowrun.io/task": "load", "flowrun.io/attempt": "2"},
        },
        "status": {
            "startTime": ts(29),
            "conditions": [
                {"type": "FailureTarget", "status": "True", "lastTransitionTime": ts(21)},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": ts(20)},
            ],
        },
    }

    attempt = attempt_from_job(job)

    assert (attempt.task, attempt.attempt, attempt.outcome, attempt.reason) == (
        "load",
        2,
        "Failed",
        "BackoffLimitExceeded",
    )
    assert attempt.completion_time == NOW - timedelta(seconds=20)
    running = attempt_from_job({"metadata": {"name": "x-1", "labels": {}}, "status": {"startTime": ts(3)}})
    assert (running.task, running.outcome, running.completion_time) == (MAIN_TASK, "Running", None)


def test_event_view_reads_core_and_events_api_fields() -> None:
    core = EventView.from_api(
        {
            "type": "Normal",
            "reason": "Admitted",
            "message": "m",
            "count": 3,
            "firstTimestamp": ts(9),
            "lastTimestamp": ts(1),
        }
    )
    new = EventView.from_api(
        {"type": "Warning", "reason": "Failed", "note": "n", "eventTime": "2026-03-01T11:59:58.123456Z"}
    )

    assert (core.count, core.first_time, core.last_time) == (3, NOW - timedelta(seconds=9), NOW - timedelta(seconds=1))
    assert (new.message, new.count, new.first_time) == ("n", 1, new.last_time)


def test_actions_refuse_runs_in_the_wrong_state() -> None:
    assert check_cancel(run("r", status={"phase": "Running"})) is True
    with pytest.raises(InvalidState, match="already finished"):
        check_cancel(run("r", status={"phase": "Succeeded"}))
    assert next_rerun(run("r", status={"phase": "Failed", "reruns": 2})) == 3
    with pytest.raises(InvalidState, match="is still Running"):
        next_rerun(run("r", status={"phase": "Running"}))
    with pytest.raises(NoLogs) as caught:
        resolve_task(run("d", tasks=[{"name": "a"}]), None)
    assert caught.value.code == 2


def test_selectors_and_wait_conditions() -> None:
    assert field_selector(flow="etl", phase="Running") == "spec.flow=etl,status.phase=Running"
    assert field_selector(name="x") == "metadata.name=x"
    assert field_selector() == ""
    assert label_selector({"team": "ml", "tier": "a"}) == "team=ml,tier=a"
    assert label_selector("team in (ml)") == "team in (ml)"
    assert label_selector({}) is None

    succeeded = run("r", status={"phase": "Succeeded"})
    failed = run("r", status={"phase": "Failed"})
    assert until_predicate(None)(failed)
    assert until_predicate("Succeeded")(succeeded) and not until_predicate("Succeeded")(failed)
    assert until_predicate(["Failed", "Cancelled"])(failed)
    with pytest.raises(ValueError):
        until_predicate("Done")
