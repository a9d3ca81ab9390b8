"""Shared pieces of the flowrun.io API: constants, the base model, Condition and LabelSelector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

GROUP = "flowrun.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

FLOWRUN_KIND = "FlowRun"
FLOWRUN_PLURAL = "flowruns"
FLOWRUN_SINGULAR = "flowrun"
LIMIT_KIND = "ConcurrencyLimit"
LIMIT_PLURAL = "concurrencylimits"
LIMIT_SINGULAR = "concurrencylimit"
# `kubectl get flowrun-all` lists both kinds. Not "flowrun": kubectl expands categories before resource
# names, so a category equal to a resource name would turn `kubectl get flowrun NAME` into a query of both.
CATEGORY = "flowrun-all"

RUN_LABEL = "flowrun.io/run"
FLOW_LABEL = "flowrun.io/flow"
TASK_LABEL = "flowrun.io/task"
ATTEMPT_LABEL = "flowrun.io/attempt"
# Set to an integer greater than status.reruns to re-run a Failed run's failed and skipped tasks.
RERUN_ANNOTATION = "flowrun.io/rerun"

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# A valid label value (without the empty string): what `flow` and tags must look like.
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
# A DNS-1123 label: task names end up in Job and Pod names.
DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# metav1.Condition's reason and type patterns.
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes metav1.Time: ``2026-01-01T00:00:00Z``."""
    return _as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset) into an aware UTC datetime."""
    return _as_utc(datetime.fromisoformat(value))


Timestamp = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
]
"""An aware UTC datetime; on the wire an RFC 3339 string like ``2026-01-01T00:00:00Z``."""


def format_duration(value: timedelta | float) -> str:
    """Go-style human readable duration rounded to whole seconds: ``0s``, ``45s``, ``1m3s``, ``2h0m5s``."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class ApiModel(BaseModel):
    """Base of every API model: snake_case in Python, camelCase on the wire, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_api(self, *, exclude_none: bool = True) -> dict[str, Any]:
        """The JSON-ready dict the API server expects (camelCase keys, RFC 3339 times, enums as strings)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)


# --------------------------------------------------------------------------------------------- conditions


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the object's current state (Kubernetes metav1.Condition)."""

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description="Type of the condition in CamelCase, e.g. Admitted, Ready or Succeeded.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="Machine-readable CamelCase reason for the condition's last transition.",
    )
    message: str = Field(
        "",
        max_length=32768,
        description="Human-readable details about the last transition.",
    )
    last_transition_time: Timestamp | None = Field(
        None, description="Last time the condition's status changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        json_schema_extra={"format": "int64"},
        description="The .metadata.generation the condition was set for.",
    )

    @property
    def is_true(self) -> bool:
        return self.status == ConditionStatus.TRUE


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of that type, or None."""
    for cond in conditions:
        if cond.type == type_:
            return cond
    return None


def set_condition(conditions: Sequence[Condition], new: Condition, now: datetime) -> list[Condition]:
    """Return a new list with ``new`` set, following Kubernetes ``meta.SetStatusCondition``.

    A condition of a new type is appended. For an existing type, lastTransitionTime only moves when the
    status changes (to ``new.last_transition_time`` if given, else ``now``); reason, message and
    observedGeneration are always updated. The input list and its items are not modified.
    """
    result: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != new.type:
            result.append(cond)
            continue
        found = True
        if (
            cond.status == new.status
            and cond.last_transition_time is not None
            and (cond.reason, cond.message, cond.observed_generation)
            == (new.reason, new.message, new.observed_generation)
        ):
            result.append(cond)  # unchanged: kept as it is (plans re-set every condition on every pass)
            continue
        if cond.status != new.status or cond.last_transition_time is None:
            transition = new.last_transition_time or now
        else:
            transition = cond.last_transition_time
        result.append(
            cond.model_copy(
                update={
                    "status": new.status,
                    "reason": new.reason,
                    "message": new.message,
                    "observed_generation": new.observed_generation,
                    "last_transition_time": _as_utc(transition),
                }
            )
        )
    if not found:
        transition = new.last_transition_time or now
        result.append(new.model_copy(update={"last_transition_time": _as_utc(transition)}))
    return result


def remove_condition(conditions: Sequence[Condition], type_: str) -> list[Condition]:
    """Return a new list without conditions of that type."""
    return [c for c in conditions if c.type != type_]


# ------------------------------------------------------------------------------------------ label selector


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_SELECTOR_REQUIREMENT_RULE = (
    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
    " : (!has(self.values) || size(self.values) == 0)"
)


class LabelSelectorRequirement(ApiModel):
    """A selector requirement: a label key, an operator and values (Kubernetes semantics)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": _SELECTOR_REQUIREMENT_RULE,
                    "message": "matchExpressions values must be non-empty for operators In and NotIn"
                    " and empty for Exists and DoesNotExist",
                }
            ]
        }
    )

    key: str = Field(min_length=1, max_length=317, description="The label key the requirement applies to.")
    operator: SelectorOperator = Field(
        description="How the key relates to the values: In, NotIn, Exists or DoesNotExist."
    )
    values: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="Label values: non-empty for In and NotIn, empty for Exists and DoesNotExist.",
    )

    def validation_errors(self) -> list[str]:
        if self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN):
            if not self.values:
                return [f"values must be non-empty for operator {self.operator.value} (key {self.key!r})"]
        elif self.values:
            return [f"values must be empty for operator {self.operator.value} (key {self.key!r})"]
        return []

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels satisfy this requirement (an invalid requirement matches nothing)."""
        if self.validation_errors():
            return False
        present = self.key in labels
        match self.operator:
            case SelectorOperator.IN:
                return present and labels[self.key] in self.values
            case SelectorOperator.NOT_IN:
                return not present or labels[self.key] not in self.values
            case SelectorOperator.EXISTS:
                return present
            case SelectorOperator.DOES_NOT_EXIST:
                return not present


class LabelSelector(ApiModel):
    """A label query over FlowRun labels (Kubernetes metav1.LabelSelector). The requirements are ANDed;
    an empty selector matches every FlowRun."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-map-type": "atomic"})

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        None,
        description="Labels a FlowRun must carry with exactly these values. "
        "Each entry is equivalent to a matchExpressions requirement with operator In and one value.",
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        None,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="Label selector requirements, all of which must hold.",
    )

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def validation_errors(self) -> list[str]:
        """Problems the API server's schema may not catch (empty list when the selector is valid)."""
        errors: list[str] = []
        for req in self.match_expressions or ():
            errors.extend(req.validation_errors())
        return errors

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes semantics: every matchLabels entry and every requirement must hold.

        An empty selector matches everything; an invalid one (see ``validation_errors``) matches nothing.
        """
        if self.validation_errors():
            return False
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions or ())

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Self:
        """A selector that matches objects carrying all these labels."""
        return cls(match_labels=dict(labels))


def version_of(obj: dict[str, Any]) -> int:
    """metadata.resourceVersion of an object or a list as a number (0 when absent). The API server's versions
    are etcd revisions; comparing them as numbers is what the engine and the watch streams rely on."""
    value = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(value) if value.isdigit() else 0
