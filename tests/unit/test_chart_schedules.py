"""FlowSchedules declared in the chart's values: rendered with the real helm binary, checked by values.schema.json."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from test_chart import (  # the chart fixtures: real helm in a temporary home
    RELEASE_NAMESPACE,
    Objects,
    helm,
    of_kind,
    render,
    template,
    values_file,
)

__all__ = ["helm", "render", "template", "values_file"]

TEMPLATE = {
    "metadata": {"labels": {"team": "data"}},
    "spec": {"flow": "etl", "template": {"spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}}},
}


def schedule(**fields: Any) -> dict[str, Any]:
    item = {"name": "nightly", "schedule": "30 2 * * *", "flowRunTemplate": TEMPLATE, **fields}
    return {k: v for k, v in item.items() if v is not None}


def test_no_schedules_by_default(render: Callable[..., Objects]) -> None:
    assert not of_kind(render(), "FlowSchedule")


def test_schedules_render_as_flow_schedules(render: Callable[..., Objects]) -> None:
    objects = render(
        {
            "schedules": [
                schedule(timeZone="Europe/Berlin", concurrencyPolicy="Forbid", startingDeadlineSeconds=600),
                {
                    "name": "every-minute",
                    "namespace": "analytics",
                    "interval": "1m",
                    "suspend": True,
                    "successfulRunsHistoryLimit": 0,
                    "flowRunTemplate": TEMPLATE,
                },
            ]
        }
    )
    found = {o["metadata"]["name"]: o for o in of_kind(objects, "FlowSchedule")}
    assert set(found) == {"nightly", "every-minute"}
    nightly = found["nightly"]
    assert nightly["apiVersion"] == "flowrun.io/v1alpha1"
    assert nightly["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert nightly["metadata"]["labels"]["app.kubernetes.io/part-of"] == "flowrun-operator"
    assert nightly["spec"] == {
        "schedule": "30 2 * * *",
        "timeZone": "Europe/Berlin",
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 600,
        "flowRunTemplate": TEMPLATE,
    }
    minute = found["every-minute"]
    assert minute["metadata"]["namespace"] == "analytics"
    assert minute["spec"]["interval"] == "1m" and minute["spec"]["suspend"] is True
    assert minute["spec"]["successfulRunsHistoryLimit"] == 0


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"name": "x", "flowRunTemplate": TEMPLATE}, "oneOf"),
        (schedule(interval="5m"), "interval"),
        (schedule(schedule="every day"), "schedule"),
        (schedule(schedule=None, interval="5 minutes"), "interval"),
        (schedule(name="a" * 51), "name"),
        (schedule(name="Nightly"), "name"),
        (schedule(concurrencyPolicy="Queue"), "concurrencyPolicy"),
        (schedule(startingDeadlineSeconds=0), "startingDeadlineSeconds"),
        (schedule(timeZone="not a zone"), "timeZone"),
        (schedule(flowRunTemplate={"spec": {}}), "flow"),
        (schedule(colour="blue"), "colour"),
    ],
)
def test_bad_schedules_fail_with_a_message_naming_the_problem(
    template: Callable[..., subprocess.CompletedProcess[str]], item: dict[str, Any], expected: str
) -> None:
    result = template({"schedules": [item]})
    assert result.returncode != 0, result.stdout
    assert "values don't meet the specifications of the schema" in result.stderr
    assert expected in result.stderr, result.stderr


def test_duplicate_schedules_fail(template: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = template({"schedules": [schedule(), schedule(interval="1h", schedule=None)]})
    assert result.returncode != 0
    assert "duplicate FlowSchedule flowrun-system/nightly" in result.stderr
