"""An in-memory Kubernetes API with just enough of the real one for the admission engine.

It implements the engine's duck-typed `kube` interface (flowrun_operator.kube.client.Kube) and behaves the way
the parts the engine relies on behave on a real cluster:

- one global resourceVersion counter (like etcd), uids, creationTimestamps, `generation` bumped on spec changes
  only, merge-patch of the status subresource (a patch that changes nothing is not a write);
- Jobs run one simulated pod each: Pending, then Running, then Succeeded/Failed after a scripted duration; a
  small Job controller mirrors it into status.active/ready/terminating/succeeded/failed/startTime and the
  Complete/Failed conditions (reasons BackoffLimitExceeded, DeadlineExceeded for activeDeadlineSeconds), set
  only once the pod is gone, as batch/v1 does;
- Job deletion: Foreground keeps the Job (deletionTimestamp, foregroundDeletion finalizer) until its pod has
  terminated (termination grace period); Background removes the Job at once while its pod still terminates;
- garbage collection deletes Jobs whose controller owner (a FlowRun) no longer exists;
- every change is published to subscribers (the watch layer) as ADDED/MODIFIED/DELETED.

Failures are injected per call by the harness. Invariants that must hold at the instant of a write (admission
within limits, one Job per attempt, no status regression, Events only for stored transitions) are checked here,
on the write itself, and recorded as violations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from flowrun_operator.kube.client import Conflict, ListedPage
from sim.vloop import OWNER, VirtualTimeLoop, timestamp

Obj = dict[str, Any]
Key = tuple[str, str]  # namespace, name

FLOWRUNS, LIMITS, JOBS = "flowruns", "concurrencylimits", "jobs"
KINDS = (FLOWRUNS, LIMITS, JOBS)
RUN_LABEL, TASK_LABEL, ATTEMPT_LABEL = "flowrun.io/run", "flowrun.io/task", "flowrun.io/attempt"
TAGS_ANNOTATION = "flowrun.io/tags"
TERMINAL = ("Succeeded", "Failed", "Cancelled")
TASK_TERMINAL = (*TERMINAL, "Skipped")
# Calls the client would give up on (kube/client.py bounds every call); a "hang" ends as a TimeoutError then.
CLIENT_TIMEOUT = 20.0
# Objects per page of a list: small, so that a list of a scenario spans several calls.
LIST_PAGE = 3


@dataclass
class PodScript:
    """What the pod of one Job attempt does: start after a while, then run and exit."""

    start_after: float = 0.5
    run_for: float = 3.0
    succeed: bool = True


@dataclass
class Pod:
    state: str = "Pending"  # Pending, Running, Terminating, Succeeded, Failed, Gone
    ends_at: float = 0.0  # when a Running or Terminating pod is gone
    succeed: bool = True
    # False for pods orphaned by a cascade the operator did not ask for (a user's delete): invisible to it.
    counted: bool = True
    ended_at: float | None = None

    @property
    def may_run(self) -> bool:
        return self.state in ("Pending", "Running", "Terminating")


@dataclass
class JobRecord:
    """A Job as it lived (kept after deletion): the simulation's ground truth."""

    key: Key
    uid: str
    owner_uid: str
    run: str
    task: str | None
    attempt: int
    labels: dict[str, str]
    tags: tuple[str, ...]
    created: float
    pod: Pod
    incarnation: int | None
    # The limit versions (uid, generation) the creating incarnation knew when it created this Job.
    knew: dict[Key, tuple[str, int]] = field(default_factory=dict)
    deadline: float | None = None
    result: str | None = None  # how the pod ended: Complete | Failed, once the Job controller has noticed
    outcome: str | None = None  # the Complete/Failed condition as stored in the API (what the engine can see)
    reason: str = ""
    finished_at: float | None = None
    deadline_hit: bool = False
    deleting: bool = False
    gone: bool = False
    deleted_unfinished: bool = False  # removed before it finished (the run's work was lost)
    # The incarnations a version showing the Job finished reached (a watch event, a list, a response): one that
    # is not among them, after the Job was deleted, has nothing to read its outcome from but the run's status.
    outcome_seen_by: set[int] = field(default_factory=set)


class Faults(Protocol):
    def pick(self, method: str) -> str | None: ...

    def latency(self) -> float: ...


class NoFaults:
    def pick(self, method: str) -> str | None:
        return None

    def latency(self) -> float:
        return 0.0


def _key(obj: Obj) -> Key:
    return str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"])


def clone(obj: Obj) -> Obj:
    """A deep copy of an object (what the API server hands out: never a shared reference)."""
    copied: Obj = json.loads(json.dumps(obj))
    return copied


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return json.loads(json.dumps(patch))
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def api_error(status: int, reason: str, message: str) -> Exception:
    error: Any = ApiException(status=status, reason=reason)
    error.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "reason": reason})
    assert isinstance(error, Exception)
    return error


def fault_error(fault: str, method: str, name: str) -> Exception:
    if fault == "500":
        return api_error(500, "Internal Server Error", "etcdserver: request timed out")
    if fault == "503":
        return api_error(503, "Service Unavailable", "the server is currently unable to handle the request")
    if fault == "429":
        return api_error(429, "Too Many Requests", "the server has received too many requests")
    if fault == "409":
        return api_error(409, "Conflict", f'Operation cannot be fulfilled on "{name}": the object has been modified')
    if fault == "403quota":
        return api_error(
            403,
            "Forbidden",
            f'jobs.batch "{name}" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, '
            "used: count/jobs.batch=10, limited: count/jobs.batch=10",
        )
    if fault == "reset":
        return ConnectionResetError(f"connection reset by peer during {method}")
    return TimeoutError(f"{method}: read timed out")


class FakeApi:
    def __init__(self, loop: VirtualTimeLoop, faults: Faults | None = None) -> None:
        self.loop = loop
        self.faults: Faults = faults or NoFaults()
        self.rv = 0
        self.uids = 0
        self.objects: dict[str, dict[Key, Obj]] = {kind: {} for kind in KINDS}
        self.jobs: list[JobRecord] = []
        self.job_by_uid: dict[str, JobRecord] = {}
        self.subscribers: list[Callable[[str, str, Obj], None]] = []
        self.violations: list[str] = []
        self.events: list[tuple[float, str, str, str, str]] = []  # time, uid, type, reason, message
        self.writes: dict[str, list[StoredWrite]] = {}  # run uid -> its stored status writes
        self.final_events: set[tuple[str, str]] = set()
        self.pod_scripts: Callable[[str, str | None, int], PodScript] = lambda run, task, attempt: PodScript()
        self.grace = 5.0  # termination grace period of pods
        self.controller_delay = 0.05
        self.gc_delay = 0.2
        self.quota_until: dict[str, float] = {}  # namespace -> Job creation refused (quota) until then
        # Run uid -> the limit versions the operator knew when it first decided to admit the run (the harness
        # notes it): a run with tasks holds its label slots from then on.
        self.admitted_knew: dict[str, dict[Key, tuple[str, int]]] = {}
        # Limit specs the current operator incarnation knows (set by the harness): admission is judged
        # against what the operator could know, not against a change it has not been told of yet.
        self.known_limits: Callable[[int | None], dict[Key, Obj]] = lambda owner: {}
        # A page of a list handed to the operator, and the end of a whole list (its version, the limits in it).
        self.on_listed_page: Callable[[int | None, ListedPage], None] = lambda owner, page: None
        self.on_listed: Callable[[int | None, int, set[Key]], None] = lambda owner, version, limits: None
        # An object handed to the operator in a response (it knows that version from then on).
        self.on_returned: Callable[[int | None, str, Obj], None] = lambda owner, kind, obj: None
        self.on_crash: Callable[[int], None] = self.loop.kill
        self.timers: list[tuple[float, asyncio.TimerHandle]] = []
        # Hand-written scenarios: a fault for a particular call (method, object name, body), and extra time
        # between a call's effect and its response reaching the caller.
        self.fault_for: Callable[[str, str, Obj | None], str | None] | None = None
        self.slow_response: dict[str, float] = {}
        self.last_change = 0.0
        self.calls = 0
        self.disabled_checks: set[str] = set()

    # -------------------------------------------------------------------------------------- helpers

    @property
    def now(self) -> float:
        return self.loop.time()

    def violate(self, check: str, message: str) -> None:
        if check not in self.disabled_checks:
            self.violations.append(f"[t={self.now:.3f}] {check}: {message}")

    def _next_rv(self) -> str:
        self.rv += 1
        self.last_change = self.now
        return str(self.rv)

    def _uid(self, prefix: str) -> str:
        self.uids += 1
        return f"{prefix}-{self.uids:05d}"

    def _emit(self, kind: str, event: str, obj: Obj) -> None:
        for subscriber in self.subscribers:
            subscriber(kind, event, clone(obj))

    def _at(self, when: float, callback: Callable[[], None]) -> None:
        handle = self.loop.call_at(when, callback, context=_harness_context())
        self.timers.append((when, handle))

    def busy_within(self, horizon: float) -> bool:
        """Whether the API will change something by itself (pods, Job controller, GC) within `horizon` s."""
        self.timers = [(w, h) for w, h in self.timers if not h.cancelled() and w > self.now - 1e-9]
        return any(w <= self.now + horizon for w, h in self.timers if not h.cancelled())

    async def _enter(self, method: str, name: str, body: Obj | None = None) -> str | None:
        """Latency and the injected fault of one call. Returns the fault to apply after the write."""
        owner = OWNER.get()
        if owner is not None and owner in self.loop.dead:
            raise asyncio.CancelledError(f"{method} from a crashed operator")
        self.calls += 1
        fault = self.fault_for(method, name, body) if self.fault_for is not None else None
        fault = fault or self.faults.pick(method)
        await asyncio.sleep(self.faults.latency())
        if fault == "hang":
            await asyncio.sleep(CLIENT_TIMEOUT)
            raise TimeoutError(f"{method}: read timed out")
        if fault in ("crash_before", "crash_after"):
            if owner is not None and fault == "crash_before":
                self.on_crash(owner)
                await asyncio.sleep(0)
            return fault if owner is not None else None
        if fault is not None and fault != "timeout_after":
            raise fault_error(fault, method, name)
        return fault

    async def _leave(self, fault: str | None, method: str) -> None:
        owner = OWNER.get()
        if fault == "crash_after" and owner is not None:
            self.on_crash(owner)
            await asyncio.sleep(0)
        await asyncio.sleep(self.faults.latency() + self.slow_response.get(method, 0.0))
        if fault == "timeout_after":
            raise TimeoutError(f"{method}: read timed out (the request was applied)")

    # ------------------------------------------------------------------------------ the kube interface

    async def list_pages(self, namespaces: list[str] | None) -> AsyncIterator[ListedPage]:
        """Limits, labelled Jobs, then runs, LIST_PAGE at a time. Like a paginated list on a real API server,
        every page comes from the snapshot taken for the first one, and each page is a call of its own
        (latency, faults, a crash) with the watch streams delivering meanwhile."""
        fault = await self._enter("list", "")
        scope = set(namespaces) if namespaces else None
        version = self.rv
        snapshot: dict[str, list[Obj]] = {}
        for kind in (LIMITS, JOBS, FLOWRUNS):
            found = [clone(o) for (ns, _), o in sorted(self.objects[kind].items()) if not scope or ns in scope]
            if kind == JOBS:
                found = [o for o in found if RUN_LABEL in (o["metadata"].get("labels") or {})]
            snapshot[kind] = found
        owner = OWNER.get()
        first = True
        for kind, found in snapshot.items():
            for start in range(0, max(len(found), 1), LIST_PAGE):
                if not first:
                    fault = await self._enter("list", "")
                first = False
                await self._leave(fault, "list")
                page = ListedPage(kind, found[start : start + LIST_PAGE], version)
                self.on_listed_page(owner, page)
                yield page
        self.on_listed(owner, version, {_key(o) for o in snapshot[LIMITS]})

    async def get_object(self, plural: str, namespace: str, name: str) -> Obj | None:
        fault = await self._enter("get", name)
        found = self.objects[plural].get((namespace, name))
        result = clone(found) if found is not None else None
        await self._leave(fault, "get")
        if result is not None:
            self.on_returned(OWNER.get(), plural, result)
        return result

    async def get_job(self, namespace: str, name: str) -> Obj | None:
        return await self.get_object(JOBS, namespace, name)

    async def create_job(self, namespace: str, body: Obj) -> Obj:
        name = str(body["metadata"]["name"])
        # Admission is judged by what the operator knew when it sent the request: a limit it learns of while
        # the request is on its way could not have changed that decision.
        known = dict(self.known_limits(OWNER.get()))
        fault = await self._enter("create_job", name, body)
        if self.quota_until.get(namespace, -1.0) > self.now:
            raise fault_error("403quota", "create_job", name)
        if (namespace, name) in self.objects[JOBS]:
            raise Conflict(name)
        if len(name) > 63:
            raise api_error(422, "Unprocessable Entity", f'Job.batch "{name}" is invalid: metadata.name: too long')
        job = self._create_job(namespace, body, known)
        await self._leave(fault, "create_job")
        return job

    async def delete_job(self, namespace: str, name: str, propagation: str | None = None, **_: Any) -> None:
        fault = await self._enter("delete_job", name)
        self.remove_job(namespace, name, propagation or self.default_propagation, counted=True)
        await self._leave(fault, "delete_job")

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Obj, resource_version: str | None = None
    ) -> Obj:
        fault = await self._enter("patch_status", name, status)
        stored = self.objects[plural].get((namespace, name))
        if stored is None:
            raise api_error(404, "Not Found", f'{plural} "{name}" not found')
        if resource_version is not None and stored["metadata"]["resourceVersion"] != resource_version:
            raise api_error(409, "Conflict", f'{plural} "{name}": the object has been modified')
        new_status = merge_patch(stored.get("status") or {}, status)
        if new_status != (stored.get("status") or {}):
            old_status = stored.get("status") or {}
            stored["status"] = new_status
            stored["metadata"]["resourceVersion"] = self._next_rv()
            if plural == FLOWRUNS:
                self._check_status_write(stored, old_status, new_status)
            self._emit(plural, "MODIFIED", stored)
        result = clone(stored)
        await self._leave(fault, "patch_status")
        self.on_returned(OWNER.get(), plural, result)
        return result

    async def delete_object(self, plural: str, namespace: str, name: str, **_: Any) -> None:
        fault = await self._enter("delete_object", name)
        if plural == FLOWRUNS:
            self.delete_flowrun(namespace, name)
        elif plural == LIMITS:
            self.delete_limit(namespace, name)
        await self._leave(fault, "delete_object")

    async def post_event(self, obj: Obj, event_type: str, reason: str, message: str, *_: Any, **__: Any) -> None:
        # Like the real client, Events are best effort: a failed post is lost, never raised to the caller.
        try:
            fault = await self._enter("post_event", reason)
        except Exception:
            return
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        self.events.append((self.now, uid, event_type, reason, message))
        self._check_event(uid, reason, message, obj)
        with contextlib.suppress(Exception):
            await self._leave(fault, "post_event")

    def close(self) -> None:
        return None

    # The real client's choice, mirrored by the harness (see harness.client_propagation).
    default_propagation = "Foreground"

    # --------------------------------------------------------------------------- user (kubectl) actions

    def _new_meta(self, meta: Obj, prefix: str) -> Obj:
        out = clone(meta)
        out["uid"] = self._uid(prefix)
        out["creationTimestamp"] = timestamp(self.now)
        out["generation"] = 1
        out["resourceVersion"] = self._next_rv()
        return out

    def create(self, kind: str, body: Obj) -> Obj:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if key in self.objects[kind]:
            raise ValueError(f"{kind} {key} exists")
        obj = clone(body)
        obj["metadata"] = self._new_meta(meta, "run" if kind == FLOWRUNS else "limit")
        obj.setdefault("status", {})
        self.objects[kind][key] = obj
        self._emit(kind, "ADDED", obj)
        return obj

    def update_spec(self, kind: str, namespace: str, name: str, spec_patch: Obj) -> Obj | None:
        stored = self.objects[kind].get((namespace, name))
        if stored is None:
            return None
        spec = merge_patch(stored.get("spec") or {}, spec_patch)
        if spec == stored.get("spec"):
            return stored
        stored["spec"] = spec
        stored["metadata"]["generation"] = int(stored["metadata"]["generation"]) + 1
        stored["metadata"]["resourceVersion"] = self._next_rv()
        self._emit(kind, "MODIFIED", stored)
        return stored

    def update_meta(self, kind: str, namespace: str, name: str, field_name: str, values: dict[str, str]) -> None:
        stored = self.objects[kind].get((namespace, name))
        if stored is None:
            return
        stored["metadata"][field_name] = {**(stored["metadata"].get(field_name) or {}), **values}
        stored["metadata"]["resourceVersion"] = self._next_rv()
        self._emit(kind, "MODIFIED", stored)

    def delete_flowrun(self, namespace: str, name: str) -> None:
        stored = self.objects[FLOWRUNS].pop((namespace, name), None)
        if stored is None:
            return
        self._next_rv()
        self._emit(FLOWRUNS, "DELETED", stored)
        self._at(self.now + self.gc_delay, self._collect_garbage)

    def delete_limit(self, namespace: str, name: str) -> None:
        stored = self.objects[LIMITS].pop((namespace, name), None)
        if stored is not None:
            self._next_rv()
            self._emit(LIMITS, "DELETED", stored)

    def user_delete_job(self, namespace: str, name: str) -> None:
        """`kubectl delete job` (background cascade): its pod is the user's business, not the operator's."""
        self.remove_job(namespace, name, "Background", counted=False)

    # ---------------------------------------------------------------------------------------- Jobs

    def _create_job(self, namespace: str, body: Obj, known: dict[Key, Obj]) -> Obj:
        job = clone(body)
        meta = job.setdefault("metadata", {})
        meta["namespace"] = namespace
        job["metadata"] = self._new_meta(meta, "job")
        job["status"] = {}
        job.setdefault("apiVersion", "batch/v1")
        job.setdefault("kind", "Job")
        labels = job["metadata"].get("labels") or {}
        owner: Obj = next((o for o in job["metadata"].get("ownerReferences") or [] if o.get("controller")), {})
        task = labels.get(TASK_LABEL) or None
        attempt = int(labels.get(ATTEMPT_LABEL, "0") or 0)
        tags = tuple(t for t in ((job["metadata"].get("annotations") or {}).get(TAGS_ANNOTATION) or "").split(",") if t)
        script = self.pod_scripts(str(labels.get(RUN_LABEL, "")), task, attempt)
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        record = JobRecord(
            key=(namespace, job["metadata"]["name"]),
            uid=job["metadata"]["uid"],
            owner_uid=str(owner.get("uid", "")),
            run=str(labels.get(RUN_LABEL, "")),
            task=task,
            attempt=attempt,
            labels=dict(labels),
            tags=tags,
            created=self.now,
            pod=Pod(succeed=script.succeed),
            incarnation=OWNER.get(),
            deadline=self.now + float(deadline) if deadline else None,
        )
        self._check_creation(record, known)
        self.objects[JOBS][record.key] = job
        self.jobs.append(record)
        self.job_by_uid[record.uid] = record
        self._emit(JOBS, "ADDED", job)
        start = self.now + script.start_after
        self._at(start, lambda: self._pod_starts(record, start + script.run_for))
        if record.deadline is not None:
            self._at(record.deadline, lambda: self._deadline(record))
        self._sync_later(record)
        if not any(o["metadata"]["uid"] == record.owner_uid for o in self.objects[FLOWRUNS].values()):
            self._at(self.now + self.gc_delay, self._collect_garbage)
        return clone(job)

    def _pod_starts(self, record: JobRecord, ends_at: float) -> None:
        if record.pod.state != "Pending":
            return
        record.pod.state = "Running"
        record.pod.ends_at = ends_at
        self._at(ends_at, lambda: self._pod_ends(record))
        self._sync_later(record)

    def _pod_ends(self, record: JobRecord) -> None:
        pod = record.pod
        if not pod.may_run or pod.ends_at > self.now + 1e-9:
            return
        was_terminating = pod.state == "Terminating"
        pod.state = "Succeeded" if pod.succeed and not was_terminating else "Failed"
        pod.ended_at = self.now
        if record.deadline_hit:
            self._finish(record, "Failed", "DeadlineExceeded")
        elif not was_terminating and not record.deleting:
            self._finish(record, "Complete" if pod.succeed else "Failed", "" if pod.succeed else "BackoffLimitExceeded")
        if record.deleting and not record.gone:
            self._at(self.now + self.gc_delay, lambda: self._finalize(record))
        self._sync_later(record)

    def _terminate_pod(self, record: JobRecord) -> None:
        pod = record.pod
        if pod.state == "Pending":
            pod.state = "Failed"
            pod.ended_at = self.now
        elif pod.state == "Running":
            pod.state = "Terminating"
            pod.ends_at = min(pod.ends_at, self.now + self.grace)
            self._at(pod.ends_at, lambda: self._pod_ends(record))

    def _deadline(self, record: JobRecord) -> None:
        if record.result is not None or record.gone or record.deleting or not record.pod.may_run:
            return
        record.deadline_hit = True
        if record.pod.state == "Pending":
            record.pod.state = "Failed"
            record.pod.ended_at = self.now
            self._finish(record, "Failed", "DeadlineExceeded")
        else:
            self._terminate_pod(record)
        self._sync_later(record)

    def _finish(self, record: JobRecord, outcome: str, reason: str) -> None:
        if record.result is None:
            record.result, record.reason, record.finished_at = outcome, reason, self.now

    def _sync_later(self, record: JobRecord) -> None:
        self._at(self.now + self.controller_delay, lambda: self._sync(record))

    def _sync(self, record: JobRecord) -> None:
        """The Job controller: status from the pod, conditions once the pod is gone."""
        job = self.objects[JOBS].get(record.key)
        if job is None or job["metadata"]["uid"] != record.uid:
            return
        pod = record.pod
        status: Obj = {"startTime": timestamp(record.created), "uncountedTerminatedPods": {}}
        status["active"] = 1 if pod.state in ("Pending", "Running") else 0
        status["ready"] = 1 if pod.state == "Running" else 0
        status["terminating"] = 1 if pod.state == "Terminating" else 0
        if pod.state == "Succeeded":
            status["succeeded"] = 1
        if pod.state == "Failed":
            status["failed"] = 1
        conditions: list[Obj] = []
        if record.deadline_hit:
            conditions.append(self._condition("FailureTarget", "DeadlineExceeded", record, pod.may_run))
        if record.result == "Complete" and record.finished_at is not None:
            conditions.append(self._condition("SuccessCriteriaMet", "CompletionsReached", record))
            conditions.append(self._condition("Complete", "CompletionsReached", record))
            status["completionTime"] = timestamp(record.finished_at)
        elif record.result == "Failed":
            if not record.deadline_hit:
                conditions.append(self._condition("FailureTarget", record.reason, record))
            conditions.append(self._condition("Failed", record.reason, record))
        if conditions:
            status["conditions"] = conditions
        for key in ("active", "ready", "terminating"):
            if not status[key]:
                del status[key]
        if status != job.get("status"):
            job["status"] = status
            job["metadata"]["resourceVersion"] = self._next_rv()
            record.outcome = record.result if record.result and "conditions" in status else None
            self._emit(JOBS, "MODIFIED", job)

    def _condition(self, kind: str, reason: str, record: JobRecord, now: bool = False) -> Obj:
        messages = {
            "BackoffLimitExceeded": "Job has reached the specified backoff limit",
            "DeadlineExceeded": "Job was active longer than specified deadline",
            "CompletionsReached": "Reached expected number of succeeded pods",
        }
        when = self.now if now or record.finished_at is None else record.finished_at
        return {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": messages.get(reason, reason),
            "lastProbeTime": timestamp(when),
            "lastTransitionTime": timestamp(when),
        }

    def remove_job(self, namespace: str, name: str, propagation: str, *, counted: bool) -> None:
        job = self.objects[JOBS].get((namespace, name))
        if job is None:
            return
        record = self.job_by_uid[job["metadata"]["uid"]]
        if not counted:
            record.pod.counted = False
        if record.deleting:
            return
        if record.outcome is None:
            record.deleted_unfinished = True
        record.deleting = True
        if record.pod.may_run:
            self._terminate_pod(record)
        if propagation == "Foreground":
            job["metadata"]["deletionTimestamp"] = timestamp(self.now)
            job["metadata"]["deletionGracePeriodSeconds"] = 0
            job["metadata"]["finalizers"] = ["foregroundDeletion"]
            job["metadata"]["resourceVersion"] = self._next_rv()
            self._emit(JOBS, "MODIFIED", job)
            self._sync_later(record)
            if not record.pod.may_run:
                self._at(self.now + self.gc_delay, lambda: self._finalize(record))
        else:
            self._finalize(record)

    def _finalize(self, record: JobRecord) -> None:
        job = self.objects[JOBS].get(record.key)
        if job is None or job["metadata"]["uid"] != record.uid or record.gone:
            return
        del self.objects[JOBS][record.key]
        record.gone = True
        self._next_rv()
        self._emit(JOBS, "DELETED", job)

    def _collect_garbage(self) -> None:
        owners = {o["metadata"]["uid"] for o in self.objects[FLOWRUNS].values()}
        for key, job in sorted(self.objects[JOBS].items()):
            record = self.job_by_uid[job["metadata"]["uid"]]
            if record.owner_uid and record.owner_uid not in owners:
                self.remove_job(*key, "Background", counted=False)

    # ------------------------------------------------------------------------------- ground truth

    def may_run(self, record: JobRecord) -> bool:
        """Whether the Job's pod may still run (the definition of holding a slot)."""
        return record.pod.may_run and record.pod.counted

    def label_holders(self, spec: Obj, namespace: str) -> set[str]:
        """Runs (by uid) holding a slot of a selector limit: a Job of theirs may still run."""
        return {
            r.owner_uid or r.run
            for r in self.jobs
            if r.key[0] == namespace and self.may_run(r) and selector_matches(spec.get("selector"), r.labels)
        }

    def tag_holders(self, tag: str, namespace: str) -> set[str]:
        return {r.uid for r in self.jobs if r.key[0] == namespace and self.may_run(r) and tag in r.tags}

    def holders(self, spec: Obj, namespace: str) -> set[str]:
        if spec.get("tag"):
            return self.tag_holders(str(spec["tag"]), namespace)
        if spec.get("selector") is not None:
            return self.label_holders(spec, namespace)
        return set()

    # ------------------------------------------------------------------------ checks on each write

    def _check_creation(self, record: JobRecord, known: dict[Key, Obj]) -> None:
        same = [
            r
            for r in self.jobs
            if r.owner_uid == record.owner_uid and r.task == record.task and r.attempt == record.attempt
        ]
        if same:
            self.violate(
                "one-job-per-attempt",
                f"Job {record.key[1]} is a second Job for run {record.run} (uid {record.owner_uid}) "
                f"task {record.task} attempt {record.attempt}; first was {same[0].key[1]}",
            )
        run = next((o for o in self.objects[FLOWRUNS].values() if o["metadata"]["uid"] == record.owner_uid), None)
        if run is not None:
            phase = (run.get("status") or {}).get("phase")
            if phase in TERMINAL:
                self.violate(
                    "no-job-for-finished-run", f"Job {record.key[1]} created for run {record.run} stored as {phase}"
                )
        namespace = record.key[0]
        record.knew = {key: (o["metadata"]["uid"], int(o["metadata"]["generation"])) for key, o in known.items()}
        for (ns, name), limit in sorted(known.items()):
            spec = limit.get("spec") or {}
            if ns != namespace or "limit" not in spec:
                continue
            if spec.get("tag"):
                if spec["tag"] not in record.tags:
                    continue
                before = self.tag_holders(str(spec["tag"]), namespace)
                after = len(before) + 1
            elif spec.get("selector") is not None:
                if not selector_matches(spec.get("selector"), record.labels):
                    continue
                before = self.label_holders(spec, namespace)
                if (record.owner_uid or record.run) in before:
                    continue  # the run holds this slot already (another task of the same run)
                first = next((r for r in self.jobs if r.owner_uid == record.owner_uid), None)
                admitted = self.admitted_knew.get(record.owner_uid, first.knew if first is not None else None)
                version = (limit["metadata"]["uid"], int(limit["metadata"]["generation"]))
                if record.task is not None and admitted is not None and admitted.get((ns, name)) != version:
                    # A run with tasks holds its run slot from admission until it finishes, across its tasks and
                    # their retries; it was admitted under another version of this limit (lowering or creating
                    # a limit never takes a slot back). A run without tasks is admitted again for each attempt.
                    continue
                after = len(before) + 1
            else:
                continue
            if after > int(spec["limit"]):
                self.violate(
                    "holders<=limit",
                    f"creating Job {record.key[1]} makes {after} holders of limit {name} (limit {spec['limit']}, "
                    f"known to the operator); pods that may still run: "
                    + ", ".join(sorted(self._describe_holders(spec, namespace))),
                )

    def _describe_holders(self, spec: Obj, namespace: str) -> list[str]:
        out = []
        for r in self.jobs:
            if r.key[0] != namespace or not self.may_run(r):
                continue
            if (spec.get("tag") and spec["tag"] in r.tags) or (
                spec.get("selector") is not None and selector_matches(spec["selector"], r.labels)
            ):
                state = "deleting" if r.deleting else r.pod.state
                out.append(f"{r.key[1]}({state}{', gone' if r.gone else ''})")
        return out

    def _check_status_write(self, run: Obj, old: Obj, new: Obj) -> None:
        name, uid = run["metadata"]["name"], run["metadata"]["uid"]
        old_phase, new_phase = old.get("phase"), new.get("phase")
        if old_phase in TERMINAL and new_phase != old_phase:
            self.violate("no-status-regression", f"run {name}: phase {old_phase} -> {new_phase}")
        if int(new.get("attempt") or 0) < int(old.get("attempt") or 0):
            self.violate("no-status-regression", f"run {name}: attempt {old.get('attempt')} -> {new.get('attempt')}")
        old_tasks = {t.get("name"): t for t in old.get("taskRuns") or []}
        for task in new.get("taskRuns") or []:
            before = old_tasks.get(task.get("name")) or {}
            if before.get("phase") in TASK_TERMINAL and task.get("phase") != before.get("phase"):
                self.violate(
                    "no-status-regression",
                    f"run {name} task {task.get('name')}: phase {before.get('phase')} -> {task.get('phase')}",
                )
            if int(task.get("attempt") or 0) < int(before.get("attempt") or 0):
                self.violate("no-status-regression", f"run {name} task {task.get('name')}: attempt decreased")
        # A write that moves a run or a task to a later attempt stands for every transition of the attempts
        # before it: their Events may travel with it (e.g. a pod that started and failed within one batch).
        passed_tasks = sum(
            1
            for task in new.get("taskRuns") or []
            if _attempts_over(task) > _attempts_over(old_tasks.get(task.get("name")) or {})
        )
        passed_run = _attempts_over(new) > _attempts_over(old)
        self.writes.setdefault(uid, []).append(
            StoredWrite(
                self.now,
                new_phase,
                tuple(str(t.get("phase")) for t in new.get("taskRuns") or []),
                passed_tasks=passed_tasks,
                passed_run=passed_run,
                owner=OWNER.get(),
            )
        )

    def _check_event(self, uid: str, reason: str, message: str, obj: Obj) -> None:
        """An Event announcing a phase must follow a stored write that reached that phase (or went past it:
        an intermediate status replaced before it was sent may have its Event travel with the newer one);
        each stored write backs at most one Event per reason and message (per task, for task Events: the
        Events of two transitions, e.g. two attempts submitted while writes failed, may travel with one write),
        and a run's final phase is announced once: never before the write, never twice."""
        task_event = reason.startswith("Task")
        phase = reason[4:] if task_event else reason
        if phase not in RANK or obj.get("kind") not in (None, "FlowRun"):
            return
        claim = f"{reason}\0{message}"
        name = (obj.get("metadata") or {}).get("name")
        if not task_event and RANK[phase] == 4:
            if (uid, reason) in self.final_events:
                self.violate("events-after-write", f"Event {reason} for run {name} posted twice")
            self.final_events.add((uid, reason))
        for write in reversed(self.writes.get(uid, [])):
            reached = write.task_phases if task_event else (write.run_phase,)
            # One Event per task (for task Events) or per run that reached the phase in this write, or, for a
            # phase short of final, that this write moved to a later attempt.
            count = sum(1 for p in reached if p and _reaches(p, phase))
            if RANK[phase] < 4:
                count += write.passed_tasks if task_event else int(write.passed_run)
            if count > write.claimed.get(claim, 0):
                write.claimed[claim] = write.claimed.get(claim, 0) + 1
                return
        stored = [w.run_phase for w in self.writes.get(uid, [])]
        self.violate(
            "events-after-write",
            f"Event {reason} for run {name} not backed by a stored write reaching {phase} "
            f"(stored phases so far: {stored})",
        )


RANK = {"Scheduled": 0, "Pending": 1, "Submitted": 2, "Running": 3, "Succeeded": 4, "Failed": 4, "Cancelled": 4,
        "Skipped": 4}  # fmt: skip


def _attempts_over(status: Obj) -> int:
    """How many attempts of a run or task a stored status shows as ended: all up to `attempt`, except one
    that is still Submitted or Running."""
    attempt = int(status.get("attempt") or 0)
    return attempt - 1 if status.get("phase") in ("Submitted", "Running") else attempt


def _reaches(stored: str, announced: str) -> bool:
    if RANK[announced] == 4:
        return stored == announced
    return RANK.get(stored, -1) >= RANK[announced]


@dataclass
class StoredWrite:
    at: float
    run_phase: str | None
    task_phases: tuple[str, ...]
    passed_tasks: int = 0
    passed_run: bool = False
    claimed: dict[str, int] = field(default_factory=dict)
    owner: int | None = None  # the incarnation that wrote it


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


_HARNESS_CONTEXT: list[Any] = []


def _harness_context() -> Any:
    """API timers run outside any operator incarnation (they are the cluster, not the operator)."""
    import contextvars

    if not _HARNESS_CONTEXT:
        context = contextvars.copy_context()
        context.run(OWNER.set, None)
        _HARNESS_CONTEXT.append(context)
    return _HARNESS_CONTEXT[0].copy()
