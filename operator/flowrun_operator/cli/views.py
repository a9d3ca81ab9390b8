"""Pure logic of the CLI: what a FlowRun and its task runs look like to a user, and which actions it allows.

Everything here works on plain API objects (the dicts the API server returns) and a ``now``; nothing talks to
the cluster, so all of it is unit-tested with fake data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from flowrun_operator.api.common import (
    RERUN_ANNOTATION,
    format_duration,
    format_time,
)
from flowrun_operator.api.flowrun import FlowRunStatus, TaskRun, WaitingFor, is_terminal
from flowrun_operator.client.errors import ClientError, NotFound, api_error_message, api_error_names_object
from flowrun_operator.client.views import (
    DEFAULT_CONTAINER_ANNOTATION,
    MAIN_TASK,
    check_cancel,
    choose_container,
    choose_pod,
    current_attempt,
    describe_unit,
    log_error,
    next_rerun,
    pod_containers,
    pod_selector,
    resolve_task,
)

__all__ = [
    "DEFAULT_CONTAINER_ANNOTATION",
    "MAIN_TASK",
    "CliError",
    "RunSummary",
    "TaskRow",
    "ago",
    "api_error_message",
    "api_error_names_object",
    "check_cancel",
    "choose_container",
    "choose_pod",
    "current_attempt",
    "describe_unit",
    "describe_waits",
    "elapsed",
    "filter_by_phase",
    "human_age",
    "log_error",
    "next_rerun",
    "not_found",
    "pod_containers",
    "pod_selector",
    "resolve_task",
    "sort_runs",
    "summarize",
]

# An expected failure: printed as ``error: <message>`` on stderr, then exit with ``code``. The client's
# errors are the CLI's, so a failure of any API call ends the same way.
CliError = ClientError


# ------------------------------------------------------------------------------------------------ times


def human_age(value: timedelta) -> str:
    """A compact age like kubectl's ``HumanDuration``: ``45s``, ``3m20s``, ``17m``, ``5h3m``, ``3d4h``, ``90d``."""
    seconds = int(value.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        secs = seconds % 60
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        mins = minutes % 60
        return f"{hours}h{mins}m" if mins else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years, rest_days = divmod(days, 365)
    if days < 365 * 8 and rest_days:
        return f"{years}y{rest_days}d"
    return f"{years}y"


def ago(value: datetime | None, now: datetime) -> str | None:
    """``"3m20s ago"``, or None for no time."""
    return None if value is None else f"{human_age(now - value)} ago"


def elapsed(
    start: datetime | None,
    completion: datetime | None,
    phase: str | None,
    now: datetime,
    recorded: str | None = None,
) -> str | None:
    """How long a run or task run took (finished) or has been going (unfinished), Go-style (``1m3s``).

    ``recorded`` (status.duration) wins when set. A finished run without a completion time has no duration.
    """
    if recorded:
        return recorded
    if start is None:
        return None
    if completion is not None:
        return format_duration(completion - start)
    if is_terminal(phase):
        return None
    # Whole seconds, truncated like the "ago" of the start time, so the two agree.
    return format_duration(timedelta(seconds=int((now - start).total_seconds())))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


# ---------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class TaskRow:
    """One row of `get`'s task table: a task run, or the run itself (``main``) for a run without tasks."""

    name: str
    phase: str | None
    attempt: int | None
    job_name: str | None
    start_time: datetime | None
    completion_time: datetime | None
    duration: str | None
    message: str | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "phase": self.phase,
            "attempt": self.attempt,
            "jobName": self.job_name,
            "startTime": _iso(self.start_time),
            "completionTime": _iso(self.completion_time),
            "duration": self.duration,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class RunSummary:
    """What the CLI shows about one FlowRun."""

    name: str
    namespace: str
    flow: str
    phase: str | None
    attempt: int | None
    reruns: int
    start_time: datetime | None
    completion_time: datetime | None
    duration: str | None
    message: str | None
    job_name: str | None
    cancel_requested: bool
    rerun_requested: str | None
    task_names: list[str]
    tasks: list[TaskRow]
    waiting_for: list[WaitingFor] = field(default_factory=list)
    status_error: str | None = None

    @property
    def has_tasks(self) -> bool:
        return bool(self.task_names)

    @property
    def finished(self) -> bool:
        return is_terminal(self.phase)

    def task(self, name: str) -> TaskRow | None:
        return next((t for t in self.tasks if t.name == name), None)

    def to_dict(self, *, with_tasks: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "flow": self.flow,
            "phase": self.phase,
            "attempt": self.attempt,
            "reruns": self.reruns,
            "startTime": _iso(self.start_time),
            "completionTime": _iso(self.completion_time),
            "duration": self.duration,
            "message": self.message,
            "cancelRequested": self.cancel_requested,
            "waitingFor": [w.to_api() for w in self.waiting_for],
        }
        if with_tasks:
            data["tasks"] = [t.to_dict() for t in self.tasks]
        return data


def describe_waits(waits: Sequence[WaitingFor]) -> str:
    """``"gpu (position 3, 2/2 in use), db (position 1, 4/4 in use)"``."""
    return ", ".join(f"{w.name} (position {w.position}, {w.in_use}/{w.limit} in use)" for w in waits)


def _status(raw: Any) -> tuple[FlowRunStatus, str | None]:
    """The run's status, tolerating a malformed one (shown as an error instead of a crash)."""
    try:
        return FlowRunStatus.model_validate(raw if isinstance(raw, Mapping) else {}), None
    except ValidationError as error:
        return FlowRunStatus(), f"status could not be read: {error.error_count()} invalid field(s)"


def _task_names(spec: Mapping[str, Any]) -> list[str]:
    tasks = spec.get("tasks")
    if not isinstance(tasks, list):
        return []
    return [str(t.get("name")) for t in tasks if isinstance(t, Mapping) and t.get("name")]


def _task_row(task_run: TaskRun, now: datetime) -> TaskRow:
    return TaskRow(
        name=task_run.name,
        phase=str(task_run.phase),
        attempt=task_run.attempt or None,
        job_name=task_run.job_name,
        start_time=task_run.start_time,
        completion_time=task_run.completion_time,
        duration=elapsed(task_run.start_time, task_run.completion_time, str(task_run.phase), now),
        message=task_run.message,
        reason=task_run.reason,
    )


def summarize(obj: Mapping[str, Any], now: datetime) -> RunSummary:
    """Summarize a FlowRun object as returned by the API server."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status, status_error = _status(obj.get("status"))
    phase = str(status.phase) if status.phase is not None else None
    duration = elapsed(status.start_time, status.completion_time, phase, now, status.duration)
    task_names = _task_names(spec)

    tasks: list[TaskRow]
    if task_names:
        reported = {t.name: t for t in status.task_runs}
        tasks = [_task_row(reported[name], now) if name in reported else _unreported(name) for name in task_names]
        # Task runs of tasks no longer in the spec are still shown, after the spec's tasks.
        tasks += [_task_row(t, now) for t in status.task_runs if t.name not in task_names]
    else:
        tasks = [
            TaskRow(
                name=MAIN_TASK,
                phase=phase,
                attempt=status.attempt or None,
                job_name=status.job_name,
                start_time=status.start_time,
                completion_time=status.completion_time,
                duration=duration,
                message=status.message,
            )
        ]
    annotations = meta.get("annotations") or {}
    return RunSummary(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        flow=str(spec.get("flow", "")),
        phase=phase,
        attempt=status.attempt or None,
        reruns=status.reruns or 0,
        start_time=status.start_time,
        completion_time=status.completion_time,
        duration=duration,
        message=status.message,
        job_name=status.job_name,
        cancel_requested=bool(spec.get("cancel")),
        rerun_requested=annotations.get(RERUN_ANNOTATION),
        task_names=task_names,
        tasks=tasks,
        waiting_for=list(status.waiting_for),
        status_error=status_error,
    )


def _unreported(name: str) -> TaskRow:
    """A task of the spec the status says nothing about (yet)."""
    return TaskRow(
        name=name,
        phase=None,
        attempt=None,
        job_name=None,
        start_time=None,
        completion_time=None,
        duration=None,
        message="no task run reported in the status",
    )


def filter_by_phase(summaries: Sequence[RunSummary], phases: Sequence[str]) -> list[RunSummary]:
    """Runs whose phase is one of ``phases`` (compared case-insensitively); all of them for no phases."""
    if not phases:
        return list(summaries)
    wanted = {p.lower() for p in phases}
    return [s for s in summaries if s.phase is not None and s.phase.lower() in wanted]


def sort_runs(summaries: Sequence[RunSummary]) -> list[RunSummary]:
    return sorted(summaries, key=lambda s: (s.namespace, s.name))


# ----------------------------------------------------------------------------------------------- actions
# The checks behind cancel and retry and the lookup of a task run's pod live in the client, shared with the
# dashboard; they accept a RunSummary as well as the client's FlowRunView.


def not_found(kind: str, name: str, namespace: str) -> CliError:
    return NotFound(kind, name, namespace)
