"""Charge math contract (docs/design.md §6): active local days, prorated base, overage, per-line and global tax."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusion_billing_assets.billing.charges import (
    TaxRounding,
    active_days,
    base_charge_cents,
    line_tax_cents,
    line_taxes_cents,
    overage_charge_cents,
)
from fusion_billing_assets.billing.periods import local_day, period_window, periods_between

TORONTO = "America/Toronto"
RATES = st.sampled_from([Decimal("0.05"), Decimal("0.13"), Decimal("0.14"), Decimal("0.15")])
LINE_AMOUNTS = st.lists(st.integers(min_value=-500_000, max_value=5_000_000), min_size=1, max_size=40)
PRICES = st.integers(min_value=0, max_value=10_000_000)
CPU_SECONDS = st.decimals(min_value=0, max_value=10**9, places=3)
RATES_PER_HOUR = st.decimals(min_value=0, max_value=1000, places=4)


def half_up(exact: Fraction) -> int:
    """Half-up to a whole cent, away from zero, on exact fractions: the oracle the tax is checked by."""
    magnitude = math.floor(abs(exact) + Fraction(1, 2))
    return magnitude if exact >= 0 else -magnitude


def toronto(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(TORONTO)).astimezone(UTC)


# --- active days -------------------------------------------------------------------------------


@pytest.mark.parametrize(("period", "days"), [("2026-11-01", 30), ("2026-03-01", 31), ("2025-11-01", 30)])
def test_a_deployment_alive_all_month_is_active_every_local_day_across_dst(period, days):
    window = period_window(period, TORONTO)
    created = window.start_utc - timedelta(days=40)
    assert active_days(created, None, window) == days
    assert active_days(created, window.end_utc, window) == days


def test_the_creation_day_counts_even_a_minute_before_local_midnight():
    window = period_window("2026-11-01", TORONTO)
    # 23:50 local on 14 November is already 15 November in UTC.
    assert active_days(toronto(2026, 11, 14, 23, 50), None, window) == 17


def test_termination_at_local_midnight_does_not_pay_for_the_day_it_starts():
    window = period_window("2026-11-01", TORONTO)
    created = toronto(2026, 10, 1)
    assert active_days(created, toronto(2026, 11, 10), window) == 9
    assert active_days(created, toronto(2026, 11, 10, 0, 0, 1), window) == 10


def test_a_deployment_outside_the_period_has_no_active_days():
    window = period_window("2026-11-01", TORONTO)
    assert active_days(toronto(2026, 12, 1), None, window) == 0
    assert active_days(toronto(2026, 9, 1), toronto(2026, 11, 1), window) == 0
    assert active_days(toronto(2026, 11, 5), toronto(2026, 11, 5), window) == 0


def test_naive_timestamps_are_read_as_utc():
    window = period_window("2026-11-01", TORONTO)
    # 2026-11-15 03:00 UTC is still 14 November in Toronto.
    assert active_days(datetime(2026, 11, 15, 3, 0), None, window) == 17


@given(
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2026, 12, 31)),
    st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=200)),
)
def test_periods_tile_a_deployments_life_into_its_local_days(created_naive, lifetime):
    created = created_naive.replace(tzinfo=UTC)
    terminated = created + lifetime
    periods = periods_between(
        local_day(created, TORONTO).replace(day=1), local_day(terminated, TORONTO).replace(day=1)
    )
    total = sum(active_days(created, terminated, period_window(period, TORONTO)) for period in periods)
    # The local day of the last instant alive, counted independently of any period.
    last_day = local_day(terminated - timedelta(microseconds=1), TORONTO)
    assert total == (last_day - local_day(created, TORONTO)).days + 1


# --- base and overage --------------------------------------------------------------------------


@given(PRICES, st.sampled_from(["2026-02-01", "2026-03-01", "2026-04-01", "2026-11-01"]))
def test_a_whole_month_costs_exactly_the_plan_fee(price, period):
    days = period_window(period, TORONTO).days
    assert base_charge_cents(price, days, days) == price


@given(PRICES, st.integers(min_value=28, max_value=31), st.data())
def test_proration_is_half_up_of_the_exact_share_and_never_negative(price, days, data):
    active = data.draw(st.integers(min_value=0, max_value=days))
    charge = base_charge_cents(price, active, days)
    assert 0 <= charge <= price
    # Exact integer half-up: floor((2·price·active + days) / (2·days)).
    assert charge == (2 * price * active + days) // (2 * days)


def test_proration_rounds_half_cents_up():
    # 1 cent for 15 of 30 days is exactly half a cent.
    assert base_charge_cents(1, 15, 30) == 1
    assert base_charge_cents(4900, 17, 30) == 2777  # 2776.666…


@pytest.mark.parametrize(("active", "days"), [(-1, 30), (31, 30), (0, 0)])
def test_impossible_proration_is_refused(active, days):
    with pytest.raises(ValueError):
        base_charge_cents(4900, active, days)


@given(CPU_SECONDS, st.integers(min_value=0, max_value=10**8), RATES_PER_HOUR)
def test_overage_is_never_negative_and_matches_the_exact_formula(cpu_seconds, included, rate):
    charge = overage_charge_cents(cpu_seconds, included, rate)
    assert charge >= 0
    exact = max(Fraction(0), Fraction(cpu_seconds) - included) * Fraction(rate) / 3600
    assert charge == math.floor(exact + Fraction(1, 2))


def test_float_and_numpy_inputs_are_read_as_the_numbers_they_print():
    # Decimal(0.1) would be 0.1000000000000000055…: a float must not move a half-cent boundary.
    assert overage_charge_cents(362000.0, 360000, 4.5) == 3
    assert line_tax_cents(numpy.int64(1250), Decimal("0.13")) == 163
    assert base_charge_cents(numpy.int64(4900), numpy.int64(17), 30) == 2777


def test_overage_examples():
    assert overage_charge_cents(Decimal("360000.000"), 360000, Decimal("4.5000")) == 0  # at the quota
    assert overage_charge_cents(Decimal("100.000"), 360000, Decimal("4.5000")) == 0  # below it
    # 1000 s over at 4.5 ¢/h = 1.25 ¢
    assert overage_charge_cents(Decimal("361000.000"), 360000, Decimal("4.5000")) == 1
    # 2000 s over at 4.5 ¢/h = 2.5 ¢ → 3 ¢
    assert overage_charge_cents(Decimal("362000.000"), 360000, Decimal("4.5000")) == 3


# --- tax ---------------------------------------------------------------------------------------


def test_line_tax_is_half_up_and_symmetric_for_credits():
    assert line_tax_cents(1250, Decimal("0.13")) == 163  # 162.5
    assert line_tax_cents(-1250, Decimal("0.13")) == -163
    assert line_tax_cents(1499, Decimal("0.13")) == 195  # 194.87


@given(LINE_AMOUNTS, RATES)
def test_per_line_tax_is_each_lines_exact_tax_rounded_half_up(amounts, rate):
    assert line_taxes_cents(amounts, rate, TaxRounding.PER_LINE) == tuple(
        half_up(amount * Fraction(rate)) for amount in amounts
    )


@given(LINE_AMOUNTS, RATES)
def test_per_line_and_global_rounding_differ_by_at_most_half_a_cent_per_line(amounts, rate):
    per_line = sum(line_taxes_cents(amounts, rate, TaxRounding.PER_LINE))
    globally = sum(line_taxes_cents(amounts, rate, TaxRounding.GLOBALLY))
    assert globally == half_up(sum(amount * Fraction(rate) for amount in amounts))
    assert abs(per_line - globally) * 2 <= len(amounts)


@given(LINE_AMOUNTS, RATES)
def test_global_rounding_keeps_every_line_within_a_cent_of_its_exact_tax(amounts, rate):
    for amount, tax in zip(amounts, line_taxes_cents(amounts, rate, TaxRounding.GLOBALLY), strict=True):
        assert abs(tax - Decimal(amount) * rate) < 1


def test_global_rounding_can_differ_from_per_line_by_cents():
    # Four lines each 0.55 ¢ of tax above a whole cent: per line rounds each up, globally the sum.
    amounts = [1035, 1035, 1035, 1035]  # 134.55 ¢ of tax each
    assert sum(line_taxes_cents(amounts, Decimal("0.13"), TaxRounding.PER_LINE)) == 540
    assert sum(line_taxes_cents(amounts, Decimal("0.13"), TaxRounding.GLOBALLY)) == 538
