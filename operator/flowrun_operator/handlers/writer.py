"""Background status writes: at most one in flight per object, and only the latest one waiting.

A reconcile pass must not wait for its status writes: under load each write takes a round trip through a
busy API server, and a waiting pass delays the next admission. The store records the written status as
"assumed" at once, so the next pass already sees it; this writer sends the writes in order per object
and drops intermediate states that a newer one replaced before they were sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("flowrun_operator.writer")

Write = Callable[[], Awaitable[None]]


class CoalescingWriter:
    """Urgent writes (state transitions) and background writes (refreshes) have separate slots, so a
    transition never queues behind refreshes of other objects; writes of one object stay in order."""

    def __init__(self, concurrency: int = 16, background_concurrency: int = 2) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._background_slots = asyncio.Semaphore(background_concurrency)
        self._inflight: dict[Hashable, asyncio.Task[None]] = {}
        self._waiting: dict[Hashable, tuple[Write, bool]] = {}

    def submit(self, key: Hashable, write: Write, *, background: bool = False) -> None:
        if key in self._inflight:
            # Replaces an older waiting write (it would be overwritten anyway); urgent if either was.
            earlier = self._waiting.get(key)
            self._waiting[key] = (write, background and (earlier is None or earlier[1]))
        else:
            self._start(key, write, background)

    def pending(self) -> int:
        return len(self._inflight) + len(self._waiting)

    def _start(self, key: Hashable, write: Write, background: bool) -> None:
        self._inflight[key] = asyncio.create_task(self._run(key, write, background), name=f"write-{key}")

    async def _run(self, key: Hashable, write: Write, background: bool) -> None:
        try:
            async with self._background_slots if background else self._slots:
                await write()
        except asyncio.CancelledError:
            raise
        except Exception:  # the write itself reports and recovers; this only keeps the chain going
            log.exception("status write for %s failed", key)
        finally:
            self._inflight.pop(key, None)
            following = self._waiting.pop(key, None)
            if following is not None:
                self._start(key, *following)

    async def close(self, grace: float = 0.0) -> None:
        """Give writes in flight (and those waiting behind them) up to `grace` seconds, then cancel."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._inflight and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._inflight.values()), timeout=remaining)
        self._waiting.clear()
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
