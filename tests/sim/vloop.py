"""A virtual-time asyncio event loop and the matching wall clock.

The loop never sleeps: when every task is blocked, its selector "waits" by moving the loop's clock to the
next timer, so `asyncio.sleep(300)` costs nothing and a scenario's outcome depends only on its inputs.
Nothing here reads the wall clock or starts a thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import selectors
from collections.abc import Coroutine, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

# Every virtual timeline starts here; Kubernetes timestamps in the simulation are this plus loop time.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

# Which operator incarnation a task belongs to (None: the harness itself). Tasks inherit it from the
# context they are created in, which is how a crash finds every task an engine started.
OWNER: contextvars.ContextVar[int | None] = contextvars.ContextVar("sim_owner", default=None)


class Deadlock(RuntimeError):
    """Every task waits and no timer is pending: nothing can ever happen again."""


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("every task is blocked and no timer is pending")
        if timeout > 0:
            self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(selector=_VirtualSelector(self))
        # Tasks per incarnation in creation order (kept ordered so a crash cancels them deterministically).
        self.owned: dict[int, list[asyncio.Task[Any]]] = {}
        self.dead: set[int] = set()
        self.set_task_factory(self._factory)

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def _factory(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any], **kw: Any
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kw)
        context = kw.get("context")
        owner = context.get(OWNER) if context is not None else OWNER.get()
        if owner is not None:
            tasks = self.owned.setdefault(owner, [])
            if len(tasks) % 256 == 255:
                tasks[:] = [t for t in tasks if not t.done()]
            tasks.append(task)
            if owner in self.dead:
                task.cancel()  # a timer of a crashed operator tried to start work
        return task

    def kill(self, owner: int) -> None:
        """Cancel every task of one operator incarnation, wherever it is awaiting."""
        self.dead.add(owner)
        for task in self.owned.get(owner, []):
            task.cancel()


class SimClock:
    """The engine's wall clock: the fixed epoch plus the loop's virtual time."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self._loop.time())


def timestamp(seconds: float) -> str:
    """A Kubernetes timestamp (second precision, like the API server's) for a virtual time."""
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
