"""FlowSchedule times: cron in a time zone (daylight-saving changes, month ends), intervals, and the catch-up rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from flowrun_operator.scheduling.schedule import (
    CronSchedule,
    IntervalSchedule,
    Schedule,
    ScheduleError,
    build_schedule,
    parse_interval,
    plan,
    run_name,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def cron(expression: str, zone: str = "UTC", anchor: datetime = ANCHOR) -> Schedule:
    return build_schedule(schedule=expression, interval=None, time_zone=zone, anchor=anchor)


def ticks(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    found = []
    moment = start
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment)
    return found


def local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


# ------------------------------------------------------------------------------------------- daylight saving


def test_daily_0230_on_the_day_0230_does_not_exist_runs_once_right_after_the_gap() -> None:
    # Berlin, 2026-03-29: clocks jump from 02:00 CET to 03:00 CEST.
    schedule = cron("30 2 * * *", "Europe/Berlin")
    found = ticks(schedule, datetime(2026, 3, 27, 12, tzinfo=UTC), 3)
    assert [local(t, BERLIN) for t in found] == [
        "2026-03-28 02:30 CET",
        "2026-03-29 03:00 CEST",
        "2026-03-30 02:30 CEST",
    ]


def test_daily_0230_on_the_day_0230_happens_twice_runs_once_at_the_first() -> None:
    # Berlin, 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET; 02:30 occurs twice.
    schedule = cron("30 2 * * *", "Europe/Berlin")
    found = ticks(schedule, datetime(2026, 10, 24, 12, tzinfo=UTC), 3)
    assert [local(t, BERLIN) for t in found] == [
        "2026-10-25 02:30 CEST",
        "2026-10-26 02:30 CET",
        "2026-10-27 02:30 CET",
    ]
    # Asked from inside the repeated hour, after the first 02:30 passed, the answer is the next day's.
    second_pass = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET, the second 02:15
    assert local(schedule.next_after(second_pass), BERLIN) == "2026-10-26 02:30 CET"


def test_new_york_0230_across_both_changes() -> None:
    schedule = cron("30 2 * * *", "America/New_York")
    spring = ticks(schedule, datetime(2026, 3, 7, 12, tzinfo=UTC), 3)  # 2026-03-08: 02:00 -> 03:00
    assert [local(t, NEW_YORK) for t in spring] == [
        "2026-03-08 03:00 EDT",
        "2026-03-09 02:30 EDT",
        "2026-03-10 02:30 EDT",
    ]
    autumn = ticks(schedule, datetime(2026, 10, 31, 12, tzinfo=UTC), 3)  # 2026-11-01: 02:00 -> 01:00
    assert [local(t, NEW_YORK) for t in autumn] == [
        "2026-11-01 02:30 EST",
        "2026-11-02 02:30 EST",
        "2026-11-03 02:30 EST",
    ]


def test_hourly_runs_every_real_hour_through_the_repeated_hour() -> None:
    schedule = cron("@hourly", "Europe/Berlin")
    found = ticks(schedule, datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 4)
    # Four runs an hour apart in absolute time: 02:00 CEST, 02:00 CET, 03:00, 04:00.
    assert [t - found[0] for t in found] == [timedelta(hours=h) for h in range(4)]
    assert [local(t, BERLIN) for t in found[:2]] == ["2026-10-25 02:00 CEST", "2026-10-25 02:00 CET"]


# ---------------------------------------------------------------------------------------------- month ends


def test_the_31st_skips_shorter_months() -> None:
    found = ticks(cron("0 6 31 * *"), datetime(2026, 1, 1, tzinfo=UTC), 4)
    assert [t.strftime("%m-%d %H:%M") for t in found] == ["01-31 06:00", "03-31 06:00", "05-31 06:00", "07-31 06:00"]


def test_last_day_of_month_and_leap_february() -> None:
    found = ticks(cron("0 0 L * *"), datetime(2028, 1, 15, tzinfo=UTC), 3)
    assert [t.date().isoformat() for t in found] == ["2028-01-31", "2028-02-29", "2028-03-31"]
    feb29 = ticks(cron("0 0 29 2 *"), datetime(2026, 1, 1, tzinfo=UTC), 2)
    assert [t.date().isoformat() for t in feb29] == ["2028-02-29", "2032-02-29"]


def test_monthly_at_local_midnight_in_a_zone_crosses_the_utc_month_boundary() -> None:
    found = ticks(cron("@monthly", "Asia/Tokyo"), datetime(2026, 1, 15, tzinfo=UTC), 2)
    assert found == [datetime(2026, 1, 31, 15, tzinfo=UTC), datetime(2026, 2, 28, 15, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@yearly", datetime(2027, 1, 1, tzinfo=UTC)),
        ("@annually", datetime(2027, 1, 1, tzinfo=UTC)),
        ("@monthly", datetime(2026, 7, 1, tzinfo=UTC)),
        ("@weekly", datetime(2026, 6, 21, tzinfo=UTC)),  # a Sunday
        ("@daily", datetime(2026, 6, 16, tzinfo=UTC)),
        ("@midnight", datetime(2026, 6, 16, tzinfo=UTC)),
        ("@hourly", datetime(2026, 6, 15, 13, tzinfo=UTC)),
    ],
)
def test_aliases(alias: str, expected: datetime) -> None:
    assert cron(alias).next_after(datetime(2026, 6, 15, 12, 30, tzinfo=UTC)) == expected


def test_no_tick_at_or_before_the_anchor() -> None:
    anchor = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    schedule = cron("@hourly", anchor=anchor)
    assert schedule.next_after(datetime(2026, 6, 15, 9, tzinfo=UTC)) == datetime(2026, 6, 15, 13, tzinfo=UTC)
    assert schedule.latest_at_or_before(datetime(2026, 6, 15, 12, 59, tzinfo=UTC)) is None
    assert schedule.latest_at_or_before(datetime(2026, 6, 15, 13, 0, tzinfo=UTC)) == datetime(
        2026, 6, 15, 13, tzinfo=UTC
    )


def test_latest_tick_of_a_rare_schedule() -> None:
    schedule = cron("0 0 29 2 *", anchor=datetime(2020, 1, 1, tzinfo=UTC))
    assert schedule.latest_at_or_before(datetime(2026, 6, 1, tzinfo=UTC)) == datetime(2024, 2, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "zone", "reason"),
    [
        ("61 * * * *", "UTC", "InvalidSchedule"),
        ("* * * *", "UTC", "InvalidSchedule"),
        ("* * * * * *", "UTC", "InvalidSchedule"),
        ("0 0 30 2 *", "UTC", "InvalidSchedule"),
        ("@fortnightly", "UTC", "InvalidSchedule"),
        ("* * * * *", "Mars/Olympus_Mons", "InvalidTimeZone"),
    ],
)
def test_bad_schedules_have_a_reason(expression: str, zone: str, reason: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        cron(expression, zone)
    assert caught.value.reason == reason
    assert expression in caught.value.message or zone in caught.value.message


# ------------------------------------------------------------------------------------------------ intervals


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("6h", 21600), ("1h30m", 5400), ("1m1s", 61)])
def test_parse_interval(text: str, seconds: int) -> None:
    assert parse_interval(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0s", "1.5s", "1d", "s", "10", "5s5"])
def test_bad_intervals(text: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_interval(text)
    assert caught.value.reason == "InvalidInterval"


def test_interval_ticks_count_from_the_anchor() -> None:
    anchor = datetime(2026, 6, 15, 12, 0, 7, 900_000, tzinfo=UTC)  # creationTimestamp has whole seconds
    schedule = IntervalSchedule(timedelta(seconds=90), anchor)
    base = datetime(2026, 6, 15, 12, 0, 7, tzinfo=UTC)
    assert schedule.next_after(anchor - timedelta(hours=1)) == base + timedelta(seconds=90)
    assert schedule.next_after(base + timedelta(seconds=90)) == base + timedelta(seconds=180)
    assert schedule.latest_at_or_before(base + timedelta(seconds=89)) is None
    assert schedule.latest_at_or_before(base + timedelta(seconds=270)) == base + timedelta(seconds=270)
    assert schedule.count_between(base, base + timedelta(seconds=270)) == 2
    assert schedule.count_between(base, base + timedelta(days=365)) == 1000  # capped


def test_interval_ignores_time_zones_and_daylight_saving() -> None:
    schedule = build_schedule(schedule=None, interval="1h", time_zone="Europe/Berlin", anchor=ANCHOR)
    found = ticks(schedule, datetime(2026, 10, 25, 0, 30, tzinfo=UTC), 3)
    assert [t - found[0] for t in found] == [timedelta(hours=h) for h in range(3)]


def test_exactly_one_of_schedule_and_interval() -> None:
    for schedule, interval in ((None, None), ("@daily", "1h")):
        with pytest.raises(ScheduleError):
            build_schedule(schedule=schedule, interval=interval, time_zone="UTC", anchor=ANCHOR)
    assert isinstance(build_schedule(schedule="@daily", interval=None, time_zone="UTC", anchor=ANCHOR), CronSchedule)


# ----------------------------------------------------------------------------------------- catch-up rule


def test_nothing_due_between_ticks() -> None:
    schedule = cron("*/5 * * * *")
    p = plan(
        schedule,
        last=datetime(2026, 6, 1, 10, 5, tzinfo=UTC),
        now=datetime(2026, 6, 1, 10, 7, tzinfo=UTC),
        deadline_seconds=None,
    )
    assert (p.run, p.expired, p.missed) == (None, None, 0)
    assert p.next_time == datetime(2026, 6, 1, 10, 10, tzinfo=UTC)


def test_the_tick_just_passed_runs() -> None:
    schedule = cron("*/5 * * * *")
    now = datetime(2026, 6, 1, 10, 10, 0, 300_000, tzinfo=UTC)
    p = plan(schedule, last=datetime(2026, 6, 1, 10, 5, tzinfo=UTC), now=now, deadline_seconds=10)
    assert p.run == datetime(2026, 6, 1, 10, 10, tzinfo=UTC) and p.missed == 0 and p.expired is None


def test_after_downtime_one_catch_up_run_for_the_latest_missed_tick() -> None:
    schedule = cron("*/5 * * * *")
    last = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    now = datetime(2026, 6, 1, 12, 3, tzinfo=UTC)  # down for two hours: 24 ticks missed
    p = plan(schedule, last=last, now=now, deadline_seconds=600)
    assert p.run == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert p.missed == 23
    assert p.next_time == datetime(2026, 6, 1, 12, 5, tzinfo=UTC)
    # Once it ran, nothing else is due until the next tick.
    again = plan(schedule, last=p.run, now=now + timedelta(seconds=30), deadline_seconds=600)
    assert again.run is None and again.missed == 0


def test_a_missed_tick_past_the_deadline_is_skipped_not_run() -> None:
    schedule = cron("0 * * * *")
    p = plan(
        schedule,
        last=datetime(2026, 6, 1, 8, 0, tzinfo=UTC),
        now=datetime(2026, 6, 1, 10, 20, tzinfo=UTC),
        deadline_seconds=600,
    )
    assert p.run is None
    assert p.expired == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert p.missed == 1  # 09:00
    assert p.next_time == datetime(2026, 6, 1, 11, 0, tzinfo=UTC)


def test_without_a_deadline_the_latest_missed_tick_runs_however_late() -> None:
    schedule = IntervalSchedule(timedelta(minutes=1), ANCHOR)
    p = plan(schedule, last=ANCHOR, now=ANCHOR + timedelta(days=3, seconds=30), deadline_seconds=None)
    assert p.run == ANCHOR + timedelta(days=3)
    assert p.missed == 1000  # counted up to the cap


def test_run_names_are_stable_per_tick() -> None:
    tick = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert run_name("nightly", tick) == "nightly-1780308000"
    assert run_name("nightly", tick) == run_name("nightly", tick.astimezone(BERLIN))
