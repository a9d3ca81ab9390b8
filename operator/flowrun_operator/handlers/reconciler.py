"""The admission loop: one pass per namespace reads the store, decides, and writes.

Watch events only mark a namespace dirty; a single worker runs the passes, so every decision about a
limit is serialized and each pass sees the writes of the one before (the store records write
responses at once). Passes are level-triggered: a pass after a crash, a missed event or a restart
computes the same answer from the live objects, which is what keeps slots from leaking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from flowrun_operator.api.common import FLOWRUN_PLURAL, LIMIT_PLURAL, Condition, ConditionStatus, set_condition
from flowrun_operator.api.concurrencylimit import ConcurrencyLimitStatus
from flowrun_operator.api.flowrun import FlowRunPhase, FlowRunStatus
from flowrun_operator.handlers.store import LimitSnapshot, Store
from flowrun_operator.handlers.writer import CoalescingWriter
from flowrun_operator.kube.client import Conflict, Kube
from flowrun_operator.kube.jobs import build_job
from flowrun_operator.scheduling.admission import Admission, Request, admit
from flowrun_operator.scheduling.jobs import JobInfo
from flowrun_operator.scheduling.runstate import (
    ADMITTED,
    JobToCreate,
    RunEvent,
    RunObservation,
    RunPlan,
    RunSnapshot,
    observe,
    plan,
)

log = logging.getLogger("flowrun_operator.reconciler")

# Waiting runs' place in line changes with every admission ahead of them. Writing it to every waiting
# run each time would cost one status write per waiting run per admission, so these refreshes (and only
# these: real transitions are written at once) are paced: a run near the front of its line is refreshed
# at most every FRONT_REFRESH_SECONDS, one further back every BACK_REFRESH_SECONDS, and a namespace
# spends at most REFRESH_WRITES_PER_SECOND on them, front of the line first.
FRONT_OF_LINE = 10
FRONT_REFRESH_SECONDS = 5.0
BACK_REFRESH_SECONDS = 30.0
REFRESH_WRITES_PER_SECOND = 10.0
REFRESH_BURST = 20.0
RETRY_BACKOFF_SECONDS = 1.0
PASS_BATCH_SECONDS = 0.02
# A full re-list is a safety net only (admission is event-driven); informers resync on similar periods.
RESYNC_SECONDS = float(os.environ.get("FLOWRUN_RESYNC_SECONDS", "300"))


@dataclass(slots=True)
class PassStats:
    passes: int = 0
    jobs_created: int = 0
    status_writes: int = 0
    last_pass_seconds: float = 0.0
    errors: int = 0


# Every status field set to null: a merge patch built on it removes what the new status no longer has,
# whatever was written before (the writes of one run may be coalesced).
_CLEARED_STATUS: dict[str, Any] = dict.fromkeys(
    (field.alias or name for name, field in FlowRunStatus.model_fields.items()), None
)


def _place_in_line(status: FlowRunStatus) -> int:
    positions = [w.position for w in status.waiting_for]
    positions += [w.position for t in status.task_runs for w in t.waiting_for]
    return min(positions, default=1)


def _refresh_interval(position: int) -> float:
    return FRONT_REFRESH_SECONDS if position <= FRONT_OF_LINE else BACK_REFRESH_SECONDS


@dataclass(slots=True)
class _TokenBucket:
    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = 0.0

    def available(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) if self.stamp else self.burst
        self.stamp = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def _cosmetic(status: dict[str, Any]) -> dict[str, Any]:
    """A status without the parts that only describe a waiting run's place in line."""
    stripped = {k: v for k, v in status.items() if k not in ("waitingFor", "message")}
    stripped["conditions"] = [
        {k: v for k, v in c.items() if not (c.get("type") == ADMITTED and k == "message")}
        for c in status.get("conditions", [])
    ]
    stripped["taskRuns"] = [
        {k: v for k, v in t.items() if k not in ("waitingFor", "message")} for t in status.get("taskRuns", [])
    ]
    return stripped


class Reconciler:
    def __init__(self, kube: Kube, store: Store | None = None, namespaces: Iterable[str] | None = None) -> None:
        self.kube = kube
        self.store = store or Store()
        self.namespaces = list(namespaces) if namespaces else None
        self.stats = PassStats()
        self._dirty: set[str] = set()
        self._wakeup = asyncio.Event()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._last_cosmetic_write: dict[tuple[str, str], float] = {}
        self._refresh_budget: dict[str, _TokenBucket] = {}
        # Status writes are coalesced per object; a few at a time is enough and leaves the API server
        # to the Job controller during bursts.
        self._writer = CoalescingWriter(concurrency=4)
        # The observation each run was last planned from, and when that plan wanted another look.
        self._planned: dict[str, dict[str, tuple[RunObservation, datetime | None]]] = {}
        self._observed: dict[str, dict[str, tuple[RunSnapshot, list[JobInfo], RunObservation]]] = {}
        self._matches: dict[str, dict[str, tuple[RunSnapshot, tuple[Any, ...], tuple[str, ...]]]] = {}
        self._rejected: dict[tuple[str, str], str] = {}
        self._ready = False
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------ event intake

    def mark(self, namespace: str | None) -> None:
        if namespace is None:
            return
        self._dirty.add(namespace)
        self._wakeup.set()

    def on_run(self, event_type: str | None, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            meta = obj.get("metadata") or {}
            key = (meta.get("namespace", ""), meta.get("name", ""))
            self._last_cosmetic_write.pop(key, None)
            self._rejected.pop(key, None)
        self.mark(self.store.put_run(obj, deleted=event_type == "DELETED"))

    def on_job(self, event_type: str | None, obj: dict[str, Any]) -> None:
        self.mark(self.store.put_job(obj, deleted=event_type == "DELETED"))

    def on_limit(self, event_type: str | None, obj: dict[str, Any]) -> None:
        self.mark(self.store.put_limit(obj, deleted=event_type == "DELETED"))

    # ------------------------------------------------------------------------------------ lifecycle

    async def seed(self, prune: bool = False) -> None:
        """Rebuild the view from the API before the first admission (no over-admission after a restart).

        Called again every RESYNC_SECONDS with prune=True as a safety net: level-triggered passes then
        also recover from a deletion a watch stream never delivered.
        """
        found = await self.kube.list_objects(self.namespaces)
        if prune:
            for ns in self.store.prune(found):
                self.mark(ns)
        for obj in found.concurrencylimits:
            obj.setdefault("kind", "ConcurrencyLimit")
            self.store.put_limit(obj)
        for obj in found.jobs:
            self.store.put_job(obj)
        for obj in found.flowruns:
            obj.setdefault("kind", "FlowRun")
            self.store.put_run(obj)
        self._ready = True
        for ns in self.store.namespaces():
            self.mark(ns)
        log.info(
            "view rebuilt: %d flow runs, %d jobs, %d concurrency limits",
            len(found.flowruns),
            len(found.jobs),
            len(found.concurrencylimits),
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="flowrun-reconciler")
        self._resync_task = asyncio.create_task(self._resync_loop(), name="flowrun-resync")

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            try:
                await self.seed(prune=True)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("periodic resync failed: %s", error)

    async def stop(self) -> None:
        for task in (self._task, self._resync_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for _, handle in self._timers.values():
            handle.cancel()
        # Let status writes already decided reach the API server (bounded: shutdown must not hang).
        await self._writer.close(grace=5.0)

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._ready:
                self._wakeup.clear()
                continue
            # Events come in bursts (a Job and its run change together); a moment's wait lets one
            # pass answer a burst instead of one pass per event.
            await asyncio.sleep(PASS_BATCH_SECONDS)
            self._wakeup.clear()
            batch, self._dirty = self._dirty, set()
            for namespace in sorted(batch):
                started = time.perf_counter()
                try:
                    await self.reconcile(namespace)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.stats.errors += 1
                    log.exception("reconcile pass for namespace %s failed; retrying", namespace)
                    self._wake_later(namespace, time.monotonic() + RETRY_BACKOFF_SECONDS)
                self.stats.passes += 1
                self.stats.last_pass_seconds = time.perf_counter() - started

    def _wake_later(self, namespace: str, at_monotonic: float) -> None:
        current = self._timers.get(namespace)
        if current is not None:
            if current[0] <= at_monotonic and not current[1].cancelled():
                return
            current[1].cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(namespace, None)
            self.mark(namespace)

        self._timers[namespace] = (
            at_monotonic,
            loop.call_at(loop.time() + max(0.0, at_monotonic - time.monotonic()), fire),
        )

    def _wake_at(self, namespace: str, when: datetime, now: datetime) -> None:
        # Status times have second precision; a small margin avoids waking a hair too early.
        delay = (when - now).total_seconds() + 0.05
        self._wake_later(namespace, time.monotonic() + max(0.0, delay))

    # ----------------------------------------------------------------------------------- the pass

    async def reconcile(self, namespace: str) -> None:
        now = datetime.now(UTC)
        store = self.store
        runs = store.runs[namespace]
        jobs_by_run = store.jobs_by_run(namespace)
        limits = {name: lim for name, lim in store.limits[namespace].items() if lim.spec is not None}

        observations: dict[str, RunObservation] = {}
        orphans: list[JobInfo] = []
        cache = self._observed.setdefault(namespace, {})
        if len(cache) > len(runs):
            for gone in set(cache) - set(runs):
                del cache[gone]
        for name, run in runs.items():
            own = [j for j in jobs_by_run.get(name, []) if j.owner_uid in ("", run.uid)]
            try:
                observation = self._observe(cache, run, own, now)
            except Exception:
                # One run the operator cannot read must not stop the others; its Jobs keep their slots.
                self.stats.errors += 1
                log.exception("cannot evaluate flowrun %s/%s; skipping it in this pass", namespace, name)
                orphans.extend(j for j in own if j.unfinished)
                continue
            rejection = self._rejected.get((namespace, name))
            if rejection and observation.terminal is None:
                observation = replace(
                    observation,
                    terminal=FlowRunPhase.FAILED,
                    terminal_reason="JobRejected",
                    terminal_message=rejection,
                )
            observations[name] = observation
        for run_name, jobs in jobs_by_run.items():
            owner = runs.get(run_name)
            orphans.extend(j for j in jobs if j.unfinished and (owner is None or j.owner_uid not in ("", owner.uid)))

        run_result, task_result = self._admit(namespace, observations, orphans, limits)

        plans: dict[str, RunPlan] = {}
        admitted_runs = set(run_result.admitted)
        admitted_units = set(task_result.admitted)
        mono = time.monotonic()
        planned = self._planned.setdefault(namespace, {})
        if len(planned) > len(observations):
            for gone in set(planned) - set(observations):
                del planned[gone]
        for name, observation in observations.items():
            if self._settled(namespace, observation, name in admitted_runs, mono):
                continue
            previous = planned.get(name)
            if (
                previous is not None
                and previous[0] is observation
                and not observation.needs_admission
                and not any(state.wants_attempt for state in observation.units)
                and (previous[1] is None or now < previous[1])
            ):
                continue  # same inputs as the plan already carried out, and no admission involved
            try:
                plans[name] = plan(
                    observation,
                    run_admitted=name in admitted_runs,
                    run_waits=run_result.waiting.get(name, []),
                    admitted_units=admitted_units,
                    unit_waits=task_result.waiting,
                    now=now,
                )
            except Exception:
                self.stats.errors += 1
                log.exception("cannot plan flowrun %s/%s; skipping it in this pass", namespace, name)
                continue
            planned[name] = (observation, plans[name].wake_at)

        await self._create_jobs(namespace, plans)
        await self._write(namespace, plans, now)
        self._write_limits(namespace, store.limits[namespace], run_result, task_result)

        wake = [p.wake_at for p in plans.values() if p.wake_at is not None]
        if wake:
            self._wake_at(namespace, min(wake), now)

    @staticmethod
    def _observe(
        cache: dict[str, tuple[RunSnapshot, list[JobInfo], RunObservation]],
        run: RunSnapshot,
        jobs: list[JobInfo],
        now: datetime,
    ) -> RunObservation:
        """observe(), reused while the run and its Jobs are the very same snapshots and no timer is due.

        The store replaces a snapshot on every change, so identity is enough to know nothing changed.
        """
        cached = cache.get(run.name)
        if cached is not None:
            old_run, old_jobs, observation = cached
            if (
                old_run is run
                and len(old_jobs) == len(jobs)
                and all(a is b for a, b in zip(old_jobs, jobs, strict=True))
                and (observation.wake_at is None or now < observation.wake_at)
            ):
                return observation
        observation = observe(run, jobs, now)
        cache[run.name] = (run, jobs, observation)
        return observation

    def _settled(self, namespace: str, observation: RunObservation, admitted_now: bool, mono: float) -> bool:
        """Whether planning this run could only produce a write that would be skipped anyway.

        Two kinds of runs make up nearly all of a busy namespace: finished runs, whose status is final,
        and runs waiting in a long line, whose only change is their place in it (written at most every
        the paced refresh intervals). Skipping their plans keeps a pass proportional to the runs that move.
        """
        run = observation.snapshot
        status = run.status
        if observation.terminal is not None:
            return (
                status.phase == observation.terminal
                and status.observed_generation == run.generation
                and not observation.delete_jobs
                and not (run.spec and run.spec.ttl_seconds_after_finished is not None)
            )
        if observation.needs_admission and not admitted_now and status.phase == FlowRunPhase.PENDING:
            interval = _refresh_interval(_place_in_line(status))
            due = self._last_cosmetic_write.get((namespace, run.name), 0.0) + interval
            if status.observed_generation == run.generation:
                if mono < due:
                    self._wake_later(namespace, due)
                    return True
                budget = self._refresh_budget.get(namespace)
                if budget is not None and not budget.available(mono):
                    self._wake_later(namespace, mono + 1.0)
                    return True
        return False

    def _admit(
        self,
        namespace: str,
        observations: dict[str, RunObservation],
        orphans: list[JobInfo],
        limits: dict[str, LimitSnapshot],
    ) -> tuple[Admission, Admission]:
        label_limits = {n: lim for n, lim in limits.items() if lim.spec and lim.spec.selector is not None}
        tag_limits = {n: lim for n, lim in limits.items() if lim.spec and lim.spec.tag}
        run_holders: dict[str, list[str]] = defaultdict(list)
        task_holders: dict[str, list[str]] = defaultdict(list)
        run_limits: dict[str, tuple[str, ...]] = {}
        # Which label limits match a run changes only with the run's labels or a limit's spec.
        limits_key = tuple((n, lim.generation, lim.raw["metadata"].get("uid")) for n, lim in label_limits.items())
        matches = self._matches.setdefault(namespace, {})
        if len(matches) > len(observations):
            for gone in set(matches) - set(observations):
                del matches[gone]
        for name, observation in observations.items():
            labels = observation.snapshot.labels
            cached = matches.get(name)
            if cached is not None and cached[0] is observation.snapshot and cached[1] == limits_key:
                run_limits[name] = cached[2]
            else:
                run_limits[name] = tuple(
                    n for n, lim in label_limits.items() if lim.spec and lim.spec.matches_run(labels)
                )
                matches[name] = (observation.snapshot, limits_key, run_limits[name])
            if observation.holds_run_slot:
                for limit_name in run_limits[name]:
                    run_holders[limit_name].append(name)
            for state in observation.units:
                if state.holds_slot and state.unit.tags:
                    for limit_name, lim in tag_limits.items():
                        if lim.spec and lim.spec.matches_task(list(state.unit.tags)):
                            task_holders[limit_name].append(state.unit.request_key(name))
        # Jobs whose FlowRun is gone (garbage collection pending) keep their slots until they finish.
        for job in orphans:
            for limit_name, lim in label_limits.items():
                if lim.spec and lim.spec.matches_run(job.labels) and job.run not in run_holders[limit_name]:
                    run_holders[limit_name].append(job.run)
            for limit_name, lim in tag_limits.items():
                if job.tags and lim.spec and lim.spec.matches_task(list(job.tags)):
                    task_holders[limit_name].append(f"{job.run}/{job.task}")

        run_requests = [
            Request(name, _priority(o), o.snapshot.created, run_limits[name])
            for name, o in observations.items()
            if o.needs_admission and o.terminal is None
        ]
        run_result = admit(
            run_requests, {n: lim.spec.limit for n, lim in label_limits.items() if lim.spec}, run_holders
        )
        admitted = set(run_result.admitted)

        task_requests = []
        for name, observation in observations.items():
            if observation.terminal is not None or not (observation.admitted or name in admitted):
                continue
            for state in observation.units:
                if state.wants_attempt is None or not state.unit.tags:
                    continue
                matched = tuple(
                    n for n, lim in tag_limits.items() if lim.spec and lim.spec.matches_task(list(state.unit.tags))
                )
                task_requests.append(
                    Request(state.unit.request_key(name), _priority(observation), observation.snapshot.created, matched)
                )
        task_result = admit(
            task_requests, {n: lim.spec.limit for n, lim in tag_limits.items() if lim.spec}, task_holders
        )
        return run_result, task_result

    async def _create_jobs(self, namespace: str, plans: dict[str, RunPlan]) -> None:
        work = [(name, job) for name, p in plans.items() for job in p.create_jobs]
        if not work:
            return
        runs = self.store.runs[namespace]

        async def create(run_name: str, job: JobToCreate) -> None:
            run = runs.get(run_name)
            if run is None:
                return
            body = build_job(run, job.unit, job.attempt, job.name)
            try:
                created = await self.kube.create_job(namespace, body)
            except Conflict:
                existing = await self.kube.get_job(namespace, job.name)
                if existing is None:
                    raise
                owner = [o.get("uid") for o in existing["metadata"].get("ownerReferences") or []]
                if run.uid not in owner:
                    # A Job of an earlier FlowRun with the same name, not yet garbage collected: wait.
                    log.info("job %s/%s belongs to an older run; waiting for its removal", namespace, job.name)
                    plans[run_name] = RunPlan(status=run.status)
                    return
                created = existing
            except ApiException as error:
                if error.status in (400, 403, 422):
                    reason = _api_message(error)
                    self._rejected[(namespace, run_name)] = f"Job {job.name} was rejected: {reason}"
                    self.mark(namespace)
                    plans[run_name] = RunPlan(status=run.status)
                    log.warning("job %s/%s rejected: %s", namespace, job.name, reason)
                    return
                raise
            self.store.put_job(created)
            self.stats.jobs_created += 1

        await asyncio.gather(*(create(name, job) for name, job in work))

    async def _write(self, namespace: str, plans: dict[str, RunPlan], now: datetime) -> None:
        runs = self.store.runs[namespace]
        writes = []
        refreshes: list[tuple[int, str, dict[str, Any], RunPlan]] = []
        mono = time.monotonic()
        for name, run_plan in plans.items():
            run = runs.get(name)
            if run is None:
                continue
            for job_name in run_plan.delete_jobs:
                writes.append(self.kube.delete_job(namespace, job_name))
            if run_plan.delete_run:
                writes.append(self.kube.delete_object(FLOWRUN_PLURAL, namespace, name))
            desired = run_plan.status.to_api()
            current = run.status.to_api()
            if desired == current:
                continue
            if _cosmetic(desired) == _cosmetic(current) and run_plan.status.phase == run.status.phase:
                position = _place_in_line(run_plan.status)
                due = self._last_cosmetic_write.get((namespace, name), 0.0) + _refresh_interval(position)
                if mono < due:
                    self._wake_later(namespace, due)
                else:
                    refreshes.append((position, name, desired, run_plan))
                continue
            self._last_cosmetic_write[(namespace, name)] = mono
            self._submit_run_status(namespace, name, desired, run_plan.events, background=False)
        budget = self._refresh_budget.setdefault(namespace, _TokenBucket(REFRESH_WRITES_PER_SECOND, REFRESH_BURST))
        for _, name, wanted, run_plan in sorted(refreshes, key=lambda r: (r[0], r[1])):
            if not budget.take(mono):
                self._wake_later(namespace, mono + 1.0)
                break
            self._last_cosmetic_write[(namespace, name)] = mono
            self._submit_run_status(namespace, name, wanted, run_plan.events, background=True)
        if writes:
            results = await asyncio.gather(*writes, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            for failure in failures:
                if isinstance(failure, ApiException) and failure.status == 404:
                    continue  # deleted meanwhile; the watch tells us
                log.warning("write in namespace %s failed: %s", namespace, failure)
                self._planned.pop(namespace, None)  # carry the plans out again
                self._wake_later(namespace, time.monotonic() + RETRY_BACKOFF_SECONDS)

    def _submit_run_status(
        self,
        namespace: str,
        name: str,
        desired: dict[str, Any],
        events: list[RunEvent],
        *,
        background: bool,
    ) -> None:
        """Record the new status as assumed, tell its Events, and write it in the background."""
        patch = {**_CLEARED_STATUS, **desired}
        before = self.store.runs[namespace].get(name)
        assumed = self.store.assume_run_status(namespace, name, desired)
        if assumed is None:
            return
        if desired.get("phase") == "Failed" and before is not None and before.status.phase != "Failed":
            jobs = sorted(j.name for j in self.store.jobs_by_run(namespace).get(name, []))
            log.warning("flowrun %s/%s failed: %s (jobs seen: %s)", namespace, name, desired.get("message"), jobs)
        for event in events:
            self._spawn(self.kube.post_event(assumed, event.type, event.reason, event.message))

        async def write() -> None:
            try:
                stored = await self.kube.patch_status(FLOWRUN_PLURAL, namespace, name, patch)
            except ApiException as error:
                if error.status == 404:
                    self.store.settle_run_status(namespace, name, None)
                    return  # deleted meanwhile; the watch tells us
                await self._forget_assumed(namespace, name, error)
                return
            except Exception as error:
                await self._forget_assumed(namespace, name, error)
                return
            self.stats.status_writes += 1
            self.store.settle_run_status(namespace, name, desired)
            self.store.put_run(stored)

        self._writer.submit((FLOWRUN_PLURAL, namespace, name), write, background=background)

    async def _forget_assumed(self, namespace: str, name: str, error: BaseException) -> None:
        """A status write failed: re-read the run so the next pass works from what is really stored."""
        log.warning("status write for flowrun %s/%s failed: %s", namespace, name, error)
        self.store.settle_run_status(namespace, name, None)
        self._planned.get(namespace, {}).pop(name, None)
        try:
            fresh = await self.kube.get_object(FLOWRUN_PLURAL, namespace, name)
        except Exception as read_error:
            log.warning("re-reading flowrun %s/%s failed: %s", namespace, name, read_error)
            fresh = None
        if fresh is not None:
            self.store.put_run(fresh)
        self._wake_later(namespace, time.monotonic() + RETRY_BACKOFF_SECONDS)

    def _write_limits(
        self, namespace: str, limits: dict[str, LimitSnapshot], run_result: Admission, task_result: Admission
    ) -> None:
        now = datetime.now(UTC)
        for name, lim in list(limits.items()):
            usage = run_result.usage.get(name) or task_result.usage.get(name)
            status = ConcurrencyLimitStatus(
                in_use=usage.in_use if usage else 0,
                pending=usage.pending if usage else 0,
                active=list(usage.active) if usage else [],
                conditions=list(lim.status.conditions),
                observed_generation=lim.generation,
            )
            if lim.spec is None:
                ready = Condition(
                    type="Ready",
                    status=ConditionStatus.FALSE,
                    reason="InvalidSpec",
                    message=lim.spec_error or "invalid spec",
                    observed_generation=lim.generation,
                )
            else:
                over = status.in_use > lim.spec.limit
                ready = Condition(
                    type="Ready",
                    status=ConditionStatus.TRUE,
                    reason="OverLimit" if over else "Enforced",
                    message=(
                        f"{status.in_use}/{lim.spec.limit} in use"
                        + (" (limit lowered below usage; no new admissions until runs finish)" if over else "")
                        + f", {status.pending} pending"
                    ),
                    observed_generation=lim.generation,
                )
            status.conditions = set_condition(status.conditions, ready, now)
            desired, current = status.to_api(), lim.status.to_api()
            if desired != current:
                self._writer.submit(
                    (LIMIT_PLURAL, namespace, name), self._limit_writer(namespace, name, desired, lim), background=True
                )

    def _limit_writer(
        self, namespace: str, name: str, status: dict[str, Any], lim: LimitSnapshot
    ) -> Callable[[], Awaitable[None]]:
        async def write() -> None:
            try:
                stored = await self.kube.patch_status(LIMIT_PLURAL, namespace, name, status)
            except Exception as error:
                if not (isinstance(error, ApiException) and error.status == 404):
                    log.warning("status write for concurrencylimit %s/%s failed: %s", namespace, name, error)
                    self._wake_later(namespace, time.monotonic() + RETRY_BACKOFF_SECONDS)
                return
            stored.setdefault("kind", "ConcurrencyLimit")
            self.store.put_limit(stored)
            before = lim.status.condition("Ready")
            if lim.spec is None and (before is None or before.reason != "InvalidSpec"):
                self._spawn(self.kube.post_event(stored, "Warning", "InvalidSpec", lim.spec_error or "invalid spec"))

        return write

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _priority(observation: RunObservation) -> int:
    spec = observation.snapshot.spec
    return spec.priority if spec else 0


def _api_message(error: ApiException) -> str:
    try:
        body = json.loads(error.body or "{}")
        return str(body.get("message") or error.reason)
    except ValueError:
        return str(error.reason)
