"""A FlowRun's observed state, derived from its spec, its last status and its live Jobs (pure).

This is the one place where a FlowRun changes phase. The decision has two steps around admission:

1. `observe` reads the run and its Jobs and says what each unit of work (the run's single template,
   or one task) is doing, what it wants to start, and which concurrency slots it holds right now;
2. `plan` takes the admission decisions (`scheduling.admission`) and returns the status to write,
   the Jobs to create or delete, and when to look again.

Both are level-triggered: given the same inputs they return the same answer, so a restarted operator
picks up exactly where the old one stopped. Terminal phases are sticky.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from flowrun_operator.api.common import Condition, ConditionStatus, format_duration, set_condition
from flowrun_operator.api.flowrun import (
    FlowRunPhase,
    FlowRunSpec,
    FlowRunStatus,
    PodTemplate,
    TaskRun,
    TaskRunPhase,
    WaitingFor,
    is_terminal,
)
from flowrun_operator.scheduling.admission import Wait
from flowrun_operator.scheduling.dag import find_cycle
from flowrun_operator.scheduling.jobs import JobInfo, JobOutcome, job_name

# Condition types. Together they say everything the phase summarises.
ADMITTED = "Admitted"
RUNNING = "Running"
FINISHED = "Finished"

# Reasons.
REASON_LIMIT_REACHED = "ConcurrencyLimitReached"
REASON_SCHEDULED = "ScheduledStartPending"
REASON_AWAITING_RETRY = "AwaitingRetry"
REASON_WAITING_DEPENDENCIES = "WaitingForDependencies"
REASON_UPSTREAM_FAILED = "UpstreamFailed"
REASON_JOB_DELETED = "JobDeleted"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_CANCELLED = "Cancelled"


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """A FlowRun as read from the API server, parsed."""

    name: str
    namespace: str
    uid: str
    generation: int
    created: datetime
    labels: Mapping[str, str]
    spec: FlowRunSpec | None
    status: FlowRunStatus
    spec_error: str | None = None
    rerun_requested: int = 0  # from the flowrun.io/rerun annotation

    @property
    def key(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Unit:
    """One unit of work: the run's `template` (task None) or one of its `tasks`."""

    task: str | None
    template: PodTemplate | None
    depends_on: tuple[str, ...]
    tags: tuple[str, ...]
    max_attempts: int

    def request_key(self, run: str) -> str:
        return f"{run}/{self.task}" if self.task else run


@dataclass(slots=True)
class UnitState:
    unit: Unit
    phase: TaskRunPhase
    attempt: int
    job: JobInfo | None
    reason: str = ""
    message: str = ""
    start: datetime | None = None
    completion: datetime | None = None
    wants_attempt: int | None = None  # asks for a Job of this attempt now (subject to admission)
    holds_slot: bool = False  # its current Job exists and has not finished
    wake_at: datetime | None = None


@dataclass(slots=True)
class RunObservation:
    snapshot: RunSnapshot
    units: list[UnitState]
    terminal: FlowRunPhase | None = None
    terminal_reason: str = ""
    terminal_message: str = ""
    needs_admission: bool = False  # wants the run-level (label) slots now
    admitted: bool = False  # holds its run-level slots already
    scheduled_until: datetime | None = None
    delete_jobs: list[str] = field(default_factory=list)
    wake_at: datetime | None = None

    @property
    def holds_run_slot(self) -> bool:
        return self.admitted and self.terminal is None

    @property
    def is_dag(self) -> bool:
        return bool(self.snapshot.spec and self.snapshot.spec.tasks)


@dataclass(frozen=True, slots=True)
class JobToCreate:
    name: str
    unit: Unit
    attempt: int


@dataclass(frozen=True, slots=True)
class RunEvent:
    type: str  # Normal | Warning
    reason: str
    message: str
    task: str | None = None  # the task run a Task<Phase> Event tells about
    attempt: int = 0  # the attempt (of the run, or of `task`) that reached the phase the Event tells


# The order in which a run or task run moves through its phases within one attempt (a finished phase last).
PHASE_RANK = {"Scheduled": 0, "Pending": 1, "Submitted": 2, "Running": 3}
FINISHED_RANK = 4
ANNOUNCED_PHASES = frozenset(PHASE_RANK) | {phase.value for phase in TaskRunPhase if phase.is_terminal}


def _rank(phase: str | None) -> int:
    return PHASE_RANK.get(str(phase), FINISHED_RANK if phase else -1)


def events_still_true(events: list[RunEvent], status: dict[str, Any]) -> list[RunEvent]:
    """The Events of `events` that the status about to be stored still backs.

    Writes are coalesced: an unsent status replaced by a newer one has its Events travel with the newer one.
    An Event announcing a phase is kept when the newer status reached that phase (or went past it), started a
    later attempt, or shows the Event's attempt over (it failed and awaits its retry). An Event of a transition
    the newer status took back (admitted, then held by a ResourceQuota before anything was written) is dropped:
    it would tell of a phase the API server never stored. Events that announce no phase are kept."""
    tasks = {str(t.get("name")): t for t in status.get("taskRuns") or []}
    kept = []
    for event in events:
        if event.task is not None:
            announced, now = event.reason.removeprefix("Task"), tasks.get(event.task)
        else:
            announced, now = event.reason, status
        if announced not in ANNOUNCED_PHASES:
            kept.append(event)
            continue
        if now is None:
            continue
        reached = _rank(now.get("phase")) >= _rank(announced)
        later_attempt = int(now.get("attempt") or 0) > event.attempt
        attempt_over = event.attempt > 0 and _attempts_over(now) >= event.attempt
        if reached or later_attempt or attempt_over:
            kept.append(event)
    return kept


def _attempts_over(status: Mapping[str, Any]) -> int:
    """How many attempts a status (of a run or a task run) shows as ended: all up to `attempt`, except one that
    is still Submitted or Running (a failed attempt awaiting its retry shows Scheduled or Pending)."""
    attempt = int(status.get("attempt") or 0)
    return attempt - 1 if status.get("phase") in ("Submitted", "Running") else attempt


@dataclass(slots=True)
class RunPlan:
    status: FlowRunStatus
    create_jobs: list[JobToCreate] = field(default_factory=list)
    delete_jobs: list[str] = field(default_factory=list)
    delete_run: bool = False
    events: list[RunEvent] = field(default_factory=list)
    wake_at: datetime | None = None


def units_of(spec: FlowRunSpec, reruns: int = 0) -> list[Unit]:
    """The run's units of work. Each rerun grants every unit another full set of attempts."""
    rounds = 1 + reruns
    if spec.tasks:
        return [
            Unit(
                task=task.name,
                template=task.template,
                depends_on=tuple(task.depends_on),
                tags=tuple(task.tags),
                max_attempts=rounds * (1 + (task.retries if task.retries is not None else spec.retries)),
            )
            for task in spec.tasks
        ]
    return [Unit(task=None, template=spec.template, depends_on=(), tags=(), max_attempts=rounds * (1 + spec.retries))]


def _earliest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


def _previous_unit_status(run: RunSnapshot, unit: Unit) -> TaskRun | None:
    if unit.task is None:
        status = run.status
        if not status.attempt:
            return None
        phase = TaskRunPhase(str(status.phase)) if status.phase else TaskRunPhase.PENDING
        return TaskRun(
            name="",
            phase=phase,
            attempt=status.attempt,
            job_name=status.job_name,
            start_time=status.start_time,
            completion_time=status.completion_time,
            message=status.message,
        )
    for task_run in run.status.task_runs:
        if task_run.name == unit.task:
            return task_run
    return None


def _observe_unit(
    run: RunSnapshot,
    unit: Unit,
    jobs: Sequence[JobInfo],
    done: Mapping[str, TaskRunPhase],
    now: datetime,
    known: Mapping[str | None, int],
) -> UnitState:
    spec = run.spec
    assert spec is not None
    previous = _previous_unit_status(run, unit)
    latest = max(jobs, key=lambda j: j.attempt, default=None)
    attempt = max(previous.attempt if previous else 0, latest.attempt if latest else 0, known.get(unit.task, 0))
    job = next((j for j in jobs if j.attempt == attempt), None)
    first_created = min((j.created for j in jobs if j.created), default=None)
    start = (previous.start_time if previous else None) or first_created
    state = UnitState(unit=unit, phase=TaskRunPhase.SCHEDULED, attempt=attempt, job=job, start=start)

    if previous and is_terminal(previous.phase) and unit.task is not None:
        state.phase = previous.phase
        state.reason = previous.reason or ""
        state.message = previous.message or ""
        state.completion = previous.completion_time
        return state

    if job is None:
        if (
            previous is not None
            and 0 < previous.attempt == attempt < unit.max_attempts
            and previous.phase in (TaskRunPhase.SCHEDULED, TaskRunPhase.PENDING)
        ):
            # The status recorded this attempt's failure (awaiting its retry) and then its Job went away (deleted,
            # or missing from a re-list before its deletion arrived): the outcome is known, the retry is owed.
            # The failure's time went with the Job, so the delay is not waited for again.
            state.wants_attempt = attempt + 1
            state.message = previous.message or f"attempt {attempt} failed"
            return state
        if attempt > 0:
            # The status records a Job for this attempt that no longer exists and no version of it showing its
            # end was seen (it may have finished, then been deleted while the operator was not watching): its
            # work is gone and its outcome cannot be read any more.
            name = (previous.job_name if previous else None) or job_name(run.name, unit.task, attempt, run.uid)
            state.phase = TaskRunPhase.FAILED
            state.reason = REASON_JOB_DELETED
            state.message = f"Job {name} was deleted before its outcome was seen"
            state.completion = now
            return state
        failed_deps = [d for d in unit.depends_on if done.get(d) in _NOT_SUCCEEDED]
        if failed_deps:
            state.phase = TaskRunPhase.SKIPPED
            state.reason = REASON_UPSTREAM_FAILED
            state.message = f"not run: upstream task {failed_deps[0]} did not succeed"
            state.completion = now
            return state
        waiting_deps = [d for d in unit.depends_on if done.get(d) != TaskRunPhase.SUCCEEDED]
        if waiting_deps:
            state.reason = REASON_WAITING_DEPENDENCIES
            state.message = "waiting for " + ", ".join(waiting_deps)
            return state
        state.wants_attempt = 1
        return state

    if job.deleting and job.unfinished:
        state.phase = TaskRunPhase.FAILED
        state.reason = REASON_JOB_DELETED
        state.message = f"Job {job.name} was deleted before it finished"
        state.completion = now
        return state
    if job.unfinished:
        # A pod that has finished leaves `ready` at 0 before the Job is marked Complete/Failed: that
        # is still a running attempt, not a newly submitted one.
        was_running = previous is not None and previous.attempt == attempt and previous.phase == TaskRunPhase.RUNNING
        running = job.pod_started or was_running
        state.phase = TaskRunPhase.RUNNING if running else TaskRunPhase.SUBMITTED
        state.holds_slot = True
        state.message = f"Job {job.name}" + (" running" if running else " created")
        return state
    if job.outcome is JobOutcome.SUCCEEDED:
        state.phase = TaskRunPhase.SUCCEEDED
        state.reason = "Succeeded"
        state.message = f"Job {job.name} completed"
        state.completion = job.finished or now
        return state
    failure = f"attempt {attempt} failed ({job.reason})" + (f": {job.message}" if job.message else "")
    if attempt < unit.max_attempts:
        retry_at = (job.finished or now) + timedelta(seconds=spec.retry_delay_seconds)
        if now >= retry_at:
            state.wants_attempt = attempt + 1
            state.message = failure
        else:
            state.reason = REASON_AWAITING_RETRY
            remaining = format_duration(retry_at - now)
            state.message = f"{failure}; attempt {attempt + 1} of {unit.max_attempts} in {remaining}"
            state.wake_at = retry_at
        return state
    state.phase = TaskRunPhase.FAILED
    state.reason = job.reason or "Failed"
    state.message = failure
    state.completion = job.finished or now
    return state


_NOT_SUCCEEDED = {TaskRunPhase.FAILED, TaskRunPhase.SKIPPED, TaskRunPhase.CANCELLED}


def observe(
    run: RunSnapshot,
    jobs: Sequence[JobInfo],
    now: datetime,
    known_attempts: Mapping[str | None, int] | None = None,
) -> RunObservation:
    """What a run is doing now and what it asks for, before any admission decision.

    known_attempts: per task (None: the run's template), the highest attempt whose Job the caller created,
    in case neither that Job nor a status recording it is visible (a failed status write, then the Job
    deleted): that attempt is never started a second time.
    """
    known = known_attempts or {}
    spec = run.spec
    reruns = run.status.reruns or 0
    if _rerun_requested(run):
        run = _start_rerun(run)
        reruns = run.rerun_requested
    previous_phase = run.status.phase
    observation = RunObservation(snapshot=run, units=[])
    if previous_phase is not None and is_terminal(previous_phase):
        observation.terminal = FlowRunPhase(previous_phase)
        observation.terminal_reason = _condition_reason(run.status.conditions, FINISHED) or str(previous_phase)
        observation.terminal_message = run.status.message or ""
        observation.admitted = bool(jobs)
        observation.delete_jobs = [j.name for j in jobs if j.unfinished and not j.deleting]
        return observation
    if spec is None or run.spec_error:
        observation.terminal = FlowRunPhase.FAILED
        observation.terminal_reason = REASON_INVALID_SPEC
        observation.terminal_message = run.spec_error or "spec could not be read"
        return observation
    units = units_of(spec, reruns)
    if spec.tasks:
        cycle = find_cycle({u.task or "": u.depends_on for u in units})
        if cycle:
            observation.terminal = FlowRunPhase.FAILED
            observation.terminal_reason = REASON_INVALID_SPEC
            observation.terminal_message = "spec.tasks has a dependency cycle: " + " -> ".join(cycle)
            return observation

    if spec.cancel:
        observation.terminal = FlowRunPhase.CANCELLED
        observation.terminal_reason = REASON_CANCELLED
        observation.terminal_message = "cancelled by spec.cancel"
        observation.admitted = bool(jobs)
        observation.delete_jobs = [j.name for j in jobs if j.unfinished and not j.deleting]
        for unit in units:
            unit_jobs = [j for j in jobs if j.task == unit.task]
            latest = max(unit_jobs, key=lambda j: j.attempt, default=None)
            previous = _previous_unit_status(run, unit)
            keep = previous is not None and unit.task is not None and is_terminal(previous.phase)
            if keep and previous is not None:
                state = UnitState(unit=unit, phase=previous.phase, attempt=previous.attempt, job=latest)
                state.reason, state.message = previous.reason or "", previous.message or ""
                state.start, state.completion = previous.start_time, previous.completion_time
            elif latest is not None and latest.outcome is JobOutcome.SUCCEEDED:
                state = UnitState(unit=unit, phase=TaskRunPhase.SUCCEEDED, attempt=latest.attempt, job=latest)
                state.completion = latest.finished
            else:
                state = UnitState(
                    unit=unit,
                    phase=TaskRunPhase.CANCELLED,
                    # Its Job may be gone already: the attempt the status recorded still counts.
                    attempt=max(
                        latest.attempt if latest else 0, previous.attempt if previous else 0, known.get(unit.task, 0)
                    ),
                    job=latest,
                    reason=REASON_CANCELLED,
                    message="cancelled",
                    completion=now,
                )
            if previous and previous.start_time:
                state.start = previous.start_time
            observation.units.append(state)
        return observation

    # Units are observed in dependency order so a task sees its upstream tasks' outcome.
    by_task = {u.task: u for u in units}
    done: dict[str, TaskRunPhase] = {}
    states: dict[str | None, UnitState] = {}
    for unit in _topological(units):
        state = _observe_unit(run, unit, [j for j in jobs if j.task == unit.task], done, now, known)
        states[unit.task] = state
        if unit.task is not None:
            done[unit.task] = state.phase
    observation.units = [states[u.task] for u in by_task.values()]

    admitted_before = run.status.phase in (FlowRunPhase.SUBMITTED, FlowRunPhase.RUNNING) or bool(jobs)
    if not observation.is_dag:
        # A run without tasks holds its slots exactly while its current Job exists and has not finished.
        admitted_before = observation.units[0].holds_slot
    observation.admitted = admitted_before
    observation.wake_at = _earliest(*(s.wake_at for s in observation.units))

    if all(is_terminal(s.phase) for s in observation.units):
        failed = [s for s in observation.units if s.phase != TaskRunPhase.SUCCEEDED]
        if failed:
            first = next((s for s in failed if s.phase == TaskRunPhase.FAILED), failed[0])
            observation.terminal = FlowRunPhase.FAILED
            observation.terminal_reason = first.reason or "Failed"
            where = f"task {first.unit.task} " if first.unit.task else ""
            observation.terminal_message = where + first.message
        else:
            observation.terminal = FlowRunPhase.SUCCEEDED
            observation.terminal_reason = "Succeeded"
            observation.terminal_message = "all tasks succeeded" if observation.is_dag else "Job completed"
        return observation

    if not admitted_before:
        wants = any(s.wants_attempt for s in observation.units)
        first_start = spec.scheduled_start if not jobs else None
        if first_start is not None and now < first_start:
            observation.scheduled_until = first_start
            observation.wake_at = _earliest(observation.wake_at, first_start)
        elif wants:
            observation.needs_admission = True
    return observation


def _rerun_requested(run: RunSnapshot) -> bool:
    return (
        run.status.phase == FlowRunPhase.FAILED
        and run.spec is not None
        and not run.spec.cancel
        and run.spec_error is None
        and run.rerun_requested > (run.status.reruns or 0)
    )


def _start_rerun(run: RunSnapshot) -> RunSnapshot:
    """The run as if it had not finished: failed, skipped and cancelled tasks go back to waiting."""
    status = run.status.model_copy(
        update={
            "phase": None,
            "completion_time": None,
            "duration": None,
            "reruns": run.rerun_requested,
            "task_runs": [
                t
                if t.phase == TaskRunPhase.SUCCEEDED
                else t.model_copy(update={"phase": TaskRunPhase.SCHEDULED, "completion_time": None})
                for t in run.status.task_runs
            ],
        }
    )
    return replace(run, status=status)


def _topological(units: Sequence[Unit]) -> list[Unit]:
    placed: set[str | None] = set()
    ordered: list[Unit] = []
    remaining = list(units)
    while remaining:
        progress = [u for u in remaining if all(d in placed for d in u.depends_on)]
        if not progress:  # a cycle or unknown names: keep spec order for the rest
            progress = remaining
        for unit in progress:
            ordered.append(unit)
            placed.add(unit.task)
        remaining = [u for u in remaining if u.task not in placed]
    return ordered


def _condition_reason(conditions: Sequence[Condition], type_: str) -> str:
    return next((c.reason for c in conditions if c.type == type_), "")


def _waiting(waits: Sequence[Wait]) -> list[WaitingFor]:
    return [WaitingFor(name=w.limit, position=w.position, in_use=w.in_use, limit=w.capacity) for w in waits]


def plan(
    observation: RunObservation,
    *,
    run_admitted: bool,
    run_waits: Sequence[Wait],
    admitted_units: set[str],
    unit_waits: Mapping[str, Sequence[Wait]],
    now: datetime,
    held: tuple[str, str] | None = None,
) -> RunPlan:
    """The status to write and the writes to make, once admission has been decided.

    run_admitted: the run got its label slots in this pass. admitted_units: request keys of units
    (see `Unit.request_key`) admitted in this pass. held: (reason, message) when the run was admitted
    but the API server refused its Job for a reason that passes (a ResourceQuota): it waits as Pending.
    """
    # Work on copies: an observation may be reused by later passes while its inputs are unchanged.
    observation = replace(
        observation, units=[replace(s) for s in observation.units], delete_jobs=list(observation.delete_jobs)
    )
    run = observation.snapshot
    previous = run.status
    generation = run.generation
    status = FlowRunStatus(
        phase=previous.phase,
        conditions=list(previous.conditions),
        observed_generation=generation,
        attempt=previous.attempt,
        reruns=previous.reruns,
        start_time=previous.start_time,
        completion_time=previous.completion_time,
        duration=previous.duration,
        message=previous.message,
        job_name=previous.job_name,
        task_runs=list(previous.task_runs),
    )
    result = RunPlan(status=status, delete_jobs=list(observation.delete_jobs))
    admitted = observation.admitted or run_admitted

    # Job creation for units that asked for one and got their slots.
    for state in observation.units:
        if state.wants_attempt is None or not admitted:
            continue
        if state.unit.tags and state.unit.request_key(run.name) not in admitted_units:
            continue
        attempt = state.wants_attempt
        name = job_name(run.name, state.unit.task, attempt, run.uid)
        result.create_jobs.append(JobToCreate(name=name, unit=state.unit, attempt=attempt))
        state.attempt = attempt
        state.phase = TaskRunPhase.SUBMITTED
        state.reason = ""
        state.message = f"Job {name} created"
        state.holds_slot = True
        state.start = state.start or now
        state.wants_attempt = None

    for state in observation.units:
        if state.wants_attempt is None:
            continue
        waits = unit_waits.get(state.unit.request_key(run.name), ())
        if not admitted:
            state.phase = TaskRunPhase.PENDING if observation.needs_admission else TaskRunPhase.SCHEDULED
        elif waits:
            state.phase = TaskRunPhase.PENDING
            state.reason = REASON_LIMIT_REACHED
            state.message = "; ".join(w.describe() for w in waits)

    phase, reason, message = _run_phase(observation, admitted, run_waits)
    if held is not None and observation.terminal is None and not any(s.job for s in observation.units):
        phase, (reason, message) = FlowRunPhase.PENDING, held
    status.phase = phase
    status.message = message
    if observation.units:
        status.attempt = max(s.attempt for s in observation.units) or None
        if not observation.is_dag:
            unit = observation.units[0]
            status.job_name = job_name(run.name, None, unit.attempt, run.uid) if unit.attempt else None
        starts = [s.start for s in observation.units if s.start]
        if starts and status.start_time is None:
            status.start_time = min(starts)
    status.waiting_for = _waiting(run_waits) if phase == FlowRunPhase.PENDING else []
    if observation.is_dag and observation.units:
        status.task_runs = [_task_run(state, unit_waits, run) for state in observation.units]

    terminal = is_terminal(phase)
    if terminal and status.completion_time is None:
        completions = [s.completion for s in observation.units if s.completion]
        status.completion_time = max(completions) if completions else now
    if terminal and status.start_time and status.completion_time and status.duration is None:
        status.duration = format_duration(status.completion_time - status.start_time)

    _set_conditions(status, observation, phase, reason, message, admitted, generation, now)
    result.events = _events(previous, status, observation)

    wake = observation.wake_at if not terminal else None
    if terminal and run.spec and run.spec.ttl_seconds_after_finished is not None and status.completion_time:
        expires = status.completion_time + timedelta(seconds=run.spec.ttl_seconds_after_finished)
        if now >= expires:
            result.delete_run = True
        else:
            wake = expires
    result.wake_at = wake
    return result


def _run_phase(observation: RunObservation, admitted: bool, run_waits: Sequence[Wait]) -> tuple[FlowRunPhase, str, str]:
    if observation.terminal is not None:
        return observation.terminal, observation.terminal_reason, observation.terminal_message
    units = observation.units
    if not admitted:
        if observation.scheduled_until is not None:
            return (
                FlowRunPhase.SCHEDULED,
                REASON_SCHEDULED,
                f"scheduled to start at {observation.scheduled_until.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            )
        if run_waits:
            return FlowRunPhase.PENDING, REASON_LIMIT_REACHED, "; ".join(w.describe() for w in run_waits)
        retrying = next((s for s in units if s.reason == REASON_AWAITING_RETRY), None)
        if retrying is not None:
            return FlowRunPhase.SCHEDULED, REASON_AWAITING_RETRY, retrying.message
        return FlowRunPhase.SCHEDULED, "Created", "waiting to be admitted"
    if not observation.is_dag:
        unit = units[0]
        if unit.phase == TaskRunPhase.RUNNING:
            return FlowRunPhase.RUNNING, "PodRunning", unit.message
        return FlowRunPhase.SUBMITTED, "JobCreated", unit.message
    if any(s.phase == TaskRunPhase.RUNNING or (s.job and s.job.pod_started) for s in units):
        running = [s.unit.task or "" for s in units if s.phase == TaskRunPhase.RUNNING]
        finished = sum(1 for s in units if is_terminal(s.phase))
        detail = f"{finished}/{len(units)} tasks finished"
        return (
            FlowRunPhase.RUNNING,
            "TasksRunning",
            detail + (f"; running: {', '.join(running)}" if running else ""),
        )
    return FlowRunPhase.SUBMITTED, "Admitted", f"0/{len(units)} tasks finished"


def _task_run(state: UnitState, unit_waits: Mapping[str, Sequence[Wait]], run: RunSnapshot) -> TaskRun:
    waits = unit_waits.get(state.unit.request_key(run.name), ()) if state.phase == TaskRunPhase.PENDING else ()
    return TaskRun(
        name=state.unit.task or "",
        phase=state.phase,
        attempt=state.attempt,
        job_name=job_name(run.name, state.unit.task, state.attempt, run.uid) if state.attempt else None,
        start_time=state.start,
        completion_time=state.completion if is_terminal(state.phase) else None,
        message=state.message or None,
        reason=state.reason or None,
        waiting_for=_waiting(waits),
    )


def _set_conditions(
    status: FlowRunStatus,
    observation: RunObservation,
    phase: FlowRunPhase,
    reason: str,
    message: str,
    admitted: bool,
    generation: int,
    now: datetime,
) -> None:
    def cond(type_: str, value: bool, why: str, text: str) -> Condition:
        return Condition(
            type=type_,
            status=ConditionStatus.TRUE if value else ConditionStatus.FALSE,
            reason=why,
            message=text,
            observed_generation=generation,
        )

    terminal = is_terminal(phase)
    conditions = status.conditions
    if admitted:
        admitted_cond = cond(ADMITTED, True, "Admitted", "concurrency slots granted")
    elif terminal:
        admitted_cond = cond(ADMITTED, False, reason, "never admitted")
    else:
        admitted_cond = cond(ADMITTED, False, reason, message)
    previous_admitted = next((c for c in conditions if c.type == ADMITTED), None)
    if not (terminal and previous_admitted is not None):
        conditions = set_condition(conditions, admitted_cond, now)
    running = phase == FlowRunPhase.RUNNING
    conditions = set_condition(
        conditions,
        cond(RUNNING, running, "PodRunning" if running else str(phase), message if running else ""),
        now,
    )
    conditions = set_condition(
        conditions,
        cond(FINISHED, terminal, reason if terminal else "InProgress", message if terminal else ""),
        now,
    )
    status.conditions = conditions


def _events(previous: FlowRunStatus, status: FlowRunStatus, observation: RunObservation) -> list[RunEvent]:
    events: list[RunEvent] = []
    # Running is told by the pod's own Events; the run's Events mark admission and the outcome.
    if previous.phase != status.phase and status.phase not in (None, FlowRunPhase.RUNNING):
        kind = "Warning" if status.phase == FlowRunPhase.FAILED else "Normal"
        events.append(
            RunEvent(kind, str(status.phase), status.message or str(status.phase), attempt=status.attempt or 0)
        )
    before = {t.name: t.phase for t in previous.task_runs}
    for task_run in status.task_runs:
        if before.get(task_run.name) != task_run.phase and task_run.phase != TaskRunPhase.SCHEDULED:
            kind = "Warning" if task_run.phase == TaskRunPhase.FAILED else "Normal"
            text = f"task {task_run.name}: {task_run.phase}" + (f" ({task_run.message})" if task_run.message else "")
            events.append(RunEvent(kind, f"Task{task_run.phase}", text, task_run.name, task_run.attempt))
    return events
