"""What the FlowSchedule controller needs to know about a schedule's runs, and the pure decisions over them:
which runs are unfinished, which finished runs fall out of the history, and the run a tick gets."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowrun_operator.api.common import API_VERSION, FLOWRUN_KIND, format_time, parse_time
from flowrun_operator.api.flowrun import is_terminal
from flowrun_operator.api.flowschedule import (
    SCHEDULE_KIND,
    SCHEDULE_LABEL,
    SCHEDULED_TIME_ANNOTATION,
    TRIGGER_ANNOTATION,
)
from flowrun_operator.scheduling.schedule import run_name


@dataclass(frozen=True, slots=True)
class RunInfo:
    name: str
    uid: str
    schedule: str
    tick: datetime | None  # None for a run triggered by hand
    phase: str | None
    cancel: bool
    created: datetime | None
    completed: datetime | None
    deleting: bool

    @property
    def finished(self) -> bool:
        return is_terminal(self.phase)

    @property
    def unfinished(self) -> bool:
        return not self.finished and not self.deleting

    @property
    def order(self) -> datetime | None:
        return self.tick or self.created


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(str(value))
    except ValueError:
        return None


def run_info(body: dict[str, Any]) -> RunInfo | None:
    """The fields of a FlowRun the controller uses; None for a run without the schedule label."""
    meta = body.get("metadata") or {}
    schedule = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
    if not schedule:
        return None
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    return RunInfo(
        name=str(meta.get("name")),
        uid=str(meta.get("uid") or ""),
        schedule=str(schedule),
        tick=_time((meta.get("annotations") or {}).get(SCHEDULED_TIME_ANNOTATION)),
        phase=status.get("phase"),
        cancel=bool(spec.get("cancel")),
        created=_time(meta.get("creationTimestamp")),
        completed=_time(status.get("completionTime")),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def latest_tick(runs: Iterable[RunInfo]) -> datetime | None:
    ticks = [r.tick for r in runs if r.tick is not None]
    return max(ticks) if ticks else None


def unfinished(runs: Iterable[RunInfo]) -> list[RunInfo]:
    return sorted((r for r in runs if r.unfinished), key=lambda r: (r.order is None, r.order, r.name))


def last_successful(runs: Iterable[RunInfo]) -> datetime | None:
    times = [r.completed for r in runs if r.phase == "Succeeded" and r.completed is not None]
    return max(times) if times else None


def beyond_history(runs: Iterable[RunInfo], successful_limit: int, failed_limit: int) -> list[RunInfo]:
    """Finished runs older than the newest ``successful_limit`` succeeded and ``failed_limit`` failed or
    cancelled ones."""
    succeeded: list[RunInfo] = []
    failed: list[RunInfo] = []
    for r in runs:
        if r.deleting or not r.finished:
            continue
        (succeeded if r.phase == "Succeeded" else failed).append(r)
    doomed: list[RunInfo] = []
    for group, limit in ((succeeded, successful_limit), (failed, failed_limit)):
        group.sort(key=lambda r: (r.order is not None, r.order, r.name), reverse=True)
        doomed.extend(group[limit:])
    return doomed


def owner_reference(schedule: dict[str, Any]) -> dict[str, Any]:
    meta = schedule["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": SCHEDULE_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_run(schedule: dict[str, Any], tick: datetime | None, name: str | None = None) -> dict[str, Any]:
    """The FlowRun for a tick (``tick`` None: a run triggered by hand, starting now, under ``name``)."""
    meta = schedule["metadata"]
    template = (schedule.get("spec") or {}).get("flowRunTemplate") or {}
    template_meta = template.get("metadata") or {}
    labels = {**(template_meta.get("labels") or {}), SCHEDULE_LABEL: meta["name"]}
    annotations = dict(template_meta.get("annotations") or {})
    spec = copy.deepcopy(template.get("spec") or {})
    spec.pop("cancel", None)
    if tick is not None:
        annotations[SCHEDULED_TIME_ANNOTATION] = format_time(tick)
        spec["scheduledStart"] = format_time(tick)
        name = run_name(meta["name"], tick)
    else:
        annotations[TRIGGER_ANNOTATION] = "manual"
        spec.pop("scheduledStart", None)
    assert name is not None
    return {
        "apiVersion": API_VERSION,
        "kind": FLOWRUN_KIND,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(schedule)],
        },
        "spec": spec,
    }


def manual_run_name(schedule_name: str, now: datetime) -> str:
    """The name of a run triggered by hand: distinct from every tick's name."""
    return f"{schedule_name}-m{int(now.timestamp())}"
