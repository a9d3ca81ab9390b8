"""Typed, read-only views of what the API server returns: a FlowRun with its task runs, the attempts (Jobs)
of a run, its Events, and a ConcurrencyLimit with its holders and its waiting line.

Everything here is pure (plain API objects in, views out), so it is unit-tested without a cluster. The
views are built on the pydantic models of :mod:`flowrun_operator.api`; a malformed status is reported in
``status_error`` instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from flowrun_operator.api.common import (
    ATTEMPT_LABEL,
    RUN_LABEL,
    TASK_LABEL,
    Condition,
    find_condition,
    parse_time,
)
from flowrun_operator.api.concurrencylimit import ConcurrencyLimitSpec, ConcurrencyLimitStatus
from flowrun_operator.api.flowrun import (
    FlowRunPhase,
    FlowRunSpec,
    FlowRunStatus,
    TaskRun,
    WaitingFor,
    is_terminal,
)
from flowrun_operator.client.errors import ClientError, InvalidState, NoLogs

# The task name of the single unit of work of a run without tasks (its Job), as in `kubectl flowrun get`.
MAIN_TASK = "main"
ADMITTED = "Admitted"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(str(value))
    except ValueError:
        return None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# ------------------------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class TaskRunView:
    """One task run (or, for a run without tasks, the run's single Job as the task ``main``)."""

    name: str
    phase: str | None
    attempt: int | None
    job_name: str | None
    start_time: datetime | None
    completion_time: datetime | None
    message: str | None
    reason: str | None = None
    depends_on: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    retries: int = 0
    waiting_for: tuple[WaitingFor, ...] = ()

    @property
    def finished(self) -> bool:
        return is_terminal(self.phase)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase,
            "attempt": self.attempt,
            "jobName": self.job_name,
            "startTime": _iso(self.start_time),
            "completionTime": _iso(self.completion_time),
            "message": self.message,
            "reason": self.reason,
            "dependsOn": list(self.depends_on),
            "tags": list(self.tags),
            "retries": self.retries,
            "waitingFor": [w.to_api() for w in self.waiting_for],
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class FlowRunView:
    """A FlowRun as the API server returned it, parsed into the API models.

    ``spec`` is None only for an object whose spec does not parse (the CRD schema normally prevents it);
    ``status_error`` says why a malformed status was read as empty.
    """

    raw: Mapping[str, Any]
    spec: FlowRunSpec | None
    status: FlowRunStatus
    status_error: str | None = None

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> FlowRunView:
        raw_status = obj.get("status")
        try:
            status = FlowRunStatus.model_validate(raw_status if isinstance(raw_status, Mapping) else {})
            error = None
        except ValidationError as failure:
            status, error = FlowRunStatus(), f"status could not be read: {failure.error_count()} invalid field(s)"
        try:
            spec: FlowRunSpec | None = FlowRunSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            spec = None
        return cls(raw=obj, spec=spec, status=status, status_error=error)

    # metadata
    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.raw.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid", ""))

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion", ""))

    @property
    def created(self) -> datetime | None:
        return _time(self.metadata.get("creationTimestamp"))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.metadata.get("labels") or {})

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.metadata.get("annotations") or {})

    # spec
    @property
    def flow(self) -> str:
        return self.spec.flow if self.spec else str((self.raw.get("spec") or {}).get("flow", ""))

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.spec.parameters) if self.spec else {}

    @property
    def priority(self) -> int:
        return self.spec.priority if self.spec else 0

    @property
    def cancel_requested(self) -> bool:
        return bool((self.raw.get("spec") or {}).get("cancel"))

    @property
    def has_tasks(self) -> bool:
        return bool(self.task_names)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in (self.spec.tasks or [])] if self.spec else []

    # status
    @property
    def phase(self) -> FlowRunPhase | None:
        return self.status.phase

    @property
    def finished(self) -> bool:
        return self.status.is_terminal

    @property
    def conditions(self) -> list[Condition]:
        return list(self.status.conditions)

    def condition(self, type_: str) -> Condition | None:
        return find_condition(self.status.conditions, type_)

    @property
    def attempt(self) -> int | None:
        return self.status.attempt or None

    @property
    def reruns(self) -> int:
        return self.status.reruns or 0

    @property
    def start_time(self) -> datetime | None:
        return self.status.start_time

    @property
    def completion_time(self) -> datetime | None:
        return self.status.completion_time

    @property
    def duration(self) -> str | None:
        return self.status.duration

    @property
    def message(self) -> str | None:
        return self.status.message

    @property
    def waiting_for(self) -> list[WaitingFor]:
        return list(self.status.waiting_for)

    @property
    def task_runs(self) -> list[TaskRunView]:
        """Task runs in spec order (tasks the status does not report yet have no phase), then task runs of
        tasks no longer in the spec. A run without tasks has one entry, ``main``: its own Job."""
        if not self.has_tasks or self.spec is None:
            return [
                TaskRunView(
                    name=MAIN_TASK,
                    phase=str(self.phase) if self.phase else None,
                    attempt=self.attempt,
                    job_name=self.status.job_name,
                    start_time=self.start_time,
                    completion_time=self.completion_time,
                    message=self.message,
                    retries=self.spec.retries if self.spec else 0,
                    waiting_for=tuple(self.waiting_for),
                )
            ]
        reported = {t.name: t for t in self.status.task_runs}
        views = []
        for task in self.spec.tasks or []:
            views.append(
                _task_view(
                    reported.get(task.name),
                    task.name,
                    depends_on=tuple(task.depends_on),
                    tags=tuple(task.tags),
                    retries=self.spec.task_retries(task),
                )
            )
        known = set(self.task_names)
        views += [_task_view(t, t.name) for t in self.status.task_runs if t.name not in known]
        return views

    def task(self, name: str) -> TaskRunView | None:
        return next((t for t in self.task_runs if t.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (camelCase), as the dashboard serves it."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "flow": self.flow,
            "labels": self.labels,
            "created": _iso(self.created),
            "priority": self.priority,
            "parameters": self.parameters,
            "phase": str(self.phase) if self.phase else None,
            "attempt": self.attempt,
            "reruns": self.reruns,
            "startTime": _iso(self.start_time),
            "completionTime": _iso(self.completion_time),
            "duration": self.duration,
            "message": self.message,
            "cancelRequested": self.cancel_requested,
            "hasTasks": self.has_tasks,
            "conditions": [c.to_api() for c in self.conditions],
            "waitingFor": [w.to_api() for w in self.waiting_for],
            "taskRuns": [t.to_dict() for t in self.task_runs],
            "statusError": self.status_error,
        }


def _task_view(
    task_run: TaskRun | None,
    name: str,
    *,
    depends_on: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    retries: int = 0,
) -> TaskRunView:
    if task_run is None:
        return TaskRunView(
            name=name,
            phase=None,
            attempt=None,
            job_name=None,
            start_time=None,
            completion_time=None,
            message="no task run reported in the status",
            depends_on=depends_on,
            tags=tags,
            retries=retries,
        )
    return TaskRunView(
        name=name,
        phase=str(task_run.phase),
        attempt=task_run.attempt or None,
        job_name=task_run.job_name,
        start_time=task_run.start_time,
        completion_time=task_run.completion_time,
        message=task_run.message,
        reason=task_run.reason,
        depends_on=depends_on,
        tags=tags,
        retries=retries,
        waiting_for=tuple(task_run.waiting_for),
    )


# -------------------------------------------------------------------------------------- attempts, events


@dataclass(frozen=True)
class AttemptView:
    """One attempt of a task run (or of a run without tasks): its Job, while the Job exists."""

    task: str
    attempt: int
    job_name: str
    created: datetime | None
    start_time: datetime | None
    completion_time: datetime | None
    outcome: str
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "attempt": self.attempt,
            "jobName": self.job_name,
            "created": _iso(self.created),
            "startTime": _iso(self.start_time),
            "completionTime": _iso(self.completion_time),
            "outcome": self.outcome,
            "reason": self.reason,
        }


def attempt_from_job(job: Mapping[str, Any]) -> AttemptView:
    """What a Job of a run says about its attempt: Running until a Complete or Failed condition."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = job.get("status") or {}
    outcome, reason, finished = ("Running" if status.get("startTime") else "Pending"), None, None
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            outcome, finished = "Succeeded", _time(cond.get("lastTransitionTime"))
        elif cond.get("type") == "Failed":
            outcome, reason = "Failed", cond.get("reason")
            finished = _time(cond.get("lastTransitionTime"))
    return AttemptView(
        task=str(labels.get(TASK_LABEL) or MAIN_TASK),
        attempt=_int(labels.get(ATTEMPT_LABEL)),
        job_name=str(meta.get("name", "")),
        created=_time(meta.get("creationTimestamp")),
        start_time=_time(status.get("startTime")),
        completion_time=_time(status.get("completionTime")) or finished,
        outcome=outcome,
        reason=reason,
    )


def attempts_from_jobs(jobs: Iterable[Mapping[str, Any]]) -> list[AttemptView]:
    return sorted((attempt_from_job(j) for j in jobs), key=lambda a: (a.task, a.attempt, a.job_name))


@dataclass(frozen=True)
class EventView:
    """A Kubernetes Event about an object (core/v1 or events.k8s.io fields, whichever are set)."""

    type: str
    reason: str
    message: str
    count: int
    first_time: datetime | None
    last_time: datetime | None
    source: str

    @classmethod
    def from_api(cls, event: Mapping[str, Any]) -> EventView:
        meta = event.get("metadata") or {}
        series = event.get("series") or {}
        first = (
            _time(event.get("firstTimestamp")) or _time(event.get("eventTime")) or _time(meta.get("creationTimestamp"))
        )
        last = _time(event.get("lastTimestamp")) or _time(series.get("lastObservedTime")) or first
        source = event.get("reportingComponent") or (event.get("source") or {}).get("component") or ""
        return cls(
            type=str(event.get("type") or ""),
            reason=str(event.get("reason") or ""),
            message=str(event.get("message") or event.get("note") or ""),
            count=_int(event.get("count") or series.get("count") or 1),
            first_time=first,
            last_time=last,
            source=str(source),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
            "count": self.count,
            "firstTime": _iso(self.first_time),
            "lastTime": _iso(self.last_time),
            "source": self.source,
        }


def sort_events(events: Iterable[EventView]) -> list[EventView]:
    epoch = datetime.min.replace(tzinfo=None)
    return sorted(events, key=lambda e: ((e.first_time.replace(tzinfo=None) if e.first_time else epoch), e.reason))


# ------------------------------------------------------------------------------------------------ limits


@dataclass(frozen=True)
class Waiter:
    """A run (or task run) in a limit's waiting line."""

    run: str
    task: str | None
    position: int
    priority: int
    created: datetime | None
    waiting_since: datetime | None

    @property
    def key(self) -> str:
        return f"{self.run}/{self.task}" if self.task else self.run

    def waited(self, now: datetime) -> float | None:
        return None if self.waiting_since is None else max(0.0, (now - self.waiting_since).total_seconds())

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "run": self.run,
            "task": self.task,
            "position": self.position,
            "priority": self.priority,
            "created": _iso(self.created),
            "waitingSince": _iso(self.waiting_since),
            "waitedSeconds": self.waited(now),
        }


@dataclass(frozen=True)
class LimitView:
    """A ConcurrencyLimit with its holders (status.active) and its waiting line, front first."""

    raw: Mapping[str, Any]
    spec: ConcurrencyLimitSpec | None
    status: ConcurrencyLimitStatus
    waiting: list[Waiter] = field(default_factory=list)

    @classmethod
    def from_api(cls, obj: Mapping[str, Any], runs: Iterable[FlowRunView] = ()) -> LimitView:
        try:
            spec: ConcurrencyLimitSpec | None = ConcurrencyLimitSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            spec = None
        raw_status = obj.get("status")
        try:
            status = ConcurrencyLimitStatus.model_validate(raw_status if isinstance(raw_status, Mapping) else {})
        except ValidationError:
            status = ConcurrencyLimitStatus()
        name = str((obj.get("metadata") or {}).get("name", ""))
        return cls(raw=obj, spec=spec, status=status, waiting=waiting_line(name, runs))

    @property
    def name(self) -> str:
        return str((self.raw.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str((self.raw.get("metadata") or {}).get("namespace", ""))

    @property
    def limit(self) -> int:
        return self.spec.limit if self.spec else 0

    @property
    def in_use(self) -> int:
        return self.status.in_use

    @property
    def pending(self) -> int:
        return self.status.pending

    @property
    def holders(self) -> list[str]:
        return list(self.status.active)

    @property
    def tag(self) -> str | None:
        return self.spec.tag if self.spec else None

    @property
    def selects(self) -> str:
        """What the limit caps, e.g. ``runs with team=ml`` or ``task runs tagged db``."""
        if self.spec is None:
            return "-"
        if self.spec.tag is not None:
            return f"task runs tagged {self.spec.tag}"
        selector = self.spec.selector
        if selector is None or selector.is_empty:
            return "every run"
        parts = [f"{k}={v}" for k, v in (selector.match_labels or {}).items()]
        parts += [f"{r.key} {r.operator.value} {','.join(r.values)}".strip() for r in selector.match_expressions or []]
        return "runs with " + ", ".join(parts)

    def to_dict(self, now: datetime) -> dict[str, Any]:
        ready = self.status.condition("Ready")
        return {
            "name": self.name,
            "namespace": self.namespace,
            "limit": self.limit,
            "inUse": self.in_use,
            "pending": self.pending,
            "selects": self.selects,
            "holders": self.holders,
            "waiting": [w.to_dict(now) for w in self.waiting],
            "ready": ready.to_api() if ready else None,
        }


def _admission_key(waiter: Waiter) -> tuple[int, int, datetime, str]:
    created = waiter.created or datetime.max.replace(tzinfo=None)
    return (waiter.position, -waiter.priority, created.replace(tzinfo=None), waiter.key)


def waiting_line(limit: str, runs: Iterable[FlowRunView]) -> list[Waiter]:
    """The runs and task runs whose status says they wait for ``limit``, front of the line first.

    Positions come from each run's status.waitingFor (refreshed by the operator at a paced rate, so two
    entries may briefly share a position); ties go by admission order: priority, then age, then name.
    """
    waiters: list[Waiter] = []
    for run in runs:
        if run.finished:
            continue
        admitted = run.condition(ADMITTED)
        since = admitted.last_transition_time if admitted is not None and not admitted.is_true else None
        for wait in run.waiting_for:
            if wait.name == limit:
                waiters.append(Waiter(run.name, None, wait.position, run.priority, run.created, since or run.created))
        if not run.has_tasks:
            continue
        finished = {t.name: t.completion_time for t in run.task_runs}
        for task in run.task_runs:
            for wait in task.waiting_for:
                if wait.name != limit or task.finished:
                    continue
                # A task waits from when its last dependency finished (or the run started).
                upstream = [finished[d] for d in task.depends_on if finished.get(d) is not None]
                ready = max((t for t in upstream if t is not None), default=None) or run.start_time or run.created
                waiters.append(Waiter(run.name, task.name, wait.position, run.priority, run.created, ready))
    return sorted(waiters, key=_admission_key)


# ---------------------------------------------------------------------------------- actions and log lookup


class RunLike(Protocol):
    """What the action checks need of a run: a :class:`FlowRunView` or the CLI's summary."""

    @property
    def name(self) -> str: ...
    @property
    def phase(self) -> str | None: ...
    @property
    def finished(self) -> bool: ...
    @property
    def cancel_requested(self) -> bool: ...
    @property
    def reruns(self) -> int: ...
    @property
    def has_tasks(self) -> bool: ...
    @property
    def task_names(self) -> list[str]: ...
    def task(self, name: str) -> UnitLike | None: ...


class UnitLike(Protocol):
    @property
    def phase(self) -> str | None: ...
    @property
    def attempt(self) -> int | None: ...


def check_cancel(run: RunLike) -> bool:
    """Whether cancelling has to patch the run (False: cancel was requested already). A finished run raises."""
    if run.finished:
        raise InvalidState(f'flowrun "{run.name}" already finished ({run.phase}); nothing to cancel')
    return not run.cancel_requested


def next_rerun(run: RunLike) -> int:
    """The value for the rerun annotation that re-runs this Failed run; raises for any other run."""
    name = run.name
    if run.phase == FlowRunPhase.FAILED:
        if run.cancel_requested:
            raise InvalidState(
                f'flowrun "{name}" was cancelled (spec.cancel is true); a cancelled run cannot be retried'
            )
        return run.reruns + 1
    only = "only a Failed run can be retried"
    if run.phase == FlowRunPhase.CANCELLED:
        raise InvalidState(f'flowrun "{name}" was cancelled; {only}')
    if run.phase == FlowRunPhase.SUCCEEDED:
        raise InvalidState(f'flowrun "{name}" succeeded; there is nothing to retry ({only})')
    if run.phase is None:
        raise InvalidState(f'flowrun "{name}" has not started yet (no phase); {only}')
    raise InvalidState(f'flowrun "{name}" is still {run.phase}; {only}')


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


def resolve_task(run: RunLike, task: str | None) -> str | None:
    """The task whose logs to show: a task of the spec, or None for a run without tasks.

    A run with tasks needs a task (usage error, code 2, naming them); an unknown task is an error (code 1).
    """
    name = run.name
    if run.has_tasks:
        if task is None:
            raise NoLogs(f'flowrun "{name}" has tasks; name one of them: {_names(run.task_names)}', code=2)
        if task not in run.task_names:
            raise NoLogs(f'flowrun "{name}" has no task "{task}"; its tasks are: {_names(run.task_names)}')
        return task
    if task is not None and task != MAIN_TASK:
        raise NoLogs(f'flowrun "{name}" has no tasks (it runs a single Job, shown as "{MAIN_TASK}"); omit TASK')
    return None


def current_attempt(run: RunLike, task: str | None) -> int | None:
    """The attempt the status reports for the task (or for the run without tasks); None before the first Job."""
    row = run.task(task or MAIN_TASK)
    return row.attempt if row is not None else None


def pod_selector(run: str, task: str | None, attempt: int | None) -> str:
    """The label selector of the pods of a run's task (or of the run without tasks) and attempt."""
    parts = [f"{RUN_LABEL}={run}", f"{TASK_LABEL}={task}" if task else f"!{TASK_LABEL}"]
    if attempt is not None:
        parts.append(f"{ATTEMPT_LABEL}={attempt}")
    return ",".join(parts)


def _pod_attempt(pod: Mapping[str, Any]) -> int:
    return _int(((pod.get("metadata") or {}).get("labels") or {}).get(ATTEMPT_LABEL, 0))


def _created(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def choose_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod to read: of the highest attempt, the newest (a Job may have replaced a pod)."""
    if not pods:
        return None
    return max(pods, key=lambda p: (_pod_attempt(p), _created(p), _pod_name(p)))


def pod_containers(pod: Mapping[str, Any]) -> list[str]:
    return [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name")]


def choose_container(pod: Mapping[str, Any], container: str | None) -> str:
    """The container to read: the one asked for, else the pod's default container, else its first."""
    names = pod_containers(pod)
    pod_name = _pod_name(pod)
    if container is not None:
        if names and container not in names:
            raise NoLogs(f'pod "{pod_name}" has no container "{container}"; its containers are: {_names(names)}')
        return container
    default = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION)
    if default in names:
        return str(default)
    if not names:
        raise NoLogs(f'pod "{pod_name}" has no containers')
    return names[0]


def describe_unit(run: str, task: str | None, attempt: int | None) -> str:
    what = f'task "{task}" of flowrun "{run}"' if task else f'flowrun "{run}"'
    return f"{what}, attempt {attempt}" if attempt is not None else what


def log_error(pod: str, container: str, status: int | None, message: str) -> ClientError:
    """Why the logs of a pod that exists could not be read, in the API server's words."""
    text = f'cannot read the logs of pod "{pod}" (container "{container}"): {message}'
    if status == 404:
        # The pod was just listed, so a 404 comes from the node: KWOK's simulated nodes never serve logs.
        text += " (the pod's node did not serve its logs: it may be a simulated node, or the pod is gone)"
    return NoLogs(text)


def dependency_order(tasks: Sequence[TaskRunView]) -> list[TaskRunView]:
    """Tasks so that each comes after all its dependencies, otherwise in spec order (Kahn's algorithm).
    Tasks on a dependency cycle (which the operator refuses to run) come last, in spec order."""
    by_name = {t.name: t for t in tasks}
    remaining = {t.name: {d for d in t.depends_on if d in by_name and d != t.name} for t in tasks}
    ordered: list[TaskRunView] = []
    while True:
        ready = [t for t in tasks if t.name in remaining and not remaining[t.name]]
        if not ready:
            break
        for task in ready:
            del remaining[task.name]
            ordered.append(task)
        for deps in remaining.values():
            deps.difference_update(t.name for t in ready)
    return ordered + [t for t in tasks if t.name in remaining]
