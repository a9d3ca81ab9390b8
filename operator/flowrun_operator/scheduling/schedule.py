"""When a FlowSchedule's runs are due (pure: no I/O, the clock is a parameter).

Cron expressions are evaluated by cronsim in the schedule's time zone (zoneinfo). A 5-field expression with a
fixed minute and hour follows Debian cron around daylight-saving changes: a time that does not exist that day
(02:30 when clocks jump from 02:00 to 03:00) runs at the first minute that exists after it, and a time that
occurs twice (02:30 when clocks go back) runs once, at its first occurrence. Expressions whose minute or hour
is a wildcard run in absolute time: every real hour or minute, none doubled, none lost.

An interval schedule ticks at ``anchor + k * interval`` (k >= 1), the anchor being the schedule's creation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from flowrun_operator.api.flowschedule import CRON_ALIASES

# Missed ticks counted one by one, at most; past this a gap is reported as "at least" that many.
MAX_COUNTED_MISSES = 1000

_DURATION_PART = re.compile(r"([0-9]+)(h|m|s)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


class ScheduleError(ValueError):
    """The schedule cannot be evaluated; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_interval(text: str) -> timedelta:
    """``90s``, ``6h``, ``1h30m`` -> a timedelta (whole seconds, at least 1 s)."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ScheduleError("InvalidInterval", f"interval {text!r} is not a duration such as 90s, 6h or 1h30m")
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds < 1:
        raise ScheduleError("InvalidInterval", f"interval {text!r} must be at least 1s")
    return timedelta(seconds=seconds)


def load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ScheduleError("InvalidTimeZone", f"unknown time zone {name!r}: {error}") from error


def _floor_second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


class Schedule:
    """The times of one schedule, in UTC."""

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""
        raise NotImplementedError

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last tick at or before ``moment`` (None if there is none after the anchor)."""
        raise NotImplementedError

    def count_between(self, start: datetime, end: datetime, cap: int = MAX_COUNTED_MISSES) -> int:
        """How many ticks lie strictly between ``start`` and ``end`` (at most ``cap``)."""
        count = 0
        tick = self.next_after(start)
        while tick < end and count < cap:
            count += 1
            tick = self.next_after(tick)
        return count


class IntervalSchedule(Schedule):
    def __init__(self, interval: timedelta, anchor: datetime) -> None:
        self.interval = interval
        self.anchor = _floor_second(anchor.astimezone(UTC))

    def _index(self, moment: datetime) -> int:
        """k of the last tick at or before ``moment`` (0 is the anchor itself, not a tick)."""
        return int((moment - self.anchor) // self.interval)

    def next_after(self, moment: datetime) -> datetime:
        k = max(0, self._index(moment)) + 1
        return self.anchor + k * self.interval

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        k = self._index(moment)
        return self.anchor + k * self.interval if k >= 1 else None

    def count_between(self, start: datetime, end: datetime, cap: int = MAX_COUNTED_MISSES) -> int:
        first = max(1, self._index(start) + 1)
        last = self._index(end - timedelta(microseconds=1))
        return max(0, min(cap, last - first + 1))


class CronSchedule(Schedule):
    def __init__(self, expression: str, zone: ZoneInfo, anchor: datetime) -> None:
        text = " ".join(expression.split())
        text = CRON_ALIASES.get(text, text)
        if len(text.split()) != 5:
            raise ScheduleError("InvalidSchedule", f"cron expression {expression!r} must have five fields")
        try:
            CronSim(text, datetime(2000, 1, 1, tzinfo=zone))
        except (CronSimError, ValueError, IndexError, KeyError) as error:
            raise ScheduleError("InvalidSchedule", f"cron expression {expression!r}: {error}") from error
        self.expression = text
        self.zone = zone
        self.anchor = _floor_second(anchor.astimezone(UTC))

    def next_after(self, moment: datetime) -> datetime:
        start = max(moment, self.anchor).astimezone(self.zone)
        # cronsim starts from the second: a moment inside a tick's second must not yield that tick again.
        start = _floor_second(start)
        ticks = CronSim(self.expression, start)
        found = next(ticks).astimezone(UTC)
        # In the repeated hour after clocks go back, the wall-clock time that follows ``moment`` can be the
        # first occurrence of a time that is already past.
        while found <= moment:
            found = next(ticks).astimezone(UTC)
        return found

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        # cronsim's reverse mode does not apply the daylight-saving fix-ups of the forward mode, so the latest
        # tick is found by stepping forward from a point before it, widening the window until one is found.
        end = moment.astimezone(UTC)
        window = timedelta(hours=2)
        while True:
            start = max(end - window, self.anchor)
            latest = None
            tick = self.next_after(start)
            while tick <= end:
                latest = tick
                tick = self.next_after(tick)
            if latest is not None or start == self.anchor:
                return latest
            if window > timedelta(days=366 * 30):  # e.g. "0 0 30 2 *": no tick in 30 years
                return None
            window *= 4


def build_schedule(*, schedule: str | None, interval: str | None, time_zone: str, anchor: datetime) -> Schedule:
    """The Schedule of a FlowSchedule's spec; raises ScheduleError with a reason for a bad one."""
    if (schedule is None) == (interval is None):
        raise ScheduleError("InvalidSchedule", "exactly one of spec.schedule or spec.interval must be set")
    if interval is not None:
        return IntervalSchedule(parse_interval(interval), anchor)
    assert schedule is not None
    return CronSchedule(schedule, load_zone(time_zone), anchor)


@dataclass(frozen=True)
class Plan:
    """What to do at ``now``."""

    run: datetime | None
    """The tick to create a run for now: the latest one due, if it is inside the deadline."""
    expired: datetime | None
    """The latest tick due, when it is past the starting deadline (no run for it)."""
    missed: int
    """Earlier ticks due that get no run of their own (at most one run catches up a gap)."""
    next_time: datetime
    """The first tick after ``now``: when to look again."""


def plan(schedule: Schedule, *, last: datetime, now: datetime, deadline_seconds: int | None) -> Plan:
    """Decide the tick due at ``now`` given ``last``, the latest tick already handled (run or skipped), or the
    schedule's creation. Whatever was missed since ``last`` yields at most one run: the latest tick, if it is
    not more than ``deadline_seconds`` late."""
    next_time = schedule.next_after(now)
    latest = schedule.latest_at_or_before(now)
    if latest is None or latest <= last:
        return Plan(run=None, expired=None, missed=0, next_time=next_time)
    missed = schedule.count_between(last, latest)
    if deadline_seconds is not None and (now - latest).total_seconds() > deadline_seconds:
        return Plan(run=None, expired=latest, missed=missed, next_time=next_time)
    return Plan(run=latest, expired=None, missed=missed, next_time=next_time)


def run_name(schedule_name: str, tick: datetime) -> str:
    """The name of the run for a tick: the same on every attempt, so a second create is a 409."""
    return f"{schedule_name}-{int(tick.timestamp())}"
