"""The simulation is deterministic: a scenario with delays, faults and crashes replays identically."""

from __future__ import annotations

import hashlib
import json
import logging

from sim.api import FLOWRUNS, JOBS
from sim.harness import Harness
from sim.scenario import FOREVER, Action, LimitDef, RunDef, Scenario, TaskDef


def setup_module() -> None:
    logging.getLogger("flowrun_operator").setLevel(logging.CRITICAL)


SCENARIO = Scenario(
    runs=(
        RunDef("a", team="red", run_for=FOREVER, retries=1),
        RunDef("b", team="red", run_for=3.0, failing_attempts=1, retries=2, retry_delay=1),
        RunDef("c", namespace="ns-b", tasks=(TaskDef("x", tags=("db",)), TaskDef("y", depends_on=("x",))), run_for=2.0),
        RunDef("a-x", team="blue", scheduled_in=3, run_for=1.0),
    ),
    limits=(LimitDef("red", "ns-a", 1, team="red"), LimitDef("db", "ns-b", 1, tag="db")),
    actions=(
        Action(0.0, "create_limit", 0),
        Action(0.0, "create_limit", 1),
        *(Action(0.0, "create_run", i) for i in range(4)),
        Action(2.0, "drop_watch", "jobs"),
        Action(4.0, "crash"),
        Action(6.0, "cancel", 0),
        Action(8.0, "set_limit", 0, 2),
        Action(10.0, "cancel", 1),
        Action(12.0, "delete_run", 2),
        Action(14.0, "recreate_run", 2),
    ),
    seed=42,
    max_delay=0.3,
    coalesce=True,
    fault_rate=0.1,
    fault_kinds=("500", "429", "timeout_after", "reset"),
    crash_rate=0.02,
    grace=2.0,
    latency=0.01,
)


def trace(harness: Harness) -> str:
    api = harness.api
    state = {
        "rv": api.rv,
        "calls": api.calls,
        "events": api.events,
        "jobs": [(r.key, r.created, r.attempt, r.outcome, r.pod.state, r.pod.ended_at) for r in api.jobs],
        "objects": {kind: sorted(api.objects[kind].items()) for kind in (FLOWRUNS, JOBS)},
        "violations": api.violations,
        "time": harness.loop.time(),
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def test_a_scenario_replays_identically() -> None:
    first, second = Harness(SCENARIO), Harness(SCENARIO)
    first.run()
    second.run()
    assert first.api.calls > 50 and first.incarnations >= 2  # delays, faults and a crash were exercised
    assert trace(first) == trace(second)
