"""NexaCloud's metering and billing in the sandbox: hourly usage records and one invoice per customer per closed period.

Metering writes one record per deployment per complete UTC-aligned usage window of its life, with
the volumes some roles need (``usage_targets``: the quota exactly, nothing at all, an overage whose
tax sits just above half a cent, well under the quota for the delivery faults; and, for the lost day
offset by a doubled one, the doubled day's CPU equal to the lost day's). Billing is NexaCloud's:
each deployment's plan fee prorated by its active local days and its overage above the included
CPU-seconds, taxed per line at the customer's provincial rate, with the sandbox's own arithmetic
(``independent_charges``), never ``billing.charges``: the invoices are what the reconciliation's
charge math is checked against.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple, TypeVar

from fusion_billing_assets.billing.charges import ChargeKind
from fusion_billing_assets.billing.periods import PeriodWindow, local_day, local_midnight_utc
from fusion_billing_assets.sandbox.independent_charges import (
    SECONDS_PER_HOUR,
    active_days,
    base_fee_cents,
    days_in_period,
    excess_millis_for,
    line_taxes,
    overage_fee_cents,
    tax_rate,
)
from fusion_billing_assets.sandbox.scenarios import Role
from fusion_billing_assets.sandbox.world import (
    Customer,
    Deployment,
    Plan,
    World,
    months_before,
)

# Where a stage reports what it built, one line at a time.
Progress = Callable[[str], None]
# How often a stream of rows reports its progress.
PROGRESS_EVERY_ROWS = 1_000_000

SERVICE_CREDIT_CENTS = 1_234

# The delivery faults' deployments use this share of their plan's included CPU-seconds, so whatever
# the ledger gains (at most one more copy of a record, never more than the whole) stays under it.
DELIVERY_TARGET_SHARE = (4, 10)
# The lost day offset by a doubled one: the local days, counted from the period's first, whose
# pushes were lost and sent twice.
OFFSET_LOST_DAY = 5
OFFSET_DOUBLED_DAY = 22

T = TypeVar("T")


class UsageRecord(NamedTuple):
    """One metered window (a named tuple: there are hundreds of thousands)."""

    id: int
    deployment_id: int
    window_start: datetime
    window_end: datetime
    millis: int
    recorded_at: datetime
    idempotency_key: str | None  # None: the reading NexaCloud could not key (Role.USAGE_WITHOUT_KEY)
    period: date


@dataclass(frozen=True)
class BilledLine:
    kind: ChargeKind
    deployment_id: int | None
    description: str
    quantity: Decimal
    unit_price_cents: Decimal
    amount_cents: int
    tax_cents: int = 0  # set once the invoice's tax is computed


@dataclass(frozen=True)
class NexaCloudInvoice:
    id: int
    customer_id: int
    window: PeriodWindow
    status: str
    stripe_invoice_id: str
    issued_at: datetime
    lines: tuple[BilledLine, ...]

    @property
    def subtotal_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)

    @property
    def tax_cents(self) -> int:
        return sum(line.tax_cents for line in self.lines)

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents + self.tax_cents


# --- metering ------------------------------------------------------------------------------------


def usage_targets(world: World) -> dict[tuple[int, date], int]:
    """CPU milliseconds some (deployment, period) pairs must total, so a case has the shape it claims."""
    targets: dict[tuple[int, date], int] = {}
    for casting in world.castings:
        if casting.period is None or casting.customer_id is None:
            continue
        period = casting.period
        customer = world.customer_by_id[casting.customer_id]
        primary = world.primary_of(customer.id)
        rate = tax_rate(customer.province, period)
        if casting.role is Role.ONE_CENT_OFF:
            # No line may sit on a half cent, or half-even rounding would explain the cent.
            overage = _overage_cents(world, rate, _not_a_half)
            targets[(primary.id, period)] = _millis_for_overage(primary.plan, overage)
        elif casting.role is Role.GLOBAL_TAX_ROUNDING:
            # Three Starter fees carry 194.87 ¢ of HST each and every overage tax sits .51–.59 ¢
            # above a whole cent: per line, all six lines round up; globally the fractions
            # (4.14–4.38 ¢) round down, so per-line tax is exactly 2 ¢ more than global.
            for deployment in world.deployments_of[customer.id]:
                overage = _overage_cents(world, rate, _just_above_a_half)
                targets[(deployment.id, period)] = _millis_for_overage(deployment.plan, overage)
        elif casting.role is Role.LOST_USAGE_PUSHES:
            targets[(primary.id, period)] = primary.plan.included_millis * 16 // 10
        elif casting.role is Role.DOUBLED_USAGE_PUSHES:
            targets[(primary.id, period)] = primary.plan.included_millis * 13 // 10
        elif casting.role is Role.ZERO_USAGE:
            targets[(primary.id, period)] = 0
        elif casting.role is Role.USAGE_AT_QUOTA:
            targets[(primary.id, period)] = primary.plan.included_millis
        elif casting.role is Role.USAGE_WITHOUT_KEY:
            # Below the quota, so the reading Odoo never received moves no invoice line.
            targets[(primary.id, period)] = primary.plan.included_millis * 7 // 10
        elif casting.spec.delivery:
            quota = primary.plan.included_millis
            if casting.role in (Role.PUSHED_TO_WRONG_SUBSCRIPTION, Role.RECEIVED_ANOTHER_CUSTOMERS_PUSH):
                # The receiving subscription holds its own usage and one record of the sender's:
                # both at the share of the smaller quota, so either plan's quota holds them.
                pair = (Role.PUSHED_TO_WRONG_SUBSCRIPTION, Role.RECEIVED_ANOTHER_CUSTOMERS_PUSH)
                quota = min(
                    world.primary_of(world.casting_of_role[role].customer_id).plan.included_millis
                    for role in pair
                )
            share, whole = DELIVERY_TARGET_SHARE
            targets[(primary.id, period)] = quota * share // whole
    return targets


def offset_days(world: World) -> tuple[int, date, date, date]:
    """The lost day offset by a doubled one: (deployment, period, lost local day, doubled local day)."""
    casting = world.casting_of_role[Role.LOST_DAY_OFFSET_BY_DOUBLED_DAY]
    deployment = world.primary_of(casting.customer_id)
    period = casting.period
    return (
        deployment.id,
        period,
        period + timedelta(days=OFFSET_LOST_DAY),
        period + timedelta(days=OFFSET_DOUBLED_DAY),
    )


def metered_usage(world: World, targets: dict[tuple[int, date], int]) -> Iterator[UsageRecord]:
    """NexaCloud's metering: one record per deployment per complete usage window while alive.

    A stream, never a list: a period of 20,000 deployments metered hourly is 14 M records. Each
    deployment's windows of a period draw from their own random stream (seeded by the world's seed,
    the deployment and the period), so the stream is the same on every call and can be read once
    for NexaCloud's database and again for Odoo's ledger. Record ids follow the stream's order.
    """
    late = world.casting_of_role.get(Role.LATE_USAGE)
    keyless = world.casting_of_role[Role.USAGE_WITHOUT_KEY]
    keyless_deployment = world.primary_of(keyless.customer_id)
    offset_deployment, offset_period, *offset = offset_days(world)
    length = int(world.usage_window.total_seconds())
    record_id = 0
    for window in world.windows:
        # The UTC-aligned windows starting in the period, plus the end of the last one.
        first = align_up(window.start_utc, length)
        count = -(-int((window.end_utc - first).total_seconds()) // length)
        grid = [first + index * world.usage_window for index in range(count + 1)]
        period = window.period
        for deployment in world.deployments:
            is_late = (
                late is not None and deployment.customer_id == late.customer_id and period == late.period
            )
            is_offset = deployment.id == offset_deployment and period == offset_period
            rows = _meter(
                world, targets, deployment, window, grid, late=is_late, offset=offset if is_offset else None
            )
            # The reading NexaCloud metered but could not key: the middle one of the keyless case's
            # primary deployment in its period, otherwise like its neighbours.
            unkeyed = (
                len(rows) // 2
                if deployment.id == keyless_deployment.id and period == keyless.period
                else None
            )
            for index, (start, millis, end, recorded_at) in enumerate(rows):
                record_id += 1
                key = None if index == unkeyed else f"nc-usage-{record_id}"
                yield UsageRecord(record_id, deployment.id, start, end, millis, recorded_at, key, period)


def _meter(
    world: World,
    targets: dict[tuple[int, date], int],
    deployment: Deployment,
    window: PeriodWindow,
    grid: list[datetime],
    *,
    late: bool,
    offset: list[date] | None = None,
) -> list[tuple[datetime, int, datetime, datetime]]:
    """The deployment's records in the period, ``(start, millis, end, recorded_at)``: the windows of
    ``grid`` wholly inside its life. ``offset`` (lost day, doubled day): the doubled day's windows
    add up to the lost day's CPU, the other days keep the period's total."""
    length = int(world.usage_window.total_seconds())
    first = (
        -(-int((deployment.created_at - grid[0]).total_seconds()) // length)
        if deployment.created_at > grid[0]
        else 0
    )
    last = len(grid) - 1
    ends = [deployment.terminated_at] if deployment.terminated_at is not None else []
    if window is world.provisional:
        ends.append(world.usage_cutoff)
    if ends:
        last = min(last, int((min(ends) - grid[0]).total_seconds()) // length)
    target = targets.get((deployment.id, window.period))
    if last <= first or target == 0:
        return []
    # Its own random stream, so the whole metering reads the same on every call.
    draw = random.Random(f"{world.seed}/{deployment.id}/{window.key}").random
    nominal = (
        deployment.load * deployment.plan.included_millis * world.scale.usage_window_minutes / (30 * 1440)
    )
    quantities = [int(nominal * (0.35 + 1.3 * draw())) for _ in range(last - first)]
    if target is not None:
        quantities = _scale_to_total(quantities, target)
    if offset is not None:
        days = [local_day(grid[index], world.timezone) for index in range(first, last)]
        quantities = _offset_days(quantities, days, *offset)
    late_from = window.end_utc - timedelta(hours=6)
    rows = []
    for index, millis in enumerate(quantities, start=first):
        start, end = grid[index], grid[index + 1]
        if late and start >= late_from:
            # The metering backlog: ingested a day after the period closed, before invoicing.
            recorded_at = window.end_utc + LATE_INGESTION_DELAYS[int(len(LATE_INGESTION_DELAYS) * draw())]
        else:
            recorded_at = end + INGESTION_DELAYS[int(len(INGESTION_DELAYS) * draw())]
        rows.append((start, millis, end, recorded_at))
    return rows


def _offset_days(quantities: list[int], days: list[date], lost: date, doubled: date) -> list[int]:
    """The same total, with the windows of ``doubled`` adding up to exactly what those of ``lost`` do."""
    lost_total = sum(q for q, day in zip(quantities, days, strict=True) if day == lost)
    others = [index for index, day in enumerate(days) if day not in (lost, doubled)]
    doubled_at = [index for index, day in enumerate(days) if day == doubled]
    rest = sum(quantities) - 2 * lost_total
    if not lost_total or not doubled_at or rest < 0:
        raise RuntimeError(f"sandbox generator bug: cannot offset the usage of {lost} by that of {doubled}")
    shaped = list(quantities)
    for indexes, total in ((doubled_at, lost_total), (others, rest)):
        for index, millis in zip(
            indexes, _scale_to_total([quantities[i] for i in indexes], total), strict=True
        ):
            shaped[index] = millis
    return shaped


def reporting(rows: Iterable[T], label: str, report: Progress) -> Iterator[T]:
    """The rows, unchanged, with a progress line every million and a last one with the count."""
    started = time.monotonic()
    count = 0
    for count, row in enumerate(rows, start=1):
        if count % PROGRESS_EVERY_ROWS == 0:
            rate = count / max(time.monotonic() - started, 1e-9)
            report(f"{label}: {count:,} rows … ({rate:,.0f} rows/s)")
        yield row
    report(f"{label}: {count:,} rows in {time.monotonic() - started:.1f} s")


# --- invoices ------------------------------------------------------------------------------------


def bill_nexacloud(world: World, metered: dict[tuple[int, date], int]) -> list[NexaCloudInvoice]:
    """One invoice per customer per closed period, billed per line as NexaCloud does from the CPU
    milliseconds ``metered`` per (deployment, period)."""
    rng = world.rng
    invoices = []
    for window in world.closed:
        latest = window is world.closed[-1]
        for customer in world.customers:
            lines = _invoice_lines(world, customer, window, metered)
            role = world.role_in(customer.id, window.period)
            if role is Role.VOID_NEXACLOUD_INVOICE:
                status = "void"
            elif latest and rng.random() < 0.6:
                status = "open"
            else:
                status = "paid"
            issued = local_midnight_utc(
                months_before(window.period, -1).replace(day=3), world.zone
            ) + timedelta(hours=9, seconds=rng.randrange(3600))
            invoices.append(
                NexaCloudInvoice(
                    id=len(invoices) + 1,
                    customer_id=customer.id,
                    window=window,
                    status=status,
                    stripe_invoice_id="in_" + "".join(rng.choices(STRIPE_ALPHABET, k=24)),
                    issued_at=issued,
                    lines=lines,
                )
            )
    return invoices


def _invoice_lines(
    world: World, customer: Customer, window: PeriodWindow, metered: dict[tuple[int, date], int]
) -> tuple[BilledLine, ...]:
    lines: list[BilledLine] = []
    period_days = days_in_period(window.period)
    for deployment in world.deployments_of[customer.id]:
        days = active_days(deployment.created_at, deployment.terminated_at, window.period, world.zone)
        if days == 0:
            continue
        plan = deployment.plan
        millis = metered.get((deployment.id, window.period), 0)
        lines.append(
            BilledLine(
                kind=ChargeKind.BASE,
                deployment_id=deployment.id,
                description=f"{plan.name} plan, {deployment.name}: {days} of {period_days} days",
                quantity=Decimal(days).quantize(Decimal("0.001")),
                unit_price_cents=(Decimal(plan.monthly_price_cents) / period_days).quantize(
                    Decimal("0.0001")
                ),
                amount_cents=base_fee_cents(plan.monthly_price_cents, days, period_days),
            )
        )
        lines.append(
            BilledLine(
                kind=ChargeKind.OVERAGE,
                deployment_id=deployment.id,
                description=(
                    f"CPU above {plan.included_cpu_seconds // SECONDS_PER_HOUR:,} included CPU-hours, "
                    f"{deployment.name}"
                ),
                quantity=excess_cpu_hours(plan, millis).quantize(Decimal("0.001")),
                unit_price_cents=plan.overage_cents_per_cpu_hour,
                amount_cents=overage_cents(plan, millis),
            )
        )
    if world.role_in(customer.id, window.period) is Role.REFUND:
        primary = world.primary_of(customer.id)
        lines.append(
            BilledLine(
                kind=ChargeKind.CREDIT,
                deployment_id=primary.id,
                description=(
                    f"Service credit: outage of {primary.name} on {window.period.replace(day=12).isoformat()}"
                ),
                quantity=Decimal("1.000"),
                unit_price_cents=Decimal(-SERVICE_CREDIT_CENTS),
                amount_cents=-SERVICE_CREDIT_CENTS,
            )
        )
    taxes = line_taxes([line.amount_cents for line in lines], tax_rate(customer.province, window.period))
    return tuple(replace(line, tax_cents=tax) for line, tax in zip(lines, taxes, strict=True))


def overage_cents(plan: Plan, millis: int) -> int:
    """The overage charge of ``millis`` CPU milliseconds used in a period on ``plan``."""
    return overage_fee_cents(millis, plan.included_cpu_seconds, plan.overage_cents_per_cpu_hour)


def excess_cpu_hours(plan: Plan, millis: int) -> Decimal:
    """CPU-hours above the plan's quota, as invoice lines show them (before quantizing)."""
    return max(Decimal(0), Decimal(millis).scaleb(-3) - plan.included_cpu_seconds) / SECONDS_PER_HOUR


def _overage_cents(world: World, rate: Fraction, acceptable: Callable[[Fraction], bool]) -> int:
    """A random overage charge whose tax's fraction of a cent is ``acceptable``."""
    while True:
        cents = world.rng.randint(150, 2_000)
        if acceptable((cents * rate) % 1):
            return cents


def _millis_for_overage(plan: Plan, overage: int) -> int:
    """CPU milliseconds in a period whose overage charge is exactly ``overage`` cents."""
    millis = plan.included_millis + excess_millis_for(overage, plan.overage_cents_per_cpu_hour)
    if overage_cents(plan, millis) != overage:
        raise RuntimeError(f"sandbox generator bug: {millis} ms do not bill {overage} cents of overage")
    return millis


def _not_a_half(fraction: Fraction) -> bool:
    return fraction != Fraction(1, 2)


def _just_above_a_half(fraction: Fraction) -> bool:
    return Fraction(51, 100) <= fraction < Fraction(60, 100)


def align_up(moment: datetime, seconds: int) -> datetime:
    """The first usage-window boundary (a multiple of ``seconds`` since the epoch, UTC) at or after ``moment``."""
    epoch_seconds = moment.timestamp()
    aligned = -(-int(epoch_seconds) // seconds) * seconds
    if aligned < epoch_seconds:
        aligned += seconds
    return datetime.fromtimestamp(aligned, UTC)


def _scale_to_total(quantities: list[int], total: int) -> list[int]:
    """The same shape of usage, rescaled to add up to exactly ``total`` milliseconds."""
    if not quantities:
        raise RuntimeError(f"sandbox generator bug: {total} CPU milliseconds to spread over no usage window")
    weights = [quantity + 1 for quantity in quantities]  # +1: no division by zero for an idle shape
    scaled = [weight * total // sum(weights) for weight in weights]
    # Flooring leaves a remainder smaller than the window count; the last window takes it.
    scaled[-1] += total - sum(scaled)
    return scaled


# How long after a window closes its record is ingested: a few minutes, or a day for the backlog.
INGESTION_DELAYS = tuple(timedelta(seconds=seconds) for seconds in range(120, 540))
LATE_INGESTION_DELAYS = tuple(timedelta(hours=26, seconds=seconds) for seconds in range(600))
STRIPE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
