"""The engine's view: slim projections of FlowRuns, Jobs and ConcurrencyLimits, and the queues per limit.

Only what decisions need is kept: a run's parsed spec and status (never the raw object, managedFields or
anything the API server adds), a Job's summary, a limit's spec and status. A finished run shrinks to a
small record (for its TTL and a rerun request) and is never visited by admission again.

Each limit keeps its waiting line as a sorted list (priority desc, creation time, name) and its holders as
a set. Both are derived: holders from live Jobs (plus a DAG run admitted between two task Jobs), waiting
entries from each run's latest evaluation. `decide` recomputes a run's share and hands it to `set_share`,
which applies the difference; nothing here is counted up or down by hand.

Versions: an object's record is replaced only by a newer resourceVersion, and a re-list *replaces* the
view (objects missing from it are dropped unless newer than the list, deletions seen during the list are
not resurrected).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import sys
import weakref
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sortedcontainers import SortedList

from flowrun_operator.api.common import RERUN_ANNOTATION, parse_time, version_of
from flowrun_operator.api.concurrencylimit import ConcurrencyLimitSpec, ConcurrencyLimitStatus
from flowrun_operator.api.flowrun import FlowRunPhase, FlowRunSpec, FlowRunStatus, PodTemplate, is_terminal
from flowrun_operator.scheduling.jobs import JobInfo, job_info_from
from flowrun_operator.scheduling.runstate import RunSnapshot

# A place in a limit's line: (-priority, creation time as a timestamp, key). Keys are run names for label
# limits and `<run>/<task>` for tag limits.
QueueEntry = tuple[int, float, str]


def _errors(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())


def status_digest(raw: dict[str, Any]) -> bytes:
    """A 128-bit digest of a raw status: equal for equal content, whatever the key order."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def parse_status(raw: dict[str, Any]) -> FlowRunStatus:
    try:
        return FlowRunStatus.model_validate(raw)
    except ValidationError:
        return FlowRunStatus()  # unreadable status: rebuilt from the Jobs


# Runs of one flow usually share their Pod template (a schedule's runs, a deployment's runs: only the
# parameters differ), so equal templates are kept once; a template goes when no kept run refers to it.
_templates: weakref.WeakValueDictionary[str, PodTemplate] = weakref.WeakValueDictionary()


def _shared(template: PodTemplate, raw: Any) -> PodTemplate:
    try:
        key = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return template
    found = _templates.get(key)
    if found is None:
        _templates[key] = found = template
    return found


def parse_spec(raw: dict[str, Any]) -> tuple[FlowRunSpec | None, str | None]:
    try:
        spec = FlowRunSpec.model_validate(raw)
    except ValidationError as exc:
        return None, "invalid spec: " + _errors(exc)
    if spec.template is not None:
        spec.template = _shared(spec.template, raw.get("template"))
    for task, raw_task in zip(spec.tasks or (), raw.get("tasks") or (), strict=False):
        if isinstance(raw_task, dict):
            task.template = _shared(task.template, raw_task.get("template"))
    return spec, None


# A run not admitted yet (most of a long line) keeps its status and its spec packed, unpacked only when a
# decision reads them. Parsed, a waiting run's status is some sixty small objects (about 4.6 KB) and its spec
# about 0.8 KB; packed, the status is deflated compact JSON (about 0.3 KB) and the spec compact JSON without
# its Pod templates (about 0.1 KB), the templates kept as references (they are shared between runs).
PACKED_PHASES = frozenset({None, FlowRunPhase.SCHEDULED, FlowRunPhase.PENDING})
EMPTY_STATUS = FlowRunStatus()
# Raw deflate with a 1 KiB window and little state: a status of 0.7 KB deflates to 0.3 KB in about 15 us.
_DEFLATE_WBITS = -10
_DEFLATE_MEMLEVEL = 2


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(1, zlib.DEFLATED, _DEFLATE_WBITS, _DEFLATE_MEMLEVEL)
    return packer.compress(data) + packer.flush()


def inflate(data: bytes) -> bytes:
    return zlib.decompress(data, -15)


@dataclass(frozen=True, slots=True)
class PackedSpec:
    """A parsed FlowRunSpec as compact JSON, its Pod templates (the run's, then each task's) kept aside."""

    json: bytes
    templates: tuple[PodTemplate | None, ...]

    @classmethod
    def of(cls, spec: FlowRunSpec) -> PackedSpec:
        fields = spec.model_dump(exclude={"template": True, "tasks": {"__all__": {"template"}}}, exclude_defaults=True)
        # Times in full (the API's JSON form keeps whole seconds, and a scheduled start may have a fraction).
        text = json.dumps(fields, separators=(",", ":"), default=datetime.isoformat).encode()
        return cls(text, (spec.template, *(task.template for task in spec.tasks or ())))

    def unpack(self) -> FlowRunSpec:
        raw = json.loads(self.json)
        if self.templates[0] is not None:
            raw["template"] = self.templates[0]
        for task, template in zip(raw.get("tasks") or (), self.templates[1:], strict=False):
            task["template"] = template
        # Model instances are taken as they are (not copied): the shared templates stay shared.
        return FlowRunSpec.model_validate(raw)


@dataclass(slots=True)
class RunRecord:
    """An unfinished FlowRun (or a finished one whose work is not gone yet)."""

    # The run as parsed; its status is the effective one (a status being written, else the stored one),
    # EMPTY_STATUS while that is packed, and its spec None while that is packed.
    base: RunSnapshot
    resource_version: int
    # A digest of the status as the API server last returned it: enough to recognise an unchanged status
    # (the echo of a write, a re-list) without keeping the raw object (a few KB per queued run).
    stored_digest: bytes
    packed_status: bytes | None = None  # deflated compact JSON
    packed_spec: PackedSpec | None = None
    phase: FlowRunPhase | None = None
    priority: int = 0
    # The places in line the effective status records (read each time a line moves: kept unpacked).
    places: tuple[tuple[str, str, int], ...] = ()
    assumed_status: dict[str, Any] | None = None  # written by the operator, not confirmed yet
    # While a write is outstanding, the stored status it hides (what decisions fall back to if it fails).
    stored_fallback: FlowRunStatus | None = None
    label_limits: tuple[str, ...] = ()
    annotations_rerun: int = 0
    dag_admitted: bool = False  # a run with tasks holds its label slots from admission until it finishes
    # Per task (None: the template), the highest attempt whose Job this operator created or saw: never started
    # twice, even when the status recording it failed to write and the Job is gone.
    attempts_known: dict[str | None, int] = field(default_factory=dict)

    def saw_attempt(self, task: str | None, attempt: int) -> None:
        if attempt > self.attempts_known.get(task, 0):
            self.attempts_known[task] = attempt

    @classmethod
    def of(cls, base: RunSnapshot, resource_version: int, stored_digest: bytes, **fields: Any) -> RunRecord:
        record = cls(base, resource_version, stored_digest, **fields)
        if base.spec is not None:
            record.priority = base.spec.priority
        record.set_status(base.status)
        return record

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def uid(self) -> str:
        return self.base.uid

    @property
    def spec(self) -> FlowRunSpec | None:
        """The parsed spec (parsed anew for a packed one: keep the result only as long as needed)."""
        if self.packed_spec is None:
            return self.base.spec
        return self.packed_spec.unpack()

    @property
    def status(self) -> FlowRunStatus:
        """The effective status (parsed anew for a packed one: keep the result only as long as needed)."""
        if self.packed_status is None:
            return self.base.status
        return FlowRunStatus.model_validate_json(inflate(self.packed_status))

    @property
    def snapshot(self) -> RunSnapshot:
        if self.packed_status is None and self.packed_spec is None:
            return self.base
        return replace(self.base, spec=self.spec, status=self.status)

    def status_api(self) -> dict[str, Any]:
        """The effective status as the API server would store it (`to_api()`)."""
        if self.packed_status is not None:
            found: dict[str, Any] = json.loads(inflate(self.packed_status))
            return found
        return self.base.status.to_api()

    def set_status(self, status: FlowRunStatus) -> None:
        self.phase = status.phase
        self.places = written_places(status) if status.waiting_for or status.task_runs else ()
        if status.phase in PACKED_PHASES:
            self.packed_status = deflate(status.model_dump_json(exclude_none=True).encode())
            if self.base.spec is not None:
                self.packed_spec = PackedSpec.of(self.base.spec)
            if self.base.status is not EMPTY_STATUS or self.base.spec is not None:
                self.base = replace(self.base, spec=None, status=EMPTY_STATUS)
        else:
            self.packed_status = None
            spec = self.spec
            self.packed_spec = None
            self.base = replace(self.base, spec=spec, status=status)

    @property
    def finished(self) -> bool:
        return self.phase is not None and is_terminal(self.phase)

    def written_place(self, limit: str, key: str) -> int | None:
        """The place in `limit`'s line the status records for `key` (the run, or `<run>/<task>`)."""
        task = key[key.index("/") :] if "/" in key else ""
        return next((p for name, t, p in self.places if name == limit and t == task), None)


@dataclass(frozen=True, slots=True)
class FinishedRun:
    """What is kept of a finished run: enough for its TTL, a rerun request and the phase counts."""

    name: str
    uid: str
    resource_version: int
    generation: int
    phase: str
    completion: datetime | None
    ttl_seconds: int | None
    reruns: int


@dataclass(slots=True)
class LimitRecord:
    name: str
    uid: str
    generation: int
    resource_version: int
    spec: ConcurrencyLimitSpec | None
    spec_error: str | None
    status: ConcurrencyLimitStatus
    waiting: SortedList = field(default_factory=SortedList)
    holders: set[str] = field(default_factory=set)
    # Entries that ever left the line: each moves every entry behind it up by at most one place.
    departed: int = 0
    # (departures after which a written place in line may have halved, entry): a heap, so finding the runs
    # whose written place is stale costs the stale ones, not a walk of the line.
    recheck: list[tuple[int, QueueEntry]] = field(default_factory=list)

    @property
    def capacity(self) -> int | None:
        return self.spec.limit if self.spec is not None else None

    @property
    def room(self) -> int:
        return 0 if self.spec is None else self.spec.limit - len(self.holders)

    @property
    def by_tag(self) -> bool:
        return self.spec is not None and self.spec.tag is not None

    def position(self, entry: QueueEntry) -> int:
        return int(self.waiting.index(entry)) + 1

    def schedule_recheck(self, entry: QueueEntry, written: int, position: int | None = None) -> None:
        """A run's place was written as `written`: look again once it can have reached half of that."""
        if position is None:
            position = self.position(entry)
        heapq.heappush(self.recheck, (self.departed + max(0, position - written // 2), entry))

    def recheck_soon(self, entry: QueueEntry) -> None:
        heapq.heappush(self.recheck, (self.departed, entry))


def limit_record(obj: dict[str, Any]) -> LimitRecord:
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
    return LimitRecord(
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        resource_version=version_of(obj),
        spec=spec,
        spec_error=error,
        status=status,
    )


@dataclass(frozen=True, slots=True)
class Share:
    """What a run takes from the limits: the slots it holds and its places in lines."""

    held: frozenset[tuple[str, str]] = frozenset()  # (limit, holder key)
    waiting: frozenset[tuple[str, QueueEntry]] = frozenset()  # (limit, entry)


EMPTY_SHARE = Share()
MAX_DELETED_UIDS = 100_000


def holds(job: JobInfo) -> bool:
    """A Job holds its slots while its pods may still run: until it finishes, or, once deleted, until it is
    gone (foreground deletion keeps it while its pods terminate)."""
    return not job.gone and (job.unfinished or job.deleting)


class NamespaceView:
    def __init__(self, name: str) -> None:
        self.name = name
        self.runs: dict[str, RunRecord] = {}
        self.finished: dict[str, FinishedRun] = {}
        self.jobs: dict[str, JobInfo] = {}
        self.jobs_by_run: dict[str, dict[str, JobInfo]] = defaultdict(dict)
        self.limits: dict[str, LimitRecord] = {}
        self.shares: dict[str, Share] = {}
        self.phase_counts: dict[str, int] = defaultdict(int)
        # Waiters that ever left a line of this namespace (each limit's own count is LimitRecord.departed).
        self.departed = 0
        # uids of objects known to be deleted: a uid never comes back, so a late event (a list taken before
        # the deletion, delivered after it) cannot bring one back into the view. Bounded, oldest forgotten.
        self.deleted_uids: dict[str, None] = {}

    # ---------------------------------------------------------------------------------------- runs

    def run_phase(self, name: str) -> str | None:
        if (record := self.runs.get(name)) is not None:
            return str(record.phase) if record.phase else None
        if (done := self.finished.get(name)) is not None:
            return done.phase
        return None

    def _count(self, before: str | None, after: str | None) -> None:
        if before == after:
            return
        if before is not None:
            self.phase_counts[before] -= 1
        if after is not None:
            self.phase_counts[after] += 1

    def put_run(self, obj: dict[str, Any]) -> bool:
        """Record a FlowRun from a watch event, a list or a write response; True when decisions may change."""
        meta = obj.get("metadata") or {}
        name, uid = str(meta.get("name", "")), str(meta.get("uid", ""))
        if uid in self.deleted_uids:
            return False
        version = version_of(obj)
        current = self.runs.get(name)
        done = self.finished.get(name)
        same_uid = (current is not None and current.uid == uid) or (done is not None and done.uid == uid)
        if same_uid:
            known = current.resource_version if current is not None else done.resource_version  # type: ignore[union-attr]
            if version and known and version < known:
                return False
        elif current is not None or done is not None:
            self.drop_run(name)  # a new object under a reused name
        raw_status = obj.get("status") or {}
        annotations = meta.get("annotations") or {}
        try:
            rerun = int(annotations.get(RERUN_ANNOTATION) or 0)
        except ValueError:
            rerun = 0
        before_phase = self.run_phase(name)
        if done is not None and same_uid:
            # A finished run comes back to the hot path only when a rerun is asked for.
            if rerun <= done.reruns and raw_status.get("phase") == done.phase:
                self.finished[name] = FinishedRun(
                    name,
                    uid,
                    version,
                    int(meta.get("generation") or 0),
                    done.phase,
                    done.completion,
                    _ttl(obj),
                    done.reruns,
                )
                return False
            del self.finished[name]
            current = None
        generation = int(meta.get("generation") or 0)
        if current is None and terminal_phase(raw_status.get("phase")) and rerun <= int(raw_status.get("reruns") or 0):
            # First sight of a run that has finished (a restart, a re-list): straight into history, unparsed.
            completion = raw_status.get("completionTime")
            self.finished[name] = FinishedRun(
                name,
                uid,
                version,
                generation,
                str(raw_status["phase"]),
                parse_time(completion) if isinstance(completion, str) else None,
                _ttl(obj),
                int(raw_status.get("reruns") or 0),
            )
            self._count(before_phase, self.run_phase(name))
            return True
        packed_spec: PackedSpec | None = None
        if current is not None and current.base.generation == generation:
            # The same spec: carried over as it is kept (packed or not), never parsed or packed again.
            spec, spec_error, packed_spec = current.base.spec, current.base.spec_error, current.packed_spec
        else:
            spec, spec_error = parse_spec(obj.get("spec") or {})
        assumed = current.assumed_status if current is not None else None
        if assumed is not None and raw_status == assumed:
            assumed = None  # our write has landed
        digest = status_digest(raw_status)
        labels = dict(meta.get("labels") or {})
        created = meta.get("creationTimestamp")
        if (
            current is not None
            and current.base.generation == generation
            and current.base.labels == labels
            and current.annotations_rerun == rerun
            # Decisions see the outstanding write (unchanged), the write that just landed (what they saw),
            # or the stored status, unchanged when its digest is.
            and (current.assumed_status is not None or digest == current.stored_digest)
        ):
            # Nothing a decision reads has changed (typically the echo of the operator's own write).
            current.resource_version = version or current.resource_version
            if assumed is None:
                current.stored_fallback = None
            elif digest != current.stored_digest:
                current.stored_fallback = parse_status(raw_status)  # changed under a write still outstanding
            current.stored_digest = digest
            current.assumed_status = assumed
            return False
        status = parse_status(assumed if assumed is not None else raw_status)
        snapshot = RunSnapshot(
            name=name,
            namespace=self.name,
            uid=uid,
            generation=generation,
            created=parse_time(created) if created else datetime.now(UTC),
            labels=labels,
            spec=spec,
            status=status,
            spec_error=spec_error,
            rerun_requested=rerun,
        )
        record = RunRecord.of(
            snapshot,
            version,
            digest,
            assumed_status=assumed,
            packed_spec=packed_spec,
            priority=current.priority if packed_spec is not None and current is not None else 0,
            stored_fallback=parse_status(raw_status) if assumed is not None else None,
            label_limits=current.label_limits if current is not None and current.base.labels == labels else (),
            annotations_rerun=rerun,
            dag_admitted=current.dag_admitted if current is not None else False,
            attempts_known=current.attempts_known if current is not None else {},
        )
        if current is None:
            for job in self.jobs_of(name):  # Jobs of the run seen before the run was
                if job.owner_uid == uid:
                    record.saw_attempt(job.task, job.attempt)
        if current is None or current.base.labels != labels:
            record.label_limits = self.match_labels(labels)
        self.runs[name] = record
        self._count(before_phase, self.run_phase(name))
        return True

    def bury(self, uid: str) -> None:
        if uid:
            self.deleted_uids[uid] = None
            if len(self.deleted_uids) > MAX_DELETED_UIDS:
                del self.deleted_uids[next(iter(self.deleted_uids))]

    def drop_run(self, name: str) -> None:
        record = self.runs.get(name) or self.finished.get(name)
        if record is not None:
            self.bury(record.uid)
        self._count(self.run_phase(name), None)
        self.runs.pop(name, None)
        self.finished.pop(name, None)
        self._forget_gone_jobs(name)

    def assume_status(self, name: str, status: dict[str, Any]) -> RunRecord | None:
        """A status the operator is writing: decisions see it at once, before the API server confirms it."""
        record = self.runs.get(name)
        if record is None:
            return None
        before = self.run_phase(name)
        if record.assumed_status is None:
            record.stored_fallback = record.status
        record.assumed_status = status
        record.set_status(parse_status(status))
        self._count(before, self.run_phase(name))
        self._schedule_rechecks(name, self.shares.get(name, EMPTY_SHARE).waiting)
        return record

    def settle_status(self, name: str, written: dict[str, Any], stored: dict[str, Any] | None) -> None:
        """A status write ended: stored is the object the API server returned (None: the write failed, so
        the stored status is the truth again and no phantom of the failed write stays in the view)."""
        record = self.runs.get(name)
        if record is None or record.assumed_status is not written:
            if stored is not None:
                self.put_run(stored)
            return
        before = self.run_phase(name)
        record.assumed_status = None
        if stored is not None and version_of(stored) >= record.resource_version:
            record.resource_version = version_of(stored)
            raw_status = stored.get("status") or {}
            record.stored_digest = status_digest(raw_status)
            status = parse_status(raw_status)
        else:
            status = record.stored_fallback if record.stored_fallback is not None else record.status
        record.stored_fallback = None
        record.set_status(status)
        self._count(before, self.run_phase(name))

    def retire(self, name: str) -> FinishedRun | None:
        """Move a finished run whose status is stored and whose work is gone out of the hot path."""
        record = self.runs.get(name)
        if record is None or record.assumed_status is not None or not record.finished:
            return None
        status = record.status
        spec = record.spec
        done = FinishedRun(
            name=name,
            uid=record.uid,
            resource_version=record.resource_version,
            generation=record.base.generation,
            phase=str(status.phase),
            completion=status.completion_time,
            ttl_seconds=spec.ttl_seconds_after_finished if spec is not None else None,
            reruns=max(status.reruns or 0, record.annotations_rerun),
        )
        del self.runs[name]
        self.finished[name] = done
        self._forget_gone_jobs(name)
        return done

    def _forget_gone_jobs(self, run: str) -> None:
        for job in [j for j in self.jobs_of(run) if j.gone]:
            self.drop_job(job.name)

    # ---------------------------------------------------------------------------------------- jobs

    def put_job(self, obj: dict[str, Any]) -> str | None:
        """Record a Job; returns the name of the run it belongs to when something changed."""
        info = job_info_from(obj)
        if info is None or info.uid in self.deleted_uids:
            return None
        current = self.jobs.get(info.name)
        if (
            current is not None
            and current.resource_version.isdigit()
            and info.resource_version.isdigit()
            and int(info.resource_version) < int(current.resource_version)
        ):
            return None
        if current is not None and current.run != info.run:
            self.jobs_by_run[current.run].pop(info.name, None)
        self.jobs[info.name] = info
        self.jobs_by_run[info.run][info.name] = info
        run = self.runs.get(info.run)
        if run is not None and run.uid == info.owner_uid:
            run.saw_attempt(info.task, info.attempt)
        if current is not None and _decisive(current) == _decisive(info):
            return None  # e.g. counters of uncounted pods: nothing a decision reads has changed
        return info.run

    def drop_job(self, name: str, final: dict[str, Any] | None = None) -> str | None:
        """Forget a deleted Job. `final` is its last state (a DELETED event's object): if that says it had
        finished, its outcome is kept (holding nothing) until its run has recorded it, since the watch may
        tell the deletion before the run's status says how the Job ended."""
        last = job_info_from(final) if final is not None else None
        if last is not None and not last.unfinished and last.name in self.jobs:
            self.bury(last.uid)
            gone = replace(last, gone=True)
            self.jobs[name] = gone
            self.jobs_by_run[gone.run][name] = gone
            return gone.run
        info = self.jobs.pop(name, None)
        if info is None:
            return None
        self.bury(info.uid)
        by_run = self.jobs_by_run.get(info.run)
        if by_run is not None:
            by_run.pop(name, None)
            if not by_run:
                del self.jobs_by_run[info.run]
        return info.run

    def jobs_of(self, run: str) -> list[JobInfo]:
        return list(self.jobs_by_run.get(run, {}).values())

    # -------------------------------------------------------------------------------------- limits

    def put_limit(self, obj: dict[str, Any]) -> tuple[bool, bool]:
        """Record a limit; returns (changed, matching changed: its selector or tag is new)."""
        incoming = limit_record(obj)
        current = self.limits.get(incoming.name)
        if current is not None and current.uid == incoming.uid:
            if incoming.resource_version and incoming.resource_version < current.resource_version:
                return False, False
            matching = _matching(current.spec) != _matching(incoming.spec)
            changed = current.generation != incoming.generation or matching or current.spec_error != incoming.spec_error
            current.generation, current.resource_version = incoming.generation, incoming.resource_version
            current.spec, current.spec_error, current.status = incoming.spec, incoming.spec_error, incoming.status
            return changed, matching
        if current is not None:
            self.drop_limit(current.name)
        self.limits[incoming.name] = incoming
        return True, True

    def drop_limit(self, name: str) -> LimitRecord | None:
        return self.limits.pop(name, None)

    def label_limit_names(self) -> list[str]:
        return [n for n, lim in self.limits.items() if lim.spec is not None and lim.spec.selector is not None]

    def match_labels(self, labels: dict[str, str] | Any) -> tuple[str, ...]:
        return tuple(
            sorted(
                n
                for n, lim in self.limits.items()
                if lim.spec is not None and lim.spec.selector is not None and lim.spec.matches_run(labels)
            )
        )

    def match_tags(self, tags: Iterable[str]) -> tuple[str, ...]:
        wanted = list(tags)
        if not wanted:
            return ()
        return tuple(
            sorted(n for n, lim in self.limits.items() if lim.spec is not None and lim.spec.matches_task(wanted))
        )

    def rematch(self) -> None:
        """A limit's selector or tag changed: recompute which label limits each run matches."""
        for record in self.runs.values():
            record.label_limits = self.match_labels(record.base.labels)

    # -------------------------------------------------------------------------------------- shares

    def set_share(self, run: str, share: Share) -> set[str]:
        """Apply a run's new share to the limits' holders and lines; returns the limits it changed (where
        a slot freed or the line changed, heads may be admitted now)."""
        old = self.shares.get(run, EMPTY_SHARE)
        if old == share:
            return set()
        touched: set[str] = set()
        for limit, key in old.held - share.held:
            record = self.limits.get(limit)
            if record is not None:
                record.holders.discard(key)
                touched.add(limit)
        for limit, key in share.held - old.held:
            record = self.limits.get(limit)
            if record is not None:
                record.holders.add(key)
                touched.add(limit)
        for limit, entry in old.waiting - share.waiting:
            record = self.limits.get(limit)
            if record is not None and entry in record.waiting:
                record.waiting.remove(entry)
                record.departed += 1
                self.departed += 1
                touched.add(limit)
        joined = share.waiting - old.waiting
        for limit, entry in joined:
            record = self.limits.get(limit)
            if record is not None:
                record.waiting.add(entry)
                touched.add(limit)
        if share == EMPTY_SHARE:
            self.shares.pop(run, None)
        else:
            self.shares[run] = share
        self._schedule_rechecks(run, joined)  # e.g. after a restart: places written by a former process
        return touched

    def _schedule_rechecks(self, run: str, entries: Iterable[tuple[str, QueueEntry]]) -> None:
        record = self.runs.get(run)
        if record is None:
            return
        for name, entry in entries:
            limit = self.limits.get(name)
            if limit is None or entry not in limit.waiting:
                continue
            written = record.written_place(name, entry[2])
            if written is not None:
                limit.schedule_recheck(entry, written)

    def stale_places(self, name: str) -> list[tuple[int, str, QueueEntry]]:
        """(place, run, entry) of the waiters of a limit whose written place is at least twice their place
        now; taken off the recheck schedule (a rewrite schedules them again). Costs O(k log n) for the k
        entries whose recheck is due."""
        limit = self.limits.get(name)
        if limit is None:
            return []
        stale: list[tuple[int, str, QueueEntry]] = []
        while limit.recheck and limit.recheck[0][0] <= limit.departed:
            _, entry = heapq.heappop(limit.recheck)
            if entry not in limit.waiting:
                continue  # left the line since
            run = entry[2].split("/", 1)[0]
            record = self.runs.get(run)
            written = record.written_place(name, entry[2]) if record is not None else None
            if written is None:
                continue
            position = limit.position(entry)
            if position * 2 <= written:
                stale.append((position, run, entry))
            else:
                limit.schedule_recheck(entry, written, position)
        return stale

    def reset_limit_indexes(self) -> None:
        """Empty every limit's holders and line and forget the shares (decide rebuilds them)."""
        for record in self.limits.values():
            record.holders.clear()
            record.waiting.clear()
            record.recheck.clear()
        self.shares.clear()

    def run_names(self) -> Iterator[str]:
        yield from set(self.runs) | set(self.jobs_by_run)


def written_places(status: FlowRunStatus) -> tuple[tuple[str, str, int], ...]:
    """(limit, key, place) for each place in line a run's status records; key is the run's name for its own
    lines and `/<task>` for a task's."""
    found = [(sys.intern(w.name), "", w.position) for w in status.waiting_for]
    for task_run in status.task_runs:
        found.extend((sys.intern(w.name), f"/{task_run.name}", w.position) for w in task_run.waiting_for)
    return tuple(found)


def _matching(spec: ConcurrencyLimitSpec | None) -> Any:
    if spec is None:
        return None
    return (spec.tag, spec.selector.model_dump() if spec.selector is not None else None)


def _ttl(obj: dict[str, Any]) -> int | None:
    value = (obj.get("spec") or {}).get("ttlSecondsAfterFinished")
    return int(value) if isinstance(value, int) else None


def terminal_phase(phase: str | None) -> bool:
    return phase is not None and phase in {p.value for p in FlowRunPhase} and is_terminal(FlowRunPhase(phase))


def run_snapshot(obj: dict[str, Any]) -> RunSnapshot:
    """A FlowRun object, parsed (what the view keeps of an unfinished run)."""
    meta = obj.get("metadata") or {}
    spec, spec_error = parse_spec(obj.get("spec") or {})
    created = meta.get("creationTimestamp")
    try:
        rerun = int((meta.get("annotations") or {}).get(RERUN_ANNOTATION) or 0)
    except ValueError:
        rerun = 0
    return RunSnapshot(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        created=parse_time(created) if created else datetime.now(UTC),
        labels=dict(meta.get("labels") or {}),
        spec=spec,
        status=parse_status(obj.get("status") or {}),
        spec_error=spec_error,
        rerun_requested=rerun,
    )


def _decisive(job: JobInfo) -> tuple[Any, ...]:
    """The parts of a Job that observe() and the limits read."""
    return (
        job.run,
        job.owner_uid,
        job.task,
        job.attempt,
        job.deleting,
        job.pod_started,
        job.outcome,
        job.reason,
        job.message,
        job.finished,
        job.gone,
        tuple(sorted(job.labels.items())),
        job.tags,
        job.created,
    )
