"""The phase machine of a FlowRun, from spec + status + Jobs, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flowrun_operator.api.flowrun import FlowRunPhase, TaskRunPhase
from flowrun_operator.engine.view import run_snapshot
from flowrun_operator.scheduling.admission import Wait
from flowrun_operator.scheduling.jobs import JobInfo, job_info_from
from flowrun_operator.scheduling.runstate import RunEvent, RunPlan, events_still_true, observe, plan

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
POD = {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}


def named(base: str) -> str:
    """The Job name the operator gives run r's `<task>-<attempt>` (its uid digest appended)."""
    return f"{base}-57407"


def ts(offset: float = 0) -> str:
    return (NOW + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")


def flowrun(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"flow": "etl", **spec}
    if "tasks" not in spec:
        body.setdefault("template", POD)
    return {
        "apiVersion": "flowrun.io/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": "r", "namespace": "ns", "uid": "uid-r", "generation": 1, "creationTimestamp": ts(-60)},
        "spec": body,
        "status": status or {},
    }


def job(
    attempt: int = 1,
    task: str | None = None,
    *,
    ready: int = 0,
    outcome: str | None = None,
    reason: str = "",
    finished: float = -1,
    deleting: bool = False,
) -> JobInfo:
    labels = {"flowrun.io/run": "r", "flowrun.io/attempt": str(attempt)}
    if task:
        labels["flowrun.io/task"] = task
    conditions = []
    if outcome:
        conditions.append({"type": outcome, "status": "True", "reason": reason, "lastTransitionTime": ts(finished)})
    meta: dict[str, Any] = {
        "name": f"r-{task}-{attempt}" if task else f"r-{attempt}",
        "labels": labels,
        "creationTimestamp": ts(-30),
        "resourceVersion": "1",
        "ownerReferences": [{"uid": "uid-r", "controller": True}],
    }
    if deleting:
        meta["deletionTimestamp"] = ts()
    info = job_info_from({"metadata": meta, "status": {"ready": ready, "conditions": conditions}})
    assert info is not None
    return info


def decide(obj: dict[str, Any], jobs: list[JobInfo], *, admitted: bool = True, now: datetime = NOW,
           waits: list[Wait] | None = None, units: set[str] | None = None,
           unit_waits: dict[str, list[Wait]] | None = None) -> RunPlan:  # fmt: skip
    observation = observe(run_snapshot(obj), jobs, now)
    return plan(
        observation,
        run_admitted=admitted and observation.needs_admission,
        run_waits=waits or [],
        admitted_units=units or set(),
        unit_waits=unit_waits or {},
        now=now,
    )


def conditions(p: RunPlan) -> dict[str, str]:
    return {c.type: f"{c.status}/{c.reason}" for c in p.status.conditions}


def test_new_run_with_a_free_slot_gets_its_first_job() -> None:
    p = decide(flowrun(), [])
    assert [j.name for j in p.create_jobs] == [named("r-1")]
    assert p.status.phase == FlowRunPhase.SUBMITTED
    assert p.status.attempt == 1
    assert p.status.job_name == named("r-1")
    assert p.status.observed_generation == 1
    assert conditions(p)["Admitted"] == "True/Admitted"
    assert conditions(p)["Finished"] == "False/InProgress"
    assert [e.reason for e in p.events] == ["Submitted"]


def test_run_over_the_quota_waits_pending_with_its_place_in_line() -> None:
    p = decide(flowrun(), [], admitted=False, waits=[Wait("gpu", 3, 2, 2)])
    assert p.create_jobs == []
    assert p.status.phase == FlowRunPhase.PENDING
    assert p.status.message == "waiting for gpu: 2/2 in use, 3rd in line"
    assert [(w.name, w.position) for w in p.status.waiting_for] == [("gpu", 3)]
    assert conditions(p)["Admitted"] == "False/ConcurrencyLimitReached"


def test_running_then_succeeded() -> None:
    submitted = {"phase": "Submitted", "attempt": 1, "jobName": "r-1", "startTime": ts(-30)}
    running = decide(flowrun(submitted), [job(ready=1)])
    assert running.status.phase == FlowRunPhase.RUNNING
    assert running.create_jobs == []
    done = decide(flowrun({**submitted, "phase": "Running"}), [job(outcome="Complete", finished=-5)])
    assert done.status.phase == FlowRunPhase.SUCCEEDED
    assert done.status.completion_time == NOW - timedelta(seconds=5)
    assert done.status.duration == "25s"
    assert conditions(done)["Finished"] == "True/Succeeded"


def test_failed_job_fails_the_run_with_the_job_reason() -> None:
    status = {"phase": "Running", "attempt": 1, "jobName": "r-1"}
    p = decide(flowrun(status), [job(outcome="Failed", reason="DeadlineExceeded")])
    assert p.status.phase == FlowRunPhase.FAILED
    assert "DeadlineExceeded" in (p.status.message or "")
    assert [e.type for e in p.events] == ["Warning"]


def test_retry_waits_for_the_delay_then_starts_the_next_attempt() -> None:
    status = {"phase": "Running", "attempt": 1, "jobName": "r-1"}
    spec = {"retries": 2, "retryDelaySeconds": 10}
    failed = [job(outcome="Failed", reason="BackoffLimitExceeded", finished=-3)]
    waiting = decide(flowrun(status, **spec), failed)
    assert waiting.status.phase == FlowRunPhase.SCHEDULED
    assert waiting.create_jobs == []
    assert waiting.wake_at == NOW + timedelta(seconds=7)
    assert conditions(waiting)["Admitted"] == "False/AwaitingRetry"
    later = decide(flowrun(status, **spec), failed, now=NOW + timedelta(seconds=8))
    assert [j.name for j in later.create_jobs] == [named("r-2")]
    assert later.status.attempt == 2
    assert later.status.phase == FlowRunPhase.SUBMITTED


def test_retries_exhausted() -> None:
    status = {"phase": "Running", "attempt": 2, "jobName": "r-2"}
    jobs = [job(1, outcome="Failed", reason="BackoffLimitExceeded"), job(2, outcome="Failed", reason="Error")]
    p = decide(flowrun(status, retries=1), jobs)
    assert p.status.phase == FlowRunPhase.FAILED
    assert p.create_jobs == []


def test_job_deleted_while_unfinished_fails_the_run() -> None:
    status = {"phase": "Running", "attempt": 1, "jobName": "r-1"}
    p = decide(flowrun(status), [])
    assert p.status.phase == FlowRunPhase.FAILED
    assert conditions(p)["Finished"] == "True/JobDeleted"
    assert p.create_jobs == []
    being_deleted = decide(flowrun(status), [job(ready=1, deleting=True)])
    assert being_deleted.status.phase == FlowRunPhase.FAILED


def test_lost_status_write_is_recovered_from_the_job() -> None:
    # Operator died after creating the Job and before writing status: no second Job, phase from the Job.
    p = decide(flowrun(), [job(ready=1)])
    assert p.create_jobs == []
    assert p.status.phase == FlowRunPhase.RUNNING
    assert p.status.attempt == 1


def test_cancel_deletes_unfinished_jobs() -> None:
    status = {"phase": "Running", "attempt": 1, "jobName": "r-1"}
    p = decide(flowrun(status, cancel=True), [job(ready=1)])
    assert p.status.phase == FlowRunPhase.CANCELLED
    assert p.delete_jobs == ["r-1"]
    pending = decide(flowrun({"phase": "Pending"}, cancel=True), [], admitted=False)
    assert pending.status.phase == FlowRunPhase.CANCELLED
    assert pending.create_jobs == []


def test_scheduled_start_in_the_future() -> None:
    p = decide(flowrun(scheduledStart=ts(30)), [])
    assert p.status.phase == FlowRunPhase.SCHEDULED
    assert p.create_jobs == []
    assert p.wake_at == NOW + timedelta(seconds=30)
    later = decide(flowrun(scheduledStart=ts(30)), [], now=NOW + timedelta(seconds=31))
    assert [j.name for j in later.create_jobs] == [named("r-1")]


def test_terminal_phase_is_sticky() -> None:
    status = {"phase": "Succeeded", "attempt": 1, "jobName": "r-1", "completionTime": ts(-1)}
    p = decide(flowrun(status), [])
    assert p.status.phase == FlowRunPhase.SUCCEEDED
    assert p.create_jobs == []


def test_ttl_deletes_finished_runs() -> None:
    status = {"phase": "Succeeded", "attempt": 1, "completionTime": ts(-10)}
    assert decide(flowrun(status, ttlSecondsAfterFinished=5), [job(outcome="Complete")]).delete_run
    keep = decide(flowrun(status, ttlSecondsAfterFinished=60), [job(outcome="Complete")])
    assert not keep.delete_run
    assert keep.wake_at == NOW + timedelta(seconds=50)


DAG = [
    {"name": "extract", "template": POD},
    {"name": "transform", "template": POD, "dependsOn": ["extract"]},
    {"name": "report", "template": POD, "tags": ["db"]},
]


def task_phases(p: RunPlan) -> dict[str, str]:
    return {t.name: str(t.phase) for t in p.status.task_runs}


def test_dag_starts_independent_tasks_and_holds_dependents() -> None:
    p = decide(flowrun(tasks=DAG), [], units={"r/report"})
    assert sorted(j.name for j in p.create_jobs) == [named("r-extract-1"), named("r-report-1")]
    assert task_phases(p) == {"extract": "Submitted", "transform": "Scheduled", "report": "Submitted"}


def test_dag_tagged_task_waits_for_its_tag_limit() -> None:
    p = decide(flowrun(tasks=DAG), [], units=set(), unit_waits={"r/report": [Wait("db", 1, 1, 1)]})
    assert [j.name for j in p.create_jobs] == [named("r-extract-1")]
    assert task_phases(p)["report"] == "Pending"
    report = next(t for t in p.status.task_runs if t.name == "report")
    assert report.message == "waiting for db: 1/1 in use, 1st in line"
    assert [w.name for w in report.waiting_for] == ["db"]


def test_dag_dependent_starts_after_upstream_succeeds() -> None:
    status = {"phase": "Running", "taskRuns": [{"name": "extract", "phase": "Running", "attempt": 1}]}
    jobs = [job(1, "extract", outcome="Complete"), job(1, "report", ready=1)]
    p = decide(flowrun(status, tasks=DAG), jobs)
    assert [j.name for j in p.create_jobs] == [named("r-transform-1")]
    assert p.status.phase == FlowRunPhase.RUNNING


def test_dag_failure_skips_downstream_and_fails_the_run() -> None:
    jobs = [job(1, "extract", outcome="Failed", reason="BackoffLimitExceeded"), job(1, "report", outcome="Complete")]
    p = decide(flowrun({"phase": "Running"}, tasks=DAG), jobs)
    assert task_phases(p) == {"extract": "Failed", "transform": "Skipped", "report": "Succeeded"}
    skipped = next(t for t in p.status.task_runs if t.name == "transform")
    assert skipped.reason == "UpstreamFailed"
    assert p.status.phase == FlowRunPhase.FAILED
    assert (p.status.message or "").startswith("task extract")


def test_dag_run_keeps_running_while_an_independent_branch_runs() -> None:
    jobs = [job(1, "extract", outcome="Failed", reason="Error"), job(1, "report", ready=1)]
    p = decide(flowrun({"phase": "Running"}, tasks=DAG), jobs)
    assert p.status.phase == FlowRunPhase.RUNNING
    assert task_phases(p)["transform"] == TaskRunPhase.SKIPPED


def test_dag_cycle_is_refused_in_status() -> None:
    tasks = [
        {"name": "a", "template": POD, "dependsOn": ["b"]},
        {"name": "b", "template": POD, "dependsOn": ["a"]},
    ]
    p = decide(flowrun(tasks=tasks), [])
    assert p.status.phase == FlowRunPhase.FAILED
    assert conditions(p)["Finished"] == "True/InvalidSpec"
    assert "cycle" in (p.status.message or "")
    assert p.create_jobs == []


def test_dag_cancel_marks_unfinished_tasks_cancelled() -> None:
    jobs = [job(1, "extract", outcome="Complete"), job(1, "report", ready=1)]
    p = decide(flowrun({"phase": "Running"}, tasks=DAG, cancel=True), jobs)
    assert p.status.phase == FlowRunPhase.CANCELLED
    assert task_phases(p) == {"extract": "Succeeded", "transform": "Cancelled", "report": "Cancelled"}
    assert p.delete_jobs == ["r-report-1"]


def test_pod_finished_before_the_job_is_marked_complete_is_still_running() -> None:
    status = {"phase": "Running", "attempt": 1, "jobName": "r-1"}
    p = decide(flowrun(status), [job(ready=0)])
    assert p.status.phase == FlowRunPhase.RUNNING
    assert p.events == []


def test_rerun_of_a_failed_dag_reruns_failed_and_skipped_tasks_only() -> None:
    failed_status = {
        "phase": "Failed",
        "attempt": 1,
        "completionTime": ts(-5),
        "taskRuns": [
            {"name": "extract", "phase": "Failed", "attempt": 1, "reason": "Error"},
            {"name": "transform", "phase": "Skipped", "attempt": 0, "reason": "UpstreamFailed"},
            {"name": "report", "phase": "Succeeded", "attempt": 1},
        ],
    }
    jobs = [job(1, "extract", outcome="Failed", reason="Error"), job(1, "report", outcome="Complete")]
    obj = flowrun(failed_status, tasks=DAG)
    assert decide(obj, jobs).status.phase == FlowRunPhase.FAILED  # no rerun asked
    obj["metadata"]["annotations"] = {"flowrun.io/rerun": "1"}
    p = decide(obj, jobs)
    assert [j.name for j in p.create_jobs] == [named("r-extract-2")]
    assert p.status.phase == FlowRunPhase.RUNNING  # report's pod ran already
    assert p.status.reruns == 1
    assert p.status.completion_time is None
    assert task_phases(p) == {"extract": "Submitted", "transform": "Scheduled", "report": "Succeeded"}


def test_rerun_of_a_failed_single_template_run_starts_a_new_attempt() -> None:
    status = {"phase": "Failed", "attempt": 1, "jobName": "r-1", "completionTime": ts(-5)}
    obj = flowrun(status)
    obj["metadata"]["annotations"] = {"flowrun.io/rerun": "1"}
    p = decide(obj, [job(1, outcome="Failed", reason="Error")])
    assert [j.name for j in p.create_jobs] == [named("r-2")]
    # once written, the rerun is not started again and the new attempt counts as allowed
    written = flowrun(p.status.to_api())
    written["metadata"]["annotations"] = {"flowrun.io/rerun": "1"}
    again = decide(written, [job(1, outcome="Failed", reason="Error"), job(2, ready=1)])
    assert again.create_jobs == []
    assert again.status.phase == FlowRunPhase.RUNNING


def test_finished_dag_keeps_its_task_runs() -> None:
    jobs = [job(1, n, outcome="Complete") for n in ("extract", "transform", "report")]
    first = decide(flowrun({"phase": "Running"}, tasks=DAG), jobs)
    assert first.status.phase == FlowRunPhase.SUCCEEDED
    again = decide(flowrun(first.status.to_api(), tasks=DAG), jobs)
    assert again.status.to_api() == first.status.to_api()
    assert task_phases(again) == dict.fromkeys(["extract", "transform", "report"], "Succeeded")


def test_events_travel_with_a_newer_status_only_while_it_backs_them() -> None:
    submitted = RunEvent("Normal", "Submitted", "0/1 tasks finished", attempt=1)
    task_pending = RunEvent("Normal", "TaskPending", "task x: Pending", "x", 0)
    task_running = RunEvent("Normal", "TaskRunning", "task x: Running", "x", 1)
    refused = RunEvent("Normal", "Pending", "Job a-x-1 refused: exceeded quota; retrying")
    invalid = RunEvent("Warning", "InvalidSpec", "bad")
    events = [submitted, task_pending, task_running, refused, invalid]

    # The newer status went past what the Events tell: all travel with it.
    running = {"phase": "Running", "attempt": 1, "taskRuns": [{"name": "x", "phase": "Running", "attempt": 1}]}
    assert events_still_true(events, running) == events
    # Taken back (held by a quota before anything was written; no attempt recorded): Submitted and TaskRunning
    # were never stored.
    held = {"phase": "Pending", "attempt": None, "taskRuns": [{"name": "x", "phase": "Pending", "attempt": 0}]}
    assert events_still_true(events, held) == [task_pending, refused, invalid]
    # A later attempt: what the earlier one reached happened, though the newer status is back at Scheduled.
    retry = {"phase": "Scheduled", "attempt": 2, "taskRuns": [{"name": "x", "phase": "Scheduled", "attempt": 2}]}
    assert events_still_true(events, retry) == events
    # The same attempt failed and awaits its retry (Scheduled or Pending, attempt 1): it was submitted and ran.
    awaiting = {"phase": "Scheduled", "attempt": 1, "taskRuns": [{"name": "x", "phase": "Pending", "attempt": 1}]}
    assert events_still_true(events, awaiting) == events
    # Attempt 0 is no attempt: nothing of it can be over.
    assert events_still_true([RunEvent("Normal", "Submitted", "m")], {"phase": "Pending", "attempt": 0}) == []
    # A task Event about a task the status does not have is not backed; finished phases back each other.
    assert events_still_true([task_pending], {"phase": "Pending", "taskRuns": []}) == []
    done = RunEvent("Normal", "Succeeded", "done", attempt=1)
    assert events_still_true([done], {"phase": "Succeeded", "attempt": 1}) == [done]
