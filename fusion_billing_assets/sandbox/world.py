"""The sandbox's world and its cast: periods, plans, customers, deployments, and who plays which role.

``World`` draws, from one ``random.Random(seed)``, the customers and their deployments that both
billing systems then bill; ``scenarios.cast_roles`` decides which customer plays which injected
difference or edge case, and the deployments are shaped here so each role has the set-up it
needs (a deployment created mid-month, one across the DST change, three Starter deployments for
the rounding case); a role cast on a stream of its own gets a plain customer's deployments. The
stages after it (``nexacloud_billing``, ``odoo_billing``) consume the same random stream in a fixed
order, so a seed gives one world.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from fusion_billing_assets.billing.periods import (
    PeriodWindow,
    local_midnight_utc,
    period_window,
    periods_between,
)
from fusion_billing_assets.sandbox.scenarios import MINIMUM_CUSTOMERS, Casting, Role, cast_roles

USAGE_METRIC = "cpu_seconds"
MILLIS_PER_SECOND = 1000
# The provisional period's usage stops at 00:00 local on this day of the month: a fixed point
# rather than "now", so the data does not depend on when it is generated.
PROVISIONAL_CUTOFF_DAY = 15
# The rounding case needs three deployments on one invoice (see nexacloud_billing.usage_targets).
MINIMUM_DEPLOYMENTS_PER_CUSTOMER = 3


@dataclass(frozen=True)
class SandboxScale:
    """How big the generated world is.

    ``periods`` counts the monthly periods ending at the end period; all but the last are closed.
    The default's nine periods give eight closed months, and any eight consecutive months contain
    a March or a November, so the default run always has a DST change in a closed period.
    """

    customers: int = 40
    max_deployments_per_customer: int = 3
    usage_window_minutes: int = 60
    periods: int = 9

    def validate(self) -> None:
        if self.customers < MINIMUM_CUSTOMERS:
            raise ValueError(
                f"the sandbox needs at least {MINIMUM_CUSTOMERS} customers (one per injected difference "
                f"and edge case, plus a few plain ones), got {self.customers}"
            )
        if self.max_deployments_per_customer < MINIMUM_DEPLOYMENTS_PER_CUSTOMER:
            raise ValueError(
                f"max deployments per customer must be at least {MINIMUM_DEPLOYMENTS_PER_CUSTOMER} "
                f"(the rounding case bills three deployments on one invoice), "
                f"got {self.max_deployments_per_customer}"
            )
        minutes = self.usage_window_minutes
        if not 1 <= minutes <= 1440 or 1440 % minutes:
            raise ValueError(
                f"the usage window must divide a day (1440 minutes) so windows align to UTC days, "
                f"got {minutes} minutes"
            )
        if self.periods < 2:
            raise ValueError(
                f"the sandbox needs at least 2 periods (one closed, one provisional), got {self.periods}"
            )


DEFAULT_SCALE = SandboxScale()


@dataclass(frozen=True)
class Plan:
    id: int
    code: str
    name: str
    monthly_price_cents: int
    included_cpu_seconds: int
    overage_cents_per_cpu_hour: Decimal

    @property
    def included_millis(self) -> int:
        return self.included_cpu_seconds * MILLIS_PER_SECOND


# $14.99 makes full-month plan fees carry fractional tax in every province, as real prices do.
STARTER = Plan(1, "starter", "Starter", 1_499, 360_000, Decimal("4.5000"))
STANDARD = Plan(2, "standard", "Standard", 4_900, 1_440_000, Decimal("3.7500"))
PRO = Plan(3, "pro", "Pro", 19_900, 5_760_000, Decimal("2.8125"))
PLANS = (STARTER, STANDARD, PRO)
PLAN_WEIGHTS = (45, 40, 15)

PROVINCE_WEIGHTS = {"ON": 60, "QC": 12, "BC": 8, "AB": 8, "NS": 4, "NB": 4, "MB": 4}


@dataclass(frozen=True)
class Customer:
    id: int
    name: str
    email: str
    province: str
    created_at: datetime


@dataclass(frozen=True)
class Deployment:
    id: int
    customer_id: int
    plan: Plan
    name: str
    region: str
    created_at: datetime
    terminated_at: datetime | None
    # Typical CPU use in a month, as a share of the plan's included quota.
    load: float
    primary: bool

    @property
    def status(self) -> str:
        return "terminated" if self.terminated_at is not None else "running"


class World:
    """The periods, the cast, the customers and their deployments, drawn from one random stream."""

    def __init__(self, *, seed: int, scale: SandboxScale, end_period: date, timezone: str):
        self.seed = seed
        self.scale = scale
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self.rng = random.Random(seed)
        first_period = months_before(end_period, scale.periods - 1)
        self.windows = [
            period_window(period, timezone) for period in periods_between(first_period, end_period)
        ]
        self.closed = self.windows[:-1]
        self.provisional = self.windows[-1]
        self.window_of = {window.period: window for window in self.windows}
        self.usage_cutoff = local_midnight_utc(end_period.replace(day=PROVISIONAL_CUTOFF_DAY), self.zone)
        self.usage_window = timedelta(minutes=scale.usage_window_minutes)
        self.first_start = self.windows[0].start_utc

        self.dst_day = _dst_change_day(self.closed, self.zone)
        customer_ids = list(range(1, scale.customers + 1))
        self.castings = cast_roles(
            customer_ids,
            [w.period for w in self.closed],
            self.dst_day and self.dst_day.replace(day=1),
            self.rng,
        )
        self.casting_of_customer = {c.customer_id: c for c in self.castings if c.customer_id is not None}
        self.casting_of_role = {c.role: c for c in self.castings}
        self.customers = self._customers(customer_ids)
        self.customer_by_id = {customer.id: customer for customer in self.customers}
        self.deployments = self._deployments()
        self.deployments_of: dict[int, list[Deployment]] = defaultdict(list)
        for deployment in self.deployments:
            self.deployments_of[deployment.customer_id].append(deployment)

    # --- who plays what ---------------------------------------------------------------------

    def role_in(self, customer_id: int, period: date) -> Role | None:
        casting = self.casting_of_customer.get(customer_id)
        return casting.role if casting is not None and casting.applies_to(period) else None

    def primary_of(self, customer_id: int) -> Deployment:
        return next(d for d in self.deployments_of[customer_id] if d.primary)

    def imported(self, customer_id: int) -> bool:
        casting = self.casting_of_customer.get(customer_id)
        return casting is None or casting.role is not Role.CUSTOMER_NOT_IMPORTED

    def periods_of(self, casting: Casting) -> list[date]:
        """The closed periods a casting shows in: its own, or all of them for a set-up role."""
        return [casting.period] if casting.period is not None else [w.period for w in self.closed]

    # --- NexaCloud accounts -----------------------------------------------------------------

    def _customers(self, customer_ids: list[int]) -> list[Customer]:
        names = _company_names(len(customer_ids), self.rng)
        # Customer ids grow with sign-up time, as a sequence would hand them out.
        offsets = sorted(self.rng.randrange(30 * 86400, 800 * 86400) for _ in customer_ids)
        customers = []
        for customer_id, name, offset in zip(customer_ids, names, reversed(offsets), strict=True):
            casting = self.casting_of_customer.get(customer_id)
            province = casting.spec.province if casting is not None else None
            province = province or _weighted(self.rng, PROVINCE_WEIGHTS)
            slug = "".join(ch for ch in name.lower() if ch.isalnum())
            customers.append(
                Customer(
                    id=customer_id,
                    name=name,
                    email=f"billing@{slug}.example",
                    province=province,
                    created_at=self.first_start - timedelta(seconds=offset),
                )
            )
        return customers

    def _deployments(self) -> list[Deployment]:
        drafts: list[Deployment] = []
        for customer in self.customers:
            drafts.extend(self._deployments_of(customer))
        # Deployment ids follow creation time across customers, as NexaCloud's sequence would.
        drafts.sort(key=lambda d: (d.created_at, d.customer_id))
        return [replace(draft, id=number) for number, draft in enumerate(drafts, start=1)]

    def _deployments_of(self, customer: Customer) -> list[Deployment]:
        casting = self.casting_of_customer.get(customer.id)
        role = casting.role if casting is not None else None
        rng = self.rng
        if role in (
            Role.ONE_CENT_OFF,
            Role.LOST_USAGE_PUSHES,
            Role.DOUBLED_USAGE_PUSHES,
            Role.OLD_PLAN_PRICE,
        ):
            primary_plan = STANDARD
        elif role is Role.GLOBAL_TAX_ROUNDING:
            primary_plan = STARTER
        else:
            primary_plan = _random_plan(rng)
        deployments = [
            self._deployment(customer, primary_plan, self._before_first_period(customer), primary=True)
        ]
        if role is Role.GLOBAL_TAX_ROUNDING:
            for _ in range(2):
                deployments.append(self._deployment(customer, STARTER, self._before_first_period(customer)))
        elif role is Role.SEVERAL_DEPLOYMENTS:
            for _ in range(self.scale.max_deployments_per_customer - 1):
                deployments.append(
                    self._deployment(customer, _random_plan(rng), self._before_first_period(customer))
                )
        elif role is Role.CREATED_MID_MONTH:
            created = self._mid_month(casting.period)
            deployments.append(self._deployment(customer, _random_plan(rng), created))
        elif role is Role.TERMINATED_MID_MONTH:
            terminated = self._mid_month(casting.period)
            created = self._before_first_period(customer)
            deployments.append(self._deployment(customer, _random_plan(rng), created, terminated=terminated))
        elif role is Role.DST_CHANGE:
            # 01:30 exists once in March (before the jump) and twice in November (fold 0 = the first).
            created = datetime.combine(self.dst_day, time(1, 30), tzinfo=self.zone).astimezone(UTC)
            deployments.append(self._deployment(customer, _random_plan(rng), created))
        elif role is None or casting.spec.own_stream:
            # The keyless reading and the delivery faults need nothing of their customer's set-up
            # (their usage is shaped by metering): drawn as a plain one's, so the draws stay the same.
            # One to the maximum deployments, equally likely: two on average at the default maximum
            # of three, so a scale of N customers meters about 2N deployments.
            extra = rng.randrange(self.scale.max_deployments_per_customer)
            for _ in range(extra):
                deployments.append(self._plain_deployment(customer))
        return deployments

    def _plain_deployment(self, customer: Customer) -> Deployment:
        rng = self.rng
        latest_creation = self.usage_cutoff - timedelta(days=1)
        if rng.random() < 0.25:
            created = _uniform_time(rng, self.first_start, latest_creation)
        else:
            created = self._before_first_period(customer)
        terminated = None
        if rng.random() < 0.15:
            earliest = max(created, self.first_start) + timedelta(days=1)
            latest = self.usage_cutoff - timedelta(hours=1)
            if earliest < latest:
                terminated = _uniform_time(rng, earliest, latest)
        return self._deployment(customer, _random_plan(rng), created, terminated=terminated)

    def _deployment(
        self,
        customer: Customer,
        plan: Plan,
        created_at: datetime,
        *,
        terminated: datetime | None = None,
        primary: bool = False,
    ) -> Deployment:
        rng = self.rng
        return Deployment(
            id=0,
            customer_id=customer.id,
            plan=plan,
            name=f"{rng.choice(SERVICES)}-{rng.choice(ENVIRONMENTS)}",
            region=rng.choice(REGIONS),
            created_at=created_at,
            terminated_at=terminated,
            load=rng.uniform(0.25, 1.6),
            primary=primary,
        )

    def _before_first_period(self, customer: Customer) -> datetime:
        return _uniform_time(
            self.rng, customer.created_at + timedelta(hours=1), self.first_start - timedelta(hours=1)
        )

    def _mid_month(self, period: date) -> datetime:
        day = period.replace(day=self.rng.randint(10, 20))
        return local_midnight_utc(day, self.zone) + timedelta(seconds=self.rng.randrange(86400))


def months_before(period: date, months: int) -> date:
    """The period ``months`` months before ``period`` (after it, for a negative count)."""
    index = period.year * 12 + period.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def utc_text(moment: datetime, timespec: str) -> str:
    """``2026-10-01 04:00:00[.000000]`` for a UTC moment; the hot path of writing usage, so no conversion."""
    text = moment.isoformat(sep=" ", timespec=timespec)
    if not text.endswith("+00:00"):
        raise ValueError(f"sandbox timestamps are aware UTC datetimes, got {moment!r}")
    return text[:-6]


def _dst_change_day(closed: list[PeriodWindow], zone: ZoneInfo) -> date | None:
    """The local day of the latest DST change in a closed period, a November one preferred."""
    changes = [
        day
        for window in closed
        for day in window.local_days()
        if local_midnight_utc(day + timedelta(days=1), zone) - local_midnight_utc(day, zone)
        != timedelta(days=1)
    ]
    if not changes:
        return None
    return max(changes, key=lambda day: (day.month == 11, day))


def _uniform_time(rng: random.Random, earliest: datetime, latest: datetime) -> datetime:
    span = int((latest - earliest).total_seconds())
    return earliest + timedelta(seconds=rng.randrange(max(span, 1)))


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _random_plan(rng: random.Random) -> Plan:
    return rng.choices(PLANS, weights=PLAN_WEIGHTS)[0]


def _company_names(count: int, rng: random.Random) -> list[str]:
    names = [f"{first} {second}" for first in NAME_FIRST_WORDS for second in NAME_SECOND_WORDS]
    rng.shuffle(names)
    suffixes = ("Inc.", "Ltd.", "Corp.", "Co-op")
    chosen = []
    for index in range(count):
        base = names[index % len(names)]
        lap = index // len(names)
        chosen.append(f"{base} {suffixes[index % len(suffixes)]}" + (f" {lap + 1}" if lap else ""))
    return chosen


NAME_FIRST_WORDS = (
    "Maple",
    "Borealis",
    "Granite",
    "Lakeshore",
    "Northwind",
    "Cedar",
    "Aurora",
    "Tundra",
    "Harbour",
    "Prairie",
    "Summit",
    "Fjord",
    "Beacon",
    "Juniper",
    "Timber",
    "Glacier",
    "Riverside",
    "Cobalt",
    "Lynx",
    "Osprey",
)
NAME_SECOND_WORDS = (
    "Analytics",
    "Robotics",
    "Health",
    "Logistics",
    "Studios",
    "Labs",
    "Foods",
    "Energy",
    "Media",
    "Fintech",
    "Games",
    "Outfitters",
    "Learning",
    "Biotech",
    "Mobility",
    "Security",
    "Retail",
    "Design",
    "Data",
    "Travel",
)
SERVICES = ("api", "web", "worker", "etl", "search", "ml", "cron", "gateway", "billing", "cache")
ENVIRONMENTS = ("prod", "staging", "eu", "batch", "canary", "internal")
REGIONS = ("ca-central-1", "ca-west-1", "us-east-1")
