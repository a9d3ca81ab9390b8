"""The FlowSchedule custom resource: FlowRuns created from a template on a cron schedule or an interval."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, JsonValue, field_validator

from flowrun_operator.api.common import (
    API_VERSION,
    INT32_MAX,
    ApiModel,
    Condition,
    Timestamp,
    find_condition,
)
from flowrun_operator.api.flowrun import FlowRunSpec

SCHEDULE_KIND = "FlowSchedule"
SCHEDULE_PLURAL = "flowschedules"
SCHEDULE_SINGULAR = "flowschedule"

# On every FlowRun a schedule creates: the schedule's name (label) and the tick the run stands for (annotation).
SCHEDULE_LABEL = "flowrun.io/schedule"
SCHEDULED_TIME_ANNOTATION = "flowrun.io/scheduled-time"
# On runs created by `kubectl flowrun trigger`: they stand for no tick.
TRIGGER_ANNOTATION = "flowrun.io/trigger"

# A run's name is "<schedule>-<unix seconds>" (or "<schedule>-m<unix seconds>" when triggered by hand); with
# at most 50 characters here it stays within 63, so it is also a valid label value (the flowrun.io/run label).
MAX_SCHEDULE_NAME = 50

CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Five whitespace-separated fields, or one of the aliases. What each field may hold is checked by the operator.
CRON_PATTERN = r"^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^\s]+(\s+[^\s]+){4})\s*$"
# A Go duration of whole hours, minutes and seconds: 90s, 6h, 1h30m.
INTERVAL_PATTERN = r"^([0-9]+(h|m|s))+$"
TIME_ZONE_PATTERN = r"^[A-Za-z][-A-Za-z0-9_+]*(/[-A-Za-z0-9_+]+)*$"


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class FlowRunTemplateMetadata(ApiModel):
    """Labels and annotations of the FlowRuns a schedule creates."""

    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of each run (ConcurrencyLimits select runs by them); flowrun.io/schedule is added.",
    )
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of each run.")


_TEMPLATE_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.spec.scheduledStart)",
        "message": "spec.flowRunTemplate.spec.scheduledStart is set by the schedule (to the time a run stands for)",
    },
    {
        "rule": "!has(self.spec.cancel) || !self.spec.cancel",
        "message": "spec.flowRunTemplate.spec.cancel cannot be true",
    },
]


class FlowRunTemplate(ApiModel):
    """What each run of the schedule looks like."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _TEMPLATE_RULES})

    metadata: FlowRunTemplateMetadata | None = Field(None, description="Labels and annotations of each run.")
    spec: FlowRunSpec = Field(description="The spec of each run, as in a FlowRun (scheduledStart is set per run).")


_SPEC_RULES: list[JsonValue] = [
    {
        "rule": "has(self.schedule) != has(self.interval)",
        "message": "exactly one of spec.schedule or spec.interval must be set",
    },
    {
        "rule": "!has(self.interval) || duration(self.interval) >= duration('1s')",
        "message": "spec.interval must be at least 1s",
    },
]


class FlowScheduleSpec(ApiModel):
    """Desired state of a FlowSchedule."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    schedule: str | None = Field(
        None,
        max_length=256,
        pattern=CRON_PATTERN,
        description="A cron expression of five fields (minute hour day-of-month month day-of-week), or @hourly, "
        "@daily, @midnight, @weekly, @monthly, @yearly, @annually; in spec.timeZone. Exactly one of schedule and "
        "interval is set.",
    )
    interval: str | None = Field(
        None,
        max_length=32,
        pattern=INTERVAL_PATTERN,
        description="A duration such as 90s, 6h or 1h30m: a run every interval, counted from the schedule's "
        "creation. Exactly one of schedule and interval is set.",
    )
    time_zone: str = Field(
        "UTC",
        max_length=64,
        pattern=TIME_ZONE_PATTERN,
        description="IANA time zone of spec.schedule, e.g. Europe/Berlin.",
    )
    flow_run_template: FlowRunTemplate = Field(description="The FlowRun created at each scheduled time.")
    concurrency_policy: ConcurrencyPolicy = Field(
        ConcurrencyPolicy.ALLOW,
        description="What to do when a run of the schedule is unfinished at the next time: Allow (create it "
        "anyway), Forbid (skip this time) or Replace (cancel the unfinished runs, then create the new one).",
    )
    starting_deadline_seconds: int | None = Field(
        None,
        ge=1,
        json_schema_extra={"format": "int64"},
        description="A time missed by more than this many seconds (operator down, suspended) is skipped. After a "
        "gap at most one catch-up run is created, for the latest missed time. Unset: no deadline.",
    )
    suspend: bool = Field(False, description="true: create no runs (existing runs are not affected).")
    successful_runs_history_limit: int = Field(
        3, ge=0, le=INT32_MAX, json_schema_extra={"format": "int32"}, description="Succeeded runs to keep."
    )
    failed_runs_history_limit: int = Field(
        1,
        ge=0,
        le=INT32_MAX,
        json_schema_extra={"format": "int32"},
        description="Failed or cancelled runs to keep.",
    )


class ScheduleSkip(ApiModel):
    """A scheduled time for which no run was created."""

    time: Timestamp = Field(description="The scheduled time that was skipped.")
    reason: str = Field(description="Why, in CamelCase: Forbidden, MissedDeadline.")
    message: str = Field("", description="Human-readable detail.")


class FlowScheduleStatus(ApiModel):
    """Observed state of a FlowSchedule, written by the operator."""

    last_schedule_time: Timestamp | None = Field(None, description="The latest time a run was created for.")
    next_schedule_time: Timestamp | None = Field(
        None, description="The next time a run will be created for (unset while suspended or invalid)."
    )
    last_successful_time: Timestamp | None = Field(
        None, description="When the latest succeeded run of the schedule completed."
    )
    active: list[str] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="Names of the schedule's unfinished runs.",
    )
    active_count: int = Field(0, ge=0, description="How many runs of the schedule are unfinished.")
    skipped: int = Field(0, ge=0, description="How many scheduled times were skipped (no run created).")
    last_skip: ScheduleSkip | None = Field(None, description="The latest skipped time and why.")
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Kubernetes-style conditions of the schedule: Ready.",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        json_schema_extra={"format": "int64"},
        description="The .metadata.generation this status was computed for.",
    )

    def condition(self, type_: str) -> Condition | None:
        return find_condition(self.conditions, type_)


class FlowSchedule(ApiModel):
    """A whole FlowSchedule object; ``FlowSchedule.model_validate(body)`` parses a raw object."""

    api_version: str = API_VERSION
    kind: str = SCHEDULE_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FlowScheduleSpec
    status: FlowScheduleStatus = Field(default_factory=FlowScheduleStatus)

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
