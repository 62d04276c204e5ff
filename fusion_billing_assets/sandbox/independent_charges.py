"""The sandbox's own charge arithmetic, written apart from ``billing.charges`` so it can check it.

``billing.charges`` is the code under test: the reconciliation's expected leg. If the sandbox
billed with it, the end-to-end tests would agree with the charge math by construction, and a
regression there (half-even rounding, prorating by 24-hour blocks, prorating the quota) would
move the sandbox's invoices with it. So both of the sandbox's billing systems bill with this
module instead: NexaCloud's invoices and Odoo's, Odoo being "Odoo computes correctly from its own
data", which a real Odoo does with arithmetic of its own too. A regression in ``billing.charges``
then shows as the expected leg disagreeing with both systems, while the sandbox itself stays
consistent.

Everything is exact (``fractions.Fraction``) and rounded once, half-up (ties away from zero, as
Odoo's ``float_round``); active days are counted by walking the period's local calendar days with
``zoneinfo``; tax rates are read from the data of ``billing.tax.TAX_RULES``, not through its
lookup. Nothing here imports ``billing.charges``' functions or ``billing.money.round_half_up``.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

from fusion_billing_assets.billing.tax import TAX_RULES, TaxRule

SECONDS_PER_HOUR = 3600
MILLIS_PER_CPU_HOUR = SECONDS_PER_HOUR * 1000


def round_half_up(amount: Fraction) -> int:
    """Whole cents from an exact amount of cents, ties away from zero: ``12.5 → 13``, ``-12.5 → -13``."""
    magnitude = math.floor(abs(amount) + Fraction(1, 2))
    return magnitude if amount >= 0 else -magnitude


def tax_rule_on(province: str, day: date) -> TaxRule:
    """The row of the tax table that applies to ``province`` on ``day``."""
    for rule in TAX_RULES:
        if (
            rule.province == province
            and rule.effective_from <= day
            and (rule.effective_to is None or day <= rule.effective_to)
        ):
            return rule
    raise ValueError(f"the tax table has no rate for {province} on {day.isoformat()}")


def tax_rate(province: str, day: date) -> Fraction:
    return Fraction(tax_rule_on(province, day).rate)


def days_in_period(period: date) -> int:
    return calendar.monthrange(period.year, period.month)[1]


def active_days(created_at: datetime, terminated_at: datetime | None, period: date, zone: ZoneInfo) -> int:
    """The local calendar days of ``period`` on which the deployment existed for at least a moment.

    Its first day is the local date it was created on; its last the local date of the moment
    before it was terminated (terminated at local midnight, it does not pay for the day that
    starts then). Local dates come from ``zoneinfo``, so a 23- or 25-hour DST day is one day.
    """
    first = created_at.astimezone(zone).date()
    last = (terminated_at - timedelta(microseconds=1)).astimezone(zone).date() if terminated_at else None
    days = 0
    for offset in range(days_in_period(period)):
        day = period + timedelta(days=offset)
        if first <= day and (last is None or day <= last):
            days += 1
    return days


def base_fee_cents(monthly_price_cents: int, days: int, period_days: int) -> int:
    """The plan fee for ``days`` of a ``period_days``-day period."""
    return round_half_up(Fraction(monthly_price_cents * days, period_days))


def overage_fee_cents(millis: int, included_cpu_seconds: int, cents_per_cpu_hour: Decimal) -> int:
    """The CPU used beyond the whole quota (never prorated), at the plan's rate per CPU-hour."""
    excess_millis = max(0, millis - included_cpu_seconds * 1000)
    return round_half_up(Fraction(excess_millis, MILLIS_PER_CPU_HOUR) * Fraction(cents_per_cpu_hour))


def excess_millis_for(overage: int, cents_per_cpu_hour: Decimal) -> int:
    """The CPU milliseconds above the quota whose overage charge is nearest ``overage`` cents."""
    return round_half_up(Fraction(overage * MILLIS_PER_CPU_HOUR) / Fraction(cents_per_cpu_hour))


def line_taxes(amounts_cents: Sequence[int], rate: Fraction, *, globally: bool = False) -> tuple[int, ...]:
    """Each line's tax, in line order: rounded line by line, or (``globally``) once for the invoice.

    Rounded globally, the invoice's tax is its exact tax rounded once, and the difference from the
    per-line roundings is spread one cent at a time over the lines that per-line rounding pushed
    furthest the other way (the earlier line first on a tie), as Odoo spreads its global rounding.
    """
    exact = [amount * rate for amount in amounts_cents]
    taxes = [round_half_up(tax) for tax in exact]
    if not globally:
        return tuple(taxes)
    difference = round_half_up(sum(exact, Fraction(0))) - sum(taxes)
    step = 1 if difference > 0 else -1
    furthest_first = sorted(
        range(len(taxes)), key=lambda index: (step * (taxes[index] - exact[index]), index)
    )
    for index in furthest_first[: abs(difference)]:
        taxes[index] += step
    return tuple(taxes)
