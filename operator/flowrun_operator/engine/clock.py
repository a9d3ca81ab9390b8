"""Wall-clock time for the engine, replaceable so a simulation can run it on virtual time.

Delays and timers use the running event loop's clock (`loop.time()`), so a virtual-time loop moves both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
