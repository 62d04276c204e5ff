"""Odoo's side of the sandbox: the usage ledger NexaCloud pushed, and the records a correct Odoo holds.

``UsagePushes`` is what Odoo's ``fusion.billing.usage`` received (every metered window, except the
injected lost, doubled, re-keyed, misdirected and altered pushes and the reading NexaCloud could not
key), a stream written straight to the test double's store, keeping the faulted records for the
ground truth; ``OdooBilling`` builds, in the storage format of
``sandbox.odoo_models``, Odoo's own records (currencies, provinces, the monthly plan, products sold
only in Odoo, partners NexaCloud never had) and, once the importer has created the partners,
products and subscriptions from NexaCloud (``adopt_import``), the invoices Odoo produced from its
own data (subscription prices, its ledger, the partner's tax rule), each due 30 days after its date
and paid when due before the sandbox's fixed "now" (so nobody is overdue until the lifecycle stage,
``sandbox.lifecycle``, says so). Every injected difference is a change
to that data or to the invoices, whose effect flows through the same arithmetic as a correct
invoice: the sandbox's own (``independent_charges``), as NexaCloud's, and not ``billing.charges``,
the code the reconciliation tests.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, NamedTuple

from fusion_billing_assets.billing.charges import TaxRounding
from fusion_billing_assets.billing.money import cents_to_dollars
from fusion_billing_assets.billing.periods import PeriodWindow, local_day, local_midnight_utc
from fusion_billing_assets.sandbox.independent_charges import (
    active_days,
    base_fee_cents,
    days_in_period,
    line_taxes,
    tax_rate,
)
from fusion_billing_assets.sandbox.nexacloud_billing import (
    SERVICE_CREDIT_CENTS,
    UsageRecord,
    align_up,
    excess_cpu_hours,
    offset_days,
    overage_cents,
)
from fusion_billing_assets.sandbox.odoo_models import MODELS
from fusion_billing_assets.sandbox.scenarios import DELIVERY_ROLES, Role
from fusion_billing_assets.sandbox.world import (
    MILLIS_PER_SECOND,
    PLANS,
    USAGE_METRIC,
    Customer,
    Deployment,
    World,
    months_before,
    utc_text,
)

# Odoo's own records, there before the import: their ids come first, so an imported partner's id
# is never its customer's NexaCloud id.
CAD_CURRENCY_ID = 1
USD_CURRENCY_ID = 2
COMPANY_PARTNER_ID = 1
MONTHLY_PLAN_ID = 1
SERVICE_CREDIT_PRODUCT_ID = 1
ONBOARDING_PRODUCT_ID = 2
# Canada's provinces and territories, as Odoo's base module ships them (external id base.state_ca_<code>).
PROVINCES = {
    "AB": "Alberta",
    "BC": "British Columbia",
    "MB": "Manitoba",
    "NB": "New Brunswick",
    "NL": "Newfoundland and Labrador",
    "NS": "Nova Scotia",
    "NT": "Northwest Territories",
    "NU": "Nunavut",
    "ON": "Ontario",
    "PE": "Prince Edward Island",
    "QC": "Quebec",
    "SK": "Saskatchewan",
    "YT": "Yukon",
}

# Amounts of the injected cases, in cents.
OLD_PLAN_PRICE_DISCOUNT_CENTS = 400
UNEXPLAINED_LINE_CENTS = 2_500
WAIVED_FEE_CENTS = 1_500
CONSULTING_INVOICE_CENTS = 35_000

# Odoo's payment terms: every invoice is due this many days after its invoice date (net 30).
PAYMENT_TERM_DAYS = 30


class LedgerEntry(NamedTuple):
    """One usage push as Odoo's ``fusion.billing.usage`` holds it (under ``deployment_id``'s subscription)."""

    deployment_id: int
    window_start: datetime
    millis: int
    idempotency_key: str
    period: date


@dataclass(frozen=True)
class PushFault:
    """The pushes of one deployment that were lost or sent twice, for the ground truth to quote."""

    deployment: Deployment
    days: list[date]
    millis: int


class DeliveryKind(StrEnum):
    """How a usage record failed to be delivered (docs/design.md §10)."""

    MISSING = "missing"
    QUANTITY_DIFFERS = "quantity_differs"
    WRONG_SUBSCRIPTION = "wrong_subscription"
    EXTRA = "extra"


class DeliveryFault(NamedTuple):
    """One record the pushes dropped, altered or added, as the generator made it so."""

    role: Role
    kind: DeliveryKind
    period: date
    # The NexaCloud record's deployment; for an extra record, the one whose subscription holds it.
    deployment_id: int
    # The deployment whose subscription the ledger record is under (for a missing one, its own).
    ledger_deployment_id: int
    idempotency_key: str
    window_start: datetime
    nexacloud_millis: int | None  # None: an extra record, which NexaCloud never metered
    odoo_millis: int | None  # None: a missing record


@dataclass(frozen=True)
class UsageLedger:
    """What the ledger received, in sum: CPU milliseconds per (deployment, period), and its faults."""

    totals: dict[tuple[int, date], int]
    lost: PushFault
    doubled: PushFault
    # The usage records without an idempotency key: pushes are keyed, so they were never sent.
    unkeyed: tuple[UsageRecord, ...]
    # Every record the pushes dropped, altered or added, in the stream's order.
    delivery_faults: tuple[DeliveryFault, ...] = ()


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
    tax_rate: Fraction
    rounding: TaxRounding = TaxRounding.PER_LINE


@dataclass
class OdooRecords:
    """Odoo records per model, in the storage format of ``odoo_models`` (every stored field present).

    Beside the records, the ids the ground truth needs: each imported customer's partner and each
    deployment's subscription, the Odoo-only consulting partner and the hand-made partner of the
    customer that was never imported.
    """

    # The records added since the last ``take``.
    models: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {model: [] for model in MODELS})
    # Per (partner, period): each move's type, state, subtotal and tax in cents.
    invoice_totals: dict[tuple[int, date], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    partner_of: dict[int, int] = field(default_factory=dict)
    subscription_of: dict[int, int] = field(default_factory=dict)
    subscription_name: dict[int, str] = field(default_factory=dict)
    # Plan code → the imported plan product; and the imported overage product.
    product_of: dict[str, int] = field(default_factory=dict)
    overage_product_id: int = 0
    consulting_partner_id: int = 0
    hand_made_partner_id: int | None = None
    _next_ids: dict[str, int] = field(default_factory=lambda: defaultdict(lambda: 1))
    _invoice_numbers: Counter[tuple[str, int]] = field(default_factory=Counter)

    def add(self, model_name: str, record_id: int | None = None, /, **values: Any) -> int:
        fields = MODELS[model_name]
        unknown = set(values) - set(fields)
        if unknown:
            raise KeyError(f"{model_name} has no field(s) {sorted(unknown)} in the sandbox's Odoo model")
        if record_id is None:
            record_id = self._next_ids[model_name]
        self._next_ids[model_name] = max(self._next_ids[model_name], record_id + 1)
        record = {"id": record_id}
        for name, model_field in fields.items():
            # One2many fields are derived from their inverse by the test double.
            if model_field.type != "one2many":
                record[name] = values.get(name)
        self.models[model_name].append(record)
        return record_id

    def invoice_name(self, move_type: str, state: str, invoice_date: date) -> str:
        """Odoo's sequence, ``INV/2026/00042`` (``RINV`` for credit notes); drafts have none yet."""
        if state == "draft":
            return "/"
        prefix = "INV" if move_type == "out_invoice" else "RINV"
        self._invoice_numbers[(prefix, invoice_date.year)] += 1
        return f"{prefix}/{invoice_date.year}/{self._invoice_numbers[(prefix, invoice_date.year)]:05d}"

    def take(self) -> dict[str, list[dict[str, Any]]]:
        """The records added since the last call, to write; ids keep counting on."""
        taken, self.models = self.models, {model: [] for model in MODELS}
        return taken


# --- the usage ledger ----------------------------------------------------------------------------


# Where in their period the delivery faults fall: (local day counted from the period's first, local
# hour); the first usage window starting at or after it is the one faulted.
LOST_WINDOWS_AT = (7, 10)
LOST_WINDOWS = 3
RETRY_AT = (11, 15)
WRONG_SUBSCRIPTION_AT = (13, 9)
# From here on, the first record with a fraction of a CPU-second is pushed truncated to whole seconds.
OTHER_QUANTITY_FROM = (19, 13)


class UsagePushes:
    """What Odoo's usage ledger received: every push, except the injected faults.

    A filter over NexaCloud's metering stream (``entries``), which keeps only sums and the few
    faulted records: once the stream is read, ``ledger()`` tells the totals and the faults. A
    record without an idempotency key is never pushed: Odoo deduplicates on the key, so NexaCloud
    sends none without one; nor is a record of a deployment Odoo has no subscription for.

    The faults, each on the primary deployment of its role's customer in its role's period:

    - ``LOST_USAGE_PUSHES``: two local days never pushed (missing);
    - ``DOUBLED_USAGE_PUSHES``: a local day sent again with ``-retry`` keys (extra);
    - ``PUSHES_LOST_UNDER_QUOTA``: a few consecutive windows never pushed (missing);
    - ``LOST_DAY_OFFSET_BY_DOUBLED_DAY``: a local day never pushed and another, whose CPU metering
      made equal, sent again with freshly minted keys (missing, extra; the period's totals agree);
    - ``RETRY_WITH_NEW_KEY``: one push sent again with a freshly minted key (extra);
    - ``PUSHED_TO_WRONG_SUBSCRIPTION``: one record pushed, with its own key, to the subscription of
      ``RECEIVED_ANOTHER_CUSTOMERS_PUSH``'s customer instead of its own (wrong_subscription);
    - ``PUSHED_WITH_OTHER_QUANTITY``: one record pushed under its own key truncated to whole
      CPU-seconds (quantity_differs).
    """

    def __init__(self, world: World):
        self._world = world
        self._not_imported = {d.id for d in world.deployments if not world.imported(d.customer_id)}
        primary = {
            c.role: world.primary_of(c.customer_id) for c in world.castings if c.customer_id is not None
        }
        period = {c.role: c.period for c in world.castings}
        self._primary, self._period = primary, period
        lost = world.casting_of_role[Role.LOST_USAGE_PUSHES]
        self._lost_deployment = primary[Role.LOST_USAGE_PUSHES]
        self._lost_days = {lost.period + timedelta(days=9), lost.period + timedelta(days=10)}
        doubled = world.casting_of_role[Role.DOUBLED_USAGE_PUSHES]
        self._doubled_deployment = primary[Role.DOUBLED_USAGE_PUSHES]
        self._doubled_day = doubled.period + timedelta(days=19)
        _, _, self._offset_lost_day, self._offset_doubled_day = offset_days(world)
        self._lost_from = self._window_at(Role.PUSHES_LOST_UNDER_QUOTA, LOST_WINDOWS_AT)
        self._lost_until = self._lost_from + LOST_WINDOWS * world.usage_window
        self._retry_at = self._window_at(Role.RETRY_WITH_NEW_KEY, RETRY_AT)
        self._misdirected_at = self._window_at(Role.PUSHED_TO_WRONG_SUBSCRIPTION, WRONG_SUBSCRIPTION_AT)
        self._truncated_from = self._window_at(Role.PUSHED_WITH_OTHER_QUANTITY, OTHER_QUANTITY_FROM)
        self._truncated = False
        # (deployment, period) → the roles faulting its pushes: the only records the slow path reads.
        self._faulted: dict[tuple[int, date], Role] = {
            (primary[role].id, period[role]): role
            for role in (Role.LOST_USAGE_PUSHES, Role.DOUBLED_USAGE_PUSHES, *DELIVERY_ROLES)
            if role is not Role.RECEIVED_ANOTHER_CUSTOMERS_PUSH
        }
        self._faulted_ids = {deployment_id for deployment_id, _ in self._faulted}
        self._totals: dict[tuple[int, date], int] = defaultdict(int)
        self._unkeyed: list[UsageRecord] = []
        self._faults: list[DeliveryFault] = []
        self._lost_millis = self._doubled_millis = 0

    def _window_at(self, role: Role, at: tuple[int, int]) -> datetime:
        """The first usage window of ``role``'s period starting at or after (local day, local hour)."""
        world = self._world
        day, hour = at
        moment = local_midnight_utc(self._period[role] + timedelta(days=day), world.zone) + timedelta(
            hours=hour
        )
        return align_up(moment, int(world.usage_window.total_seconds()))

    def entries(self, usage: Iterable[UsageRecord]) -> Iterator[LedgerEntry]:
        totals = self._totals
        not_imported, faulted_ids = self._not_imported, self._faulted_ids
        for record in usage:
            if record.idempotency_key is None:
                self._unkeyed.append(record)
                continue
            if record.deployment_id in not_imported:
                continue
            if record.deployment_id in faulted_ids:
                role = self._faulted.get((record.deployment_id, record.period))
                if role is not None:
                    for entry in self._pushed(role, record):
                        totals[(entry.deployment_id, entry.period)] += entry.millis
                        yield entry
                    continue
            totals[(record.deployment_id, record.period)] += record.millis
            yield LedgerEntry(
                record.deployment_id,
                record.window_start,
                record.millis,
                record.idempotency_key,
                record.period,
            )

    def _pushed(self, role: Role, record: UsageRecord) -> list[LedgerEntry]:
        """What the ledger received of one record of a faulted deployment and period."""
        entry = LedgerEntry(
            record.deployment_id, record.window_start, record.millis, record.idempotency_key, record.period
        )
        start = record.window_start
        day = local_day(start, self._world.timezone)
        if (role is Role.LOST_USAGE_PUSHES and day in self._lost_days) or (
            role is Role.LOST_DAY_OFFSET_BY_DOUBLED_DAY and day == self._offset_lost_day
        ):
            if role is Role.LOST_USAGE_PUSHES:
                self._lost_millis += record.millis
            self._fault(role, DeliveryKind.MISSING, record, nexacloud=record.millis)
            return []
        if role is Role.PUSHES_LOST_UNDER_QUOTA and self._lost_from <= start < self._lost_until:
            self._fault(role, DeliveryKind.MISSING, record, nexacloud=record.millis)
            return []
        if role is Role.DOUBLED_USAGE_PUSHES and day == self._doubled_day:
            # A retry after a timeout, sent with a fresh key, so Odoo's idempotency cannot catch it.
            self._doubled_millis += record.millis
            return [entry, self._sent_again(role, entry, f"{record.idempotency_key}-retry")]
        if (role is Role.LOST_DAY_OFFSET_BY_DOUBLED_DAY and day == self._offset_doubled_day) or (
            role is Role.RETRY_WITH_NEW_KEY and start == self._retry_at
        ):
            return [entry, self._sent_again(role, entry, self._minted_key(record))]
        if role is Role.PUSHED_TO_WRONG_SUBSCRIPTION and start == self._misdirected_at:
            receiver = self._primary[Role.RECEIVED_ANOTHER_CUSTOMERS_PUSH].id
            self._fault(
                role,
                DeliveryKind.WRONG_SUBSCRIPTION,
                record,
                nexacloud=record.millis,
                odoo=record.millis,
                ledger_deployment_id=receiver,
            )
            return [entry._replace(deployment_id=receiver)]
        if (
            role is Role.PUSHED_WITH_OTHER_QUANTITY
            and not self._truncated
            and start >= self._truncated_from
            and record.millis % MILLIS_PER_SECOND
        ):
            self._truncated = True
            truncated = record.millis - record.millis % MILLIS_PER_SECOND
            self._fault(role, DeliveryKind.QUANTITY_DIFFERS, record, nexacloud=record.millis, odoo=truncated)
            return [entry._replace(millis=truncated)]
        return [entry]

    def _sent_again(self, role: Role, entry: LedgerEntry, key: str) -> LedgerEntry:
        again = entry._replace(idempotency_key=key)
        self._faults.append(
            DeliveryFault(
                role,
                DeliveryKind.EXTRA,
                entry.period,
                entry.deployment_id,
                entry.deployment_id,
                key,
                entry.window_start,
                nexacloud_millis=None,
                odoo_millis=entry.millis,
            )
        )
        return again

    def _fault(
        self,
        role: Role,
        kind: DeliveryKind,
        record: UsageRecord,
        *,
        nexacloud: int | None,
        odoo: int | None = None,
        ledger_deployment_id: int | None = None,
    ) -> None:
        self._faults.append(
            DeliveryFault(
                role,
                kind,
                record.period,
                record.deployment_id,
                record.deployment_id if ledger_deployment_id is None else ledger_deployment_id,
                record.idempotency_key,
                record.window_start,
                nexacloud_millis=nexacloud,
                odoo_millis=odoo,
            )
        )

    def _minted_key(self, record: UsageRecord) -> str:
        """A key NexaCloud minted afresh for a resend: never one it issued, the same for every run."""
        return (
            f"nc-usage-{uuid.uuid5(uuid.NAMESPACE_URL, f'nexacloud-resend/{self._world.seed}/{record.id}')}"
        )

    def ledger(self) -> UsageLedger:
        return UsageLedger(
            dict(self._totals),
            lost=PushFault(self._lost_deployment, sorted(self._lost_days), self._lost_millis),
            doubled=PushFault(self._doubled_deployment, [self._doubled_day], self._doubled_millis),
            unkeyed=tuple(self._unkeyed),
            delivery_faults=tuple(self._faults),
        )


# --- the records ---------------------------------------------------------------------------------


# The ledger's columns as the Odoo test double stores them (``odoo_store.insert_rows``).
LEDGER_COLUMNS = ("id", "name", "subscription_id", "metric", "quantity", "idempotency_key", "timestamp")


class OdooBilling:
    """The Odoo records of one world: first Odoo's own records, then (the importer having created
    partners, products and subscriptions) the usage ledger as a stream of rows, then, from the
    ledger's totals, the invoices."""

    def __init__(self, world: World):
        self._billing = _OdooBilling(world)

    @property
    def records(self) -> OdooRecords:
        return self._billing.odoo

    def own_records(self) -> dict[str, list[dict[str, Any]]]:
        """What Odoo holds before the import, to write to the store."""
        self._billing.own_records()
        return self._billing.odoo.take()

    def adopt_import(self, external_ids: dict[str, int], subscription_names: dict[int, str]) -> None:
        """The importer's records, by external id (``nexacloud.customer_12`` → partner id …)."""
        self._billing.adopt_import(external_ids, subscription_names)

    def old_plan_prices(self) -> dict[int, Decimal]:
        """The plan fee someone left at its old price in Odoo: subscription id → price in dollars."""
        return self._billing.old_plan_prices()

    def ledger_rows(self, entries: Iterable[LedgerEntry]) -> Iterator[tuple[Any, ...]]:
        """``fusion.billing.usage`` rows (``LEDGER_COLUMNS``) for the pushes Odoo received."""
        subscription_of = self._billing.odoo.subscription_of
        window_text = functools.cache(lambda moment: utc_text(moment, "seconds"))
        for record_id, entry in enumerate(entries, start=1):
            # int / int is correctly rounded: the float nearest the exact three decimals.
            yield (
                record_id,
                None,
                subscription_of[entry.deployment_id],
                USAGE_METRIC,
                entry.millis / MILLIS_PER_SECOND,
                entry.idempotency_key,
                window_text(entry.window_start),
            )

    def invoices(self, ledger: UsageLedger) -> OdooRecords:
        """Odoo's invoices (``records.take()`` holds them to write), the ids the ground truth needs."""
        return self._billing.invoices(ledger)


def odoo_price_cents(world: World, deployment: Deployment) -> int:
    """The plan price on the deployment's Odoo subscription: the old one for the rate case."""
    casting = world.casting_of_customer.get(deployment.customer_id)
    if casting is not None and casting.role is Role.OLD_PLAN_PRICE:
        return deployment.plan.monthly_price_cents - OLD_PLAN_PRICE_DISCOUNT_CENTS
    return deployment.plan.monthly_price_cents


class _OdooBilling:
    """Builds the Odoo records of one world, stage by stage, consuming its random stream."""

    def __init__(self, world: World):
        self.world = world
        self.odoo = OdooRecords()
        # The sandbox's fixed "now": an invoice due before this local day has been paid.
        self.today = local_day(world.usage_cutoff, world.timezone)

    def own_records(self) -> None:
        odoo = self.odoo
        odoo.add("res.currency", CAD_CURRENCY_ID, name="CAD")
        odoo.add("res.currency", USD_CURRENCY_ID, name="USD")
        odoo.add(
            "res.partner",
            COMPANY_PARTNER_ID,
            name="Nexa Cloud Inc.",
            email="accounting@nexa.example",
            commercial_partner_id=COMPANY_PARTNER_ID,
            active=True,
            is_company=True,
        )
        odoo.add(
            "product.product",
            SERVICE_CREDIT_PRODUCT_ID,
            name="NexaCloud service credit",
            default_code="NC-SERVICE-CREDIT",
            active=True,
        )
        odoo.add(
            "product.product",
            ONBOARDING_PRODUCT_ID,
            name="Onboarding assistance",
            default_code="SRV-ONBOARDING",
            active=True,
        )
        odoo.add("sale.subscription.plan", MONTHLY_PLAN_ID, name="Monthly")
        external_ids = [
            ("base", "CAD", "res.currency", CAD_CURRENCY_ID),
            ("base", "USD", "res.currency", USD_CURRENCY_ID),
            ("base", "main_partner", "res.partner", COMPANY_PARTNER_ID),
            ("sale_subscription", "subscription_plan_month", "sale.subscription.plan", MONTHLY_PLAN_ID),
        ]
        for code, name in PROVINCES.items():
            state_id = odoo.add("res.country.state", name=name, code=code)
            external_ids.append(("base", f"state_ca_{code.lower()}", "res.country.state", state_id))
        for module, name, model, res_id in external_ids:
            odoo.add("ir.model.data", module=module, name=name, model=model, res_id=res_id)
        self._partners_odoo_only()

    def _partners_odoo_only(self) -> None:
        """Partners NexaCloud never had: a consulting client, and the customer never imported."""
        world, odoo = self.world, self.odoo
        odoo.consulting_partner_id = odoo.add(
            "res.partner",
            name="Lakeshore Consulting Group",
            email="ap@lakeshore-consulting.example",
            active=True,
            is_company=True,
        )
        for customer in world.customers:
            if not world.imported(customer.id):
                # Made by hand in Odoo, with no ref and no external id: the import leaves it out.
                odoo.hand_made_partner_id = odoo.add(
                    "res.partner", name=customer.name, email=customer.email, active=True, is_company=True
                )
        for partner in odoo.models["res.partner"]:
            partner["commercial_partner_id"] = partner["id"]

    def adopt_import(self, external_ids: dict[str, int], subscription_names: dict[int, str]) -> None:
        world, odoo = self.world, self.odoo
        for customer in world.customers:
            partner_id = external_ids.get(f"nexacloud.customer_{customer.id}")
            if partner_id is not None:
                odoo.partner_of[customer.id] = partner_id
        for deployment in world.deployments:
            subscription_id = external_ids.get(f"nexacloud.deployment_{deployment.id}")
            if subscription_id is not None:
                odoo.subscription_of[deployment.id] = subscription_id
        odoo.subscription_name.update(subscription_names)
        odoo.product_of = {plan.code: external_ids[f"nexacloud.plan_{plan.code}"] for plan in PLANS}
        odoo.overage_product_id = external_ids["nexacloud.product_cpu_overage"]

    def old_plan_prices(self) -> dict[int, Decimal]:
        world, odoo = self.world, self.odoo
        return {
            odoo.subscription_of[deployment.id]: cents_to_dollars(odoo_price_cents(world, deployment))
            for deployment in world.deployments
            if deployment.id in odoo.subscription_of
            and odoo_price_cents(world, deployment) != deployment.plan.monthly_price_cents
        }

    def invoices(self, ledger: UsageLedger) -> OdooRecords:
        world, odoo = self.world, self.odoo
        ledger_totals = ledger.totals
        for window in world.closed:
            for customer in sorted(world.customers, key=lambda c: odoo.partner_of.get(c.id) or 0):
                if not world.imported(customer.id):
                    continue
                role = world.role_in(customer.id, window.period)
                if role is Role.NO_ODOO_INVOICE:
                    continue
                self._invoices(customer, window, ledger_totals, role)
            partner = world.casting_of_role[Role.PARTNER_NOT_FROM_NEXACLOUD]
            if partner.period == window.period:
                self._consulting_invoice(window)
        return odoo

    def _invoices(
        self,
        customer: Customer,
        window: PeriodWindow,
        ledger_totals: dict[tuple[int, date], int],
        role: Role | None,
    ) -> None:
        """The invoice(s) Odoo produced for one customer and period, from Odoo's own data."""
        world, odoo = self.world, self.odoo
        lines: list[OdooLine] = []
        period_days = days_in_period(window.period)
        for deployment in world.deployments_of[customer.id]:
            days = active_days(deployment.created_at, deployment.terminated_at, window.period, world.zone)
            if days == 0:
                continue
            plan = deployment.plan
            price = odoo_price_cents(world, deployment)
            subscription_id = odoo.subscription_of[deployment.id]
            millis = ledger_totals.get((deployment.id, window.period), 0)
            lines.append(
                OdooLine(
                    odoo.product_of[plan.code],
                    f"NexaCloud {plan.name} plan — {deployment.name} ({days}/{period_days} days)",
                    (Decimal(days) / period_days).quantize(Decimal("0.000001")),
                    cents_to_dollars(price),
                    base_fee_cents(price, days, period_days),
                    subscription_id,
                )
            )
            lines.append(
                OdooLine(
                    odoo.overage_product_id,
                    f"CPU overage — {deployment.name}",
                    excess_cpu_hours(plan, millis).quantize(Decimal("0.000001")),
                    plan.overage_cents_per_cpu_hour / 100,
                    overage_cents(plan, millis),
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
            partner_id=odoo.partner_of[customer.id],
            currency_id=USD_CURRENCY_ID if role is Role.INVOICE_IN_USD else CAD_CURRENCY_ID,
            # Billed in arrears on the 1st; the undated invoice is dated inside its period instead.
            invoice_date=window.last_day if undated else months_before(window.period, -1),
            invoice_origin=", ".join(
                dict.fromkeys(
                    odoo.subscription_name[line.subscription_id] for line in lines if line.subscription_id
                )
            ),
            window=window,
            tax_rate=tax_rate(province, window.period),
            rounding=TaxRounding.GLOBALLY if role is Role.GLOBAL_TAX_ROUNDING else TaxRounding.PER_LINE,
        )
        if role is Role.CANCELLED_INVOICE:
            # The first attempt, cancelled and re-issued: present in Odoo, never counted.
            self._move(head, lines, state="cancel")
        self._move(head, lines, state="draft" if role is Role.DRAFT_INVOICE else "posted", dated=not undated)
        if role is Role.INVOICE_GENERATED_TWICE:
            self._move(head, lines, state="draft")
        if role is Role.REFUND:
            primary = world.primary_of(customer.id)
            credit = OdooLine(
                SERVICE_CREDIT_PRODUCT_ID,
                f"Service credit: outage of {primary.name}",
                Decimal(1),
                cents_to_dollars(SERVICE_CREDIT_CENTS),
                SERVICE_CREDIT_CENTS,
                odoo.subscription_of[primary.id],
            )
            self._move(head, [credit], move_type="out_refund")

    def _consulting_invoice(self, window: PeriodWindow) -> None:
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
            partner_id=self.odoo.consulting_partner_id,
            currency_id=CAD_CURRENCY_ID,
            invoice_date=months_before(window.period, -1),
            invoice_origin=None,
            window=window,
            tax_rate=tax_rate("ON", window.period),
        )
        self._move(head, [line])

    def _move(
        self,
        head: OdooInvoiceHead,
        lines: list[OdooLine],
        *,
        move_type: str = "out_invoice",
        state: str = "posted",
        dated: bool = True,
    ) -> None:
        """One account.move with its product lines; ``dated`` lines carry the period as deferred dates.

        Its payment follows the net-30 terms and the sandbox's fixed "now" (the provisional cut-off's
        local day): a posted invoice due before that day has been paid in full; one not yet due, a
        draft and a cancelled one are unpaid (the whole total is owed); a credit note is settled. So
        nobody is overdue unless the lifecycle stage (``sandbox.lifecycle``) says so.
        """
        odoo = self.odoo
        taxes = line_taxes(
            [line.amount_cents for line in lines],
            head.tax_rate,
            globally=head.rounding is TaxRounding.GLOBALLY,
        )
        subtotal, tax = sum(line.amount_cents for line in lines), sum(taxes)
        due = head.invoice_date + timedelta(days=PAYMENT_TERM_DAYS)
        settled = move_type == "out_refund" or (state == "posted" and due < self.today)
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
            payment_state="paid" if settled else "not_paid",
            invoice_date_due=due.isoformat(),
            amount_residual=0.0 if settled else _dollars(subtotal + tax),
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


def _dollars(cents: int) -> float:
    return float(cents_to_dollars(cents))
