"""The admission engine: watch events in, keys queued, one round per batch of keys, writes out.

    view    (engine.view)    slim projections and the per-limit lines, fed by watch events and write results
    decide  (engine.decide)  per-key work: evaluate the touched runs, admit queue heads, plan -> actions
    act     (this module + engine.act)  deletes before creates, Job creation with the error vocabulary,
            status writes in the background (assumed in the view until stored), Events after success

A watch event marks only the keys it affects (a run; a Job -> its run; a limit -> that limit). The worker
takes every marked key of a namespace in one round; decisions about a namespace's limits are serialized
in that one worker. Results come back through the watch and the responses of the engine's own writes,
never by editing decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from flowrun_operator import metrics
from flowrun_operator.api.common import (
    FLOWRUN_PLURAL,
    LIMIT_PLURAL,
    Condition,
    ConditionStatus,
    set_condition,
    version_of,
)
from flowrun_operator.api.concurrencylimit import ConcurrencyLimitStatus
from flowrun_operator.api.flowrun import FlowRunStatus
from flowrun_operator.kube.client import Conflict, ListedPage
from flowrun_operator.kube.errors import ErrorKind
from flowrun_operator.kube.jobs import build_job
from flowrun_operator.scheduling.runstate import JobToCreate, RunEvent, RunSnapshot, events_still_true
from flowrun_operator.settings import env_float

from .act import Backoff, EventPoster, Key, ObjectRef, StatusWriter, Write, describe_failure
from .clock import Clock, SystemClock
from .decide import Actions, Hold, Round
from .view import NamespaceView, QueueEntry

__all__ = ["Engine"]

log = logging.getLogger("flowrun_operator.engine")

BATCH_SECONDS = 0.02
HOUSEKEEPING_SECONDS = 1.0
RESYNC_SECONDS = env_float("FLOWRUN_RESYNC_SECONDS", 300.0, what="a number of seconds", positive=True)
# Status writes in flight at once: a burst of new runs needs one write each, and each waits a round trip.
WRITERS = 16
# Place-in-line refreshes: a waiting run's position is rewritten once it has halved since it was written
# (1000th -> 500th -> ... -> 2nd -> 1st), front of the line first. Places change only when waiters leave a
# line, so the budget is earned by departures: REFRESHES_PER_DEPARTURE writes per run that left a line of
# the namespace, at most REFRESHES_PER_SECOND. However long the line, refreshes then cost at most a quarter
# of a write per admitted run. POSITION_REFRESHES_PER_DEPARTURE (env) sets the budget; 0 turns refreshes off,
# so a waiting run keeps the place it was written with (three status writes per run through a limit).
REFRESHES_PER_DEPARTURE = 0.25
REFRESHES_PER_SECOND = 5
# Progress of an admitted run (Submitted, a task run's step) is held up to this long from the first held
# change and written once with whatever is newest then: a Job reports its started pod about 1 s after its
# creation even on an idle cluster, so a pod that starts within the window costs one write for Submitted
# and Running. The hold ends as soon as the run reaches Running (that is shown at once), and
# Pending, a finished phase and anything not urgent are written at once.
PROGRESS_WRITE_DELAY = 2.0
PROGRESS_PHASES = frozenset({"Submitted", "Running"})
# A run that starts waiting (behind a limit, or for its scheduled start) tells so in an Event that goes in
# the Event poster's background lane: thousands of them after a burst must not hold up the Events, or take
# the API server's capacity, of the runs that move.
WAITING_EVENT_REASONS = frozenset({"Pending", "Scheduled"})
CLEARED_STATUS: dict[str, Any] = dict.fromkeys(
    (field.alias or name for name, field in FlowRunStatus.model_fields.items()), None
)


def refreshes_per_departure() -> float:
    """The place-in-line refresh budget (env POSITION_REFRESHES_PER_DEPARTURE; REFRESHES_PER_DEPARTURE if unset)."""
    return env_float("POSITION_REFRESHES_PER_DEPARTURE", REFRESHES_PER_DEPARTURE, low=0, high=REFRESHES_PER_SECOND)


class Engine:
    def __init__(self, kube: Any, *, namespaces: Iterable[str] | None = None, clock: Clock | None = None) -> None:
        self.kube = kube
        self.refreshes_per_departure = refreshes_per_departure()
        self.clock: Clock = clock or SystemClock()
        self.namespaces = list(namespaces) if namespaces else None
        self.views: dict[str, NamespaceView] = {}
        self._dirty_runs: dict[str, set[str]] = defaultdict(set)
        self._dirty_limits: dict[str, set[str]] = defaultdict(set)
        self._refresh: dict[str, set[str]] = defaultdict(set)
        self._holds: dict[str, dict[str, Hold]] = defaultdict(dict)
        self._rejected: dict[str, dict[str, str]] = defaultdict(dict)
        self._timers: dict[tuple[str, str], tuple[float, asyncio.TimerHandle]] = {}
        self._delayed: dict[tuple[str, str], tuple[int, Write]] = {}
        self._holds_started = 0
        self._departures_seen: dict[str, int] = {}
        self._refresh_tokens: dict[str, float] = {}
        self._limits_changed: set[tuple[str, str]] = set()
        self._lines_changed: set[tuple[str, str]] = set()
        self._listing = False
        self._resync_lock = asyncio.Lock()
        self.resyncs = 0
        # The resourceVersion of the latest complete list per (plural, namespace or None for all): a watch of
        # that kind and scope continues from it.
        self.list_versions: dict[tuple[str, str | None], int] = {}
        self._tombstones: dict[tuple[str, str, str], int] = {}
        self._backoff = Backoff()
        self._wakeups: dict[str, asyncio.Event] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._writer: StatusWriter | None = None
        self._events: EventPoster | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._ready = False
        self._last_progress = 0.0
        self._first_mark: dict[str, float] = {}  # per namespace: when its oldest unprocessed key was marked
        self.jobs_created = 0
        self.rounds = 0
        self.errors = 0

    # ----------------------------------------------------------------------------------- intake

    def view(self, namespace: str) -> NamespaceView:
        found = self.views.get(namespace)
        if found is None:
            found = self.views[namespace] = NamespaceView(namespace)
        return found

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _signal(self, namespace: str) -> None:
        with contextlib.suppress(RuntimeError):
            self._first_mark.setdefault(namespace, self._loop_time())
        if not self._started:
            return
        wakeup = self._wakeups.get(namespace)
        if wakeup is None:
            # One worker per namespace: its limits' decisions are serialized, and a slow call in one
            # namespace never holds up admission in another.
            wakeup = self._wakeups[namespace] = asyncio.Event()
            self._workers[namespace] = asyncio.create_task(self._worker(namespace), name=f"flowrun-engine-{namespace}")
        wakeup.set()

    def mark_run(self, namespace: str, name: str) -> None:
        self._dirty_runs[namespace].add(name)
        self._signal(namespace)

    def mark_limit(self, namespace: str, name: str) -> None:
        self._dirty_limits[namespace].add(name)
        self._signal(namespace)

    def _mark_all(self, view: NamespaceView) -> None:
        for name in view.run_names():
            self._dirty_runs[view.name].add(name)
        for name in view.limits:
            self._dirty_limits[view.name].add(name)
        self._signal(view.name)

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace", "")), str(meta.get("name", "")), str(meta.get("uid", ""))

    def on_run(self, event_type: str | None, obj: dict[str, Any]) -> None:
        namespace, name, uid = self._key(obj)
        view = self.view(namespace)
        if event_type == "DELETED":
            if self._listing:
                self._tombstones[("run", namespace, name)] = version_of(obj)
            record = view.runs.get(name) or view.finished.get(name)
            view.bury(uid)
            if record is not None and record.uid == uid:
                view.drop_run(name)
                self._holds[namespace].pop(name, None)
                self._rejected[namespace].pop(name, None)
                self._delayed.pop((namespace, name), None)
                self._cancel_timer((namespace, name))
            self.mark_run(namespace, name)
            return
        if view.put_run(obj):
            self.mark_run(namespace, name)

    def on_job(self, event_type: str | None, obj: dict[str, Any]) -> None:
        namespace, name, uid = self._key(obj)
        view = self.view(namespace)
        if event_type == "DELETED":
            if self._listing:
                self._tombstones[("job", namespace, name)] = version_of(obj)
            run = view.drop_job(name, obj)
            view.bury(uid)
        else:
            run = view.put_job(obj)
        if run is not None:
            self.mark_run(namespace, run)

    def on_limit(self, event_type: str | None, obj: dict[str, Any]) -> None:
        namespace, name, uid = self._key(obj)
        view = self.view(namespace)
        if event_type == "DELETED":
            if self._listing:
                self._tombstones[("limit", namespace, name)] = version_of(obj)
            current = view.limits.get(name)
            if current is None or current.uid != uid:
                return
            view.drop_limit(name)
            self._rematch(view)
            return
        self._apply_limit(view, obj)

    def _apply_limit(self, view: NamespaceView, obj: dict[str, Any]) -> None:
        """Record a limit from a watch event or a write response (which may be the first to show a new spec)."""
        name = str((obj.get("metadata") or {}).get("name", ""))
        changed, matching = view.put_limit(obj)
        if matching:
            self._rematch(view)
        elif changed:
            self.mark_limit(view.name, name)
        self._limits_changed.add((view.name, name))

    def _rematch(self, view: NamespaceView) -> None:
        """A limit appeared, vanished or matches differently: every share may differ (rare; O(namespace))."""
        view.rematch()
        view.reset_limit_indexes()
        self._mark_all(view)
        self._limits_changed.update((view.name, n) for n in view.limits)

    # -------------------------------------------------------------------------------- lifecycle

    async def seed(self) -> None:
        """Read every run, Job and limit before the first admission, so a restart never over-admits."""
        await self.resync()
        self._ready = True
        for view in self.views.values():
            self._mark_all(view)
        log.info(
            "view rebuilt: %d active and %d finished flow runs, %d jobs, %d concurrency limits",
            sum(len(v.runs) for v in self.views.values()),
            sum(len(v.finished) for v in self.views.values()),
            sum(len(v.jobs) for v in self.views.values()),
            sum(len(v.limits) for v in self.views.values()),
        )

    async def resync(self) -> None:
        """A fresh list replaces the view, applied page by page as the pages arrive (one page is held at a
        time, not the namespace): objects it lacks are dropped unless newer than the list, and a deletion
        seen while the list was in flight is not undone by it. A list that fails part way drops nothing.
        One list runs at a time (the record of deletions seen meanwhile is shared)."""
        async with self._resync_lock:
            self._listing = True
            self._tombstones = {}
            listed = _Listed()
            try:
                async for page in self.kube.list_pages(self.namespaces):
                    self._apply_page(page, listed)
            finally:
                self._listing = False
                self._tombstones = {}
            self._drop_unlisted(listed)
            self.list_versions.update(listed.versions)
            self.resyncs += 1

    async def relist(self, plural: str, namespace: str | None) -> int:
        """For a watch whose version the API server no longer keeps: a fresh list (shared with any watch
        that asked meanwhile) and the version its `plural` in `namespace` continues from."""
        asked = self.resyncs
        async with self._resync_lock:
            pass  # a list in flight when the watch failed serves it too
        if self.resyncs == asked:
            await self.resync()
        return self.list_versions[(plural, namespace)]

    def _apply_page(self, page: ListedPage, listed: _Listed) -> None:
        kind = _LISTED_KINDS[page.plural]
        listed.versions[(page.plural, page.namespace)] = page.resource_version
        apply = {"limit": self.on_limit, "job": self.on_job, "run": self.on_run}[kind]
        for obj in page.items:
            namespace, name, _ = self._key(obj)
            listed.present[namespace][kind].add(name)
            dead = self._tombstones.get((kind, namespace, name))
            if dead is not None and version_of(obj) <= dead:
                continue  # deleted while the list was in flight
            if kind == "limit":
                obj.setdefault("kind", "ConcurrencyLimit")
            elif kind == "run":
                obj.setdefault("kind", "FlowRun")
            apply(None, obj)

    def _drop_unlisted(self, listed: _Listed) -> None:
        listed_rv = listed.version
        if listed_rv is None:
            return
        for namespace, view in self.views.items():
            seen = listed.present.get(namespace, {})
            for name in [
                n
                for n, lim in view.limits.items()
                if n not in seen.get("limit", ()) and lim.resource_version <= listed_rv
            ]:
                view.drop_limit(name)
                self._rematch(view)
            for name in [
                n
                for n, j in view.jobs.items()
                if n not in seen.get("job", ()) and not j.gone and _rv(j.resource_version) <= listed_rv
            ]:
                run = view.drop_job(name)
                if run is not None:
                    self.mark_run(namespace, run)
            gone = [n for n, r in view.runs.items() if n not in seen.get("run", ()) and r.resource_version <= listed_rv]
            gone += [
                n for n, f in view.finished.items() if n not in seen.get("run", ()) and f.resource_version <= listed_rv
            ]
            for name in gone:
                view.drop_run(name)
                self.mark_run(namespace, name)

    def start(self) -> None:
        self._started = True
        self._last_progress = self._loop_time()
        self._writer = StatusWriter(self._write_status, self._write_done, urgent_workers=WRITERS)
        self._events = EventPoster(self.kube.post_event)
        self._tasks = [
            asyncio.create_task(self._housekeeping(), name="flowrun-housekeeping"),
            asyncio.create_task(self._resync_loop(), name="flowrun-resync"),
        ]
        for namespace in sorted(set(self._dirty_runs) | set(self._dirty_limits)):
            self._signal(namespace)

    async def stop(self) -> None:
        self._started = False
        for task in [*self._tasks, *self._workers.values()]:
            task.cancel()
        for task in [*self._tasks, *self._workers.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._wakeups.clear()
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._writer is not None:
            await self._writer.close(grace=5.0)
        if self._events is not None:
            await self._events.close(grace=1.0)
        for task in list(self._background):
            task.cancel()

    def idle(self) -> bool:
        """Nothing queued, nothing being written, no timer due now."""
        now = self._loop_time()
        return (
            not any(self._dirty_runs.values())
            and not any(self._dirty_limits.values())
            and not any(self._refresh.values())
            and not self._delayed
            and (self._writer is None or self._writer.pending() == 0)
            and (self._events is None or self._events.pending() == 0)
            and not self._background
            and all(at > now for at, _ in self._timers.values())
        )

    def stalled(self, seconds: float) -> bool:
        """Work is queued but nothing has been processed for `seconds` (for the liveness probe)."""
        if not self._first_mark:
            return False
        return self._loop_time() - max(self._last_progress, min(self._first_mark.values())) > seconds

    # ----------------------------------------------------------------------------------- worker

    async def _worker(self, namespace: str) -> None:
        wakeup = self._wakeups[namespace]
        while True:
            await wakeup.wait()
            await asyncio.sleep(BATCH_SECONDS)
            wakeup.clear()
            if not self._ready:
                continue
            runs = self._dirty_runs.pop(namespace, set())
            limits = self._dirty_limits.pop(namespace, set())
            refresh = self._refresh.pop(namespace, set())
            first_mark = self._first_mark.pop(namespace, None)
            if not (runs or limits or refresh):
                continue
            started = self._loop_time()
            if first_mark is not None:
                metrics.QUEUE_LATENCY.observe(started - first_mark)
            try:
                await self._round(namespace, runs, limits, refresh)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("engine round for namespace %s failed; retrying its keys", namespace)
                delay = self._backoff.next_delay(("round", namespace))
                for run in runs:
                    self._mark_later(namespace, run, delay)
                for limit in limits:
                    self._dirty_limits[namespace].add(limit)
            else:
                self._backoff.reset(("round", namespace))
            self.rounds += 1
            metrics.ROUND_SECONDS.observe(self._loop_time() - started)
            metrics.KEYS_PROCESSED.labels("run").inc(len(runs) + len(refresh))
            metrics.KEYS_PROCESSED.labels("limit").inc(len(limits))
            self._last_progress = self._loop_time()

    async def _round(self, namespace: str, runs: set[str], limits: set[str], refresh: set[str]) -> None:
        view = self.view(namespace)
        now = self.clock.now()
        loop_now = self._loop_time()
        holds_out = self._holds[namespace]
        for run, hold in list(holds_out.items()):
            if hold.until <= loop_now:
                del holds_out[run]
                runs.add(run)
            else:
                self._mark_later(namespace, run, hold.until - loop_now)  # an earlier timer must not strand it
        extra = Actions()
        for run in runs:
            done = view.finished.get(run)
            if done is None:
                continue
            # A finished run: its TTL, and Jobs left running by a crash between its final write and their delete.
            for job in view.jobs_of(run):
                if job.owner_uid == done.uid and job.unfinished and not job.deleting:
                    extra.delete_jobs.append((run, job.name))
            if done.ttl_seconds is not None and done.completion is not None:
                expires = done.completion + timedelta(seconds=done.ttl_seconds)
                if now >= expires:
                    extra.delete_runs.append((run, done.uid))
                else:
                    extra.wake[run] = expires
        decision = Round(view, now, holds_out, self._rejected[namespace])
        actions = decision.run(runs, limits, refresh)
        for run in decision.failed:
            self._mark_later(namespace, run, self._backoff.next_delay(("run", namespace, run)))
        actions.delete_jobs += extra.delete_jobs
        actions.delete_runs += extra.delete_runs
        actions.wake.update(extra.wake)
        await self._act(namespace, view, actions)

    # -------------------------------------------------------------------------------------- act

    async def _act(self, namespace: str, view: NamespaceView, actions: Actions) -> None:
        # Freed work goes first: its slots return only once its Jobs are gone (see view.holds).
        if actions.delete_jobs:
            await asyncio.gather(*(self._delete_job(namespace, run, job) for run, job in actions.delete_jobs))
        failed: set[str] = set()
        if actions.create_jobs:
            results = await asyncio.gather(
                *(self._create_job(namespace, view, snapshot, job) for snapshot, job in actions.create_jobs)
            )
            failed = {snapshot.name for (snapshot, _), ok in zip(actions.create_jobs, results, strict=True) if not ok}
        for change in actions.statuses:
            if change.run in failed:
                continue  # its Job does not exist: the status planned with it must not be written
            self._submit_status(namespace, view, change.run, change.status, change.events, change.urgent)
        for run, uid in actions.delete_runs:
            self._spawn(self._delete_run(namespace, run, uid))
        for run, when in actions.wake.items():
            delay = (when - self.clock.now()).total_seconds() + 0.05
            self._mark_later(namespace, run, max(0.0, delay))
        for run in actions.retire:
            done = view.retire(run)
            if done is not None:
                self._cancel_timer((namespace, run))  # e.g. a far scheduledStart: nothing is due any more
            if done is not None and done.ttl_seconds is not None and done.completion is not None:
                expires = done.completion + timedelta(seconds=done.ttl_seconds)
                self._mark_later(namespace, run, max(0.0, (expires - self.clock.now()).total_seconds() + 0.05))
        for _run, created in actions.admitted:
            metrics.ADMISSION_WAIT.observe(max(0.0, (self.clock.now() - created).total_seconds()))
        for limit in actions.limits_touched:
            self._limits_changed.add((namespace, limit))
            self._lines_changed.add((namespace, limit))

    async def _delete_job(self, namespace: str, run: str, job: str) -> None:
        try:
            await self.kube.delete_job(namespace, job)
            metrics.JOBS_DELETED.inc()
        except Exception as error:
            kind, reason, message = describe_failure(error)
            if kind is ErrorKind.NOT_FOUND:
                return
            log.warning("deleting job %s/%s failed (%s): %s", namespace, job, reason, message)
            metrics.API_RETRIES.labels("delete", reason).inc()
            self._mark_later(namespace, run, self._backoff.next_delay(("job", namespace, job)))

    async def _create_job(self, namespace: str, view: NamespaceView, run: RunSnapshot, job: JobToCreate) -> bool:
        body = build_job(run, job.unit, job.attempt, job.name)
        try:
            try:
                created = await self.kube.create_job(namespace, body)
            except Conflict:
                existing = await self.kube.get_job(namespace, job.name)
                if existing is None:
                    raise TimeoutError(f"Job {job.name} exists and vanished again") from None
                owners = [o.get("uid") for o in (existing.get("metadata") or {}).get("ownerReferences") or []]
                if run.uid not in owners:
                    self._rejected[namespace][run.name] = f"Job name {job.name} is taken by an object of another owner"
                    self.mark_run(namespace, run.name)
                    return False
                created = existing
        except Exception as error:
            kind, reason, message = describe_failure(error)
            if kind in (ErrorKind.PERMANENT, ErrorKind.NOT_FOUND):
                log.warning("job %s/%s rejected (%s): %s", namespace, job.name, reason, message)
                self._rejected[namespace][run.name] = f"Job {job.name} was rejected: {message}"
                self.mark_run(namespace, run.name)
                return False
            delay = self._backoff.next_delay(("run", namespace, run.name))
            metrics.API_RETRIES.labels("create", reason).inc()
            log.warning(
                "creating job %s/%s failed (%s), retrying in %.1fs: %s", namespace, job.name, reason, delay, message
            )
            if reason == "QuotaExceeded":
                # Out of line until the backoff ends, visible as Pending with the API server's message.
                until = self._loop_time() + delay
                self._holds[namespace][run.name] = Hold(reason, f"Job {job.name} refused: {message}; retrying", until)
                self.mark_run(namespace, run.name)
            self._mark_later(namespace, run.name, delay)
            return False
        self._backoff.reset(("run", namespace, run.name))
        record = view.runs.get(run.name)
        if record is not None and record.uid == run.uid:
            record.saw_attempt(job.unit.task, job.attempt)
        view.put_job(created)
        self.jobs_created += 1
        metrics.JOBS_CREATED.inc()
        return True

    async def _delete_run(self, namespace: str, run: str, uid: str) -> None:
        try:
            await self.kube.delete_object(FLOWRUN_PLURAL, namespace, run)
        except Exception as error:
            kind, reason, message = describe_failure(error)
            if kind is not ErrorKind.NOT_FOUND:
                log.warning("deleting flowrun %s/%s failed (%s): %s", namespace, run, reason, message)
                self._mark_later(namespace, run, self._backoff.next_delay(("delete", namespace, run)))

    # ----------------------------------------------------------------------------- status writes

    def _submit_status(
        self,
        namespace: str,
        view: NamespaceView,
        run: str,
        status: dict[str, Any],
        events: list[Any],
        urgent: bool,
    ) -> None:
        before = view.run_phase(run)
        record = view.assume_status(run, status)
        if record is None:
            return
        key = (namespace, run)
        write = Write({**CLEARED_STATUS, **status}, status, list(events), urgent)
        held = self._delayed.pop(key, None)
        if held is not None:
            write.events = held[1].events + write.events
            write.urgent = True  # what was held is a transition: it must not move to the refresh lane
        started = status.get("phase") == "Running" and before != "Running"
        if write.urgent and status.get("phase") in PROGRESS_PHASES and not started:
            if held is None:
                self._holds_started += 1
                hold = self._holds_started
                asyncio.get_running_loop().call_later(PROGRESS_WRITE_DELAY, self._release_delayed, key, hold)
            else:
                hold = held[0]  # a newer change joins the hold; its deadline stays
            self._delayed[key] = (hold, write)
            return
        assert self._writer is not None
        self._writer.submit((FLOWRUN_PLURAL, namespace, run), write)

    def _release_delayed(self, key: tuple[str, str], hold: int) -> None:
        held = self._delayed.get(key)
        if held is not None and held[0] == hold and self._writer is not None:
            del self._delayed[key]
            self._writer.submit((FLOWRUN_PLURAL, *key), held[1])

    async def _write_status(self, key: Key, patch: dict[str, Any]) -> dict[str, Any]:
        plural, namespace, name = key
        if plural == FLOWRUN_PLURAL:
            # Only against the version the decision saw (or a later one of the operator's own writes): a
            # status someone else wrote meanwhile is not overwritten; the 409 makes the run be planned again.
            record = self.view(namespace).runs.get(name)
            version = str(record.resource_version) if record is not None and record.resource_version else None
            stored: dict[str, Any] = await self.kube.patch_status(
                plural, namespace, name, patch, resource_version=version
            )
            return stored
        return dict(await self.kube.patch_status(plural, namespace, name, patch))

    def _write_done(self, key: Key, write: Write, stored: dict[str, Any] | None, error: BaseException | None) -> None:
        plural, namespace, name = key
        view = self.view(namespace)
        if plural == LIMIT_PLURAL:
            if error is not None:
                kind, reason, message = describe_failure(error)
                if kind is not ErrorKind.NOT_FOUND:
                    log.warning(
                        "status write for concurrencylimit %s/%s failed (%s): %s", namespace, name, reason, message
                    )
                    self._limits_changed.add((namespace, name))
            elif stored is not None:
                stored.setdefault("kind", "ConcurrencyLimit")
                self._apply_limit(view, stored)
                self._post_events(stored, write.events)
            return
        if error is None:
            self._backoff.reset(key)
            view.settle_status(name, write.status, stored)
            if stored is not None:
                stored.setdefault("kind", "FlowRun")
                self._post_events(stored, events_still_true(write.events, write.status))
            if write.status.get("phase") in ("Succeeded", "Failed", "Cancelled"):
                self.mark_run(namespace, name)  # to retire it once its work is gone
            return
        kind, reason, message = describe_failure(error)
        record = view.runs.get(name)
        if kind is ErrorKind.NOT_FOUND and record is not None and record.assumed_status is write.status:
            # The run this status was for is gone; its DELETED event may still be on its way. Acting on it
            # meanwhile could create a Job for a run that no longer exists (a second Job for its attempt).
            view.drop_run(name)
            self.mark_run(namespace, name)
            return
        view.settle_status(name, write.status, None)
        if kind is ErrorKind.NOT_FOUND:
            return
        delay = self._backoff.next_delay(key)
        metrics.API_RETRIES.labels("patch", reason).inc()
        log.warning(
            "status write for flowrun %s/%s failed (%s), re-planning in %.1fs: %s",
            namespace,
            name,
            reason,
            delay,
            message,
        )
        self._mark_later(namespace, name, delay)

    def _post_events(self, obj: dict[str, Any], events: list[Any]) -> None:
        if not events or self._events is None:
            return
        ref = ObjectRef.of(obj)
        for event in events:
            self._events.submit(
                ref, event.type, event.reason, event.message, background=event.reason in WAITING_EVENT_REASONS
            )

    # ------------------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            try:
                self._flush_limit_statuses()
                self._plan_refreshes()
                self._export_gauges()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed")

    async def _resync_loop(self) -> None:
        # The watches continue the seeding list, so nothing between the two is missed; this re-list is a
        # safety net (a watch that lost its version re-lists at once, through `relist`).
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            try:
                await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("periodic re-list failed: %s", error)

    def _flush_limit_statuses(self) -> None:
        changed, self._limits_changed = self._limits_changed, set()
        now = self.clock.now()
        for namespace, name in sorted(changed):
            limit = self.view(namespace).limits.get(name)
            if limit is None:
                continue
            status = ConcurrencyLimitStatus(
                in_use=len(limit.holders),
                pending=len(limit.waiting),
                active=sorted(limit.holders)[:100],
                conditions=list(limit.status.conditions),
                observed_generation=limit.generation,
            )
            events: list[RunEvent] = []
            if limit.spec is None:
                ready = Condition(
                    type="Ready",
                    status=ConditionStatus.FALSE,
                    reason="InvalidSpec",
                    message=limit.spec_error or "invalid spec",
                    observed_generation=limit.generation,
                )
                before = limit.status.condition("Ready")
                if before is None or before.reason != "InvalidSpec":
                    events.append(RunEvent("Warning", "InvalidSpec", limit.spec_error or "invalid spec"))
            else:
                over = status.in_use > limit.spec.limit
                ready = Condition(
                    type="Ready",
                    status=ConditionStatus.TRUE,
                    reason="OverLimit" if over else "Enforced",
                    message=(
                        f"{status.in_use}/{limit.spec.limit} in use"
                        + (" (limit lowered below usage; no new admissions until runs finish)" if over else "")
                        + f", {status.pending} pending"
                    ),
                    observed_generation=limit.generation,
                )
            status.conditions = set_condition(status.conditions, ready, now)
            desired = status.to_api()
            if desired != limit.status.to_api() and self._writer is not None:
                self._writer.submit((LIMIT_PLURAL, namespace, name), Write(desired, desired, events, urgent=False))

    def _plan_refreshes(self) -> None:
        """Rewrite the place in line of waiting runs whose written place is at least twice their place now:
        only the entries whose recheck is due are looked at (see LimitRecord.recheck), front of the line
        first, within a budget; the rest stay due for the next round."""
        changed, self._lines_changed = self._lines_changed, set()
        candidates: list[tuple[int, str, str, str, QueueEntry]] = []
        for namespace, name in changed:
            for position, run, entry in self.view(namespace).stale_places(name):
                candidates.append((position, namespace, run, name, entry))
        budgets = {namespace: self._earn_refreshes(namespace) for namespace in {ns for _, ns, _, _, _ in candidates}}
        seen: set[tuple[str, str]] = set()
        for _, namespace, run, name, entry in sorted(candidates):
            if (namespace, run) in seen:
                continue
            if budgets[namespace] < 1:
                limit = self.view(namespace).limits.get(name)
                if limit is not None:
                    limit.recheck_soon(entry)  # still stale: due next round
                    self._lines_changed.add((namespace, name))
                continue
            seen.add((namespace, run))
            self._refresh[namespace].add(run)
            budgets[namespace] -= 1
        for namespace, left in budgets.items():
            self._refresh_tokens[namespace] = left
        for namespace in {ns for ns, _ in seen}:
            self._signal(namespace)

    def _earn_refreshes(self, namespace: str) -> float:
        """Refresh writes the namespace may spend now: `refreshes_per_departure` for each waiter that left one
        of its lines since the last call, saved up to REFRESHES_PER_SECOND."""
        departed = self.view(namespace).departed
        earned = (departed - self._departures_seen.get(namespace, 0)) * self.refreshes_per_departure
        self._departures_seen[namespace] = departed
        tokens = self._refresh_tokens.get(namespace, 0.0) + earned
        return float(min(REFRESHES_PER_SECOND, tokens))

    def _export_gauges(self) -> None:
        for namespace, view in self.views.items():
            for phase, count in view.phase_counts.items():
                metrics.RUNS.labels(namespace, phase).set(count)
            for name, limit in view.limits.items():
                metrics.QUEUE_DEPTH.labels(namespace, name).set(len(limit.waiting))
                metrics.LIMIT_IN_USE.labels(namespace, name).set(len(limit.holders))
                metrics.LIMIT_CAPACITY.labels(namespace, name).set(limit.capacity or 0)
        metrics.PENDING_KEYS.set(sum(len(s) for s in self._dirty_runs.values()))

    # ------------------------------------------------------------------------------------ timers

    def _mark_later(self, namespace: str, run: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time() + delay
        key = (namespace, run)
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= at and not current[1].cancelled():
                return
            current[1].cancel()
        self._timers[key] = (at, loop.call_at(at, self._fire, key))

    def _cancel_timer(self, key: tuple[str, str]) -> None:
        current = self._timers.pop(key, None)
        if current is not None:
            current[1].cancel()

    def _fire(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        self.mark_run(*key)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


_LISTED_KINDS = {LIMIT_PLURAL: "limit", "jobs": "job", FLOWRUN_PLURAL: "run"}


class _Listed:
    """What a re-list has delivered so far: the names per namespace and kind, and the resourceVersion of each
    of its lists (per plural and scope)."""

    def __init__(self) -> None:
        self.present: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.versions: dict[tuple[str, str | None], int] = {}

    @property
    def version(self) -> int | None:
        """The oldest of the lists' versions: an object missing from them and not newer than this is gone."""
        return min(self.versions.values(), default=None)


def _rv(value: str) -> int:
    return int(value) if value.isdigit() else 0
