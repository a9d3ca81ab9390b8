"""What the operator reads from a Job, and how it names the Jobs it creates (pure, no I/O)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from flowrun_operator.api.common import ATTEMPT_LABEL, RUN_LABEL, TASK_LABEL, parse_time

# Job and pod names end up in the `job-name` / `batch.kubernetes.io/job-name` label values, which
# Kubernetes caps at 63 characters.
MAX_JOB_NAME = 63
# A task run's tags travel on its Job, so a Job that outlives its FlowRun still counts against tag limits.
TAGS_ANNOTATION = "flowrun.io/tags"


def _time(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


class JobOutcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class JobInfo:
    """The parts of a Job that decide a run's phase."""

    name: str
    run: str
    owner_uid: str
    labels: Mapping[str, str]
    tags: tuple[str, ...]
    task: str | None
    attempt: int
    resource_version: str
    created: datetime | None
    deleting: bool
    ready: int
    active: int
    pods_finished: int
    started: datetime | None
    outcome: JobOutcome | None
    reason: str
    message: str
    finished: datetime | None
    # Deleted, but it had finished: kept so its outcome is not mistaken for work that vanished unfinished.
    gone: bool = False
    uid: str = ""

    @property
    def unfinished(self) -> bool:
        return self.outcome is None

    @property
    def pod_started(self) -> bool:
        """Whether a pod of this Job has run (is running and ready, or has already finished)."""
        return self.ready > 0 or self.pods_finished > 0 or self.outcome is not None


def job_info_from(job: dict[str, Any]) -> JobInfo | None:
    """Parse a Job created by the operator; None for a Job without the operator's labels."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    run = labels.get(RUN_LABEL)
    try:
        attempt = int(labels.get(ATTEMPT_LABEL, ""))
    except ValueError:
        return None
    if not run:
        return None
    status = job.get("status") or {}
    outcome: JobOutcome | None = None
    reason = message = ""
    finished: datetime | None = None
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        kind = condition.get("type")
        # Complete/Failed are set only once every pod has terminated, unlike SuccessCriteriaMet and
        # FailureTarget, so a run is never reported finished while its pod still runs.
        if kind in ("Complete", "Failed"):
            outcome = JobOutcome.SUCCEEDED if kind == "Complete" else JobOutcome.FAILED
            reason = condition.get("reason") or ("Completed" if kind == "Complete" else "Failed")
            message = condition.get("message") or ""
            finished = _time(condition.get("lastTransitionTime"))
            break
    if outcome is JobOutcome.SUCCEEDED and status.get("completionTime"):
        finished = _time(status["completionTime"])
    return JobInfo(
        name=meta.get("name", ""),
        run=run,
        owner_uid=next((o.get("uid", "") for o in meta.get("ownerReferences") or [] if o.get("controller")), ""),
        labels=labels,
        tags=tuple(t for t in ((meta.get("annotations") or {}).get(TAGS_ANNOTATION) or "").split(",") if t),
        task=labels.get(TASK_LABEL) or None,
        attempt=attempt,
        resource_version=meta.get("resourceVersion", ""),
        created=_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        ready=int(status.get("ready") or 0),
        active=int(status.get("active") or 0),
        pods_finished=int(status.get("succeeded") or 0)
        + int(status.get("failed") or 0)
        + sum(len(v or []) for v in (status.get("uncountedTerminatedPods") or {}).values()),
        started=_time(status.get("startTime")),
        outcome=outcome,
        reason=reason,
        message=message,
        finished=finished,
        uid=str(meta.get("uid", "")),
    )


def job_name(run: str, task: str | None, attempt: int, uid: str) -> str:
    """Deterministic Job name: `<run>-<attempt>-<h>` or `<run>-<task>-<attempt>-<h>`, h = 5 hex digits of the
    run's uid.

    Determinism makes creation idempotent: an operator restarted between creating a Job and recording it
    finds the same name taken (409) instead of creating a second Job. The uid digest keeps names of
    different runs apart (run `etl` task `load` and run `etl-load`), also from an earlier run of the same
    name whose Jobs garbage collection has not removed yet. Names too long for a label value keep a
    readable prefix and gain a digest of the full name.
    """
    tag = hashlib.sha256(uid.encode()).hexdigest()[:5]
    full = f"{run}-{task}-{attempt}-{tag}" if task else f"{run}-{attempt}-{tag}"
    if len(full) <= MAX_JOB_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    suffix = f"-{digest}-{attempt}"
    return full[: MAX_JOB_NAME - len(suffix)].rstrip("-.") + suffix
