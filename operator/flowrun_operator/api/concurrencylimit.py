"""The ConcurrencyLimit custom resource: a number of slots shared by matching flow runs or tagged task runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field, JsonValue, field_validator

from flowrun_operator.api.common import (
    API_VERSION,
    INT32_MAX,
    LIMIT_KIND,
    ApiModel,
    Condition,
    LabelSelector,
    find_condition,
)

_SPEC_RULES: list[JsonValue] = [
    {
        "rule": "has(self.selector) != has(self.tag)",
        "message": "exactly one of spec.selector or spec.tag must be set",
    },
]


class ConcurrencyLimitSpec(ApiModel):
    """Desired state of a ConcurrencyLimit: which runs it caps and how many slots it has."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    selector: LabelSelector | None = Field(
        None,
        description="Caps concurrent flow runs whose metadata.labels match this selector (an empty "
        "selector matches every FlowRun of the namespace). Exactly one of selector and tag is set.",
    )
    tag: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        description="Caps concurrent task runs whose task carries this tag (spec.tasks[].tags). "
        "Exactly one of selector and tag is set.",
    )
    limit: int = Field(
        ge=0,
        le=INT32_MAX,
        json_schema_extra={"format": "int32"},
        description="Number of slots: how many matching runs may run at once. 0 holds every matching run.",
    )

    def validation_errors(self) -> list[str]:
        """The checks of the CRD's CEL rules, for objects that bypassed them."""
        errors: list[str] = []
        if (self.selector is None) == (self.tag is None):
            errors.append("exactly one of spec.selector or spec.tag must be set")
        if self.selector is not None:
            errors.extend(self.selector.validation_errors())
        return errors

    def matches_run(self, run_labels: Mapping[str, str]) -> bool:
        """Whether a FlowRun with these labels takes a slot of this (selector) limit."""
        return self.selector is not None and self.selector.matches(run_labels)

    def matches_task(self, task_tags: list[str]) -> bool:
        """Whether a task run with these tags takes a slot of this (tag) limit."""
        return self.tag is not None and self.tag in task_tags


class ConcurrencyLimitStatus(ApiModel):
    """Observed state of a ConcurrencyLimit, written by the operator."""

    in_use: int = Field(0, ge=0, description="Slots held by running flow runs or task runs.")
    pending: int = Field(0, ge=0, description="Matching runs waiting for a slot.")
    active: list[str] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
        description="Names of the flow runs (or <run>/<task> task runs) that hold slots.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Kubernetes-style conditions of the limit.",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        json_schema_extra={"format": "int64"},
        description="The .metadata.generation this status was computed for.",
    )

    def condition(self, type_: str) -> Condition | None:
        return find_condition(self.conditions, type_)


class ConcurrencyLimit(ApiModel):
    """A whole ConcurrencyLimit object; ``ConcurrencyLimit.model_validate(body)`` parses a raw object."""

    api_version: str = API_VERSION
    kind: str = LIMIT_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ConcurrencyLimitSpec
    status: ConcurrencyLimitStatus = Field(default_factory=ConcurrencyLimitStatus)

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
