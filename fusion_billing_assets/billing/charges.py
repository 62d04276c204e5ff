"""The charge math of docs/design.md §6: base fee prorated by local days, CPU overage, and sales tax.

These functions are the reconciliation's third opinion (what *should* have been billed). The
sandbox bills its two systems with an arithmetic of its own (``sandbox.independent_charges``), so
the end-to-end tests compare this one with an independent implementation. Amounts are integer
cents, rates ``Decimal``, and every rounding is half-up (``money.round_half_up``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from fusion_billing_assets.billing.money import round_half_up, to_decimal
from fusion_billing_assets.billing.periods import PeriodWindow, as_utc, local_midnight_utc

SECONDS_PER_HOUR = 3600


class ChargeKind(StrEnum):
    """What a line bills, as NexaCloud's ``invoice_lines.kind`` spells it."""

    BASE = "base"
    OVERAGE = "overage"
    CREDIT = "credit"
    ADJUSTMENT = "adjustment"


# How Odoo's products name what a line bills (docs/design.md §5): the plan fee of plan ``<code>``
# is product ``NC-PLAN-<code>``, usage over the quota is ``NC-CPU-OVERAGE``.
PLAN_PRODUCT_PREFIX = "NC-PLAN-"
OVERAGE_PRODUCT_CODE = "NC-CPU-OVERAGE"


@dataclass(frozen=True)
class OdooProducts:
    """How Odoo invoice and subscription lines are told apart: plan fee products and the overage product."""

    plan_prefix: str = PLAN_PRODUCT_PREFIX
    overage_code: str = OVERAGE_PRODUCT_CODE

    def plan_code(self, plan_code: str) -> str:
        return f"{self.plan_prefix}{plan_code}"


class TaxRounding(StrEnum):
    """How an invoice's tax is rounded, named as Odoo's ``tax_calculation_rounding_method``."""

    PER_LINE = "round_per_line"
    GLOBALLY = "round_globally"


def active_days(created_at: datetime, terminated_at: datetime | None, window: PeriodWindow) -> int:
    """Local calendar days of the period that overlap the deployment's life ``[created_at, terminated_at)``.

    A day counts when its local start is before the termination and its local end after the
    creation, so a deployment created at 23:50 pays for that day and one terminated at exactly
    local midnight does not pay for the day that starts then. Days are walked in the billing time
    zone because a DST day is 23 or 25 hours long: counting 24-hour blocks would miss or add one.
    """
    created = as_utc(created_at)
    terminated = as_utc(terminated_at) if terminated_at is not None else None
    count = 0
    for day in window.local_days():
        day_start = local_midnight_utc(day, window.timezone)
        day_end = local_midnight_utc(day + timedelta(days=1), window.timezone)
        if (terminated is None or day_start < terminated) and day_end > created:
            count += 1
    return count


def base_charge_cents(monthly_price_cents: int, active_days: int, days_in_period: int) -> int:
    """The plan fee prorated by active days: ``monthly_price × active_days / days_in_period``, half-up."""
    if days_in_period <= 0:
        raise ValueError(f"a billing period has at least one day, got {days_in_period}")
    if not 0 <= active_days <= days_in_period:
        raise ValueError(f"active days must be between 0 and {days_in_period}, got {active_days}")
    # The quotient's fractional part is a multiple of 1/days_in_period, so it is either exactly .5
    # (which Decimal represents exactly) or at least 1/62 away from it: precision cannot flip it.
    return round_half_up(to_decimal(monthly_price_cents) * int(active_days) / int(days_in_period))


def overage_charge_cents(
    cpu_seconds: Decimal, included_cpu_seconds: int, overage_cents_per_cpu_hour: Decimal
) -> int:
    """CPU used beyond the plan's quota, billed per CPU-hour, half-up; the quota is never prorated.

    Floats (SQLite's NUMERIC, Odoo's JSON) are read through their ``str``, never their binary value.
    """
    excess_seconds = max(Decimal(0), to_decimal(cpu_seconds) - to_decimal(included_cpu_seconds))
    # Multiply before dividing: the product is exact, so only the final division can be inexact,
    # and its error (far below a millionth of a cent) cannot move a half-cent boundary.
    return round_half_up(excess_seconds * to_decimal(overage_cents_per_cpu_hour) / SECONDS_PER_HOUR)


def line_tax_cents(amount_cents: int, rate: Decimal) -> int:
    """The tax of one line, rounded half-up on its own (credits round symmetrically)."""
    return round_half_up(to_decimal(amount_cents) * to_decimal(rate))


def line_taxes_cents(
    amounts_cents: Sequence[int], rate: Decimal, rounding: TaxRounding = TaxRounding.PER_LINE
) -> tuple[int, ...]:
    """The tax of each line, in line order, under either rounding method.

    Per line, each line's tax is rounded on its own. Globally, the invoice's tax is the sum of the
    unrounded line taxes rounded once, and it is spread back over the lines (largest remainder
    first, as Odoo 18+ spreads its global rounding difference) so the lines still add up to it.
    """
    rounded = [line_tax_cents(amount, rate) for amount in amounts_cents]
    if rounding is TaxRounding.PER_LINE:
        return tuple(rounded)
    exact = [to_decimal(amount) * to_decimal(rate) for amount in amounts_cents]
    difference = round_half_up(sum(exact, Decimal(0))) - sum(rounded)
    step = 1 if difference > 0 else -1
    # The lines that per-line rounding pushed furthest away from the direction we must move.
    order = sorted(range(len(rounded)), key=lambda index: (step * (rounded[index] - exact[index]), index))
    for index in order[: abs(difference)]:
        rounded[index] += step
    return tuple(rounded)
