"""Who gets a free concurrency slot next (pure).

A request (a flow run, or one task run) needs a free slot in *every* limit that matches it. Requests
are considered in priority order (high first), then creation time (FIFO), then name, and each one that
fits is admitted at once: the pass is work-conserving, so a request waiting for limit A never holds up
one that needs only limit B. Occupancy comes in from the caller, derived from live objects, never from
a counter kept here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Request:
    key: str
    priority: int
    created: datetime
    limits: tuple[str, ...]

    def order(self) -> tuple[int, datetime, str]:
        return (-self.priority, self.created, self.key)


@dataclass(frozen=True, slots=True)
class Wait:
    """A request's place in the line of one limit that holds it."""

    limit: str
    position: int
    in_use: int
    capacity: int

    def describe(self) -> str:
        return f"waiting for {self.limit}: {self.in_use}/{self.capacity} in use, {ordinal(self.position)} in line"


@dataclass(frozen=True, slots=True)
class LimitUsage:
    in_use: int
    pending: int
    active: tuple[str, ...]


@dataclass(slots=True)
class Admission:
    admitted: list[str] = field(default_factory=list)
    waiting: dict[str, list[Wait]] = field(default_factory=dict)
    usage: dict[str, LimitUsage] = field(default_factory=dict)


def admit(
    requests: Iterable[Request],
    capacity: Mapping[str, int],
    holders: Mapping[str, Sequence[str]],
) -> Admission:
    """Decide which requests start now.

    capacity: limit name -> slots (spec.limit). holders: limit name -> keys that hold a slot now.
    A limit lowered below its current holders admits nobody until enough of them finish; nothing
    running is ever preempted.
    """
    used = {name: len(holders.get(name, ())) for name in capacity}
    active = {name: list(holders.get(name, ())) for name in capacity}
    result = Admission()
    blocked: list[tuple[str, list[str]]] = []
    for request in sorted(requests, key=Request.order):
        needs = [name for name in request.limits if name in capacity]
        full = [name for name in needs if used[name] >= capacity[name]]
        if full:
            blocked.append((request.key, full))
            continue
        for name in needs:
            used[name] += 1
            active[name].append(request.key)
        result.admitted.append(request.key)
    line_length = dict.fromkeys(capacity, 0)
    for key, full in blocked:
        waits = []
        for name in full:
            line_length[name] += 1
            waits.append(Wait(name, line_length[name], used[name], capacity[name]))
        result.waiting[key] = waits
    result.usage = {
        name: LimitUsage(in_use=used[name], pending=line_length[name], active=tuple(sorted(active[name])))
        for name in capacity
    }
    return result


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
