"""The operator's in-memory view of FlowRuns, their Jobs and ConcurrencyLimits.

Fed by the watch streams and by the responses of the operator's own writes, so it always reflects what
the operator has written even before the watch echoes it back ("assumed" state, as Kueue calls it):
two admission passes can never both see a slot as free. Older versions never replace newer ones.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from flowrun_operator.api.common import RERUN_ANNOTATION, parse_time
from flowrun_operator.api.concurrencylimit import ConcurrencyLimitSpec, ConcurrencyLimitStatus
from flowrun_operator.api.flowrun import FlowRunSpec, FlowRunStatus
from flowrun_operator.kube.client import Listing
from flowrun_operator.scheduling.jobs import JobInfo, job_info_from
from flowrun_operator.scheduling.runstate import RunSnapshot


@dataclass(frozen=True, slots=True)
class LimitSnapshot:
    name: str
    namespace: str
    generation: int
    spec: ConcurrencyLimitSpec | None
    status: ConcurrencyLimitStatus
    spec_error: str | None
    raw: dict[str, Any]


def _newer(incoming: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """resourceVersions are opaque, but etcd-backed API servers hand out increasing integers."""
    if current is None:
        return True
    new = (incoming.get("metadata") or {}).get("resourceVersion", "")
    old = (current.get("metadata") or {}).get("resourceVersion", "")
    if new.isdigit() and old.isdigit():
        return int(new) >= int(old)
    return True


def _errors(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())


def run_snapshot(obj: dict[str, Any]) -> RunSnapshot:
    meta = obj.get("metadata") or {}
    spec: FlowRunSpec | None = None
    error: str | None = None
    try:
        spec = FlowRunSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        error = "invalid spec: " + _errors(exc)
    try:
        status = FlowRunStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = FlowRunStatus()  # unreadable status: rebuild it from the Jobs
    created = meta.get("creationTimestamp")
    try:
        rerun = int((meta.get("annotations") or {}).get(RERUN_ANNOTATION) or 0)
    except ValueError:
        rerun = 0
    return RunSnapshot(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        created=parse_time(created) if created else datetime.now(UTC),
        labels=dict(meta.get("labels") or {}),
        spec=spec,
        status=status,
        spec_error=error,
        rerun_requested=rerun,
    )


def limit_snapshot(obj: dict[str, Any]) -> LimitSnapshot:
    meta = obj.get("metadata") or {}
    spec: ConcurrencyLimitSpec | None = None
    error: str | None = None
    try:
        spec = ConcurrencyLimitSpec.model_validate(obj.get("spec") or {})
        problems = spec.validation_errors()
        if problems:
            spec, error = None, "; ".join(problems)
    except ValidationError as exc:
        error = "invalid spec: " + _errors(exc)
    try:
        status = ConcurrencyLimitStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        status = ConcurrencyLimitStatus()
    return LimitSnapshot(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        generation=int(meta.get("generation") or 0),
        spec=spec,
        status=status,
        spec_error=error,
        raw=obj,
    )


class Store:
    def __init__(self) -> None:
        self.run_objects: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.runs: dict[str, dict[str, RunSnapshot]] = defaultdict(dict)
        self.job_objects: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.jobs: dict[str, dict[str, JobInfo]] = defaultdict(dict)
        self.limits: dict[str, dict[str, LimitSnapshot]] = defaultdict(dict)
        # Runs whose status the operator is still writing: (namespace, name) -> that status. Until the
        # write completes, newer versions of the object (spec changes, echoes of earlier writes) are
        # recorded with this status on top, so a pass never sees a status older than its own decision.
        self.assumed: dict[tuple[str, str], dict[str, Any]] = {}

    def namespaces(self) -> set[str]:
        return set(self.runs) | set(self.jobs) | set(self.limits)

    def put_run(self, obj: dict[str, Any], deleted: bool = False) -> str | None:
        """Record a FlowRun; returns its namespace when the view changed."""
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if deleted:
            self.run_objects[ns].pop(name, None)
            self.runs[ns].pop(name, None)
            self.assumed.pop((ns, name), None)
            return ns
        current = self.run_objects[ns].get(name)
        if current is not None and (current.get("metadata") or {}).get("uid") != meta.get("uid"):
            current = None  # a new object under a reused name
        if not _newer(obj, current):
            return None
        assumed = self.assumed.get((ns, name))
        if assumed is not None:
            if current is None:
                del self.assumed[(ns, name)]
            else:
                obj = {**obj, "status": assumed}
        self.run_objects[ns][name] = obj
        self.runs[ns][name] = run_snapshot(obj)
        return ns

    def assume_run_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Record a status the operator is about to write, before the API server confirms it."""
        current = self.run_objects[namespace].get(name)
        if current is None:
            return None
        obj = {**current, "status": status}
        self.assumed[(namespace, name)] = status
        self.run_objects[namespace][name] = obj
        self.runs[namespace][name] = run_snapshot(obj)
        return obj

    def settle_run_status(self, namespace: str, name: str, written: dict[str, Any] | None) -> None:
        """A status write ended. If it was the latest assumed status (or None: give up on it), the
        API server's version is the truth again."""
        key = (namespace, name)
        if written is None or self.assumed.get(key) is written:
            self.assumed.pop(key, None)

    def put_job(self, obj: dict[str, Any], deleted: bool = False) -> str | None:
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if deleted:
            self.job_objects[ns].pop(name, None)
            self.jobs[ns].pop(name, None)
            return ns
        info = job_info_from(obj)
        if info is None or not _newer(obj, self.job_objects[ns].get(name)):
            return None
        self.job_objects[ns][name] = obj
        self.jobs[ns][name] = info
        return ns

    def put_limit(self, obj: dict[str, Any], deleted: bool = False) -> str | None:
        meta = obj.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if deleted:
            self.limits[ns].pop(name, None)
            return ns
        current = self.limits[ns].get(name)
        if current is not None and not _newer(obj, current.raw):
            return None
        self.limits[ns][name] = limit_snapshot(obj)
        return ns

    def prune(self, present: Listing) -> set[str]:
        """Forget objects a fresh list no longer returns (a deletion the watch missed, e.g. across a
        watch gap). Objects newer than the list are kept: they were written after it was taken."""

        def keys(items: list[dict[str, Any]]) -> set[tuple[str, str]]:
            return {
                ((o.get("metadata") or {}).get("namespace", ""), (o.get("metadata") or {}).get("name", ""))
                for o in items
            }

        def stale(obj: dict[str, Any]) -> bool:
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            return not version.isdigit() or int(version) <= present.resource_version

        changed: set[str] = set()
        run_keys, job_keys, limit_keys = (
            keys(present.flowruns),
            keys(present.jobs),
            keys(present.concurrencylimits),
        )
        for ns, objects in self.run_objects.items():
            for name in [n for n, o in objects.items() if (ns, n) not in run_keys and stale(o)]:
                self.put_run(objects[name], deleted=True)
                changed.add(ns)
        for ns, objects in self.job_objects.items():
            for name in [n for n, o in objects.items() if (ns, n) not in job_keys and stale(o)]:
                self.put_job(objects[name], deleted=True)
                changed.add(ns)
        for ns, limits in self.limits.items():
            for name in [n for n, lim in limits.items() if (ns, n) not in limit_keys and stale(lim.raw)]:
                self.put_limit(limits[name].raw, deleted=True)
                changed.add(ns)
        return changed

    def jobs_by_run(self, namespace: str) -> dict[str, list[JobInfo]]:
        grouped: dict[str, list[JobInfo]] = defaultdict(list)
        for job in self.jobs[namespace].values():
            grouped[job.run].append(job)
        return grouped
