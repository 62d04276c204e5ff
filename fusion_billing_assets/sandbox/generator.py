"""The sandbox generator: a deterministic NexaCloud database and the Odoo records that mirror it.

``generate`` writes, from a seed and a scale:

- the NexaCloud database of docs/design.md §4 at any SQLAlchemy URL (a SQLite file or PostgreSQL), its
  tables dropped and recreated so a second run replaces the world instead of adding to it;
- ``odoo.json``: the records the Odoo test double serves, in the storage format of
  ``sandbox.odoo_models``;
- ``manifest.json``: the ground truth — every injected difference and edge case
  (``sandbox.scenarios``) and the expected reconciliation status of every customer in every
  closed period;
- ``waivers.csv``: the accepted difference of the ``waived`` case.

The last period is the current, provisional one: usage up to a fixed cut-off on its 15th and no
invoices on either side. Odoo bills as a correct Odoo would, from its own data (subscription
prices, its usage ledger, the partner's tax rule), so every injected difference is a change to
Odoo's data or invoices whose effect flows through the same arithmetic (``billing.charges``).

Everything random comes from one ``random.Random(seed)`` consumed in a fixed order, and nothing
reads the clock: the same seed, scale, end period and time zone give byte-identical files and
identical tables.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, create_engine
from sqlalchemy.engine import make_url

from fusion_billing_assets.billing.charges import (
    SECONDS_PER_HOUR,
    ChargeKind,
    TaxRounding,
    active_days,
    base_charge_cents,
    line_taxes_cents,
    overage_charge_cents,
)
from fusion_billing_assets.billing.money import cents_to_dollars, format_cents, round_half_up
from fusion_billing_assets.billing.periods import (
    PeriodWindow,
    local_day,
    parse_period,
    period_window,
    periods_between,
)
from fusion_billing_assets.billing.statuses import STATUSES
from fusion_billing_assets.billing.tax import tax_rate, tax_rule
from fusion_billing_assets.sandbox.odoo_models import (
    MODELS,
    SANDBOX_API_KEY,
    SANDBOX_DATABASE,
    SANDBOX_LOGIN,
)
from fusion_billing_assets.sandbox.scenarios import (
    MINIMUM_CUSTOMERS,
    TOLERANCE_CENTS,
    Casting,
    Role,
    cast_roles,
)
from fusion_billing_assets.sources import nexacloud_schema as schema

Progress = Callable[[str], None]

USAGE_METRIC = "cpu_seconds"
BILLING_CURRENCY = "CAD"
# The provisional period's usage stops at 00:00 local on this day of the month: a fixed point
# rather than "now", so the data does not depend on when it is generated.
PROVISIONAL_CUTOFF_DAY = 15
# The rounding case needs three deployments on one invoice (see _usage_targets).
MINIMUM_DEPLOYMENTS_PER_CUSTOMER = 3
INSERT_CHUNK_ROWS = 5_000
MILLIS_PER_SECOND = 1000

# Amounts of the injected cases, in cents.
OLD_PLAN_PRICE_DISCOUNT_CENTS = 400
UNEXPLAINED_LINE_CENTS = 2_500
WAIVED_FEE_CENTS = 1_500
SERVICE_CREDIT_CENTS = 1_234
CONSULTING_INVOICE_CENTS = 35_000
WAIVER_YEARS = 5


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

# Odoo ids: the database has its own partners and currencies first, so no Odoo id equals the
# NexaCloud id of the same thing by accident.
CAD_CURRENCY_ID = 1
USD_CURRENCY_ID = 2
COMPANY_PARTNER_ID = 1
FIRST_CUSTOMER_PARTNER_ID = 7
MONTHLY_PLAN_ID = 1
OVERAGE_PRODUCT_ID = len(PLANS) + 1
SERVICE_CREDIT_PRODUCT_ID = len(PLANS) + 2
ONBOARDING_PRODUCT_ID = len(PLANS) + 3


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


class UsageRecord(NamedTuple):
    """One metered window (a named tuple: there are hundreds of thousands)."""

    id: int
    deployment_id: int
    window_start: datetime
    window_end: datetime
    millis: int
    recorded_at: datetime
    idempotency_key: str
    period: date


class LedgerEntry(NamedTuple):
    """One usage push as Odoo's ``fusion.billing.usage`` holds it."""

    deployment_id: int
    window_start: datetime
    millis: int
    idempotency_key: str
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


@dataclass(frozen=True)
class OdooLine:
    product_id: int
    name: str
    quantity: Decimal
    price_unit: Decimal
    amount_cents: int
    subscription_id: int | None


@dataclass(frozen=True)
class OdooInvoiceHead:
    """What an Odoo invoice (or credit note) says about itself, and how its tax is computed."""

    partner_id: int
    currency_id: int
    invoice_date: date
    invoice_origin: str | None
    window: PeriodWindow
    tax_rate: Decimal
    rounding: TaxRounding = TaxRounding.PER_LINE


@dataclass(frozen=True)
class Summary:
    """What a generation produced, for the command line and for callers."""

    nexacloud_url: str  # password hidden
    odoo_path: Path
    manifest_path: Path
    waivers_path: Path
    periods: tuple[date, ...]
    nexacloud_rows: dict[str, int]
    odoo_records: dict[str, int]
    differences_by_status: dict[str, int]
    edge_cases: int

    @property
    def provisional_period(self) -> date:
        return self.periods[-1]


def generate(
    nexacloud_url: str,
    out_dir: Path,
    *,
    seed: int,
    scale: SandboxScale,
    end_period: date | str,
    timezone: str = "America/Toronto",
    progress: Progress | None = None,
) -> Summary:
    """Generate the sandbox world ending at ``end_period`` (the provisional period)."""
    scale.validate()
    report = progress or (lambda line: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    world = _World(seed=seed, scale=scale, end_period=parse_period(end_period), timezone=timezone)
    report(
        f"world: {len(world.customers)} customers, {len(world.deployments)} deployments, "
        f"{len(world.castings)} cast roles, periods {world.windows[0].key} … {world.provisional.key} "
        f"(provisional)"
    )
    usage = world.meter_usage(report)
    ledger = world.push_usage(usage)
    invoices = world.bill_nexacloud(usage)
    report(f"NexaCloud invoices: {len(invoices)} with {sum(len(i.lines) for i in invoices)} lines")
    odoo = world.odoo_records(ledger)
    manifest = world.manifest(odoo)

    nexacloud_rows = _write_nexacloud(nexacloud_url, world, usage, invoices, report)
    paths = {name: out_dir / name for name in ("odoo.json", "manifest.json", "waivers.csv")}
    odoo_document = {
        "database": SANDBOX_DATABASE,
        "api_key": SANDBOX_API_KEY,
        "login": SANDBOX_LOGIN,
        "models": odoo.models,
    }
    paths["odoo.json"].write_text(json.dumps(odoo_document, sort_keys=True, separators=(",", ":")))
    report(f"odoo.json: {sum(odoo.counts().values()):,} records, {paths['odoo.json'].stat().st_size:,} bytes")
    paths["manifest.json"].write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    paths["waivers.csv"].write_text(world.waivers_csv())

    return Summary(
        nexacloud_url=make_url(nexacloud_url).render_as_string(hide_password=True),
        odoo_path=paths["odoo.json"],
        manifest_path=paths["manifest.json"],
        waivers_path=paths["waivers.csv"],
        periods=tuple(window.period for window in world.windows),
        nexacloud_rows=nexacloud_rows,
        odoo_records=odoo.counts(),
        differences_by_status=dict(sorted(Counter(d["status"] for d in manifest["differences"]).items())),
        edge_cases=len(manifest["edge_cases"]),
    )


class _OdooRecords:
    """Odoo records per model, in the storage format of ``odoo_models`` (every stored field present)."""

    def __init__(self) -> None:
        self.models: dict[str, list[dict[str, Any]]] = {model: [] for model in MODELS}
        self._next_ids: dict[str, int] = defaultdict(lambda: 1)
        self._invoice_numbers: Counter[tuple[str, int]] = Counter()
        # Per (partner, period): each move's type, state, subtotal and tax in cents.
        self.invoice_totals: dict[tuple[int, date], list[dict[str, Any]]] = defaultdict(list)

    def add(self, model_name: str, record_id: int | None = None, /, **values: Any) -> int:
        fields = MODELS[model_name]
        unknown = set(values) - set(fields)
        if unknown:
            raise KeyError(f"{model_name} has no field(s) {sorted(unknown)} in the sandbox's Odoo model")
        if record_id is None:
            record_id = self._next_ids[model_name]
        self._next_ids[model_name] = max(self._next_ids[model_name], record_id + 1)
        record = {"id": record_id}
        for name, field in fields.items():
            # One2many fields are derived from their inverse by the test double.
            if field.type != "one2many":
                record[name] = values.get(name)
        self.models[model_name].append(record)
        return record_id

    def add_all(self, model_name: str, records: Iterable[dict[str, Any]]) -> None:
        """Many records of one model at once, each holding exactly the model's stored fields."""
        stored = {name for name, field in MODELS[model_name].items() if field.type != "one2many"}
        target = self.models[model_name]
        next_id = self._next_ids[model_name]
        for record in records:
            if record.keys() != stored:
                raise KeyError(
                    f"{model_name} record fields {sorted(record)} are not the model's {sorted(stored)}"
                )
            record["id"] = next_id
            target.append(record)
            next_id += 1
        self._next_ids[model_name] = next_id

    def invoice_name(self, move_type: str, state: str, invoice_date: date) -> str:
        """Odoo's sequence, ``INV/2026/00042`` (``RINV`` for credit notes); drafts have none yet."""
        if state == "draft":
            return "/"
        prefix = "INV" if move_type == "out_invoice" else "RINV"
        self._invoice_numbers[(prefix, invoice_date.year)] += 1
        return f"{prefix}/{invoice_date.year}/{self._invoice_numbers[(prefix, invoice_date.year)]:05d}"

    def counts(self) -> dict[str, int]:
        return {model: len(records) for model, records in sorted(self.models.items())}


class _World:
    """The generated world, built stage by stage from one random stream."""

    def __init__(self, *, seed: int, scale: SandboxScale, end_period: date, timezone: str):
        self.seed = seed
        self.scale = scale
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self.rng = random.Random(seed)
        first_period = _months_before(end_period, scale.periods - 1)
        self.windows = [
            period_window(period, timezone) for period in periods_between(first_period, end_period)
        ]
        self.closed = self.windows[:-1]
        self.provisional = self.windows[-1]
        self.window_of = {window.period: window for window in self.windows}
        self.usage_cutoff = self._local(end_period.replace(day=PROVISIONAL_CUTOFF_DAY))
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
        self.usage_targets = self._usage_targets()
        # Filled in while the Odoo side is built.
        self.partner_of: dict[int, int] = {}
        self.subscription_of: dict[int, int] = {}
        self.subscription_name: dict[int, str] = {}
        self.consulting_partner_id = 0
        self.nexacloud_invoice: dict[tuple[int, date], NexaCloudInvoice] = {}
        # Facts about the injected cases, gathered while building, quoted in the manifest.
        self.facts: dict[Role, dict[str, Any]] = defaultdict(dict)

    # --- who plays what ---------------------------------------------------------------------

    def role_in(self, customer_id: int, period: date) -> Role | None:
        casting = self.casting_of_customer.get(customer_id)
        return casting.role if casting is not None and casting.applies_to(period) else None

    def primary_of(self, customer_id: int) -> Deployment:
        return next(d for d in self.deployments_of[customer_id] if d.primary)

    def imported(self, customer_id: int) -> bool:
        casting = self.casting_of_customer.get(customer_id)
        return casting is None or casting.role is not Role.CUSTOMER_NOT_IMPORTED

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
        elif role is None:
            weights = [
                2 ** (self.scale.max_deployments_per_customer - k)
                for k in range(1, self.scale.max_deployments_per_customer + 1)
            ]
            extra = rng.choices(range(self.scale.max_deployments_per_customer), weights=weights)[0]
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
        return self._local(day) + timedelta(seconds=self.rng.randrange(86400))

    def _local(self, day: date) -> datetime:
        return datetime.combine(day, time.min, tzinfo=self.zone).astimezone(UTC)

    # --- usage ------------------------------------------------------------------------------

    def _usage_targets(self) -> dict[tuple[int, date], int]:
        """CPU milliseconds some (deployment, period) pairs must total, so a case has the shape it claims."""
        targets: dict[tuple[int, date], int] = {}
        for casting in self.castings:
            if casting.period is None or casting.customer_id is None:
                continue
            period = casting.period
            customer = self.customer_by_id[casting.customer_id]
            primary = self.primary_of(customer.id)
            rate = tax_rate(customer.province, period)
            if casting.role is Role.ONE_CENT_OFF:
                # No line may sit on a half cent, or half-even rounding would explain the cent.
                overage = self._overage_cents(rate, _not_a_half)
                targets[(primary.id, period)] = _millis_for_overage(primary.plan, overage)
            elif casting.role is Role.GLOBAL_TAX_ROUNDING:
                # Three Starter fees carry 194.87 ¢ of HST each and every overage tax sits .51–.59 ¢
                # above a whole cent: per line, all six lines round up; globally the fractions
                # (4.14–4.38 ¢) round down, so per-line tax is exactly 2 ¢ more than global.
                for deployment in self.deployments_of[customer.id]:
                    overage = self._overage_cents(rate, _just_above_a_half)
                    targets[(deployment.id, period)] = _millis_for_overage(deployment.plan, overage)
            elif casting.role is Role.LOST_USAGE_PUSHES:
                targets[(primary.id, period)] = primary.plan.included_millis * 16 // 10
            elif casting.role is Role.DOUBLED_USAGE_PUSHES:
                targets[(primary.id, period)] = primary.plan.included_millis * 13 // 10
            elif casting.role is Role.ZERO_USAGE:
                targets[(primary.id, period)] = 0
            elif casting.role is Role.USAGE_AT_QUOTA:
                targets[(primary.id, period)] = primary.plan.included_millis
        return targets

    def _overage_cents(self, rate: Decimal, acceptable: Callable[[Decimal], bool]) -> int:
        """A random overage charge whose tax's fraction of a cent is ``acceptable``."""
        while True:
            cents = self.rng.randint(150, 2_000)
            if acceptable((cents * rate) % 1):
                return cents

    def meter_usage(self, report: Progress) -> list[UsageRecord]:
        """NexaCloud's metering: one record per deployment per complete usage window while alive."""
        records: list[UsageRecord] = []
        late = self.casting_of_role.get(Role.LATE_USAGE)
        length = int(self.usage_window.total_seconds())
        for window in self.windows:
            # The UTC-aligned windows starting in the period, plus the end of the last one.
            first = _align_up(window.start_utc, length)
            count = -(-int((window.end_utc - first).total_seconds()) // length)
            grid = [first + index * self.usage_window for index in range(count + 1)]
            measured: list[tuple[datetime, int, int, datetime, datetime]] = []
            for deployment in self.deployments:
                is_late = (
                    late is not None
                    and deployment.customer_id == late.customer_id
                    and window.period == late.period
                )
                measured.extend(self._meter(deployment, window, grid, late=is_late))
            measured.sort(key=lambda row: (row[0], row[1]))
            period = window.period
            records.extend(
                UsageRecord(
                    record_id, deployment_id, start, end, millis, recorded_at, f"nc-usage-{record_id}", period
                )
                for record_id, (start, deployment_id, millis, end, recorded_at) in enumerate(
                    measured, start=len(records) + 1
                )
            )
            report(f"usage {window.key}: {len(measured):,} records")
        return records

    def _meter(
        self, deployment: Deployment, window: PeriodWindow, grid: list[datetime], *, late: bool
    ) -> list[tuple[datetime, int, int, datetime, datetime]]:
        """The deployment's records in the period: windows of ``grid`` wholly inside its life."""
        length = int(self.usage_window.total_seconds())
        first = (
            -(-int((deployment.created_at - grid[0]).total_seconds()) // length)
            if deployment.created_at > grid[0]
            else 0
        )
        last = len(grid) - 1
        ends = [deployment.terminated_at] if deployment.terminated_at is not None else []
        if window is self.provisional:
            ends.append(self.usage_cutoff)
        if ends:
            last = min(last, int((min(ends) - grid[0]).total_seconds()) // length)
        target = self.usage_targets.get((deployment.id, window.period))
        if last <= first or target == 0:
            return []
        draw = self.rng.random
        nominal = (
            deployment.load * deployment.plan.included_millis * self.scale.usage_window_minutes / (30 * 1440)
        )
        quantities = [int(nominal * (0.35 + 1.3 * draw())) for _ in range(last - first)]
        if target is not None:
            quantities = _scale_to_total(quantities, target)
        late_from = window.end_utc - timedelta(hours=6)
        rows = []
        for index, millis in enumerate(quantities, start=first):
            start, end = grid[index], grid[index + 1]
            if late and start >= late_from:
                # The metering backlog: ingested a day after the period closed, before invoicing.
                recorded_at = window.end_utc + LATE_INGESTION_DELAYS[int(len(LATE_INGESTION_DELAYS) * draw())]
            else:
                recorded_at = end + INGESTION_DELAYS[int(len(INGESTION_DELAYS) * draw())]
            rows.append((start, deployment.id, millis, end, recorded_at))
        return rows

    def push_usage(self, usage: list[UsageRecord]) -> list[LedgerEntry]:
        """What Odoo's usage ledger received: every push, except the injected lost and doubled ones."""
        not_imported = {d.id for d in self.deployments if not self.imported(d.customer_id)}
        lost = self.casting_of_role[Role.LOST_USAGE_PUSHES]
        lost_deployment = self.primary_of(lost.customer_id)
        lost_days = {lost.period + timedelta(days=9), lost.period + timedelta(days=10)}
        doubled = self.casting_of_role[Role.DOUBLED_USAGE_PUSHES]
        doubled_deployment = self.primary_of(doubled.customer_id)
        doubled_day = doubled.period + timedelta(days=19)

        ledger = []
        lost_millis = doubled_millis = 0
        for record in usage:
            if record.deployment_id in not_imported:
                continue
            entry = LedgerEntry(
                record.deployment_id,
                record.window_start,
                record.millis,
                record.idempotency_key,
                record.period,
            )
            if record.deployment_id == lost_deployment.id and (
                local_day(record.window_start, self.timezone) in lost_days
            ):
                lost_millis += record.millis
                continue
            ledger.append(entry)
            if record.deployment_id == doubled_deployment.id and (
                local_day(record.window_start, self.timezone) == doubled_day
            ):
                # A retry after a timeout, sent with a fresh key, so Odoo's idempotency cannot catch it.
                ledger.append(entry._replace(idempotency_key=f"{record.idempotency_key}-retry"))
                doubled_millis += record.millis
        self.facts[Role.LOST_USAGE_PUSHES] = {
            "deployment": lost_deployment,
            "days": sorted(lost_days),
            "millis": lost_millis,
        }
        self.facts[Role.DOUBLED_USAGE_PUSHES] = {
            "deployment": doubled_deployment,
            "days": [doubled_day],
            "millis": doubled_millis,
        }
        return ledger

    # --- NexaCloud's invoices ---------------------------------------------------------------

    def bill_nexacloud(self, usage: list[UsageRecord]) -> list[NexaCloudInvoice]:
        """One invoice per customer per closed period, billed per line as NexaCloud does."""
        metered = _totals((r.deployment_id, r.period, r.millis) for r in usage)
        invoices = []
        for window in self.closed:
            latest = window is self.closed[-1]
            for customer in self.customers:
                lines = self._nexacloud_lines(customer, window, metered)
                role = self.role_in(customer.id, window.period)
                if role is Role.VOID_NEXACLOUD_INVOICE:
                    status = "void"
                elif latest and self.rng.random() < 0.6:
                    status = "open"
                else:
                    status = "paid"
                issued = self._local(_months_before(window.period, -1).replace(day=3)) + timedelta(
                    hours=9, seconds=self.rng.randrange(3600)
                )
                invoices.append(
                    NexaCloudInvoice(
                        id=len(invoices) + 1,
                        customer_id=customer.id,
                        window=window,
                        status=status,
                        stripe_invoice_id="in_" + "".join(self.rng.choices(STRIPE_ALPHABET, k=24)),
                        issued_at=issued,
                        lines=lines,
                    )
                )
        self.nexacloud_invoice = {(i.customer_id, i.window.period): i for i in invoices}
        return invoices

    def _nexacloud_lines(
        self, customer: Customer, window: PeriodWindow, metered: dict[tuple[int, date], int]
    ) -> tuple[BilledLine, ...]:
        lines: list[BilledLine] = []
        for deployment in self.deployments_of[customer.id]:
            days = active_days(deployment.created_at, deployment.terminated_at, window)
            if days == 0:
                continue
            plan = deployment.plan
            millis = metered.get((deployment.id, window.period), 0)
            lines.append(
                BilledLine(
                    kind=ChargeKind.BASE,
                    deployment_id=deployment.id,
                    description=f"{plan.name} plan, {deployment.name}: {days} of {window.days} days",
                    quantity=Decimal(days).quantize(Decimal("0.001")),
                    unit_price_cents=(Decimal(plan.monthly_price_cents) / window.days).quantize(
                        Decimal("0.0001")
                    ),
                    amount_cents=base_charge_cents(plan.monthly_price_cents, days, window.days),
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
                    quantity=_excess_hours(plan, millis).quantize(Decimal("0.001")),
                    unit_price_cents=plan.overage_cents_per_cpu_hour,
                    amount_cents=_overage(plan, millis),
                )
            )
        if self.role_in(customer.id, window.period) is Role.REFUND:
            primary = self.primary_of(customer.id)
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
        rate = tax_rate(customer.province, window.period)
        taxes = line_taxes_cents([line.amount_cents for line in lines], rate, TaxRounding.PER_LINE)
        return tuple(replace(line, tax_cents=tax) for line, tax in zip(lines, taxes, strict=True))

    # --- Odoo -------------------------------------------------------------------------------

    def odoo_records(self, ledger: list[LedgerEntry]) -> _OdooRecords:
        """What a correct Odoo holds after the import and a dual-run, plus the injected differences."""
        odoo = _OdooRecords()
        odoo.add("res.currency", CAD_CURRENCY_ID, name="CAD")
        odoo.add("res.currency", USD_CURRENCY_ID, name="USD")
        odoo.add(
            "res.partner",
            COMPANY_PARTNER_ID,
            name="Nexa Cloud Inc.",
            email="accounting@nexa.example",
            commercial_partner_id=COMPANY_PARTNER_ID,
            active=True,
        )
        for plan in PLANS:
            odoo.add(
                "product.product",
                plan.id,
                name=f"NexaCloud {plan.name} plan",
                default_code=f"NC-PLAN-{plan.code}",
            )
        odoo.add(
            "product.product",
            OVERAGE_PRODUCT_ID,
            name="NexaCloud CPU overage (CPU-hour)",
            default_code="NC-CPU-OVERAGE",
        )
        odoo.add(
            "product.product",
            SERVICE_CREDIT_PRODUCT_ID,
            name="NexaCloud service credit",
            default_code="NC-SERVICE-CREDIT",
        )
        odoo.add(
            "product.product",
            ONBOARDING_PRODUCT_ID,
            name="Onboarding assistance",
            default_code="SRV-ONBOARDING",
        )
        odoo.add("sale.subscription.plan", MONTHLY_PLAN_ID, name="Monthly")
        odoo.add(
            "ir.model.data",
            module="base",
            name="main_partner",
            model="res.partner",
            res_id=COMPANY_PARTNER_ID,
        )

        self.partner_of = self._odoo_partners(odoo)
        self.subscription_of = self._odoo_subscriptions(odoo)
        window_text = functools.cache(lambda moment: _utc_text(moment, "seconds"))
        odoo.add_all(
            "fusion.billing.usage",
            (
                {
                    "name": None,
                    "subscription_id": self.subscription_of[entry.deployment_id],
                    "metric": USAGE_METRIC,
                    # int / int is correctly rounded: the float nearest the exact three decimals.
                    "quantity": entry.millis / MILLIS_PER_SECOND,
                    "idempotency_key": entry.idempotency_key,
                    "timestamp": window_text(entry.window_start),
                }
                for entry in ledger
            ),
        )
        ledger_totals = _totals((e.deployment_id, e.period, e.millis) for e in ledger)
        for window in self.closed:
            for customer in sorted(self.customers, key=lambda c: self.partner_of.get(c.id) or 0):
                if not self.imported(customer.id):
                    continue
                role = self.role_in(customer.id, window.period)
                if role is Role.NO_ODOO_INVOICE:
                    continue
                self._odoo_invoices(odoo, customer, window, ledger_totals, role)
            partner = self.casting_of_role[Role.PARTNER_NOT_FROM_NEXACLOUD]
            if partner.period == window.period:
                self._consulting_invoice(odoo, window)
        self._odoo_mapping(odoo)
        return odoo

    def _odoo_partners(self, odoo: _OdooRecords) -> dict[int, int]:
        """Partner ids per imported customer, in an import order unrelated to NexaCloud ids."""
        order = [c.id for c in self.customers]
        self.rng.shuffle(order)
        partner_of = {}
        next_id = FIRST_CUSTOMER_PARTNER_ID
        for customer_id in order:
            customer = self.customer_by_id[customer_id]
            imported = self.imported(customer_id)
            odoo.add(
                "res.partner",
                next_id,
                name=customer.name,
                # The customer that was never imported exists only as a hand-made partner: no ref.
                ref=f"NC-{customer.id}" if imported else None,
                email=customer.email,
                commercial_partner_id=next_id,
                active=True,
            )
            if imported:
                partner_of[customer_id] = next_id
            else:
                self.facts[Role.CUSTOMER_NOT_IMPORTED]["partner_id"] = next_id
            next_id += 1
        self.consulting_partner_id = next_id
        odoo.add(
            "res.partner",
            next_id,
            name="Lakeshore Consulting Group",
            email="ap@lakeshore-consulting.example",
            commercial_partner_id=next_id,
            active=True,
        )
        return partner_of

    def _odoo_subscriptions(self, odoo: _OdooRecords) -> dict[int, int]:
        """One subscription per deployment of an imported customer, in the order they were created."""
        subscription_of = {}
        for deployment in self.deployments:
            if not self.imported(deployment.customer_id):
                continue
            name = f"S{len(subscription_of) + 1:05d}"
            subscription_id = odoo.add(
                "sale.order",
                name=name,
                partner_id=self.partner_of[deployment.customer_id],
                is_subscription=True,
                plan_id=MONTHLY_PLAN_ID,
                subscription_state="6_churn" if deployment.terminated_at else "3_progress",
                start_date=local_day(deployment.created_at, self.timezone).isoformat(),
                end_date=(
                    local_day(deployment.terminated_at - timedelta(microseconds=1), self.timezone).isoformat()
                    if deployment.terminated_at
                    else None
                ),
                currency_id=CAD_CURRENCY_ID,
            )
            subscription_of[deployment.id] = subscription_id
            self.subscription_name[subscription_id] = name
            plan = deployment.plan
            odoo.add(
                "sale.order.line",
                name=f"NexaCloud {plan.name} plan",
                order_id=subscription_id,
                product_id=plan.id,
                price_unit=float(cents_to_dollars(self._odoo_price_cents(deployment))),
                product_uom_qty=1.0,
            )
            odoo.add(
                "sale.order.line",
                name=f"CPU overage above {plan.included_cpu_seconds // SECONDS_PER_HOUR:,} CPU-hours",
                order_id=subscription_id,
                product_id=OVERAGE_PRODUCT_ID,
                price_unit=float(plan.overage_cents_per_cpu_hour / 100),
                product_uom_qty=0.0,
            )
        return subscription_of

    def _odoo_price_cents(self, deployment: Deployment) -> int:
        casting = self.casting_of_customer.get(deployment.customer_id)
        if casting is not None and casting.role is Role.OLD_PLAN_PRICE:
            return deployment.plan.monthly_price_cents - OLD_PLAN_PRICE_DISCOUNT_CENTS
        return deployment.plan.monthly_price_cents

    def _odoo_invoices(
        self,
        odoo: _OdooRecords,
        customer: Customer,
        window: PeriodWindow,
        ledger_totals: dict[tuple[int, date], int],
        role: Role | None,
    ) -> None:
        """The invoice(s) Odoo produced for one customer and period, from Odoo's own data."""
        lines: list[OdooLine] = []
        for deployment in self.deployments_of[customer.id]:
            days = active_days(deployment.created_at, deployment.terminated_at, window)
            if days == 0:
                continue
            plan = deployment.plan
            price = self._odoo_price_cents(deployment)
            subscription_id = self.subscription_of[deployment.id]
            millis = ledger_totals.get((deployment.id, window.period), 0)
            lines.append(
                OdooLine(
                    plan.id,
                    f"NexaCloud {plan.name} plan — {deployment.name} ({days}/{window.days} days)",
                    (Decimal(days) / window.days).quantize(Decimal("0.000001")),
                    cents_to_dollars(price),
                    base_charge_cents(price, days, window.days),
                    subscription_id,
                )
            )
            lines.append(
                OdooLine(
                    OVERAGE_PRODUCT_ID,
                    f"CPU overage — {deployment.name}",
                    _excess_hours(plan, millis).quantize(Decimal("0.000001")),
                    plan.overage_cents_per_cpu_hour / 100,
                    _overage(plan, millis),
                    subscription_id,
                )
            )
        if role is Role.ONE_CENT_OFF:
            lines[0] = replace(lines[0], amount_cents=lines[0].amount_cents + 1)
        elif role in (Role.UNEXPLAINED_LINE, Role.WAIVED_ONBOARDING_FEE):
            cents = UNEXPLAINED_LINE_CENTS if role is Role.UNEXPLAINED_LINE else WAIVED_FEE_CENTS
            lines.append(
                OdooLine(
                    ONBOARDING_PRODUCT_ID,
                    "Onboarding assistance",
                    Decimal(1),
                    cents_to_dollars(cents),
                    cents,
                    None,
                )
            )

        province = "ON" if role is Role.WRONG_PROVINCE_TAX else customer.province
        undated = role is Role.UNDATED_LINES
        head = OdooInvoiceHead(
            partner_id=self.partner_of[customer.id],
            currency_id=USD_CURRENCY_ID if role is Role.INVOICE_IN_USD else CAD_CURRENCY_ID,
            # Billed in arrears on the 1st; the undated invoice is dated inside its period instead.
            invoice_date=window.last_day if undated else _months_before(window.period, -1),
            invoice_origin=", ".join(
                dict.fromkeys(
                    self.subscription_name[line.subscription_id] for line in lines if line.subscription_id
                )
            ),
            window=window,
            tax_rate=tax_rate(province, window.period),
            rounding=TaxRounding.GLOBALLY if role is Role.GLOBAL_TAX_ROUNDING else TaxRounding.PER_LINE,
        )
        if role is Role.CANCELLED_INVOICE:
            # The first attempt, cancelled and re-issued: present in Odoo, never counted.
            self._move(odoo, head, lines, state="cancel")
        self._move(
            odoo, head, lines, state="draft" if role is Role.DRAFT_INVOICE else "posted", dated=not undated
        )
        if role is Role.INVOICE_GENERATED_TWICE:
            self._move(odoo, head, lines, state="draft")
        if role is Role.REFUND:
            primary = self.primary_of(customer.id)
            credit = OdooLine(
                SERVICE_CREDIT_PRODUCT_ID,
                f"Service credit: outage of {primary.name}",
                Decimal(1),
                cents_to_dollars(SERVICE_CREDIT_CENTS),
                SERVICE_CREDIT_CENTS,
                self.subscription_of[primary.id],
            )
            self._move(odoo, head, [credit], move_type="out_refund")

    def _consulting_invoice(self, odoo: _OdooRecords, window: PeriodWindow) -> None:
        """An Odoo-only customer: consulting sold and invoiced in Odoo, nothing to do with NexaCloud."""
        line = OdooLine(
            ONBOARDING_PRODUCT_ID,
            "Onboarding assistance, migration workshop",
            Decimal(1),
            cents_to_dollars(CONSULTING_INVOICE_CENTS),
            CONSULTING_INVOICE_CENTS,
            None,
        )
        head = OdooInvoiceHead(
            partner_id=self.consulting_partner_id,
            currency_id=CAD_CURRENCY_ID,
            invoice_date=_months_before(window.period, -1),
            invoice_origin=None,
            window=window,
            tax_rate=tax_rate("ON", window.period),
        )
        self._move(odoo, head, [line])

    def _move(
        self,
        odoo: _OdooRecords,
        head: OdooInvoiceHead,
        lines: list[OdooLine],
        *,
        move_type: str = "out_invoice",
        state: str = "posted",
        dated: bool = True,
    ) -> None:
        """One account.move with its product lines; ``dated`` lines carry the period as deferred dates."""
        taxes = line_taxes_cents([line.amount_cents for line in lines], head.tax_rate, head.rounding)
        subtotal, tax = sum(line.amount_cents for line in lines), sum(taxes)
        move_id = odoo.add(
            "account.move",
            name=odoo.invoice_name(move_type, state, head.invoice_date),
            move_type=move_type,
            state=state,
            partner_id=head.partner_id,
            currency_id=head.currency_id,
            invoice_date=head.invoice_date.isoformat(),
            invoice_origin=head.invoice_origin or None,
            amount_untaxed=_dollars(subtotal),
            amount_tax=_dollars(tax),
            amount_total=_dollars(subtotal + tax),
        )
        odoo.invoice_totals[(head.partner_id, head.window.period)].append(
            {"move_type": move_type, "state": state, "subtotal": subtotal, "tax": tax}
        )
        window = head.window
        for line, line_tax in zip(lines, taxes, strict=True):
            odoo.add(
                "account.move.line",
                name=line.name,
                move_id=move_id,
                display_type="product",
                product_id=line.product_id,
                quantity=float(line.quantity),
                price_unit=float(line.price_unit),
                price_subtotal=_dollars(line.amount_cents),
                price_total=_dollars(line.amount_cents + line_tax),
                subscription_id=line.subscription_id,
                deferred_start_date=window.period.isoformat() if dated else None,
                deferred_end_date=window.last_day.isoformat() if dated else None,
            )

    def _odoo_mapping(self, odoo: _OdooRecords) -> None:
        """The importer's external ids: nexacloud.customer_<id> and nexacloud.deployment_<id>."""
        for customer_id, partner_id in sorted(self.partner_of.items()):
            odoo.add(
                "ir.model.data",
                module="nexacloud",
                name=f"customer_{customer_id}",
                model="res.partner",
                res_id=partner_id,
            )
        for deployment_id, subscription_id in sorted(self.subscription_of.items()):
            odoo.add(
                "ir.model.data",
                module="nexacloud",
                name=f"deployment_{deployment_id}",
                model="sale.order",
                res_id=subscription_id,
            )

    # --- ground truth -----------------------------------------------------------------------

    def manifest(self, odoo: _OdooRecords) -> dict[str, Any]:
        """The ground truth: injected differences, edge cases and every expected reconciliation row."""
        differences, edge_cases = [], []
        for casting in self.castings:
            periods = [casting.period] if casting.period is not None else [w.period for w in self.closed]
            for period in periods:
                entry = {
                    "period": period.isoformat(),
                    "customer_id": casting.customer_id,
                    "partner_id": self._expected_partner(casting.customer_id),
                    "status": casting.spec.status,
                    "role": casting.role.value,
                    "description": self._describe(casting, self.window_of[period], odoo),
                }
                (differences if casting.spec.difference else edge_cases).append(entry)
        self._check_ground_truth(odoo)
        expected = []
        for window in self.closed:
            for customer in self.customers:
                role = self.role_in(customer.id, window.period)
                status = self.casting_of_customer[customer.id].spec.status if role else "match"
                expected.append(self._expected_row(window.period, customer.id, status))
            partner = self.casting_of_role[Role.PARTNER_NOT_FROM_NEXACLOUD]
            if partner.period == window.period:
                expected.append(self._expected_row(window.period, None, partner.spec.status))
        return {
            "seed": self.seed,
            "scale": asdict(self.scale),
            "timezone": self.timezone,
            "periods": [
                {
                    "period": w.period.isoformat(),
                    "closed": w is not self.provisional,
                    "provisional": w is self.provisional,
                }
                for w in self.windows
            ],
            "provisional_usage_cutoff": self.usage_cutoff.strftime("%Y-%m-%d %H:%M:%S"),
            "tolerance_cents": TOLERANCE_CENTS,
            "statuses": list(STATUSES),
            "plans": [
                {
                    "code": plan.code,
                    "monthly_price_cents": plan.monthly_price_cents,
                    "included_cpu_seconds": plan.included_cpu_seconds,
                    "overage_cents_per_cpu_hour": str(plan.overage_cents_per_cpu_hour),
                }
                for plan in PLANS
            ],
            "differences": sorted(differences, key=_manifest_order),
            "edge_cases": sorted(edge_cases, key=_manifest_order),
            "expected": sorted(expected, key=_manifest_order),
        }

    def _expected_partner(self, customer_id: int | None) -> int | None:
        if customer_id is None:
            return self.consulting_partner_id
        return self.partner_of.get(customer_id)

    def _expected_row(self, period: date, customer_id: int | None, status: str) -> dict[str, Any]:
        return {
            "period": period.isoformat(),
            "customer_id": customer_id,
            "partner_id": self._expected_partner(customer_id),
            "status": status,
        }

    def _describe(self, casting: Casting, window: PeriodWindow, odoo: _OdooRecords) -> str:
        role = casting.role
        if casting.customer_id is None:
            (invoice,) = odoo.invoice_totals[(self.consulting_partner_id, window.period)]
            return (
                f"Odoo partner {self.consulting_partner_id} (Lakeshore Consulting Group) has no NexaCloud "
                f"mapping and an invoice of {format_cents(invoice['subtotal'] + invoice['tax'])} for an "
                f"onboarding workshop."
            )
        customer = self.customer_by_id[casting.customer_id]
        primary = self.primary_of(customer.id)
        nexacloud = self.nexacloud_invoice[(customer.id, window.period)]
        total = format_cents(nexacloud.total_cents)
        rule = tax_rule(customer.province, window.period)
        if role is Role.ONE_CENT_OFF:
            return (
                f"Odoo's plan fee line for deployment {primary.id} is one cent above NexaCloud's; usage, "
                f"prices and tax rule agree and no line sits on a half cent."
            )
        if role is Role.GLOBAL_TAX_ROUNDING:
            odoo_tax = sum(
                t["tax"] for t in odoo.invoice_totals[(self.partner_of[customer.id], window.period)]
            )
            return (
                f"Odoo rounded the {rule.label} of this {len(nexacloud.lines)}-line invoice globally "
                f"({format_cents(odoo_tax)}) where NexaCloud rounds per line ({format_cents(nexacloud.tax_cents)}); "
                f"subtotals agree."
            )
        if role in (Role.LOST_USAGE_PUSHES, Role.DOUBLED_USAGE_PUSHES):
            facts = self.facts[role]
            days = " and ".join(day.isoformat() for day in facts["days"])
            seconds = Decimal(facts["millis"]).scaleb(-3)
            if role is Role.LOST_USAGE_PUSHES:
                return (
                    f"The usage pushes of deployment {facts['deployment'].id} for {days} (local) never reached "
                    f"Odoo: its ledger is {seconds:,} CPU-seconds short and its overage lower."
                )
            return (
                f"The usage pushes of deployment {facts['deployment'].id} for {days} (local) were retried with "
                f"new idempotency keys: Odoo's ledger counts {seconds:,} CPU-seconds twice."
            )
        if role is Role.OLD_PLAN_PRICE:
            return (
                f"Odoo's subscription for deployment {primary.id} still carries the old {primary.plan.name} price "
                f"{format_cents(self._odoo_price_cents(primary))} instead of "
                f"{format_cents(primary.plan.monthly_price_cents)}; Odoo's invoice uses it."
            )
        if role is Role.WRONG_PROVINCE_TAX:
            return (
                f"Odoo taxes this {customer.province} customer at Ontario's "
                f"{tax_rule('ON', window.period).label} instead of {rule.label}; subtotals agree."
            )
        if role is Role.UNEXPLAINED_LINE:
            return (
                f"Odoo's invoice carries an extra {format_cents(UNEXPLAINED_LINE_CENTS)} onboarding line that "
                f"NexaCloud never billed; usage, rates and tax rule agree."
            )
        if role is Role.NO_ODOO_INVOICE:
            return f"Odoo has no invoice for this mapped customer although NexaCloud billed {total}."
        if role is Role.VOID_NEXACLOUD_INVOICE:
            return (
                f"NexaCloud voided its invoice {nexacloud.stripe_invoice_id} ({total}) for the period; Odoo "
                f"invoiced normally."
            )
        if role is Role.CUSTOMER_NOT_IMPORTED:
            return (
                f"The customer was never imported into Odoo: no ir.model.data mapping, a hand-made partner "
                f"{self.facts[role]['partner_id']} without ref, no subscriptions and no invoices."
            )
        if role is Role.INVOICE_GENERATED_TWICE:
            return (
                "Odoo generated the invoice twice: a posted one and a draft copy for the same subscriptions."
            )
        if role is Role.INVOICE_IN_USD:
            return "Odoo's invoice is in USD while NexaCloud bills the customer in CAD; the amounts are the same numbers."
        if role is Role.WAIVED_ONBOARDING_FEE:
            return (
                f"Odoo billed a {format_cents(WAIVED_FEE_CENTS)} onboarding fee plus tax that NexaCloud did not; "
                f"accepted in waivers.csv."
            )
        return self._describe_edge_case(casting, customer, primary, window, rule.label)

    def _describe_edge_case(
        self, casting: Casting, customer: Customer, primary: Deployment, window: PeriodWindow, tax_label: str
    ) -> str:
        role = casting.role
        others = [d for d in self.deployments_of[customer.id] if not d.primary]
        if role in (Role.CREATED_MID_MONTH, Role.TERMINATED_MID_MONTH, Role.DST_CHANGE):
            deployment = others[0]
            moment = (
                deployment.created_at if role is not Role.TERMINATED_MID_MONTH else deployment.terminated_at
            )
            local = moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M %Z")
            days = active_days(deployment.created_at, deployment.terminated_at, window)
            verb = "terminated" if role is Role.TERMINATED_MID_MONTH else "created"
            sentence = (
                f"Deployment {deployment.id} was {verb} {local}: {days} of {window.days} days of its plan fee"
            )
            if role is Role.DST_CHANGE:
                return (
                    f"{sentence}; created the night the clocks changed, its usage windows cross the change."
                )
            return f"{sentence}."
        if role is Role.SEVERAL_DEPLOYMENTS:
            return f"{len(self.deployments_of[customer.id])} deployments billed on one invoice."
        if role is Role.LATE_USAGE:
            return (
                f"Deployment {primary.id}'s usage of the period's last six hours was ingested a day after the "
                f"period closed (recorded_at after its end) and is billed in the period on both sides."
            )
        if role is Role.REFUND:
            return (
                f"NexaCloud credits {format_cents(SERVICE_CREDIT_CENTS)} on its invoice; Odoo issues the invoice "
                f"in full and a credit note (out_refund) of the same amount, so the net totals agree."
            )
        if role is Role.ZERO_USAGE:
            return f"Deployment {primary.id} recorded no usage in the period: plan fee only, no overage."
        if role is Role.USAGE_AT_QUOTA:
            return (
                f"Deployment {primary.id} used exactly its {primary.plan.included_cpu_seconds:,} included "
                f"CPU-seconds: no overage."
            )
        if role is Role.DRAFT_INVOICE:
            return "Odoo's invoice is still a draft, which counts during dual-run."
        if role is Role.CANCELLED_INVOICE:
            return "Odoo holds a cancelled first attempt of the invoice beside the posted one; cancelled ones do not count."
        if role is Role.UNDATED_LINES:
            return (
                f"Odoo's invoice lines carry no deferred dates; the invoice is dated {window.last_day.isoformat()}, "
                f"inside the period."
            )
        return f"A customer in {customer.province}, taxed at {tax_label}."

    def _check_ground_truth(self, odoo: _OdooRecords) -> None:
        """Refuse to write a manifest whose shaped cases do not have the shape their status claims."""
        for casting in self.castings:
            if casting.customer_id is None or not self.imported(casting.customer_id):
                continue
            periods = [casting.period] if casting.period is not None else [w.period for w in self.closed]
            for period in periods:
                nexacloud = self.nexacloud_invoice[(casting.customer_id, period)]
                moves = odoo.invoice_totals.get((self.partner_of[casting.customer_id], period), [])
                counted = [m for m in moves if m["state"] != "cancel"]
                sign = {"out_invoice": 1, "out_refund": -1}
                odoo_subtotal = sum(sign[m["move_type"]] * m["subtotal"] for m in counted)
                odoo_tax = sum(sign[m["move_type"]] * m["tax"] for m in counted)
                delta = odoo_subtotal + odoo_tax - nexacloud.total_cents
                status = casting.spec.status
                if status == "match":
                    ok = delta == 0
                elif status == "within_tolerance":
                    ok = 0 < abs(delta) <= TOLERANCE_CENTS
                elif status in ("rounding_difference", "tax_mismatch"):
                    ok = odoo_subtotal == nexacloud.subtotal_cents and abs(delta) > TOLERANCE_CENTS
                elif status in ("usage_mismatch", "rate_mismatch", "amount_mismatch", "waived"):
                    ok = abs(delta) > TOLERANCE_CENTS
                else:
                    ok = True
                if not ok:
                    raise RuntimeError(
                        f"sandbox generator bug: {casting.role.value} of customer {casting.customer_id} in "
                        f"{period.isoformat()} should read as {status}, but Odoo − NexaCloud = {delta} cents"
                    )

    def waivers_csv(self) -> str:
        """The waiver file accepting the ``waived`` difference (delta = Odoo − NexaCloud total)."""
        casting = self.casting_of_role[Role.WAIVED_ONBOARDING_FEE]
        customer = self.customer_by_id[casting.customer_id]
        fee_tax = line_taxes_cents([WAIVED_FEE_CENTS], tax_rate(customer.province, casting.period))[0]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["period", "customer_id", "delta_cents", "reason", "approver", "expires_on"])
        writer.writerow(
            [
                casting.period.isoformat(),
                customer.id,
                WAIVED_FEE_CENTS + fee_tax,
                "Onboarding session sold and invoiced in Odoo only; NexaCloud does not bill services.",
                "Dana Whitfield, Controller",
                # Long-lived, so the ground truth holds whether a waiver's expiry is judged against
                # the period or against the day the reconciliation runs.
                casting.period.replace(year=casting.period.year + WAIVER_YEARS).isoformat(),
            ]
        )
        return buffer.getvalue()


# --- writing the NexaCloud database --------------------------------------------------------------


class _DriverValues:
    """Python values as the database driver takes them, bound exactly as SQLAlchemy's types would.

    Rows go to the driver's ``executemany`` directly: SQLAlchemy's per-row type processing costs
    more than the insert itself at hundreds of thousands of usage records. On SQLite, where
    ``DateTime`` ignores tzinfo, timestamps are naive UTC text in SQLAlchemy's storage format
    (``2026-10-01 04:00:00.000000``, so its queries compare them correctly) and NUMERIC is a float,
    as SQLAlchemy binds it; PostgreSQL takes aware datetimes and Decimals as they are.
    """

    def __init__(self, dialect_name: str):
        self.sqlite = dialect_name == "sqlite"

    def timestamp(self, moment: datetime | None) -> datetime | str | None:
        if moment is None or not self.sqlite:
            return moment
        return _utc_text(moment, "microseconds")

    def day(self, day: date) -> date | str:
        return day.isoformat() if self.sqlite else day

    def decimal(self, value: Decimal) -> Decimal | float:
        return float(value) if self.sqlite else value

    def millis(self, millis: int) -> Decimal | float:
        # int / int is correctly rounded, the same float as float(Decimal("123.456")).
        return millis / MILLIS_PER_SECOND if self.sqlite else Decimal(millis).scaleb(-3)


def _write_nexacloud(
    url: str,
    world: _World,
    usage: list[UsageRecord],
    invoices: list[NexaCloudInvoice],
    report: Progress,
) -> dict[str, int]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)
    value = _DriverValues(engine.dialect.name)
    stamp = value.timestamp
    # Every deployment shares the same few thousand window boundaries.
    window_stamp = functools.cache(value.timestamp)
    tables: list[tuple[Table, Iterable[tuple[Any, ...]]]] = [
        (
            schema.customers,
            (
                (c.id, c.name, c.email, c.province, BILLING_CURRENCY, "active", stamp(c.created_at))
                for c in world.customers
            ),
        ),
        (
            schema.plans,
            (
                (
                    p.id,
                    p.code,
                    p.name,
                    p.monthly_price_cents,
                    p.included_cpu_seconds,
                    value.decimal(p.overage_cents_per_cpu_hour),
                    BILLING_CURRENCY,
                )
                for p in PLANS
            ),
        ),
        (
            schema.deployments,
            (
                (
                    d.id,
                    d.customer_id,
                    d.plan.id,
                    d.name,
                    d.region,
                    d.status,
                    stamp(d.created_at),
                    stamp(d.terminated_at),
                )
                for d in world.deployments
            ),
        ),
        (
            schema.usage_records,
            (
                (
                    r.id,
                    r.deployment_id,
                    USAGE_METRIC,
                    window_stamp(r.window_start),
                    window_stamp(r.window_end),
                    value.millis(r.millis),
                    stamp(r.recorded_at),
                    r.idempotency_key,
                )
                for r in usage
            ),
        ),
        (
            schema.invoices,
            (
                (
                    i.id,
                    i.customer_id,
                    value.day(i.window.period),
                    value.day(i.window.last_day),
                    BILLING_CURRENCY,
                    i.subtotal_cents,
                    i.tax_cents,
                    i.total_cents,
                    i.status,
                    i.stripe_invoice_id,
                    stamp(i.issued_at),
                )
                for i in invoices
            ),
        ),
        (
            schema.invoice_lines,
            (
                (
                    line_id,
                    invoice.id,
                    line.deployment_id,
                    line.kind.value,
                    line.description,
                    value.decimal(line.quantity),
                    value.decimal(line.unit_price_cents),
                    line.amount_cents,
                    line.tax_cents,
                )
                for line_id, (invoice, line) in enumerate(
                    ((invoice, line) for invoice in invoices for line in invoice.lines), start=1
                )
            ),
        ),
    ]
    counts = {}
    try:
        schema.metadata.drop_all(engine)
        schema.metadata.create_all(engine)
        with engine.begin() as connection:
            for table, rows in tables:
                counts[table.name] = _insert(connection, table, rows, report)
    finally:
        engine.dispose()
    return counts


def _insert(connection: Connection, table: Table, rows: Iterable[tuple[Any, ...]], report: Progress) -> int:
    """Insert rows holding every column of ``table`` in its order, in bulk; returns the row count.

    PostgreSQL through psycopg 3 gets ``COPY … FROM STDIN`` (about twice as fast as executemany at
    hundreds of thousands of rows); every other database ``executemany`` in chunks.
    """
    columns = ", ".join(column.name for column in table.columns)
    written = 0

    def count(batch: int) -> None:
        nonlocal written
        before, written = written, written + batch
        if before // 100_000 != written // 100_000:
            report(f"nexacloud {table.name}: {written:,} rows …")

    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count(1)
    else:
        marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        markers = ", ".join([marker] * len(table.columns))
        statement = f"INSERT INTO {table.name} ({columns}) VALUES ({markers})"
        iterator = iter(rows)
        while chunk := list(islice(iterator, INSERT_CHUNK_ROWS)):
            connection.exec_driver_sql(statement, chunk)
            count(len(chunk))
    report(f"nexacloud {table.name}: {written:,} rows")
    return written


# --- small helpers -------------------------------------------------------------------------------


def _months_before(period: date, months: int) -> date:
    """The period ``months`` months before ``period`` (after it, for a negative count)."""
    index = period.year * 12 + period.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def _dst_change_day(closed: list[PeriodWindow], zone: ZoneInfo) -> date | None:
    """The local day of the latest DST change in a closed period, a November one preferred."""
    changes = []
    for window in closed:
        for day in window.local_days():
            start = datetime.combine(day, time.min, tzinfo=zone)
            end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
            if start.utcoffset() != end.utcoffset():
                changes.append(day)
    if not changes:
        return None
    return max(changes, key=lambda day: (day.month == 11, day))


def _align_up(moment: datetime, seconds: int) -> datetime:
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


def _millis_for_overage(plan: Plan, overage_cents: int) -> int:
    """CPU milliseconds in a period whose overage charge is exactly ``overage_cents``."""
    excess = round_half_up(
        Decimal(overage_cents) * SECONDS_PER_HOUR * MILLIS_PER_SECOND / plan.overage_cents_per_cpu_hour
    )
    millis = plan.included_millis + excess
    if _overage(plan, millis) != overage_cents:
        raise RuntimeError(f"sandbox generator bug: {millis} ms do not bill {overage_cents} cents of overage")
    return millis


def _overage(plan: Plan, millis: int) -> int:
    return overage_charge_cents(
        Decimal(millis).scaleb(-3), plan.included_cpu_seconds, plan.overage_cents_per_cpu_hour
    )


def _excess_hours(plan: Plan, millis: int) -> Decimal:
    return max(Decimal(0), Decimal(millis).scaleb(-3) - plan.included_cpu_seconds) / SECONDS_PER_HOUR


def _not_a_half(fraction: Decimal) -> bool:
    return fraction != Decimal("0.5")


def _just_above_a_half(fraction: Decimal) -> bool:
    return Decimal("0.51") <= fraction < Decimal("0.60")


def _totals(rows: Iterable[tuple[int, date, int]]) -> dict[tuple[int, date], int]:
    totals: dict[tuple[int, date], int] = defaultdict(int)
    for deployment_id, period, millis in rows:
        totals[(deployment_id, period)] += millis
    return dict(totals)


def _utc_text(moment: datetime, timespec: str) -> str:
    """``2026-10-01 04:00:00[.000000]`` for a UTC moment; the hot path of writing usage, so no conversion."""
    text = moment.isoformat(sep=" ", timespec=timespec)
    if not text.endswith("+00:00"):
        raise ValueError(f"sandbox timestamps are aware UTC datetimes, got {moment!r}")
    return text[:-6]


def _dollars(cents: int) -> float:
    return float(cents_to_dollars(cents))


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


def _manifest_order(row: dict[str, Any]) -> tuple:
    return (
        row["period"],
        row["customer_id"] is None,
        row["customer_id"] or 0,
        row["partner_id"] or 0,
        row.get("role", ""),
    )


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
# How long after a window closes its record is ingested: a few minutes, or a day for the backlog.
INGESTION_DELAYS = tuple(timedelta(seconds=seconds) for seconds in range(120, 540))
LATE_INGESTION_DELAYS = tuple(timedelta(hours=26, seconds=seconds) for seconds in range(600))
STRIPE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
