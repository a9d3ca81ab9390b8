"""Hand-written deterministic scenarios, one per way the former engine broke the README's promises.

Each passes on a correct engine; `SIM_ENGINE=legacy` runs them against the former Reconciler (tests/sim/README.md
records which of them it fails, and how).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sim.api import FLOWRUNS, JOBS, JobRecord, Obj
from sim.harness import Harness, Result
from sim.scenario import FOREVER, Action, LimitDef, RunDef, Scenario, TaskDef

RED = LimitDef("red", "ns-a", 1, team="red")


def setup_module() -> None:
    logging.getLogger("flowrun_operator").setLevel(logging.CRITICAL)


def play(scenario: Scenario, setup: Callable[[Harness], None] | None = None) -> tuple[Harness, Result]:
    harness = Harness(scenario)
    if setup is not None:
        setup(harness)
    return harness, harness.run()


def status(harness: Harness, name: str, namespace: str = "ns-a") -> Obj:
    run = harness.api.objects[FLOWRUNS].get((namespace, name))
    assert run is not None, f"run {name} is gone"
    return dict(run.get("status") or {})


def jobs_of(harness: Harness, run: str) -> list[JobRecord]:
    return [r for r in harness.api.jobs if r.run == run]


def once(method: str, fault: str, when: Callable[[str, Obj | None], bool]) -> Callable[[Harness], None]:
    """Inject `fault` into the first call of `method` that `when(name, body)` selects, and only that one."""

    def setup(harness: Harness) -> None:
        fired: list[bool] = []

        def fault_for(called: str, name: str, body: Obj | None) -> str | None:
            if called == method and not fired and when(name, body):
                fired.append(True)
                return fault
            return None

        harness.api.fault_for = fault_for

    return setup


def test_cancel_frees_the_slot_only_when_the_pod_is_gone() -> None:
    """(1) limit 1, A running and cancelled, B waiting: B's Job must not exist while A's pod may still run."""
    scenario = Scenario(
        runs=(RunDef("a", team="red", run_for=FOREVER, start_after=0.0), RunDef("b", team="red", run_for=1.0)),
        limits=(RED,),
        actions=(
            Action(0.0, "create_limit", 0),
            Action(0.0, "create_run", 0),
            Action(1.0, "create_run", 1),
            Action(3.0, "cancel", 0),
        ),
        grace=10.0,
    )
    harness, result = play(scenario)
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Cancelled"
    assert status(harness, "b")["phase"] == "Succeeded"
    (a_job,), (b_job,) = jobs_of(harness, "a"), jobs_of(harness, "b")
    assert a_job.pod.ended_at is not None and a_job.pod.ended_at >= 3.0 + 10.0 - 0.5  # it ran through its grace
    assert b_job.created >= a_job.pod.ended_at


def test_a_failed_job_create_does_not_lose_another_runs_transition() -> None:
    """(2) A's Job completes and, at that instant, B's Job creation fails with a 500: A must still end
    Succeeded, with no further event to wake the engine (no re-list: the scenario just quiesces)."""
    scenario = Scenario(runs=(RunDef("a", run_for=3.0, start_after=0.0), RunDef("b", run_for=1.0)), max_delay=0.0)

    async def script(harness: Harness) -> None:
        harness.apply(Action(0.0, "create_run", 0))
        await harness.start_operator()
        # Until A's Job is Complete in the API (and so in the engine's view): polled on virtual time.
        while not any((j.get("status") or {}).get("conditions") for j in harness.api.objects[JOBS].values()):  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        harness.apply(Action(0.0, "create_run", 1))  # in the same round (or pass) as A's completion
        await harness.settle()

    harness = Harness(scenario)
    once("create_job", "500", lambda name, body: name.startswith("b-"))(harness)
    result = harness.run(script)
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Succeeded"
    assert status(harness, "b")["phase"] == "Succeeded"


def test_a_relist_does_not_resurrect_what_was_deleted_during_it() -> None:
    """(3) A re-list whose response arrives after a deletion was seen must not bring the deleted run (and its
    Job) back: B and then C, waiting behind A's slot, must start once A is gone and B has finished."""
    scenario = Scenario(
        runs=(
            RunDef("a", team="red", run_for=FOREVER, start_after=0.0),
            RunDef("b", team="red", run_for=1.0),
            RunDef("c", team="red", run_for=1.0),
        ),
        limits=(RED,),
        max_delay=0.0,
        grace=0.0,
    )

    async def script(harness: Harness) -> None:
        harness.apply(Action(0.0, "create_limit", 0))
        harness.apply(Action(0.0, "create_run", 0))
        await harness.start_operator()
        await harness.sleep_until(1.0)
        harness.apply(Action(1.0, "create_run", 1))
        harness.apply(Action(1.0, "create_run", 2))
        await harness.sleep_until(5.0)
        harness.api.slow_response["list"] = 1.0  # the list is taken now, its response arrives 1 s later
        harness.resync()
        await harness.sleep_until(5.2)
        harness.api.delete_flowrun("ns-a", "a")  # garbage collection removes A's Job 0.2 s later
        await harness.sleep_until(7.0)
        harness.api.slow_response.clear()
        await harness.settle()

    harness = Harness(scenario)
    result = harness.run(script)
    assert result.violations == []
    assert ("ns-a", "a") not in harness.api.objects[FLOWRUNS]
    assert status(harness, "b")["phase"] == "Succeeded"
    assert status(harness, "c")["phase"] == "Succeeded"
    (c_job,) = jobs_of(harness, "c")
    assert c_job.created < 5.2 + 10.0  # admitted once B finished, not at some later re-list


def _succeeded(name: str, body: Obj | None) -> bool:
    return (body or {}).get("phase") == "Succeeded"


def test_a_failed_status_write_leaves_no_phantom_and_its_event_follows_the_write() -> None:
    """(5) The write that makes A Succeeded fails (500) and so does the re-read: the engine must not keep a
    status the API never stored; the Succeeded Event is posted once, after the write that stored it."""

    def setup(harness: Harness) -> None:
        fired: set[str] = set()

        def fault_for(method: str, name: str, body: Obj | None) -> str | None:
            if method == "patch_status" and "patch" not in fired and _succeeded(name, body):
                fired.add("patch")
                return "500"
            if method == "get" and "patch" in fired and "get" not in fired:
                fired.add("get")
                return "500"
            return None

        harness.api.fault_for = fault_for

    scenario = Scenario(runs=(RunDef("a", run_for=2.0),), actions=(Action(0.0, "create_run", 0),))
    harness, result = play(scenario, setup)
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Succeeded"
    uid = harness.api.objects[FLOWRUNS][("ns-a", "a")]["metadata"]["uid"]
    assert [e[3] for e in harness.api.events if e[1] == uid].count("Succeeded") == 1


def test_an_ambiguous_status_write_posts_its_event_at_most_once() -> None:
    """(5) The Succeeded write is applied but its response times out: the Event is never posted twice."""
    scenario = Scenario(runs=(RunDef("a", run_for=2.0),), actions=(Action(0.0, "create_run", 0),))
    harness, result = play(scenario, once("patch_status", "timeout_after", _succeeded))
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Succeeded"
    uid = harness.api.objects[FLOWRUNS][("ns-a", "a")]["metadata"]["uid"]
    assert [e[3] for e in harness.api.events if e[1] == uid].count("Succeeded") <= 1


def test_quota_exceeded_on_job_create_is_transient() -> None:
    """(6) A ResourceQuota refusal (403 "exceeded quota") does not fail the run: it runs once quota frees."""
    scenario = Scenario(
        runs=(RunDef("a", run_for=1.0),),
        actions=(Action(0.0, "quota", "ns-a", 20), Action(0.5, "create_run", 0)),
    )
    harness, result = play(scenario)
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Succeeded"
    (job,) = jobs_of(harness, "a")
    assert 20.0 <= job.created < 20.0 + 65.0  # within the engine's longest backoff after the quota freed


def test_job_names_of_run_task_and_run_named_alike_do_not_collide() -> None:
    """(7) Run `etl` with task `load` and run `etl-load` both finish."""
    scenario = Scenario(
        runs=(RunDef("etl", tasks=(TaskDef("load"),), run_for=1.0), RunDef("etl-load", run_for=1.0)),
        actions=(Action(0.0, "create_run", 0), Action(0.0, "create_run", 1)),
    )
    harness, result = play(scenario)
    assert result.violations == []
    assert status(harness, "etl")["phase"] == "Succeeded"
    assert status(harness, "etl-load")["phase"] == "Succeeded"
    assert len({r.key for r in harness.api.jobs}) == 2


def test_a_transition_is_written_promptly_while_many_runs_wait() -> None:
    """(8) With 100 runs waiting behind a limit and 50 ms API calls, a finished run's Succeeded is stored
    within a second of its Job's Complete (it does not queue behind place-in-line refreshes)."""
    waiting = tuple(RunDef(f"w{i:03d}", team="red", run_for=1.0) for i in range(100))
    scenario = Scenario(
        runs=(RunDef("a", team="red", run_for=20.0, start_after=0.0), *waiting),
        limits=(LimitDef("red", "ns-a", 1, team="red"),),
        actions=(
            Action(0.0, "create_limit", 0),
            Action(0.0, "create_run", 0),
            *(Action(1.0, "create_run", i + 1) for i in range(len(waiting))),
        ),
        latency=0.05,
    )

    async def script(harness: Harness) -> None:
        for action in scenario.actions[:2]:
            harness.apply(action)
        await harness.start_operator()
        await harness.sleep_until(1.0)
        for action in scenario.actions[2:]:
            harness.apply(action)
        await harness.sleep_until(25.0)

    harness = Harness(scenario)
    result = harness.run(script)
    assert result.violations == []
    (a_job,) = jobs_of(harness, "a")
    assert a_job.outcome == "Complete" and a_job.finished_at is not None
    uid = harness.api.objects[FLOWRUNS][("ns-a", "a")]["metadata"]["uid"]
    stored = [w.at for w in harness.api.writes[uid] if w.run_phase == "Succeeded"]
    assert stored, "Succeeded was never stored"
    assert stored[0] - a_job.finished_at <= 1.0


def test_a_hung_call_in_one_namespace_does_not_stop_admission_in_another() -> None:
    """(4) A Job creation in ns-a hangs until the client's timeout; a run in ns-b still starts at once."""
    scenario = Scenario(
        runs=(RunDef("a", run_for=1.0), RunDef("b", namespace="ns-b", run_for=1.0)),
        actions=(Action(0.0, "create_run", 0), Action(0.5, "create_run", 1)),
    )
    harness, result = play(scenario, once("create_job", "hang", lambda name, body: name.startswith("a-")))
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Succeeded"
    assert status(harness, "b", "ns-b")["phase"] == "Succeeded"
    (b_job,) = jobs_of(harness, "b")
    assert b_job.created <= 0.5 + 1.0


def test_quota_exceeded_on_task_job_create_is_transient() -> None:
    """(6) The same for a run with tasks: both task Jobs are refused for 2 s, then run."""
    scenario = Scenario(
        runs=(RunDef("a", tasks=(TaskDef("x"), TaskDef("y")), run_for=1.0),),
        actions=(Action(0.0, "quota", "ns-a", 2), Action(0.5, "create_run", 0)),
    )
    harness, result = play(scenario)
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Succeeded"
    assert sorted(r.task or "" for r in jobs_of(harness, "a")) == ["x", "y"]


def test_a_failed_status_write_does_not_run_an_attempt_twice() -> None:
    """The write recording attempt 1 fails (500) and the user deletes that attempt's Job before the retry: the
    run fails (JobDeleted) or moves on to attempt 2; attempt 1 never runs a second time."""
    scenario = Scenario(
        runs=(RunDef("a", run_for=10.0, start_after=0.5),),
        actions=(Action(0.0, "create_run", 0), Action(0.3, "delete_job", 0)),
        max_delay=0.0,
        latency=0.0,
    )
    harness, result = play(scenario, once("patch_status", "500", lambda name, body: True))
    assert result.violations == []
    assert [r.attempt for r in jobs_of(harness, "a")].count(1) == 1


def test_cancelling_a_run_whose_job_is_gone_keeps_its_attempt() -> None:
    """A run is cancelled while its Job is deleted: status.attempt stays 1 (no status regression)."""
    scenario = Scenario(
        runs=(RunDef("a", run_for=5.0, start_after=0.0),),
        actions=(Action(0.0, "create_run", 0), Action(1.0, "cancel", 0), Action(1.0, "delete_job", 0)),
        max_delay=0.0,
        latency=0.0,
        grace=0.0,
    )
    harness, result = play(scenario)
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Cancelled"
    assert status(harness, "a").get("attempt") == 1


def test_a_late_event_does_not_bring_back_a_deleted_run() -> None:
    """(3) The FlowRun is deleted while its first Job is being created: the status write gets 404. An event of
    the run from before its deletion (here: a label added meanwhile; with the former Kopf wiring, the watch's
    initial-list event), delivered late (before its DELETED), must not start attempt 1 again."""
    scenario = Scenario(runs=(RunDef("b", run_for=40.0),), max_delay=0.0)

    async def script(harness: Harness) -> None:
        def delete_the_run(method: str, name: str, body: Obj | None) -> str | None:
            if method == "create_job":
                harness.api.update_meta(FLOWRUNS, "ns-a", "b", "labels", {"touched": "yes"})
                harness.api.delete_flowrun("ns-a", "b")
            return None

        harness.apply(Action(0.0, "create_run", 0))
        harness.watches.held.add(FLOWRUNS)
        harness.api.fault_for = delete_the_run
        await harness.start_operator()
        await harness.sleep_until(1.0)
        harness.api.fault_for = None
        _, event, obj = harness.watches.queues[(FLOWRUNS, "ns-a", "b")].popleft()
        assert event in (None, "MODIFIED")  # the run as it was before its deletion
        harness.deliver(FLOWRUNS, event, obj)
        await harness.sleep_until(2.0)
        harness.watches.held.clear()  # then its DELETED
        await harness.settle()

    harness = Harness(scenario)
    result = harness.run(script)
    assert result.violations == []
    assert [r.attempt for r in harness.api.jobs] == [1]


def test_an_event_of_a_transition_taken_back_before_its_write_is_not_posted() -> None:
    """A run is admitted (Submitted, its task waiting for a limit) and its progress write is held; before it
    is sent, the limit opens and the task's Job is refused by a ResourceQuota, so the run waits as Pending.
    Only the newer status is stored: the Events of the admission must not tell of a Submitted the API server
    never stored."""
    gpu = LimitDef("gpu", "ns-a", 0, tag="gpu")
    scenario = Scenario(
        runs=(RunDef("a", tasks=(TaskDef("x", tags=("gpu",)),), run_for=1.0),),
        limits=(gpu,),
        actions=(
            Action(0.0, "create_limit", 0),
            Action(0.0, "quota", "ns-a", 3),
            Action(0.5, "create_run", 0),
            Action(1.0, "set_limit", 0, 1),
        ),
    )
    harness, result = play(scenario)
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Succeeded"


def test_an_attempt_seen_after_a_restart_is_not_started_again_once_its_job_is_gone() -> None:
    """The operator crashes right after creating attempt 1's Job, before any status records it. The next
    incarnation sees that Job in its list, but its writes of the run's status all fail; the user deletes the
    Job. The Job it saw is the only trace of attempt 1: it must not be created a second time."""

    def setup(harness: Harness) -> None:
        def fault_for(method: str, name: str, body: Obj | None) -> str | None:
            if method == "patch_status" and name == "a" and harness.loop.time() < 30.0:
                return "500"
            if method == "create_job" and name.startswith("a-1-") and harness.incarnations == 1:
                return "crash_after"
            return None

        harness.api.fault_for = fault_for

    scenario = Scenario(
        runs=(RunDef("a", run_for=FOREVER, retries=1),),
        actions=(Action(0.0, "create_run", 0), Action(10.0, "delete_job", 0)),
    )
    harness, result = play(scenario, setup)
    assert harness.incarnations >= 2
    assert [r.attempt for r in jobs_of(harness, "a")] == [1]
    assert result.violations == []


def test_a_run_admitted_before_a_limit_existed_keeps_its_slot_for_its_later_tasks() -> None:
    """Run `a` (tasks) is admitted while its task waits for a tag slot; then a label limit of 0 matching it is
    created. Creating a limit never takes a slot back: when the tag slot frees, the task's Job is created.
    (The harness judges a run with tasks by the limits known when it was admitted, not at its first Job.)"""
    db = LimitDef("db", "ns-a", 1, tag="db")
    everyone = LimitDef("everyone", "ns-a", 0)
    scenario = Scenario(
        runs=(
            RunDef("holder", tasks=(TaskDef("x", tags=("db",)),), run_for=3.0),
            RunDef("a", tasks=(TaskDef("x", tags=("db",)),), run_for=1.0),
        ),
        limits=(db, everyone),
        actions=(
            Action(0.0, "create_limit", 0),
            Action(0.0, "create_run", 0),
            Action(0.5, "create_run", 1),
            Action(1.5, "create_limit", 1),
        ),
    )
    harness, result = play(scenario)
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Succeeded"
    (job,) = jobs_of(harness, "a")
    assert job.created > 1.5


def test_each_attempt_of_a_fast_failing_run_tells_it_was_submitted() -> None:
    """Pods that fail before the operator sees them run: each attempt's Submitted status is replaced, before it
    is written, by the failure awaiting the retry (same attempt). That status shows the attempt over, so the
    Submitted Event of each attempt is still posted with it."""
    scenario = Scenario(
        runs=(RunDef("f", run_for=0.01, retries=2, retry_delay=1, failing_attempts=3),),
        actions=(Action(0.0, "create_run", 0),),
        coalesce=True,
        max_delay=0.3,
    )
    harness, result = play(scenario)
    assert result.violations == []
    assert status(harness, "f")["phase"] == "Failed"
    uid = harness.api.objects[FLOWRUNS][("ns-a", "f")]["metadata"]["uid"]
    reasons = [e[3] for e in harness.api.events if e[1] == uid]
    assert reasons.count("Submitted") == 3, reasons
    assert reasons.count("Scheduled") == 2 and reasons.count("Failed") == 1, reasons


def test_a_recorded_failure_whose_job_goes_away_during_the_retry_delay_is_retried() -> None:
    """Attempt 1 fails and the status records it (awaiting the retry, 5 s). During the delay the user deletes
    that Job while a re-list runs, so its final state never reaches the engine. The stored status already tells
    how attempt 1 ended: attempt 2 must run, not a JobDeleted failure."""
    scenario = Scenario(
        runs=(RunDef("a", run_for=10.0, start_after=2.0, retries=2, retry_delay=5, failing_attempts=1),),
        actions=(
            Action(0.5, "create_run", 0),
            Action(15.05, "drop_watch", FLOWRUNS),
            Action(15.05, "delete_job", 0),
        ),
        max_delay=0.3,
        latency=0.002,
        seed=97,
    )
    harness, result = play(scenario)
    assert result.violations == []
    assert status(harness, "a")["phase"] == "Succeeded"
    assert [r.attempt for r in jobs_of(harness, "a")] == [1, 2]
