"""The FlowSchedule controller's pure parts: a schedule's runs, its history, the run a time gets, the CLI table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flowrun_operator.cli.schedules import schedules_table
from flowrun_operator.schedules.runs import (
    beyond_history,
    build_run,
    last_successful,
    latest_tick,
    manual_run_name,
    run_info,
    unfinished,
)

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run(name: str, tick: datetime | None, phase: str | None, **extra: Any) -> dict[str, Any]:
    annotations = {"flowrun.io/scheduled-time": ts(tick)} if tick else {"flowrun.io/trigger": "manual"}
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if extra.get("completed"):
        status["completionTime"] = ts(extra["completed"])
    meta: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "labels": {"flowrun.io/schedule": "s"},
        "annotations": annotations,
        "creationTimestamp": ts(extra.get("created") or tick or T0),
    }
    if extra.get("deleting"):
        meta["deletionTimestamp"] = ts(T0)
    return {"metadata": meta, "spec": {"cancel": bool(extra.get("cancel"))}, "status": status}


SCHEDULE: dict[str, Any] = {
    "apiVersion": "flowrun.io/v1alpha1",
    "kind": "FlowSchedule",
    "metadata": {"name": "nightly", "namespace": "data", "uid": "sched-uid", "creationTimestamp": ts(T0)},
    "spec": {
        "interval": "1h",
        "timeZone": "UTC",
        "flowRunTemplate": {
            "metadata": {"labels": {"team": "data"}, "annotations": {"note": "x"}},
            "spec": {"flow": "etl", "cancel": False, "template": {"spec": {"containers": [{"name": "main"}]}}},
        },
    },
}


def test_run_info_reads_only_labelled_runs() -> None:
    assert run_info({"metadata": {"name": "x", "labels": {}}}) is None
    info = run_info(run("s-1", T0, "Running"))
    assert info is not None
    assert (info.name, info.schedule, info.tick, info.phase, info.unfinished) == ("s-1", "s", T0, "Running", True)
    manual = run_info(run("s-m1", None, None))
    assert manual is not None and manual.tick is None and manual.unfinished


def test_unfinished_latest_tick_and_last_success() -> None:
    infos = [
        run_info(run("a", T0, "Succeeded", completed=T0 + timedelta(minutes=5))),
        run_info(run("b", T0 + timedelta(hours=1), "Failed", completed=T0 + timedelta(hours=1, minutes=1))),
        run_info(run("c", T0 + timedelta(hours=2), "Pending")),
        run_info(run("d", T0 + timedelta(hours=3), None)),
        run_info(run("e", T0 + timedelta(hours=4), "Running", deleting=True)),
        run_info(run("m", None, "Running", created=T0 + timedelta(hours=9))),
    ]
    runs = [i for i in infos if i is not None]
    assert [r.name for r in unfinished(runs)] == ["c", "d", "m"]
    assert latest_tick(runs) == T0 + timedelta(hours=4)
    assert last_successful(runs) == T0 + timedelta(minutes=5)


def test_history_keeps_the_newest_of_each_kind() -> None:
    infos = [run_info(run(f"ok{i}", T0 + timedelta(hours=i), "Succeeded")) for i in range(5)]
    infos += [run_info(run(f"bad{i}", T0 + timedelta(hours=i, minutes=30), "Failed")) for i in range(3)]
    infos += [run_info(run("gone", T0 + timedelta(hours=6), "Cancelled"))]
    infos += [run_info(run("busy", T0 - timedelta(hours=1), "Running"))]
    runs = [i for i in infos if i is not None]
    doomed = sorted(r.name for r in beyond_history(runs, successful_limit=2, failed_limit=1))
    # Cancelled counts with failed: "gone" is the newest of those, so every "bad" run goes.
    assert doomed == ["bad0", "bad1", "bad2", "ok0", "ok1", "ok2"]
    assert sorted(r.name for r in beyond_history(runs, 0, 0)) == sorted(r.name for r in runs if r.name != "busy")


def test_the_run_of_a_time() -> None:
    tick = T0 + timedelta(hours=3)
    body = build_run(SCHEDULE, tick)
    assert body["metadata"]["name"] == f"nightly-{int(tick.timestamp())}"
    assert body["metadata"]["namespace"] == "data"
    assert body["metadata"]["labels"] == {"team": "data", "flowrun.io/schedule": "nightly"}
    assert body["metadata"]["annotations"] == {"note": "x", "flowrun.io/scheduled-time": ts(tick)}
    assert body["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "flowrun.io/v1alpha1",
            "kind": "FlowSchedule",
            "name": "nightly",
            "uid": "sched-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert body["spec"] == {
        "flow": "etl",
        "template": {"spec": {"containers": [{"name": "main"}]}},
        "scheduledStart": ts(tick),
    }
    # The template is copied, never shared with the run.
    body["spec"]["template"]["spec"]["containers"].append({})
    assert len(SCHEDULE["spec"]["flowRunTemplate"]["spec"]["template"]["spec"]["containers"]) == 1


def test_a_run_triggered_by_hand() -> None:
    name = manual_run_name("nightly", T0)
    assert name == f"nightly-m{int(T0.timestamp())}" and name != build_run(SCHEDULE, T0)["metadata"]["name"]
    body = build_run(SCHEDULE, None, name)
    assert body["metadata"]["name"] == name
    assert body["metadata"]["annotations"] == {"note": "x", "flowrun.io/trigger": "manual"}
    assert "scheduledStart" not in body["spec"]


def test_cli_table() -> None:
    now = T0 + timedelta(minutes=30)
    items = [
        {
            **SCHEDULE,
            "status": {
                "lastScheduleTime": ts(T0),
                "nextScheduleTime": ts(T0 + timedelta(hours=1)),
                "activeCount": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Scheduled"}],
            },
        },
        {
            "metadata": {"name": "broken"},
            "spec": {"schedule": "61 * * * *", "timeZone": "Europe/Berlin", "concurrencyPolicy": "Forbid"},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSchedule"}]},
        },
        {"metadata": {"name": "paused"}, "spec": {"schedule": "@daily", "suspend": True}, "status": {}},
    ]
    lines = schedules_table(items, now).splitlines()
    assert lines[0].split() == ["NAME", "SCHEDULE", "TIMEZONE", "POLICY", "SUSPEND", "ACTIVE", "LAST", "NEXT"]
    assert lines[1].split() == [
        "broken",
        "61",
        "*",
        "*",
        "*",
        "*",
        "Europe/Berlin",
        "Forbid",
        "False",
        "0",
        "-",
        "-",
        "(InvalidSchedule)",
    ]
    assert lines[2].split() == [
        "nightly",
        "every",
        "1h",
        "UTC",
        "Allow",
        "False",
        "1",
        "30m",
        "ago",
        "2026-06-01T11:00:00Z",
        "(in",
        "30m)",
    ]
    assert lines[3].split()[0] == "paused" and lines[3].split()[-1] == "suspended"


def test_the_example_schedules_are_valid() -> None:
    from pathlib import Path

    import yaml

    from flowrun_operator.api.flowschedule import FlowSchedule
    from flowrun_operator.scheduling.schedule import build_schedule

    path = Path(__file__).resolve().parents[2] / "examples" / "flowschedules.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert [d["metadata"]["name"] for d in docs] == ["nightly-report", "sync"]
    for doc in docs:
        spec = FlowSchedule.model_validate(doc).spec
        build_schedule(schedule=spec.schedule, interval=spec.interval, time_zone=spec.time_zone, anchor=T0)
        assert not spec.flow_run_template.spec.validation_errors()
