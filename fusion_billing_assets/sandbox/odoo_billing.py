"""Odoo's side of the sandbox: the usage ledger NexaCloud pushed, and the records a correct Odoo holds.

``UsagePushes`` is what Odoo's ``fusion.billing.usage`` received (every metered window, except the
injected lost and doubled pushes and the reading NexaCloud could not key), a stream written
straight to the test double's store; ``OdooBilling`` builds, in the storage format of ``sandbox.odoo_models``, the imported partners and
subscriptions, the importer's external ids and the invoices Odoo produced from its own data
(subscription prices, its ledger, the partner's tax rule). Every injected difference is a change
to that data or to the invoices, whose effect flows through the same arithmetic as a correct
invoice: the sandbox's own (``independent_charges``), as NexaCloud's, and not ``billing.charges``,
the code the reconciliation tests.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

from fusion_billing_assets.billing.charges import OVERAGE_PRODUCT_CODE, PLAN_PRODUCT_PREFIX, TaxRounding
from fusion_billing_assets.billing.money import cents_to_dollars
from fusion_billing_assets.billing.periods import PeriodWindow, local_day
from fusion_billing_assets.sandbox.independent_charges import (
    SECONDS_PER_HOUR,
    active_days,
    base_fee_cents,
    days_in_period,
    line_taxes,
    tax_rate,
)
from fusion_billing_assets.sandbox.nexacloud_billing import (
    SERVICE_CREDIT_CENTS,
    UsageRecord,
    excess_cpu_hours,
    overage_cents,
)
from fusion_billing_assets.sandbox.odoo_models import MODELS
from fusion_billing_assets.sandbox.scenarios import Role
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

# Amounts of the injected cases, in cents.
OLD_PLAN_PRICE_DISCOUNT_CENTS = 400
UNEXPLAINED_LINE_CENTS = 2_500
WAIVED_FEE_CENTS = 1_500
CONSULTING_INVOICE_CENTS = 35_000


class LedgerEntry(NamedTuple):
    """One usage push as Odoo's ``fusion.billing.usage`` holds it."""

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


@dataclass(frozen=True)
class UsageLedger:
    """What the ledger received, in sum: CPU milliseconds per (deployment, period), and its faults."""

    totals: dict[tuple[int, date], int]
    lost: PushFault
    doubled: PushFault
    # The usage records without an idempotency key: pushes are keyed, so they were never sent.
    unkeyed: tuple[UsageRecord, ...]


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

    models: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {model: [] for model in MODELS})
    # Per (partner, period): each move's type, state, subtotal and tax in cents.
    invoice_totals: dict[tuple[int, date], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    partner_of: dict[int, int] = field(default_factory=dict)
    subscription_of: dict[int, int] = field(default_factory=dict)
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

    def counts(self) -> dict[str, int]:
        return {model: len(records) for model, records in sorted(self.models.items())}


# --- the usage ledger ----------------------------------------------------------------------------


class UsagePushes:
    """What Odoo's usage ledger received: every push, except the injected lost and doubled ones.

    A filter over NexaCloud's metering stream (``entries``), which keeps only sums: once the
    stream is read, ``ledger()`` tells the totals and the faults. A record without an idempotency
    key is never pushed: Odoo deduplicates on the key, so NexaCloud sends none without one.
    """

    def __init__(self, world: World):
        self._world = world
        self._not_imported = {d.id for d in world.deployments if not world.imported(d.customer_id)}
        lost = world.casting_of_role[Role.LOST_USAGE_PUSHES]
        self._lost_deployment = world.primary_of(lost.customer_id)
        self._lost_days = {lost.period + timedelta(days=9), lost.period + timedelta(days=10)}
        doubled = world.casting_of_role[Role.DOUBLED_USAGE_PUSHES]
        self._doubled_deployment = world.primary_of(doubled.customer_id)
        self._doubled_day = doubled.period + timedelta(days=19)
        self._totals: dict[tuple[int, date], int] = defaultdict(int)
        self._unkeyed: list[UsageRecord] = []
        self._lost_millis = self._doubled_millis = 0

    def entries(self, usage: Iterable[UsageRecord]) -> Iterator[LedgerEntry]:
        timezone = self._world.timezone
        lost_id, doubled_id = self._lost_deployment.id, self._doubled_deployment.id
        totals = self._totals
        for record in usage:
            if record.idempotency_key is None:
                self._unkeyed.append(record)
                continue
            if record.deployment_id in self._not_imported:
                continue
            if (
                record.deployment_id == lost_id
                and local_day(record.window_start, timezone) in self._lost_days
            ):
                self._lost_millis += record.millis
                continue
            entry = LedgerEntry(
                record.deployment_id,
                record.window_start,
                record.millis,
                record.idempotency_key,
                record.period,
            )
            totals[(entry.deployment_id, entry.period)] += entry.millis
            yield entry
            if (
                record.deployment_id == doubled_id
                and local_day(record.window_start, timezone) == self._doubled_day
            ):
                # A retry after a timeout, sent with a fresh key, so Odoo's idempotency cannot catch it.
                totals[(entry.deployment_id, entry.period)] += entry.millis
                self._doubled_millis += record.millis
                yield entry._replace(idempotency_key=f"{record.idempotency_key}-retry")

    def ledger(self) -> UsageLedger:
        return UsageLedger(
            dict(self._totals),
            lost=PushFault(self._lost_deployment, sorted(self._lost_days), self._lost_millis),
            doubled=PushFault(self._doubled_deployment, [self._doubled_day], self._doubled_millis),
            unkeyed=tuple(self._unkeyed),
        )


# --- the records ---------------------------------------------------------------------------------


# The ledger's columns as the Odoo test double stores them (``odoo_store.insert_rows``).
LEDGER_COLUMNS = ("id", "name", "subscription_id", "metric", "quantity", "idempotency_key", "timestamp")


class OdooBilling:
    """The Odoo records of one world: first the accounts (partners, subscriptions), then the usage
    ledger as a stream of rows, then, from the ledger's totals, the invoices and the importer's
    external ids. Each stage consumes the world's random stream in a fixed order."""

    def __init__(self, world: World):
        self._billing = _OdooBilling(world)

    @property
    def records(self) -> OdooRecords:
        return self._billing.odoo

    def accounts(self) -> None:
        self._billing.accounts()

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
        self.subscription_name: dict[int, str] = {}

    def accounts(self) -> None:
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
        )
        for plan in PLANS:
            odoo.add(
                "product.product",
                plan.id,
                name=f"NexaCloud {plan.name} plan",
                default_code=f"{PLAN_PRODUCT_PREFIX}{plan.code}",
            )
        odoo.add(
            "product.product",
            OVERAGE_PRODUCT_ID,
            name="NexaCloud CPU overage (CPU-hour)",
            default_code=OVERAGE_PRODUCT_CODE,
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

        self._partners()
        self._subscriptions()

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
        self._mapping()
        return odoo

    def _partners(self) -> None:
        """Partner ids per imported customer, in an import order unrelated to NexaCloud ids."""
        world, odoo = self.world, self.odoo
        order = [c.id for c in world.customers]
        world.rng.shuffle(order)
        next_id = FIRST_CUSTOMER_PARTNER_ID
        for customer_id in order:
            customer = world.customer_by_id[customer_id]
            imported = world.imported(customer_id)
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
                odoo.partner_of[customer_id] = next_id
            else:
                odoo.hand_made_partner_id = next_id
            next_id += 1
        odoo.consulting_partner_id = next_id
        odoo.add(
            "res.partner",
            next_id,
            name="Lakeshore Consulting Group",
            email="ap@lakeshore-consulting.example",
            commercial_partner_id=next_id,
            active=True,
        )

    def _subscriptions(self) -> None:
        """One subscription per deployment of an imported customer, in the order they were created."""
        world, odoo = self.world, self.odoo
        for deployment in world.deployments:
            if not world.imported(deployment.customer_id):
                continue
            name = f"S{len(odoo.subscription_of) + 1:05d}"
            subscription_id = odoo.add(
                "sale.order",
                name=name,
                partner_id=odoo.partner_of[deployment.customer_id],
                is_subscription=True,
                plan_id=MONTHLY_PLAN_ID,
                subscription_state="6_churn" if deployment.terminated_at else "3_progress",
                start_date=local_day(deployment.created_at, world.timezone).isoformat(),
                end_date=(
                    local_day(
                        deployment.terminated_at - timedelta(microseconds=1), world.timezone
                    ).isoformat()
                    if deployment.terminated_at
                    else None
                ),
                currency_id=CAD_CURRENCY_ID,
            )
            odoo.subscription_of[deployment.id] = subscription_id
            self.subscription_name[subscription_id] = name
            plan = deployment.plan
            odoo.add(
                "sale.order.line",
                name=f"NexaCloud {plan.name} plan",
                order_id=subscription_id,
                product_id=plan.id,
                price_unit=float(cents_to_dollars(odoo_price_cents(world, deployment))),
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
                    plan.id,
                    f"NexaCloud {plan.name} plan — {deployment.name} ({days}/{period_days} days)",
                    (Decimal(days) / period_days).quantize(Decimal("0.000001")),
                    cents_to_dollars(price),
                    base_fee_cents(price, days, period_days),
                    subscription_id,
                )
            )
            lines.append(
                OdooLine(
                    OVERAGE_PRODUCT_ID,
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
                    self.subscription_name[line.subscription_id] for line in lines if line.subscription_id
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
        """One account.move with its product lines; ``dated`` lines carry the period as deferred dates."""
        odoo = self.odoo
        taxes = line_taxes(
            [line.amount_cents for line in lines],
            head.tax_rate,
            globally=head.rounding is TaxRounding.GLOBALLY,
        )
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

    def _mapping(self) -> None:
        """The importer's external ids: nexacloud.customer_<id> and nexacloud.deployment_<id>."""
        odoo = self.odoo
        for customer_id, partner_id in sorted(odoo.partner_of.items()):
            odoo.add(
                "ir.model.data",
                module="nexacloud",
                name=f"customer_{customer_id}",
                model="res.partner",
                res_id=partner_id,
            )
        for deployment_id, subscription_id in sorted(odoo.subscription_of.items()):
            odoo.add(
                "ir.model.data",
                module="nexacloud",
                name=f"deployment_{deployment_id}",
                model="sale.order",
                res_id=subscription_id,
            )


def _dollars(cents: int) -> float:
    return float(cents_to_dollars(cents))
