"""Pure logic of the CLI: what a FlowRun and its task runs look like to a user, and which actions it allows.

Everything here works on plain API objects (the dicts the API server returns) and a ``now``; nothing talks to
the cluster, so all of it is unit-tested with fake data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from flowrun_operator.api.common import (
    ATTEMPT_LABEL,
    RERUN_ANNOTATION,
    RUN_LABEL,
    TASK_LABEL,
    format_duration,
    format_time,
)
from flowrun_operator.api.flowrun import FlowRunPhase, FlowRunStatus, TaskRun, WaitingFor, is_terminal

# The row `get` shows for a run without tasks (its single Job), and the TASK `logs` accepts for it.
MAIN_TASK = "main"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


class CliError(Exception):
    """An expected failure: printed as ``error: <message>`` on stderr, then exit with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


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


def not_found(kind: str, name: str, namespace: str) -> CliError:
    return CliError(f'{kind} "{name}" not found in namespace "{namespace}"')


def check_cancel(summary: RunSummary) -> bool:
    """Whether `cancel` has to patch the run (False: cancel was requested already). A finished run raises."""
    if summary.finished:
        raise CliError(f'flowrun "{summary.name}" already finished ({summary.phase}); nothing to cancel')
    return not summary.cancel_requested


def next_rerun(summary: RunSummary) -> int:
    """The value for the rerun annotation that re-runs this Failed run; raises for any other run."""
    name = summary.name
    if summary.phase == FlowRunPhase.FAILED:
        if summary.cancel_requested:
            raise CliError(f'flowrun "{name}" was cancelled (spec.cancel is true); a cancelled run cannot be retried')
        return summary.reruns + 1
    only = "only a Failed run can be retried"
    if summary.phase == FlowRunPhase.CANCELLED:
        raise CliError(f'flowrun "{name}" was cancelled; {only}')
    if summary.phase == FlowRunPhase.SUCCEEDED:
        raise CliError(f'flowrun "{name}" succeeded; there is nothing to retry ({only})')
    if summary.phase is None:
        raise CliError(f'flowrun "{name}" has not started yet (no phase); {only}')
    raise CliError(f'flowrun "{name}" is still {summary.phase}; {only}')


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


def resolve_task(summary: RunSummary, task: str | None) -> str | None:
    """The task whose logs to show: a task of the spec, or None for a run without tasks.

    A run with tasks needs a TASK (usage error, exit 2, naming them); an unknown task is an error (exit 1).
    """
    name = summary.name
    if summary.has_tasks:
        if task is None:
            raise CliError(
                f'flowrun "{name}" has tasks; name one of them: {_names(summary.task_names)}',
                code=2,
            )
        if task not in summary.task_names:
            raise CliError(f'flowrun "{name}" has no task "{task}"; its tasks are: {_names(summary.task_names)}')
        return task
    if task is not None and task != MAIN_TASK:
        raise CliError(f'flowrun "{name}" has no tasks (it runs a single Job, shown as "{MAIN_TASK}"); omit TASK')
    return None


def current_attempt(summary: RunSummary, task: str | None) -> int | None:
    """The attempt the status reports for the task (or for the run without tasks); None before the first Job."""
    row = summary.task(task or MAIN_TASK)
    return row.attempt if row is not None else None


def pod_selector(run: str, task: str | None, attempt: int | None) -> str:
    """The label selector of the pods of a run's task (or of the run without tasks) and attempt."""
    parts = [f"{RUN_LABEL}={run}", f"{TASK_LABEL}={task}" if task else f"!{TASK_LABEL}"]
    if attempt is not None:
        parts.append(f"{ATTEMPT_LABEL}={attempt}")
    return ",".join(parts)


def _pod_attempt(pod: Mapping[str, Any]) -> int:
    try:
        return int(((pod.get("metadata") or {}).get("labels") or {}).get(ATTEMPT_LABEL, 0))
    except (TypeError, ValueError):
        return 0


def _created(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def choose_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod to read: of the highest attempt, the newest (a Job may have replaced a pod)."""
    if not pods:
        return None
    return max(pods, key=lambda p: (_pod_attempt(p), _created(p), _pod_name(p)))


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def pod_containers(pod: Mapping[str, Any]) -> list[str]:
    return [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name")]


def choose_container(pod: Mapping[str, Any], container: str | None) -> str:
    """The container to read: the one asked for, else the pod's default container, else its first."""
    names = pod_containers(pod)
    pod_name = _pod_name(pod)
    if container is not None:
        if names and container not in names:
            raise CliError(f'pod "{pod_name}" has no container "{container}"; its containers are: {_names(names)}')
        return container
    default = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION)
    if default in names:
        return str(default)
    if not names:
        raise CliError(f'pod "{pod_name}" has no containers')
    return names[0]


def describe_unit(run: str, task: str | None, attempt: int | None) -> str:
    what = f'task "{task}" of flowrun "{run}"' if task else f'flowrun "{run}"'
    return f"{what}, attempt {attempt}" if attempt is not None else what


def log_error(pod: str, container: str, status: int | None, message: str) -> CliError:
    """Why the logs of a pod that exists could not be read, in the API server's words."""
    text = f'cannot read the logs of pod "{pod}" (container "{container}"): {message}'
    if status == 404:
        # The pod was just listed, so a 404 comes from the node: KWOK's simulated nodes never serve logs.
        text += " (the pod's node did not serve its logs: it may be a simulated node, or the pod is gone)"
    return CliError(text)


# ---------------------------------------------------------------------------------------------- API errors


def api_error_message(body: str | bytes | None, reason: str | None = None) -> str:
    """The human message of an API error: the ``message`` of a Status body, else the body or the reason."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    if isinstance(parsed, Mapping) and parsed.get("message"):
        return str(parsed["message"])
    return text.strip() or (reason or "unknown error")


def api_error_names_object(body: str | bytes | None) -> bool:
    """Whether a 404 Status names the missing object (vs. an unknown resource type, e.g. CRDs not installed)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        return False
    if not isinstance(parsed, Mapping):
        return False
    details = parsed.get("details")
    return isinstance(details, Mapping) and bool(details.get("name"))
