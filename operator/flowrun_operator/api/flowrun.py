"""The FlowRun custom resource: one run of a flow, as a single Pod template or a small DAG of tasks."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, JsonValue, field_validator

from flowrun_operator.api.common import (
    API_VERSION,
    DNS1123_LABEL_PATTERN,
    FLOWRUN_KIND,
    INT32_MAX,
    LABEL_VALUE_PATTERN,
    ApiModel,
    Condition,
    Timestamp,
    find_condition,
)

# The CEL rules on spec are O(tasks * dependsOn * tasks); with 50/50 their estimated cost is about a third of
# the API server's per-rule budget. Raising MAX_TASKS or MAX_DEPENDS_ON past ~70 makes the CRD invalid.
MAX_TASKS = 50
MAX_TASK_NAME_LENGTH = 40
MAX_DEPENDS_ON = 50
MAX_TAGS = 20
MAX_RETRIES = 10


class FlowRunPhase(StrEnum):
    SCHEDULED = "Scheduled"
    PENDING = "Pending"
    SUBMITTED = "Submitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self.value in _TERMINAL


class TaskRunPhase(StrEnum):
    SCHEDULED = "Scheduled"
    PENDING = "Pending"
    SUBMITTED = "Submitted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SKIPPED = "Skipped"

    @property
    def is_terminal(self) -> bool:
        return self.value in _TERMINAL


_TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled", "Skipped"})


def is_terminal(phase: FlowRunPhase | TaskRunPhase | str | None) -> bool:
    """Succeeded, Failed and Cancelled (and Skipped, for task runs) are final; None (no phase yet) is not."""
    return phase is not None and str(phase) in _TERMINAL


# ------------------------------------------------------------------------------------------------- spec


class PodTemplate(ApiModel):
    """A Pod template (metadata and spec, as in a Job's spec.template); kept as free-form objects."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-embedded-resource": False,
        }
    )

    metadata: dict[str, Any] | None = Field(
        None, description="Labels and annotations for the Pods (standard object metadata)."
    )
    spec: dict[str, Any] = Field(
        description="The Pod spec: containers, volumes, restartPolicy and so on (a core/v1 PodSpec)."
    )


TaskName = Annotated[str, Field(min_length=1, max_length=MAX_TASK_NAME_LENGTH, pattern=DNS1123_LABEL_PATTERN)]
Tag = Annotated[str, Field(min_length=1, max_length=63)]


class Task(ApiModel):
    """One node of the run's DAG; each attempt of it runs as its own Job."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.dependsOn) || !(self.name in self.dependsOn)",
                    "message": "a task cannot depend on itself (spec.tasks[].dependsOn)",
                }
            ]
        }
    )

    name: TaskName = Field(
        description="Name of the task, unique in the run; a DNS-1123 label of at most 40 characters."
    )
    template: PodTemplate = Field(description="Pod template of the task's Job.")
    depends_on: list[TaskName] = Field(
        default_factory=list,
        max_length=MAX_DEPENDS_ON,
        json_schema_extra={"default": [], "x-kubernetes-list-type": "atomic"},
        description="Names of tasks of this run that must succeed before this task starts.",
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        json_schema_extra={"default": [], "x-kubernetes-list-type": "atomic"},
        description="Tags of the task; ConcurrencyLimits with a matching spec.tag cap its task runs.",
    )
    retries: int | None = Field(
        None,
        ge=0,
        le=MAX_RETRIES,
        description="How many times a failed task is retried; defaults to spec.retries of the run.",
    )


_SPEC_RULES: list[JsonValue] = [
    {
        "rule": "has(self.template) != has(self.tasks)",
        "message": "exactly one of spec.template or spec.tasks must be set",
    },
    {
        "rule": "!has(self.tasks) || self.tasks.all(t, self.tasks.exists_one(u, u.name == t.name))",
        "message": "spec.tasks[].name must be unique within the run",
    },
    {
        "rule": "!has(self.tasks) || self.tasks.all(t, !has(t.dependsOn)"
        " || t.dependsOn.all(d, self.tasks.exists(u, u.name == d)))",
        "message": "every spec.tasks[].dependsOn entry must name a task of this run",
    },
    {
        "rule": "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
        "message": "spec.cancel cannot be set back to false once it is true",
    },
]


class FlowRunSpec(ApiModel):
    """Desired state of a FlowRun."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    flow: str = Field(
        min_length=1,
        max_length=63,
        pattern=LABEL_VALUE_PATTERN,
        description="Name of the flow this is a run of; runs are grouped by it and it is copied to the "
        "flowrun.io/flow label, so it must be a valid label value.",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra={"default": {}},
        description="Free-form parameters, passed as JSON to every container in the FLOWRUN_PARAMETERS "
        "environment variable.",
    )
    template: PodTemplate | None = Field(
        None,
        description="Pod template of the run's single Job, for a run without tasks. "
        "Exactly one of template and tasks is set.",
    )
    tasks: list[Task] | None = Field(
        None,
        min_length=1,
        max_length=MAX_TASKS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Tasks of the run, a DAG through dependsOn; one Job per task run. "
        "Exactly one of template and tasks is set.",
    )
    scheduled_start: Timestamp | None = Field(
        None, description="The run stays Scheduled until this time (RFC 3339); unset means start now."
    )
    priority: int = Field(
        0,
        ge=-1000,
        le=1000,
        json_schema_extra={"format": "int32"},
        description="Runs waiting for the same ConcurrencyLimit are admitted highest priority first, "
        "then oldest first.",
    )
    retries: int = Field(0, ge=0, le=MAX_RETRIES, description="How many times a failed run (or task) is retried.")
    retry_delay_seconds: int = Field(
        0, ge=0, le=86400, description="Seconds to wait after a failed attempt before the next one."
    )
    timeout_seconds: int | None = Field(
        None,
        ge=1,
        json_schema_extra={"format": "int64"},
        description="Limit on the run time of each Job attempt (the Job's activeDeadlineSeconds).",
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        le=INT32_MAX,
        json_schema_extra={"format": "int32"},
        description="Delete the FlowRun this many seconds after it finished; unset keeps it.",
    )
    cancel: bool = Field(
        False,
        description="Set to true to cancel the run: its Jobs are deleted and the phase becomes Cancelled. "
        "Cannot be set back to false.",
    )

    def task(self, name: str) -> Task | None:
        """The task with that name, or None."""
        for t in self.tasks or ():
            if t.name == name:
                return t
        return None

    def task_retries(self, task: Task) -> int:
        """Retries of a task: its own setting, else the run's."""
        return self.retries if task.retries is None else task.retries

    def validation_errors(self) -> list[str]:
        """The checks of the CRD's CEL rules (except the cancel transition), for objects that bypassed
        them. Cycles are not checked here."""
        errors: list[str] = []
        if (self.template is None) == (self.tasks is None):
            errors.append("exactly one of spec.template or spec.tasks must be set")
        names = [t.name for t in self.tasks or ()]
        if len(set(names)) != len(names):
            errors.append("spec.tasks[].name must be unique within the run")
        known = set(names)
        for t in self.tasks or ():
            if t.name in t.depends_on:
                errors.append(f"task {t.name!r} cannot depend on itself")
            unknown = [d for d in t.depends_on if d not in known]
            if unknown:
                errors.append(f"task {t.name!r} depends on unknown task(s): {', '.join(unknown)}")
        return errors


# ----------------------------------------------------------------------------------------------- status


class WaitingFor(ApiModel):
    """A ConcurrencyLimit that holds the run (or task run) back, and its place in that limit's line."""

    name: str = Field(description="Name of the ConcurrencyLimit.")
    position: int = Field(ge=1, description="Place in line for the limit's next free slot (1 is next).")
    in_use: int = Field(ge=0, description="Slots of the limit in use when this was written.")
    limit: int = Field(ge=0, description="Number of slots of the limit.")


class TaskRun(ApiModel):
    """Observed state of one task of the run."""

    name: str = Field(description="Name of the task (spec.tasks[].name).")
    phase: TaskRunPhase = Field(TaskRunPhase.PENDING, description="Summary of the task run's state.")
    attempt: int = Field(0, ge=0, description="Current attempt, from 1; 0 before the first Job.")
    job_name: str | None = Field(None, description="Name of the Job of the current attempt.")
    start_time: Timestamp | None = Field(None, description="When the first attempt's Job was created.")
    completion_time: Timestamp | None = Field(None, description="When the task run finished.")
    message: str | None = Field(None, description="Human-readable detail of the current state.")
    reason: str | None = Field(
        None, description="Machine-readable CamelCase reason for the current state, e.g. BackoffLimitExceeded."
    )
    waiting_for: list[WaitingFor] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="ConcurrencyLimits (by tag) the task run waits for.",
    )

    @property
    def is_terminal(self) -> bool:
        return self.phase.is_terminal


class FlowRunStatus(ApiModel):
    """Observed state of a FlowRun, written by the operator."""

    phase: FlowRunPhase | None = Field(
        None,
        description="Summary of the run's state: Scheduled, Pending, Submitted, Running, Succeeded, "
        "Failed or Cancelled. The conditions are the detailed truth.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Kubernetes-style conditions of the run, e.g. Admitted.",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        json_schema_extra={"format": "int64"},
        description="The .metadata.generation this status was computed for.",
    )
    attempt: int | None = Field(None, ge=0, description="Current attempt of the run, from 1.")
    reruns: int | None = Field(
        None,
        ge=0,
        description="How many reruns (annotation flowrun.io/rerun) the operator has started for this run.",
    )
    start_time: Timestamp | None = Field(None, description="When the run's first Job was created.")
    completion_time: Timestamp | None = Field(None, description="When the run finished.")
    duration: str | None = Field(
        None, description="How long the run took from start to completion, e.g. 1m3s (set when finished)."
    )
    message: str | None = Field(None, description="Human-readable detail of the current state.")
    job_name: str | None = Field(None, description="Name of the Job of the current attempt (runs without tasks).")
    waiting_for: list[WaitingFor] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="ConcurrencyLimits the run waits for, with its place in each line.",
    )
    task_runs: list[TaskRun] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Observed state of each task (runs with tasks).",
    )

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.phase)

    def condition(self, type_: str) -> Condition | None:
        return find_condition(self.conditions, type_)

    def task_run(self, name: str) -> TaskRun | None:
        for tr in self.task_runs:
            if tr.name == name:
                return tr
        return None


class FlowRun(ApiModel):
    """A whole FlowRun object; ``FlowRun.model_validate(body)`` parses a raw object from the API."""

    api_version: str = API_VERSION
    kind: str = FLOWRUN_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FlowRunSpec
    status: FlowRunStatus = Field(default_factory=FlowRunStatus)

    @field_validator("metadata", "status", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.metadata.get("labels") or {})
