"""Status writes: coalesced per object, transitions ahead of refreshes, backoff on failure, Events after
success (posted in order by a few workers from a bounded queue).

Each object has at most one write in flight and at most one waiting (the latest: an intermediate status a
newer one replaced is never sent, its Events travel with the newer one). Transitions and place-in-line
refreshes have separate workers, so a transition never waits behind refreshes. A failed write is not
retried blindly: the view drops the status it assumed (the stored one is the truth again) and the engine
re-plans the run after a per-object exponential backoff with jitter, so what is retried is always the
current decision. Events are posted only once the status they tell about is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from flowrun_operator import metrics
from flowrun_operator.kube.errors import ErrorKind, classify
from flowrun_operator.scheduling.runstate import RunEvent

log = logging.getLogger("flowrun_operator.engine.act")

# Events waiting to be posted, at most: beyond that a new Event is dropped and counted (Kubernetes' own event
# recorders drop under pressure too). Events tell the history; they never hold up or break the work.
MAX_PENDING_EVENTS = 20_000
EVENT_WORKERS = 4
BACKGROUND_EVENT_WORKERS = 1
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 60.0

Key = tuple[str, str, str]  # (plural, namespace, name)


class Backoff:
    """Per-key exponential backoff with full jitter; reset on success."""

    def __init__(self, base: float = BACKOFF_BASE_SECONDS, cap: float = BACKOFF_MAX_SECONDS, seed: int | None = None):
        self.base, self.cap = base, cap
        self.failures: dict[Any, int] = {}
        self._random = random.Random(seed)

    def next_delay(self, key: Any) -> float:
        count = self.failures.get(key, 0) + 1
        self.failures[key] = count
        ceiling = min(self.cap, self.base * (2 ** (count - 1)))
        return float(ceiling / 2 + self._random.uniform(0, ceiling / 2))

    def reset(self, key: Any) -> None:
        self.failures.pop(key, None)


@dataclass(slots=True)
class Write:
    patch: dict[str, Any]
    status: dict[str, Any]  # the status as assumed in the view (identity matters)
    events: list[RunEvent] = field(default_factory=list)
    urgent: bool = True


WriteFn = Callable[[Key, dict[str, Any]], Awaitable[dict[str, Any]]]
DoneFn = Callable[[Key, Write, dict[str, Any] | None, BaseException | None], None]


class StatusWriter:
    def __init__(self, write: WriteFn, done: DoneFn, *, urgent_workers: int = 6, background_workers: int = 1):
        self._write = write
        self._done = done
        self._waiting: dict[Key, Write] = {}
        self._inflight: set[Key] = set()
        self._urgent: deque[Key] = deque()
        self._background: deque[Key] = deque()
        self._wakeup_urgent = asyncio.Event()
        self._wakeup_background = asyncio.Event()
        self._workers = [
            asyncio.create_task(self._work(urgent=True), name=f"status-writer-{i}") for i in range(urgent_workers)
        ] + [
            asyncio.create_task(self._work(urgent=False), name=f"status-refresher-{i}")
            for i in range(background_workers)
        ]

    def submit(self, key: Key, write: Write) -> None:
        earlier = self._waiting.get(key)
        if earlier is not None:
            write.events = earlier.events + write.events
            write.urgent = write.urgent or earlier.urgent
            queued = True
        else:
            queued = False
        self._waiting[key] = write
        if not queued or write.urgent:
            (self._urgent if write.urgent else self._background).append(key)
        (self._wakeup_urgent if write.urgent else self._wakeup_background).set()

    def pending(self) -> int:
        return len(self._waiting) + len(self._inflight)

    def _next(self, urgent: bool) -> Key | None:
        lane = self._urgent if urgent else self._background
        while lane:
            key = lane.popleft()
            write = self._waiting.get(key)
            if write is None or key in self._inflight:
                continue
            if not urgent and write.urgent:
                continue  # promoted: the urgent lane has it
            return key
        return None

    async def _work(self, urgent: bool) -> None:
        wakeup = self._wakeup_urgent if urgent else self._wakeup_background
        while True:
            key = self._next(urgent)
            if key is None:
                wakeup.clear()
                await wakeup.wait()
                continue
            write = self._waiting.pop(key)
            self._inflight.add(key)
            try:
                stored = await self._write(key, write.patch)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._inflight.discard(key)
                self._done(key, write, None, error)
            else:
                self._inflight.discard(key)
                urgency = "transition" if write.urgent else "refresh"
                metrics.STATUS_WRITES.labels(key[0], urgency, str(write.status.get("phase") or "")).inc()
                self._done(key, write, stored, None)
            if key in self._waiting:
                # A newer write waited behind this one: requeue it in its lane.
                (self._urgent if self._waiting[key].urgent else self._background).append(key)
                (self._wakeup_urgent if self._waiting[key].urgent else self._wakeup_background).set()

    async def close(self, grace: float = 0.0) -> None:
        await _drain_and_stop(self.pending, self._workers, grace)


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """What an Event needs of the object it is about."""

    api_version: str | None
    kind: str | None
    namespace: str | None
    name: str | None
    uid: str | None
    resource_version: str | None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            obj.get("apiVersion"),
            obj.get("kind"),
            meta.get("namespace"),
            meta.get("name"),
            meta.get("uid"),
            meta.get("resourceVersion"),
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "resourceVersion": self.resource_version,
            },
        }


PostFn = Callable[[dict[str, Any], str, str, str], Awaitable[None]]


class EventPoster:
    """Events wait here as small records and are posted in order by a few workers (one in flight each): during
    a burst of thousands of transitions each waiting Event costs a reference and its message, not a task with
    its futures, timers and request body. At most `limit` wait; a newer one is dropped and counted.

    Background Events (a run starts waiting) have a lane of their own that at most `background_workers` post
    from at once, and only when no other Event waits: a backlog of thousands of them (a burst of runs queued
    behind a limit) then neither delays the Events of runs that move nor takes the API server's capacity
    from their Jobs once the limit opens."""

    def __init__(
        self,
        post: PostFn,
        *,
        workers: int = EVENT_WORKERS,
        background_workers: int = BACKGROUND_EVENT_WORKERS,
        limit: int = MAX_PENDING_EVENTS,
    ) -> None:
        self._post = post
        self._limit = limit
        self._background_workers = background_workers
        self._queue: deque[tuple[ObjectRef, str, str, str]] = deque()
        self._background: deque[tuple[ObjectRef, str, str, str]] = deque()
        self._inflight = 0
        self._background_inflight = 0
        self._wakeup = asyncio.Event()
        self._workers = [asyncio.create_task(self._work(), name=f"event-poster-{i}") for i in range(workers)]

    def submit(self, ref: ObjectRef, event_type: str, reason: str, message: str, *, background: bool = False) -> None:
        if len(self._queue) + len(self._background) >= self._limit:
            metrics.EVENTS_DROPPED.labels(reason).inc()
            return
        (self._background if background else self._queue).append((ref, event_type, reason, message))
        self._wakeup.set()

    def pending(self) -> int:
        return len(self._queue) + len(self._background) + self._inflight

    def _next(self) -> tuple[tuple[ObjectRef, str, str, str], bool] | None:
        if self._queue:
            return self._queue.popleft(), False
        if self._background and self._background_inflight < self._background_workers:
            return self._background.popleft(), True
        return None

    async def _work(self) -> None:
        while True:
            found = self._next()
            if found is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            (ref, event_type, reason, message), background = found
            self._inflight += 1
            self._background_inflight += background
            try:
                await self._post(ref.to_api(), event_type, reason, message)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the poster must outlive any one Event
                log.debug("could not post event %s on %s: %s", reason, ref.name, error)
            finally:
                self._inflight -= 1
                self._background_inflight -= background
                if background and self._background:
                    self._wakeup.set()  # a background slot is free: a worker parked for one may take it

    async def close(self, grace: float = 0.0) -> None:
        await _drain_and_stop(self.pending, self._workers, grace)


async def _drain_and_stop(pending: Callable[[], int], workers: list[asyncio.Task[None]], grace: float) -> None:
    """Let the workers finish what is queued for up to `grace` seconds, then stop them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while pending() and loop.time() < deadline:  # noqa: ASYNC110 (bounded drain)
        await asyncio.sleep(0.05)
    for worker in workers:
        worker.cancel()
    for worker in workers:
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def describe_failure(error: BaseException) -> tuple[ErrorKind, str, str]:
    classified = classify(error)
    return classified.kind, classified.reason, classified.message
