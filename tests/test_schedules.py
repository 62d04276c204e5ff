"""The schedules: which billing period each tick reconciles, in the billing time zone.

Holds that the period-close schedule reconciles the month that just closed (across a year end),
that the daily provisional schedule reconciles the current local month (on the day daylight saving
time ends, and late in the evening when UTC is already in the next month), that both fire at local
wall-clock times, that their run keys name one period or one day, and that both start stopped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dagster import DefaultScheduleStatus, RunRequest, build_schedule_context
from dagster._utils.schedules import cron_string_iterator

from fusion_billing_assets.defs.jobs import BILLING_PERIOD_JOB, REASON_TAG
from fusion_billing_assets.defs.schedules import (
    current_period,
    period_close_schedule,
    previous_period,
    provisional_daily_schedule,
)

TORONTO = ZoneInfo("America/Toronto")
CLOSE_DAY = 3


def toronto(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=TORONTO)


def tick(schedule, moment: datetime) -> RunRequest:
    with build_schedule_context(scheduled_execution_time=moment) as context:
        request = schedule(context)
    assert isinstance(request, RunRequest)
    return request


def ticks_between(schedule, start: datetime, end: datetime) -> list[datetime]:
    """The schedule's own cron ticks, in its own time zone, from ``start`` until ``end``."""
    moments = []
    for moment in cron_string_iterator(
        start.timestamp(), schedule.cron_schedule, schedule.execution_timezone
    ):
        if moment >= end:
            return moments
        moments.append(moment)
    raise AssertionError("a cron iterator does not end")


# --- Period close -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "period"),
    [
        (toronto(2026, 12, 3, 6, 0), "2026-11-01"),
        (toronto(2027, 1, 3, 6, 0), "2026-12-01"),  # across the year end
        (datetime(2026, 12, 3, 11, 0, tzinfo=UTC), "2026-11-01"),  # the same tick, told in UTC
    ],
    ids=["december-3", "january-3", "december-3-in-utc"],
)
def test_the_period_close_schedule_reconciles_the_month_that_just_closed(moment, period):
    request = tick(period_close_schedule(CLOSE_DAY), moment)

    assert request.partition_key == period
    assert request.run_key == f"period-close:{period}"
    assert request.tags[REASON_TAG] == f"period close (day {CLOSE_DAY})"


def test_the_period_close_schedule_fires_at_six_on_its_day_in_toronto():
    schedule = period_close_schedule(CLOSE_DAY)

    assert schedule.cron_schedule == "0 6 3 * *"
    assert schedule.execution_timezone == "America/Toronto"
    assert schedule.job_name == BILLING_PERIOD_JOB
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    # 06:00 local on either side of the daylight saving time change: 10:00 UTC, then 11:00 UTC.
    fired = ticks_between(schedule, toronto(2026, 10, 1), toronto(2027, 1, 1))
    assert [moment.astimezone(TORONTO).replace(tzinfo=None) for moment in fired] == [
        datetime(2026, 10, 3, 6, 0),
        datetime(2026, 11, 3, 6, 0),
        datetime(2026, 12, 3, 6, 0),
    ]
    assert [moment.astimezone(UTC).hour for moment in fired] == [10, 11, 11]


def test_a_year_of_period_close_ticks_reconciles_each_month_once_under_its_own_run_key():
    schedule = period_close_schedule(CLOSE_DAY)

    requests = [
        tick(schedule, moment) for moment in ticks_between(schedule, toronto(2026, 2, 1), toronto(2027, 2, 1))
    ]

    assert [request.partition_key for request in requests] == [
        f"2026-{month:02d}-01" for month in range(1, 13)
    ]
    assert len({request.run_key for request in requests}) == 12


# --- Daily provisional ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "period", "day"),
    [
        # 2026-11-01 is the day daylight saving time ends in Toronto (02:00 EDT → 01:00 EST).
        (toronto(2026, 11, 1, 7, 0), "2026-11-01", "2026-11-01"),
        # 23:30 in Toronto on the last day of the month is already December in UTC.
        (datetime(2026, 12, 1, 4, 30, tzinfo=UTC), "2026-11-01", "2026-11-30"),
        (toronto(2026, 11, 30, 23, 30), "2026-11-01", "2026-11-30"),
        (toronto(2026, 12, 1, 7, 0), "2026-12-01", "2026-12-01"),
    ],
    ids=["dst-ends", "last-evening-told-in-utc", "last-evening-local", "first-morning"],
)
def test_the_provisional_schedule_reconciles_the_current_local_month(moment, period, day):
    request = tick(provisional_daily_schedule, moment)

    assert request.partition_key == period
    assert request.run_key == f"provisional:{day}"
    assert request.tags[REASON_TAG] == "daily provisional reconciliation"


def test_the_provisional_schedule_fires_at_seven_every_local_day_and_starts_stopped():
    schedule = provisional_daily_schedule

    assert schedule.cron_schedule == "0 7 * * *"
    assert schedule.execution_timezone == "America/Toronto"
    assert schedule.job_name == BILLING_PERIOD_JOB
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    fired = ticks_between(schedule, toronto(2026, 10, 31), toronto(2026, 11, 3))
    assert [moment.astimezone(TORONTO).replace(tzinfo=None) for moment in fired] == [
        datetime(2026, 10, 31, 7, 0),
        datetime(2026, 11, 1, 7, 0),
        datetime(2026, 11, 2, 7, 0),
    ]


def test_three_months_of_daily_ticks_have_one_run_key_per_day_and_the_month_of_each_day():
    schedule = provisional_daily_schedule
    start, end = toronto(2026, 10, 15), toronto(2027, 1, 15)

    fired = ticks_between(schedule, start, end)
    requests = [tick(schedule, moment) for moment in fired]

    days = [start.date() + timedelta(days=offset) for offset in range((end.date() - start.date()).days)]
    assert [request.run_key for request in requests] == [f"provisional:{day.isoformat()}" for day in days]
    assert [request.partition_key for request in requests] == [day.replace(day=1).isoformat() for day in days]


# --- The period helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "previous", "current"),
    [
        (datetime(2026, 12, 1, 4, 30, tzinfo=UTC), "2026-10-01", "2026-11-01"),  # Nov 30, 23:30 EST
        (datetime(2026, 12, 1, 5, 0, tzinfo=UTC), "2026-11-01", "2026-12-01"),  # Dec 1, 00:00 EST
        (datetime(2026, 11, 1, 3, 59, tzinfo=UTC), "2026-09-01", "2026-10-01"),  # Oct 31, 23:59 EDT
        (datetime(2027, 1, 1, 4, 59, tzinfo=UTC), "2026-11-01", "2026-12-01"),  # Dec 31, 23:59 EST
        (toronto(2027, 1, 1, 0, 0), "2026-12-01", "2027-01-01"),
    ],
)
def test_previous_and_current_period_are_cut_at_local_midnight(moment, previous, current):
    assert previous_period(moment) == previous
    assert current_period(moment) == current
