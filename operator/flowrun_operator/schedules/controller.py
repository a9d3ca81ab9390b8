"""The FlowSchedule controller: one asyncio task per schedule sleeps until the schedule's next time (or until its
spec or one of its runs changes), then creates the run for that time through the API.

Crash safety comes from names, not from memory: the run for a time is always named ``<schedule>-<unix seconds>``,
so a second create of the same time is a 409 and counts as done. A time is handled when a run exists for it or
``status.lastScheduleTime`` / ``status.lastSkip`` cover it; after a restart the controller looks at what is
missed since then and creates at most one run, for the latest missed time inside ``startingDeadlineSeconds``.
Finished runs beyond the history limits are deleted only after the status recording the latest time is written,
so a deleted run never makes its time look unhandled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Histogram
from pydantic import ValidationError

from flowrun_operator.api.common import (
    Condition,
    ConditionStatus,
    format_time,
    parse_time,
    set_condition,
)
from flowrun_operator.api.flowschedule import ConcurrencyPolicy, FlowSchedule, FlowScheduleStatus
from flowrun_operator.schedules.kube import AlreadyExists, Rejected, ScheduleApi
from flowrun_operator.schedules.runs import (
    RunInfo,
    beyond_history,
    build_run,
    last_successful,
    latest_tick,
    run_info,
    unfinished,
)
from flowrun_operator.scheduling.schedule import Plan, Schedule, ScheduleError, build_schedule, plan

log = logging.getLogger("flowrun_operator.schedules")

READY = "Ready"
# Fault injection for the crash tests: "exit-after-create" ends the process right after a run was created and
# before anything else is written, the worst moment for a crash.
FAULT = os.environ.get("FLOWRUN_SCHEDULES_FAULT", "")
# Waking a hair after the tick keeps "now >= tick" true despite timer rounding.
WAKE_SLACK = 0.002
MAX_BACKOFF = 30.0

Key = tuple[str, str]

_LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
TIMER_LATENESS = Histogram(
    "flowrun_schedule_timer_lateness_seconds",
    "Time from a scheduled time to the schedule's task acting on it (catch-up runs excluded).",
    buckets=_LATENESS_BUCKETS,
)
CREATE_LATENESS = Histogram(
    "flowrun_schedule_create_lateness_seconds",
    "Time from a scheduled time to its FlowRun's create call returning (catch-up runs excluded).",
    buckets=_LATENESS_BUCKETS,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _max_time(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


@dataclass
class Due:
    """What was done about the times due at one step, for the status."""

    plan: Plan
    last_schedule: datetime | None = None
    skips: int = 0
    last_skip: dict[str, Any] | None = None


class ScheduleWorker:
    """Everything about one FlowSchedule: its latest body, its runs, and the task that acts on its times."""

    def __init__(self, controller: ScheduleController, key: Key, body: dict[str, Any]) -> None:
        self.controller = controller
        self.namespace, self.name = key
        self.body = body
        self.wake = asyncio.Event()
        self.runs: dict[str, RunInfo] = {}
        # The status as last written by this process (the watch may still deliver older bodies).
        self.status: dict[str, Any] | None = None
        self.handled_through: datetime | None = None
        self.reported_invalid: tuple[int, str] | None = None
        self.task: asyncio.Task[None] | None = None
        self.failures = 0

    @property
    def api(self) -> ScheduleApi:
        return self.controller.api

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"flowschedule {self.namespace}/{self.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _loop(self) -> None:
        while True:
            self.wake.clear()
            try:
                delay = await self.step(_now())
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Transient API trouble (timeouts, 5xx, a restarting API server): retry with backoff and jitter.
                self.failures += 1
                delay = min(MAX_BACKOFF, 0.5 * 2 ** min(self.failures, 6)) * (0.5 + random.random())
                log.warning(
                    "FlowSchedule %s/%s: %s: %s (retrying in %.1fs)",
                    self.namespace,
                    self.name,
                    type(error).__name__,
                    str(error)[:300],
                    delay,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=delay)

    # ------------------------------------------------------------------------------------------------ step

    def _current_status(self) -> FlowScheduleStatus:
        raw = self.status if self.status is not None else (self.body.get("status") or {})
        try:
            return FlowScheduleStatus.model_validate(raw)
        except ValidationError:
            return FlowScheduleStatus()

    async def step(self, now: datetime) -> float | None:
        """Act on whatever is due at ``now``; returns the seconds until the next look (None: on change only)."""
        body = self.body
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        try:
            obj = FlowSchedule.model_validate(body)
        except ValidationError as error:
            await self._invalid(generation, "InvalidSpec", f"invalid spec: {error.errors()[0].get('msg')}")
            return None
        anchor = _time((body.get("metadata") or {}).get("creationTimestamp")) or now
        try:
            schedule = build_schedule(
                schedule=obj.spec.schedule, interval=obj.spec.interval, time_zone=obj.spec.time_zone, anchor=anchor
            )
        except ScheduleError as error:
            await self._invalid(generation, error.reason, error.message)
            return None
        self.reported_invalid = None

        status = self._current_status()
        skipped = status.skipped
        last_skip = status.last_skip.to_api() if status.last_skip else None
        last_schedule = status.last_schedule_time
        if obj.spec.suspend:
            ready = Condition(
                type=READY,
                status=ConditionStatus.FALSE,
                reason="Suspended",
                message="spec.suspend is true: no runs are created",
                observed_generation=generation,
            )
            return await self._finish(obj, generation, ready, None, last_schedule, skipped, last_skip, now)

        result = await self._due(obj, schedule, status, anchor, now)
        if result.last_schedule is not None:
            last_schedule = _max_time(last_schedule, result.last_schedule)
        if result.skips:
            skipped += result.skips
            last_skip = result.last_skip
        p = result.plan
        ready = Condition(
            type=READY,
            status=ConditionStatus.TRUE,
            reason="Scheduled",
            message=f"next run at {format_time(p.next_time)}",
            observed_generation=generation,
        )
        return await self._finish(obj, generation, ready, p.next_time, last_schedule, skipped, last_skip, now)

    async def _due(
        self, obj: FlowSchedule, schedule: Schedule, status: FlowScheduleStatus, anchor: datetime, now: datetime
    ) -> Due:
        def last_handled() -> datetime:
            skip_time = status.last_skip.time if status.last_skip else None
            found = _max_time(anchor, status.last_schedule_time, skip_time, latest_tick(self.runs.values()))
            found = _max_time(found, self.handled_through)
            assert found is not None
            return found

        spec = obj.spec
        p = plan(schedule, last=last_handled(), now=now, deadline_seconds=spec.starting_deadline_seconds)
        if p.run is None and p.expired is None:
            return Due(p)
        if spec.concurrency_policy != ConcurrencyPolicy.ALLOW:
            # Forbid and Replace decide on the runs that exist right now, not on what the watch has delivered.
            await self.resync()
            p = plan(schedule, last=last_handled(), now=now, deadline_seconds=spec.starting_deadline_seconds)
            if p.run is None and p.expired is None:
                return Due(p)
        if p.expired is not None:
            late = int((now - p.expired).total_seconds())
            message = (
                f"missed {format_time(p.expired)} by {late}s (startingDeadlineSeconds "
                f"{spec.starting_deadline_seconds})" + (f"; {p.missed} earlier times missed too" if p.missed else "")
            )
            await self.api.post_event(self.body, "Warning", "Skipped", message)
            self.handled_through = p.expired
            skip: dict[str, Any] | None = {
                "time": format_time(p.expired),
                "reason": "MissedDeadline",
                "message": message,
            }
            return Due(p, skips=1 + p.missed, last_skip=skip)

        tick = p.run
        assert tick is not None
        busy = unfinished(self.runs.values())
        if busy and spec.concurrency_policy == ConcurrencyPolicy.FORBID:
            names = ", ".join(r.name for r in busy)
            message = f"{format_time(tick)}: run {names} is unfinished (concurrencyPolicy Forbid)"
            await self.api.post_event(self.body, "Normal", "Skipped", message)
            self.handled_through = tick
            skip = {"time": format_time(tick), "reason": "Forbidden", "message": message}
            return Due(p, skips=1 + p.missed, last_skip=skip)
        run = build_run(self.body, tick)
        name = run["metadata"]["name"]
        if busy and spec.concurrency_policy == ConcurrencyPolicy.REPLACE:
            for old in busy:
                if not old.cancel:
                    await self.api.cancel_run(self.namespace, old.name)
                    await self.api.post_event(
                        self.body, "Normal", "Replaced", f"cancelled run {old.name} to start {name}"
                    )
        if FAULT == "exit-before-create":
            os._exit(3)
        try:
            created = await self.api.create_run(self.namespace, run)
        except AlreadyExists:
            # This time was handled before a restart (or by the previous leader): nothing to do.
            self.handled_through = tick
            return Due(p, last_schedule=tick)
        except Rejected as error:
            message = f"{format_time(tick)}: the API server refused run {name}: {error}"
            await self.api.post_event(self.body, "Warning", "InvalidTemplate", message)
            self.handled_through = tick
            skip = {"time": format_time(tick), "reason": "InvalidTemplate", "message": message}
            return Due(p, skips=1 + p.missed, last_skip=skip)
        if FAULT == "exit-after-create":
            os._exit(3)
        if not p.missed:
            TIMER_LATENESS.observe((now - tick).total_seconds())
            CREATE_LATENESS.observe((_now() - tick).total_seconds())
        info = run_info(created)
        if info is not None:
            self.runs[info.name] = info
        self.handled_through = tick
        lateness = (now - tick).total_seconds()
        detail = f" (catching up; {p.missed} earlier times missed)" if p.missed else ""
        if lateness >= 1:
            detail += f", {lateness:.0f}s late"
        await self.api.post_event(self.body, "Normal", "Created", f"created run {name} for {format_time(tick)}{detail}")
        skip = None
        if p.missed:
            skip = {
                "time": format_time(tick),
                "reason": "Missed",
                "message": f"{p.missed} times before {format_time(tick)} were missed; one run caught up",
            }
        return Due(p, last_schedule=tick, skips=p.missed, last_skip=skip)

    async def _finish(
        self,
        obj: FlowSchedule,
        generation: int,
        ready: Condition,
        next_time: datetime | None,
        last_schedule: datetime | None,
        skipped: int,
        last_skip: dict[str, Any] | None,
        now: datetime,
    ) -> float | None:
        runs = self.runs.values()
        previous = self._current_status()
        active = [r.name for r in unfinished(runs)]
        conditions = set_condition(previous.conditions, ready, now)
        status: dict[str, Any] = {
            "lastScheduleTime": format_time(last_schedule) if last_schedule else None,
            "nextScheduleTime": format_time(next_time) if next_time else None,
            "lastSuccessfulTime": _fmt(_max_time(previous.last_successful_time, last_successful(runs))),
            "active": active,
            "activeCount": len(active),
            "skipped": skipped,
            "lastSkip": last_skip,
            "conditions": [c.to_api() for c in conditions],
            "observedGeneration": generation,
        }
        await self._write_status(status)
        # Only now is the latest time on record, so deleting its run cannot make it look unhandled.
        for old in beyond_history(runs, obj.spec.successful_runs_history_limit, obj.spec.failed_runs_history_limit):
            await self.api.delete_run(self.namespace, old.name, old.uid)
            self.runs.pop(old.name, None)
        if next_time is None:
            return None
        return max(0.0, (next_time - _now()).total_seconds()) + WAKE_SLACK

    async def _write_status(self, status: dict[str, Any]) -> None:
        current = self.status if self.status is not None else (self.body.get("status") or {})
        if all(_same(current.get(k), v) for k, v in status.items()):
            return
        stored = await self.api.patch_status(self.namespace, self.name, status)
        if stored is not None:
            self.status = stored.get("status") or {}

    async def _invalid(self, generation: int, reason: str, message: str) -> None:
        if self.reported_invalid != (generation, message):
            await self.api.post_event(self.body, "Warning", reason, message)
            self.reported_invalid = (generation, message)
        previous = self._current_status()
        ready = Condition(
            type=READY, status=ConditionStatus.FALSE, reason=reason, message=message, observed_generation=generation
        )
        active = [r.name for r in unfinished(self.runs.values())]
        await self._write_status(
            {
                "nextScheduleTime": None,
                "active": active,
                "activeCount": len(active),
                "conditions": [c.to_api() for c in set_condition(previous.conditions, ready, _now())],
                "observedGeneration": generation,
            }
        )

    async def resync(self) -> None:
        """Replace what is known of this schedule's runs with a fresh list from the API."""
        items = await self.api.list_runs([self.namespace], self.name)
        fresh = {}
        for item in items:
            info = run_info(item)
            if info is not None and info.schedule == self.name:
                fresh[info.name] = info
        self.runs = fresh


def _time(value: Any) -> datetime | None:
    try:
        return parse_time(str(value)) if value else None
    except ValueError:
        return None


def _fmt(value: datetime | None) -> str | None:
    return format_time(value) if value else None


def _same(stored: Any, wanted: Any) -> bool:
    """Whether a stored status field already says what a patch would write (absent == null == empty)."""
    if wanted in (None, [], {}) and stored in (None, [], {}):
        return True
    if isinstance(wanted, list) and isinstance(stored, list) and wanted and isinstance(wanted[0], dict):
        # Conditions: compare what the operator sets, not how the API server formats it.
        return len(wanted) == len(stored) and all(
            {k: v for k, v in w.items() if k != "lastTransitionTime"}
            == {k: v for k, v in s.items() if k != "lastTransitionTime"}
            for w, s in zip(wanted, stored, strict=True)
        )
    return bool(stored == wanted)


class ScheduleController:
    """All schedules of the watched namespaces, fed by watch events.

    After ``start()`` the schedules' tasks run on an event loop in a thread of their own, so a busy admission
    engine on the operator's main loop does not delay their timers; ``on_schedule`` and ``on_run`` may then be
    called from any thread. Without ``start()`` everything runs on the caller's loop.
    """

    def __init__(self, api: ScheduleApi, namespaces: Iterable[str] | None = None) -> None:
        self.api = api
        self.namespaces = list(namespaces or [])
        self.workers: dict[Key, ScheduleWorker] = {}
        # Runs seen before their schedule: handed to its worker when it appears.
        self.orphans: dict[Key, dict[str, RunInfo]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        self.thread = threading.Thread(target=loop.run_forever, name="flowschedules", daemon=True)
        self.thread.start()

    def _call(self, fn: Callable[[str | None, dict[str, Any]], None], event_type: str | None, body: Any) -> None:
        if self.loop is None:
            fn(event_type, body)
        else:
            self.loop.call_soon_threadsafe(fn, event_type, body)

    def on_schedule(self, event_type: str | None, body: dict[str, Any]) -> None:
        self._call(self._on_schedule, event_type, body)

    def on_run(self, event_type: str | None, body: dict[str, Any]) -> None:
        self._call(self._on_run, event_type, body)

    async def stop(self) -> None:
        if self.loop is None:
            await self._stop_workers()
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop_workers(), self.loop))
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.thread.join, 5)
        self.loop.close()
        self.loop = None

    async def seed(self) -> dict[str | None, int]:
        """Read every scheduled run once before the watches start, so the first decisions see them all.
        Returns the version of each scope's list (a namespace, or None for all), which its watch continues."""
        items, versions = await self.api.list_runs_at(self.namespaces or None)
        for item in items:
            info = run_info(item)
            if info is not None:
                ns = str(item["metadata"].get("namespace"))
                self.orphans.setdefault((ns, info.schedule), {})[info.name] = info
        return versions

    async def relist(self, namespace: str | None) -> int:
        """For a watch whose version the API server no longer keeps: what is known of the scheduled runs of
        `namespace` (None: all) is replaced by a fresh list, deletions included; returns its version."""
        items, versions = await self.api.list_runs_at([namespace] if namespace else None)
        if self.loop is None:
            self._replace_runs(namespace, items)
        else:
            # Applied on the controller's loop, like the watch events.
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._replace_runs_async(namespace, items), self.loop)
            )
        return versions[namespace]

    async def _replace_runs_async(self, namespace: str | None, items: list[dict[str, Any]]) -> None:
        self._replace_runs(namespace, items)

    def _replace_runs(self, namespace: str | None, items: list[dict[str, Any]]) -> None:
        fresh: dict[Key, dict[str, RunInfo]] = {}
        for item in items:
            info = run_info(item)
            if info is not None:
                fresh.setdefault((str(item["metadata"].get("namespace")), info.schedule), {})[info.name] = info
        for key, worker in self.workers.items():
            if namespace is None or key[0] == namespace:
                runs = fresh.pop(key, {})
                if runs != worker.runs:
                    worker.runs = runs
                    worker.wake.set()
        for key in [k for k in self.orphans if namespace is None or k[0] == namespace]:
            del self.orphans[key]
        self.orphans.update(fresh)

    def _on_schedule(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        worker = self.workers.get(key)
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            if worker is not None:
                del self.workers[key]
                asyncio.get_running_loop().create_task(worker.stop())
            return
        if worker is not None and worker.body.get("metadata", {}).get("uid") != meta.get("uid"):
            # Deleted and created again under the same name while the watch was away: a new schedule.
            del self.workers[key]
            asyncio.get_running_loop().create_task(worker.stop())
            worker = None
        if worker is None:
            worker = ScheduleWorker(self, key, body)
            worker.runs = self.orphans.pop(key, {})
            self.workers[key] = worker
            worker.start()
            return
        worker.body = body
        worker.wake.set()

    def _on_run(self, event_type: str | None, body: dict[str, Any]) -> None:
        info = run_info(body)
        if info is None:
            return
        ns = str((body.get("metadata") or {}).get("namespace"))
        key = (ns, info.schedule)
        worker = self.workers.get(key)
        runs = worker.runs if worker is not None else self.orphans.setdefault(key, {})
        previous = runs.get(info.name)
        if event_type == "DELETED":
            runs.pop(info.name, None)
        else:
            runs[info.name] = info
        if worker is None:
            return
        # Wake the schedule only for what changes its status or history: a run appearing, finishing, going.
        if event_type == "DELETED" or previous is None or previous.finished != info.finished:
            worker.wake.set()

    async def _stop_workers(self) -> None:
        workers = list(self.workers.values())
        self.workers.clear()
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
