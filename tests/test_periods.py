"""Billing periods: a period key maps to its local month as a UTC window, across DST changes."""

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusion_billing_assets.billing.periods import (
    local_day,
    next_period,
    parse_period,
    period_of,
    period_window,
    periods_between,
)

TORONTO = "America/Toronto"


def test_october_in_toronto_is_a_utc_window_shifted_by_daylight_time():
    window = period_window("2026-10-01", TORONTO)
    assert window.start_utc == datetime(2026, 10, 1, 4, tzinfo=UTC)  # EDT, UTC-4
    assert window.end_utc == datetime(2026, 11, 1, 4, tzinfo=UTC)  # still EDT at local midnight
    assert window.days == 31
    assert window.last_day == date(2026, 10, 31)


def test_november_window_starts_in_daylight_time_and_ends_in_standard_time():
    window = period_window("2026-11-01", TORONTO)
    assert window.start_utc == datetime(2026, 11, 1, 4, tzinfo=UTC)
    assert window.end_utc == datetime(2026, 12, 1, 5, tzinfo=UTC)  # EST, UTC-5
    # 30 local days, one of them 25 hours long.
    assert window.end_utc - window.start_utc == timedelta(days=30, hours=1)


def test_usage_at_0330_utc_on_november_first_belongs_to_october_in_toronto():
    assert period_of(datetime(2026, 11, 1, 3, 30, tzinfo=UTC), TORONTO) == date(2026, 10, 1)
    assert period_of(datetime(2026, 11, 1, 4, 0, tzinfo=UTC), TORONTO) == date(2026, 11, 1)
    assert period_window("2026-10-01", TORONTO).contains(datetime(2026, 11, 1, 3, 30))  # naive = UTC
    assert not period_window("2026-10-01", TORONTO).contains(datetime(2026, 11, 1, 4, 0, tzinfo=UTC))


def test_march_window_loses_an_hour_to_the_spring_change():
    window = period_window("2026-03-01", TORONTO)
    assert window.start_utc == datetime(2026, 3, 1, 5, tzinfo=UTC)
    assert window.end_utc == datetime(2026, 4, 1, 4, tzinfo=UTC)
    assert local_day(datetime(2026, 3, 8, 6, 59, tzinfo=UTC), TORONTO) == date(2026, 3, 8)


def test_the_same_key_in_another_time_zone_is_another_window():
    assert period_window("2026-10-01", "UTC").start_utc == datetime(2026, 10, 1, tzinfo=UTC)
    assert period_window("2026-10-01", "Asia/Tokyo").start_utc == datetime(2026, 9, 30, 15, tzinfo=UTC)


@pytest.mark.parametrize("key", ["2026-10-15", "2026-13-01", "October", ""])
def test_a_key_that_is_not_the_first_day_of_a_month_is_refused(key):
    with pytest.raises(ValueError, match="billing period"):
        parse_period(key)


def test_periods_between_lists_every_month_including_both_ends():
    assert periods_between(date(2025, 11, 1), date(2026, 2, 1)) == [
        date(2025, 11, 1),
        date(2025, 12, 1),
        date(2026, 1, 1),
        date(2026, 2, 1),
    ]
    assert next_period(date(2026, 12, 1)) == date(2027, 1, 1)


months = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 1)).map(lambda d: d.replace(day=1))
zones = st.sampled_from(
    [TORONTO, "America/Vancouver", "America/Halifax", "America/St_Johns", "UTC", "Europe/Paris"]
)


@given(months, zones)
def test_periods_tile_time_without_gap_or_overlap(period, zone):
    this, following = period_window(period, zone), period_window(next_period(period), zone)
    assert this.end_utc == following.start_utc
    assert this.start_utc < this.end_utc


@given(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)), zones)
def test_every_moment_belongs_to_exactly_the_period_that_contains_it(moment, zone):
    moment = moment.replace(tzinfo=UTC)
    period = period_of(moment, zone)
    window = period_window(period, zone)
    assert window.contains(moment)
    assert not period_window(next_period(period), zone).contains(moment)
