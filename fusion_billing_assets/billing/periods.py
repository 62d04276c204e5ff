"""Billing periods: a period key is the first day of a local calendar month.

A period covers ``[first day 00:00 local, first day of next month 00:00 local)`` in the billing
time zone. Every comparison against source timestamps happens on that window converted to UTC, so
a usage window that starts at 2026-11-01 03:30 UTC still belongs to October in Toronto.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class PeriodWindow:
    """One billing period, in local dates and as a half-open UTC interval."""

    period: date
    timezone: str
    start_utc: datetime
    end_utc: datetime

    @property
    def key(self) -> str:
        return self.period.isoformat()

    @property
    def last_day(self) -> date:
        return next_period(self.period) - timedelta(days=1)

    @property
    def days(self) -> int:
        return (next_period(self.period) - self.period).days

    def local_days(self) -> list[date]:
        return [self.period + timedelta(days=offset) for offset in range(self.days)]

    def contains(self, moment: datetime) -> bool:
        return self.start_utc <= as_utc(moment) < self.end_utc

    def is_closed(self, now: datetime) -> bool:
        """A period is closed once its window has fully passed; the current month is provisional."""
        return as_utc(now) >= self.end_utc


def parse_period(key: str | date) -> date:
    """Turn ``"2026-10-01"`` (or a date) into the period's first day, refusing other days."""
    if isinstance(key, datetime):
        raise ValueError(f"billing period must be a date, got the datetime {key!r}")
    if isinstance(key, date):
        period = key
    else:
        try:
            period = date.fromisoformat(key)
        except ValueError:
            raise ValueError(f"billing period {key!r} is not a date like 2026-10-01") from None
    if period.day != 1:
        raise ValueError(f"billing period {period.isoformat()} must be the first day of a month")
    return period


def next_period(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def local_midnight_utc(day: date, timezone: str | tzinfo) -> datetime:
    """The UTC moment a local calendar day starts: 04:00 or 05:00 UTC in Toronto, by DST."""
    zone = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def period_window(key: str | date, timezone: str) -> PeriodWindow:
    period = parse_period(key)
    return PeriodWindow(
        period=period,
        timezone=timezone,
        start_utc=local_midnight_utc(period, timezone),
        end_utc=local_midnight_utc(next_period(period), timezone),
    )


def as_utc(moment: datetime) -> datetime:
    """Treat a naive datetime as UTC (how the sources store timestamps) and convert aware ones."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def local_day(moment: datetime, timezone: str) -> date:
    return as_utc(moment).astimezone(ZoneInfo(timezone)).date()


def period_of(moment: datetime, timezone: str) -> date:
    """The billing period (first local day of the month) that contains a UTC moment."""
    return local_day(moment, timezone).replace(day=1)


def periods_between(first: date, last: date) -> list[date]:
    """Every period key from ``first`` to ``last``, both included."""
    periods, period = [], parse_period(first)
    last = parse_period(last)
    while period <= last:
        periods.append(period)
        period = next_period(period)
    return periods
