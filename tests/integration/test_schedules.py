"""FlowSchedules on the real control plane, with the operator as a real process. An independent watch of the
namespace's FlowRuns (support.schedules.RunWatcher) sees every run from before the schedule exists to the end
of the test, so "no run", "one run" and "one at a time" are proven over the whole window."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flowrun_operator.cli import app
from support.flowruns import selector_limit
from support.kube import Cluster, Kubectl, wait_for
from support.operator import JobWatcher, OperatorProcess
from support.schedules import TICK_ANNOTATION, RunWatcher, SeenRun, flowschedule, parse, wait_until

pytestmark = pytest.mark.integration

# A run appears this soon after its time (the benchmark measures the distribution; this is a generous bound).
ON_TIME = 1.0


def fmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def runs(cluster: Cluster, namespace: str) -> Iterator[RunWatcher]:
    with RunWatcher(cluster.kubeconfig, namespace) as watching:
        yield watching
        watching.check()


def get_schedule(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kubectl.json("get", "flowschedule", name, namespace=namespace)
    return found


def anchor_of(kubectl: Kubectl, namespace: str, name: str) -> datetime:
    return parse(get_schedule(kubectl, namespace, name)["metadata"]["creationTimestamp"])


def condition(obj: dict[str, Any], type_: str = "Ready") -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def events(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json(
        "get", "events", "--field-selector", f"involvedObject.name={name}", namespace=namespace
    )["items"]
    return items


def wait_event(kubectl: Kubectl, namespace: str, name: str, reason: str, timeout: float = 15) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: next((e for e in events(kubectl, namespace, name) if e["reason"] == reason), None),
        timeout=timeout,
        message=f"Event {reason} on {name}",
    )
    return found


def ticked(watched: list[SeenRun]) -> list[SeenRun]:
    return sorted((r for r in watched if r.tick is not None), key=lambda r: r.tick or datetime.min)


def suspend(kubectl: Kubectl, namespace: str, *names: str) -> None:
    for name in names:
        kubectl("patch", "flowschedule", name, "--type=merge", "-p", '{"spec":{"suspend":true}}', namespace=namespace)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> CliResult:
    """``kubectl flowrun ARGS`` in this process (the real command against the real API server, without the
    interpreter start-up of a subprocess); the kubeconfig is $KUBECONFIG, set by the cluster fixture."""
    result = CliRunner().invoke(app, list(args))
    return CliResult(result.exit_code, result.stdout, result.stderr)


def test_interval_ticks_create_runs_on_time_and_bad_schedules_are_reported(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, runs: RunWatcher
) -> None:
    kubectl.apply(
        [
            flowschedule("every2", interval="2s", labels={"team": "a"}),
            flowschedule("badcron", schedule="61 * * * *"),
            flowschedule("badzone", schedule="@hourly", timeZone="Mars/Olympus_Mons"),
        ],
        namespace,
    )
    schedule = get_schedule(kubectl, namespace, "every2")
    anchor = parse(schedule["metadata"]["creationTimestamp"])
    ticks = [anchor + timedelta(seconds=2 * k) for k in (1, 2, 3)]
    wait_until(ticks[-1].timestamp() + 0.9)
    seen = ticked(runs.of("every2"))
    assert [r.tick for r in seen] == ticks
    for run, tick in zip(seen, ticks, strict=True):
        meta = run.body["metadata"]
        assert run.name == f"every2-{int(tick.timestamp())}"
        assert meta["labels"] == {"team": "a", "flowrun.io/schedule": "every2"}
        assert meta["annotations"][TICK_ANNOTATION] == fmt(tick)
        assert run.body["spec"]["scheduledStart"] == fmt(tick)
        owner = meta["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("FlowSchedule", "every2", schedule["metadata"]["uid"])
        assert 0 <= run.seen - tick.timestamp() < ON_TIME, f"{run.name} seen {run.seen - tick.timestamp():.3f}s late"
        assert timedelta(0) <= run.created - tick < timedelta(seconds=1)

    def status_caught_up() -> dict[str, Any] | None:
        status: dict[str, Any] = get_schedule(kubectl, namespace, "every2").get("status") or {}
        last = status.get("lastScheduleTime")
        if last is None or parse(last) < ticks[-1] or not status.get("lastSuccessfulTime"):
            return None
        return status

    status = wait_for(status_caught_up, timeout=15, message="every2's status after three runs")
    assert parse(status["nextScheduleTime"]) == parse(status["lastScheduleTime"]) + timedelta(seconds=2)
    assert status["skipped"] == 0 and status["observedGeneration"] == 1
    assert condition({"status": status})["reason"] == "Scheduled"
    created = wait_event(kubectl, namespace, "every2", "Created")
    assert created["message"].startswith("created run every2-")

    table = kubectl("get", "fsch", namespace=namespace).stdout
    header = table.splitlines()[0].split()
    assert header[:8] == ["NAME", "SCHEDULE", "INTERVAL", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "NEXT"]
    row = next(line.split() for line in table.splitlines() if line.startswith("every2 "))
    assert row[1:4] == ["2s", "UTC", "false"]

    # What CEL cannot tell is reported on the schedule itself; the schedules create nothing.
    for name, reason, text in (
        ("badcron", "InvalidSchedule", "Bad minute"),
        ("badzone", "InvalidTimeZone", "Mars/Olympus_Mons"),
    ):
        ready = wait_for(
            lambda name=name: condition(get_schedule(kubectl, namespace, name)) or None,  # type: ignore[misc]
            timeout=15,
            message=f"{name} Ready condition",
        )
        assert (ready["status"], ready["reason"]) == ("False", reason) and text in ready["message"]
        assert text in wait_event(kubectl, namespace, name, reason)["message"]
        assert not (get_schedule(kubectl, namespace, name).get("status") or {}).get("nextScheduleTime")
        assert runs.of(name) == []

    # What CEL and the schema can tell is refused by `kubectl apply`.
    def refused(body: dict[str, Any], text: str) -> None:
        result = kubectl("apply", "-f", "-", input=json.dumps(body), namespace=namespace, check=False)
        assert result.returncode != 0 and text in result.stderr, result.stderr

    refused(flowschedule("both", interval="1m", schedule="@daily"), "exactly one of spec.schedule or spec.interval")
    refused(flowschedule("neither"), "exactly one of spec.schedule or spec.interval")
    refused(flowschedule("zero", interval="0s"), "spec.interval must be at least 1s")
    refused(flowschedule("words", interval="5 minutes"), "spec.interval")
    refused(flowschedule("fields", schedule="* * *"), "spec.schedule")
    refused(flowschedule("queue", interval="1m", concurrencyPolicy="Queue"), "Unsupported value")
    refused(flowschedule("x" * 51, interval="1m"), "at most 50 characters")
    fixed = flowschedule("fixed", interval="1m")
    fixed["spec"]["flowRunTemplate"]["spec"]["scheduledStart"] = "2030-01-01T00:00:00Z"
    refused(fixed, "set by the schedule")


def test_forbid_skips_while_a_run_is_unfinished_and_replace_cancels_then_creates(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, runs: RunWatcher
) -> None:
    kubectl.apply(
        [
            flowschedule("forbid", interval="2s", duration=5, concurrencyPolicy="Forbid"),
            flowschedule("replace", interval="3s", duration=60, concurrencyPolicy="Replace"),
        ],
        namespace,
    )
    anchor = min(anchor_of(kubectl, namespace, "forbid"), anchor_of(kubectl, namespace, "replace"))
    wait_until(anchor.timestamp() + 12.7)
    suspend(kubectl, namespace, "forbid", "replace")
    wait_for(
        lambda: all(
            condition(get_schedule(kubectl, namespace, n)).get("reason") == "Suspended" for n in ("forbid", "replace")
        ),
        timeout=10,
        message="both schedules suspended",
    )
    time.sleep(0.5)  # the watch delivers the last run created before the suspension

    # Forbid: never two unfinished runs at once; each run starts only after the previous one finished.
    forbid = ticked(runs.of("forbid"))
    assert len(forbid) >= 2, [r.name for r in forbid]
    assert runs.max_unfinished["forbid"] == 1
    for previous, run in itertools.pairwise(forbid):
        assert previous.finished_at is not None and previous.finished_at < run.seen, (previous.name, run.name)
    status = get_schedule(kubectl, namespace, "forbid")["status"]
    assert status["lastSkip"]["reason"] == "Forbidden" and "is unfinished" in status["lastSkip"]["message"]
    # Every time up to the latest one handled got either a run or a recorded skip, never both, never neither.
    handled = max(parse(status["lastScheduleTime"]), parse(status["lastSkip"]["time"]))
    forbid_anchor = anchor_of(kubectl, namespace, "forbid")
    times = int((handled - forbid_anchor).total_seconds()) // 2
    made = [r for r in forbid if r.tick is not None and r.tick <= handled]
    assert status["skipped"] + len(made) == times, (status, [r.name for r in made])
    assert status["skipped"] >= 2
    assert "concurrencyPolicy Forbid" in wait_event(kubectl, namespace, "forbid", "Skipped")["message"]

    # Replace: at each time the unfinished run gets spec.cancel (seen before the new run exists) and ends
    # Cancelled, and the new run is created.
    replace = ticked(runs.of("replace"))
    assert len(replace) >= 3, [r.name for r in replace]
    for previous, run in itertools.pairwise(replace):
        assert previous.cancelled_at is not None and previous.cancelled_at <= run.seen, (previous.name, run.name)
    wait_for(
        lambda: all(r.phase == "Cancelled" for r in replace[:-1]),
        timeout=20,
        message="replaced runs Cancelled",
    )
    wait_event(kubectl, namespace, "replace", "Replaced")
    messages = {e["message"] for e in events(kubectl, namespace, "replace") if e["reason"] == "Replaced"}
    assert f"cancelled run {replace[0].name} to start {replace[1].name}" in messages


def test_suspend_resume_and_trigger_through_the_cli(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, runs: RunWatcher
) -> None:
    kubectl.apply(
        [
            flowschedule("sus", interval="2s", suspend=True),
            flowschedule("late", interval="4s", suspend=True, startingDeadlineSeconds=1),
        ],
        namespace,
    )
    anchor = anchor_of(kubectl, namespace, "sus")
    ready = wait_for(
        lambda: condition(get_schedule(kubectl, namespace, "sus")) or None, timeout=15, message="Ready condition"
    )
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")
    wait_until(anchor.timestamp() + 4.5)
    assert runs.of("sus") == []  # two times passed while suspended
    assert not get_schedule(kubectl, namespace, "sus")["status"].get("nextScheduleTime")

    # Resumed 1.5s after a time it missed, "late" is past its 1s deadline: that time is skipped, the next one runs.
    late_anchor = anchor_of(kubectl, namespace, "late")
    missed = late_anchor + timedelta(seconds=4 * int((time.time() - late_anchor.timestamp()) // 4))
    if time.time() > missed.timestamp() + 2:
        missed += timedelta(seconds=4)
    wait_until(missed.timestamp() + 1.5)
    kubectl("patch", "flowschedule", "late", "--type=merge", "-p", '{"spec":{"suspend":false}}', namespace=namespace)

    listed = cli("schedules", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[:3] == ["NAME", "SCHEDULE", "TIMEZONE"]
    row = next(line for line in listed.stdout.splitlines() if line.startswith("sus "))
    assert "every 2s" in row and "suspended" in row

    triggered = cli("trigger", "sus", "-n", namespace)
    assert triggered.returncode == 0, triggered.stderr
    manual = wait_for(lambda: runs.of("sus") or None, timeout=10, message="the triggered run")
    assert len(manual) == 1 and manual[0].tick is None and manual[0].name.startswith("sus-m")
    assert manual[0].body["metadata"]["annotations"]["flowrun.io/trigger"] == "manual"
    assert manual[0].body["metadata"]["ownerReferences"][0]["name"] == "sus"
    assert triggered.stdout.strip() == f'flowrun "{manual[0].name}" created from flowschedule "sus"'

    resuming = time.time()
    assert cli("resume", "sus", "-n", namespace).returncode == 0
    resumed = time.time()
    wait_until(resumed + 4.6)
    after = ticked(runs.of("sus"))
    # One run for the latest time missed while suspended (no deadline set), none for the earlier ones, then on time.
    first = after[0].tick
    assert first is not None and first.timestamp() >= resuming - 2 and first.timestamp() <= resumed, after[0].name
    assert after[0].seen - resumed < ON_TIME
    assert [r.tick for r in after] == [first + timedelta(seconds=2 * k) for k in range(len(after))]
    assert len(after) >= 3

    assert cli("suspend", "sus", "-n", namespace).returncode == 0
    suspended_at = time.time()
    wait_until(suspended_at + 4.5)
    late = [r.name for r in runs.of("sus") if r.seen > suspended_at + 0.5]
    assert late == []
    missing = cli("suspend", "nope", "-n", namespace)
    assert missing.returncode == 1 and 'flowschedule "nope" not found' in missing.stderr

    late = ticked(runs.of("late"))
    assert late and late[0].tick == missed + timedelta(seconds=4), [r.name for r in late]
    skip = get_schedule(kubectl, namespace, "late")["status"]["lastSkip"]
    assert (skip["reason"], skip["time"]) == ("MissedDeadline", fmt(missed))
    assert "startingDeadlineSeconds 1" in wait_event(kubectl, namespace, "late", "Skipped")["message"]


def test_history_limits_delete_the_oldest_finished_runs(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, runs: RunWatcher
) -> None:
    kubectl.apply(
        [
            flowschedule("good", interval="1s", successfulRunsHistoryLimit=2),
            flowschedule("bad", interval="1s", exit_code=1, failedRunsHistoryLimit=1),
        ],
        namespace,
    )
    anchor = anchor_of(kubectl, namespace, "good")
    wait_until(anchor.timestamp() + 7.5)
    suspend(kubectl, namespace, "good", "bad")

    def live(schedule: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = kubectl.json(
            "get", "flowruns", "-l", f"flowrun.io/schedule={schedule}", namespace=namespace
        )["items"]
        return items

    for schedule, phase, keep in (("good", "Succeeded", 2), ("bad", "Failed", 1)):
        seen = ticked(runs.of(schedule))
        assert len(seen) >= 5, [r.name for r in seen]

        def settled(schedule: str = schedule, phase: str = phase, keep: int = keep) -> list[dict[str, Any]] | None:
            items = live(schedule)
            finished = [i for i in items if (i.get("status") or {}).get("phase") == phase]
            return finished if len(finished) == keep == len(items) else None

        finished = wait_for(settled, timeout=15, message=f"{schedule}'s history at {keep}")
        kept = {i["metadata"]["name"] for i in finished}
        deleted = [r for r in seen if r.deleted_at is not None]
        assert len(deleted) >= 3
        # The runs deleted are older than every finished run kept.
        kept_ticks = [r.tick for r in seen if r.name in kept and r.tick is not None]
        assert kept_ticks and max(r.tick for r in deleted if r.tick) < min(kept_ticks)
        assert all(r.phase == phase for r in deleted)


class Outages:
    """When the operator process was up: ``up`` holds (ready, down) wall-clock windows, ``spawned`` when each
    process was started. Ready is when it answered its health check, down when it was killed or exited."""

    def __init__(self, process: OperatorProcess) -> None:
        self.process = process
        self.up: list[tuple[float, float]] = []
        self.spawned: list[float] = []

    def start(self, fault_exit: int | None = None) -> None:
        """Start a process; with `fault_exit`, it may exit with that code (an injected fault due at once, e.g.
        a catch-up time) before it answers its health check: it was never up then."""
        self.spawned.append(time.time())
        try:
            self.process.start()
        except AssertionError:
            if fault_exit is None or self.process.proc is None or self.process.proc.poll() != fault_exit:
                raise
            self.up.append((time.time(), time.time()))
            return
        self.up.append((time.time(), float("inf")))

    def down(self, at: float) -> None:
        self.up[-1] = (self.up[-1][0], at)

    def kill(self) -> None:
        at = time.time()
        self.process.kill()
        self.down(at)

    def exited(self, timeout: float) -> int:
        """Wait for a fault-injected exit."""
        assert self.process.proc is not None
        code = self.process.proc.wait(timeout=timeout)
        self.down(time.time())
        return code


# A process acts a little after its health check answers and may finish a create it sent just before a kill.
GRACE = 1.5


def test_operator_killed_at_any_moment_creates_no_time_twice_and_one_catch_up_after_downtime(
    crds: None, kubectl: Kubectl, namespace: str, runs: RunWatcher, tmp_path: Path
) -> None:
    process = OperatorProcess([namespace], tmp_path, env={"FLOWRUN_SCHEDULES_FAULT": "exit-after-create"})
    outages = Outages(process)
    try:
        outages.start()
        # "fast" misses times in every downtime; "slow" has downtimes shorter than its interval: it loses none.
        kubectl.apply(
            [
                flowschedule("fast", interval="2s", startingDeadlineSeconds=120),
                flowschedule("slow", interval="12s", startingDeadlineSeconds=120),
            ],
            namespace,
        )
        # 1. Dies right after creating a run, before any status write.
        assert outages.exited(timeout=30) == 3
        assert len(runs.of("fast")) == 1
        # 2. Dies at the next time due, right before creating its run.
        process.env["FLOWRUN_SCHEDULES_FAULT"] = "exit-before-create"
        outages.start(fault_exit=3)
        assert outages.exited(timeout=30) == 3
        # 3. SIGKILLed at a random moment, down long enough to miss several of fast's times.
        del process.env["FLOWRUN_SCHEDULES_FAULT"]
        outages.start()
        time.sleep(random.uniform(1, 3))
        outages.kill()
        time.sleep(6.5)
        outages.start()
        fast_anchor, slow_anchor = anchor_of(kubectl, namespace, "fast"), anchor_of(kubectl, namespace, "slow")
        # Up past slow's second time after the anchor (+24 s) by more than GRACE, so both count below.
        wait_until(max(time.time() + 2.5, slow_anchor.timestamp() + 24 + GRACE + 1.5))
        outages.down(time.time())
    finally:
        process.stop()
    assert "Traceback" not in process.logs()

    end = outages.up[-1][1] - GRACE
    made: dict[str, set[float]] = {}
    for name in ("fast", "slow"):
        seen = ticked(runs.of(name))
        made[name] = {r.tick.timestamp() for r in seen if r.tick is not None}
        assert len(made[name]) == len(seen), f"a time of {name} has two runs"
    fast = [(fast_anchor + timedelta(seconds=2 * k)).timestamp() for k in range(1, 100)]
    fast = [t for t in fast if t <= end]
    slow = [(slow_anchor + timedelta(seconds=12 * k)).timestamp() for k in range(1, 10)]
    slow = [t for t in slow if t <= end]

    # Every time that passed while the operator was up got its run.
    for t in fast:
        if any(ready + GRACE <= t <= down - GRACE for ready, down in outages.up):
            assert t in made["fast"], f"fast's time {t} passed while the operator was up but got no run"
    # A downtime shorter than the interval loses nothing: every time of "slow" has its run.
    assert len(slow) >= 2 and all(t in made["slow"] for t in slow), (slow, made["slow"])
    # After a downtime at most one catch-up run: of the times missed while no process ran, at most one got a run.
    most_missed = 0
    for (_, down), spawned in zip(outages.up, outages.spawned[1:], strict=False):
        dark = [t for t in fast if down + 0.5 < t < spawned]
        assert len([t for t in dark if t in made["fast"]]) <= 1, (down, spawned, dark, sorted(made["fast"]))
        most_missed = max(most_missed, len([t for t in dark if t not in made["fast"]]))
    assert most_missed >= 2, "no downtime missed several times: the catch-up rule was not exercised"
    status = get_schedule(kubectl, namespace, "fast")["status"]
    assert status["skipped"] >= most_missed
    assert "catching up" in " ".join(e["message"] for e in events(kubectl, namespace, "fast"))


def test_scheduled_runs_respect_a_concurrency_limit(
    operator: OperatorProcess, cluster: Cluster, kubectl: Kubectl, namespace: str, runs: RunWatcher
) -> None:
    kubectl.apply(selector_limit("one", {"team": "sched"}, 1), namespace)
    with JobWatcher(
        cluster.kubeconfig,
        namespace,
        {"sched": lambda job: job["metadata"].get("labels", {}).get("team") == "sched"},
    ) as jobs:
        kubectl.apply(flowschedule("busy", interval="1s", duration=2, labels={"team": "sched"}), namespace)
        anchor = anchor_of(kubectl, namespace, "busy")
        wait_until(anchor.timestamp() + 7.5)
        suspend(kubectl, namespace, "busy")
        seen = ticked(runs.of("busy"))
        assert len(seen) >= 6
        # The runs queue behind the limit (Allow lets them overlap), and only one runs at any instant.
        assert any(phase == "Pending" for r in seen for _, phase in r.phases)
        wait_for(
            lambda: sum(1 for r in runs.of("busy") if r.phase == "Succeeded") >= 2,
            timeout=20,
            message="two scheduled runs succeeded through the limit",
        )
        assert jobs.max_seen["sched"] == 1
        assert jobs.error is None
