"""What must exist in Odoo for a period's NexaCloud customers, plans and deployments (docs/design.md §9).

``wanted_records`` turns the period's validated frames into one ``Wanted`` per Odoo record, each
named by its external id in module ``nexacloud``, in the order they must be written: products,
partners, subscriptions, subscription lines (a relation names its target by external id, so the
target is written first). A record that must not be written carries why (``held``): a customer
left out on purpose (the exclusions file), a record that breaks its source contract, or one that
depends on such a record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pandas as pd

from fusion_billing_assets.billing.charges import OVERAGE_PRODUCT_CODE, PLAN_PRODUCT_PREFIX
from fusion_billing_assets.billing.isolation import SET_ASIDE
from fusion_billing_assets.billing.money import cents_to_dollars, to_decimal
from fusion_billing_assets.billing.periods import local_day

MODULE = "nexacloud"
SECONDS_PER_HOUR = 3600

PARTNER = "res.partner"
PRODUCT = "product.product"
SUBSCRIPTION = "sale.order"
SUBSCRIPTION_LINE = "sale.order.line"
# The order in which models are written: a record's relations point at models written before it.
WRITE_ORDER = (PRODUCT, PARTNER, SUBSCRIPTION, SUBSCRIPTION_LINE)

# Odoo's own records the imported ones point at, by the external ids Odoo's modules give them.
MONTHLY_PLAN_XID = "sale_subscription.subscription_plan_month"
RUNNING_STATE = "3_progress"
CHURNED_STATE = "6_churn"


def currency_xid(code: str) -> str:
    return f"base.{code.upper()}"


def province_xid(province: str) -> str:
    return f"base.state_ca_{province.lower()}"


class Kind(StrEnum):
    """The NexaCloud record an Odoo record is imported from."""

    CUSTOMER = "customer"
    PLAN = "plan"
    DEPLOYMENT = "deployment"


class Action(StrEnum):
    """What the import does with one record (the plan's ``action`` column)."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    # An Odoo record the import would collide with, or an external id it cannot trust: a person decides.
    CONFLICT = "conflict"
    # Left out on purpose: the exclusions file names the customer, with a reason.
    EXCLUDED = "excluded"
    # The NexaCloud record breaks its contract (or depends on one that does): set aside, never guessed.
    INVALID = "invalid"


@dataclass(frozen=True)
class Ref:
    """A relation given by the target's external id (``load``'s ``<field>/id`` column).

    ``optional``: Odoo may not hold the target (a province it has no state for); the field is then
    left empty and the plan says so, rather than the load failing.
    """

    xid: str
    optional: bool = False


Value = str | bool | Decimal | date | Ref | None


@dataclass(frozen=True)
class Wanted:
    """One Odoo record as NexaCloud says it must be, named by its external id."""

    kind: Kind
    nexacloud_id: str
    model: str
    name: str  # the external id's name in module ``nexacloud``
    values: Mapping[str, Value]  # compared with Odoo and written
    # Written when the record is created only: Odoo owns them afterwards (a subscription's state).
    on_create: Mapping[str, Value] = field(default_factory=dict)
    # Why this record must not be written, and as which action the plan shows it.
    held: tuple[Action, str] | None = None
    # The external ids of the records this one points at that the import itself writes.
    depends_on: tuple[str, ...] = ()
    # What the plan compares to find an Odoo record that already is this one without an external id.
    natural_keys: Mapping[str, str] = field(default_factory=dict)

    @property
    def external_id(self) -> str:
        return f"{MODULE}.{self.name}"


def customer_xid_name(customer_id: Any) -> str:
    return f"customer_{int(customer_id)}"


def deployment_xid_name(deployment_id: Any) -> str:
    return f"deployment_{int(deployment_id)}"


def plan_xid_name(plan_code: str) -> str:
    return f"plan_{plan_code}"


OVERAGE_PRODUCT_NAME = "product_cpu_overage"


def wanted_records(
    customers: pd.DataFrame,
    plans: pd.DataFrame,
    deployments: pd.DataFrame,
    *,
    timezone: str,
    exclusions: Mapping[int, str] | None = None,
) -> list[Wanted]:
    """Every Odoo record the period's customers, plans and deployments need, in write order."""
    exclusions = dict(exclusions or {})
    products = [_overage_product(), *(_plan_product(plan) for plan in _rows(plans))]
    partners = [_partner(customer, exclusions) for customer in _rows(customers)]
    by_customer = {partner.nexacloud_id: partner for partner in partners}
    currency_of = {str(int(c["customer_id"])): c.get("currency") for c in _rows(customers)}
    by_plan_id = {str(int(plan["plan_id"])): plan for plan in _rows(plans)}
    plan_products = {product.nexacloud_id: product for product in products}
    subscriptions: list[Wanted] = []
    lines: list[Wanted] = []
    for deployment in _rows(deployments):
        plan = by_plan_id.get(str(_whole(deployment.get("plan_id"))))
        held = _deployment_held(deployment, plan, by_customer, plan_products)
        currency = currency_of.get(str(_whole(deployment.get("customer_id"))))
        subscription = _subscription(deployment, timezone, held, str(currency or "CAD"))
        subscriptions.append(subscription)
        if plan is not None:
            lines.extend(_subscription_lines(deployment, plan, subscription))
    return [*products, *partners, *subscriptions, *lines]


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records")


def _problem(record: Mapping[str, Any]) -> str | None:
    problem = record.get(SET_ASIDE)
    return None if problem is None or pd.isna(problem) else str(problem)


def _whole(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _overage_product() -> Wanted:
    return Wanted(
        kind=Kind.PLAN,
        nexacloud_id="cpu_overage",
        model=PRODUCT,
        name=OVERAGE_PRODUCT_NAME,
        values={
            "name": "NexaCloud CPU overage (CPU-hour)",
            "default_code": OVERAGE_PRODUCT_CODE,
            # Each plan has its own rate, on its subscriptions' overage line.
            "list_price": Decimal("0.00"),
        },
        natural_keys={"default_code": OVERAGE_PRODUCT_CODE},
    )


def _plan_product(plan: Mapping[str, Any]) -> Wanted:
    code = str(plan["plan_code"])
    problem = _problem(plan)
    default_code = f"{PLAN_PRODUCT_PREFIX}{code}"
    return Wanted(
        kind=Kind.PLAN,
        nexacloud_id=code,
        model=PRODUCT,
        name=plan_xid_name(code),
        values={}
        if problem
        else {
            "name": f"NexaCloud {plan['plan_name']} plan",
            "default_code": default_code,
            "list_price": cents_to_dollars(int(plan["monthly_price_cents"])),
        },
        held=(Action.INVALID, f"plan {code} breaks its contract: {problem}") if problem else None,
        natural_keys={"default_code": default_code},
    )


def _partner(customer: Mapping[str, Any], exclusions: Mapping[int, str]) -> Wanted:
    customer_id = int(customer["customer_id"])
    problem = _problem(customer)
    held = None
    if customer_id in exclusions:
        held = (
            Action.EXCLUDED,
            f"customer {customer_id} is left out of the import: {exclusions[customer_id]}",
        )
    elif problem:
        held = (Action.INVALID, f"customer {customer_id} breaks its contract: {problem}")
    values: dict[str, Value] = {}
    natural_keys = {"ref": f"NC{customer_id}"}
    if problem is None:
        email = str(customer["email"]).strip()
        values = {
            "name": str(customer["name"]).strip(),
            "email": email,
            "ref": f"NC{customer_id}",
            "is_company": True,
            "state_id": Ref(province_xid(str(customer["province"])), optional=True),
        }
        natural_keys["email"] = email
    return Wanted(
        kind=Kind.CUSTOMER,
        nexacloud_id=str(customer_id),
        model=PARTNER,
        name=customer_xid_name(customer_id),
        values=values,
        held=held,
        natural_keys=natural_keys,
    )


def _deployment_held(
    deployment: Mapping[str, Any],
    plan: Mapping[str, Any] | None,
    partners: Mapping[str, Wanted],
    plan_products: Mapping[str, Wanted],
) -> tuple[Action, str] | None:
    deployment_id = _whole(deployment.get("deployment_id"))
    problem = _problem(deployment)
    if problem:
        return Action.INVALID, f"deployment {deployment_id} breaks its contract: {problem}"
    customer_id = str(_whole(deployment.get("customer_id")))
    partner = partners.get(customer_id)
    if partner is None:
        return (
            Action.INVALID,
            f"deployment {deployment_id}: customer {customer_id} is not in the period's customers",
        )
    if partner.held is not None:
        action, reason = partner.held
        return action, f"deployment {deployment_id} follows its customer: {reason}"
    if plan is None:
        return Action.INVALID, (
            f"deployment {deployment_id}: plan {_whole(deployment.get('plan_id'))} is not in NexaCloud's plans"
        )
    product = plan_products[str(plan["plan_code"])]
    if product.held is not None:
        return product.held[0], f"deployment {deployment_id} follows its plan: {product.held[1]}"
    return None


def _subscription(
    deployment: Mapping[str, Any], timezone: str, held: tuple[Action, str] | None, currency: str
) -> Wanted:
    deployment_id = int(deployment["deployment_id"])
    name = deployment_xid_name(deployment_id)
    if held is not None:
        return Wanted(Kind.DEPLOYMENT, str(deployment_id), SUBSCRIPTION, name, values={}, held=held)
    customer_xid = f"{MODULE}.{customer_xid_name(deployment['customer_id'])}"
    values: dict[str, Value] = {
        "partner_id": Ref(customer_xid),
        "plan_id": Ref(MONTHLY_PLAN_XID),
        "is_subscription": True,
        "start_date": local_day(deployment["created_at"], timezone),
        # NexaCloud bills a customer in the customer's currency.
        "currency_id": Ref(currency_xid(currency)),
    }
    on_create: dict[str, Value] = {"subscription_state": RUNNING_STATE}
    terminated_at = deployment.get("terminated_at")
    if terminated_at is not None and not pd.isna(terminated_at):
        # NexaCloud ended it: the subscription ends on the last local day it ran, and is churned.
        # A running deployment never reopens a subscription Odoo ended: that is lifecycle drift
        # for a person, not an update.
        values["end_date"] = local_day(terminated_at - timedelta(microseconds=1), timezone)
        values["subscription_state"] = CHURNED_STATE
        on_create = {}
    return Wanted(
        Kind.DEPLOYMENT,
        str(deployment_id),
        SUBSCRIPTION,
        name,
        values=values,
        on_create=on_create,
        depends_on=(customer_xid,),
    )


def _subscription_lines(
    deployment: Mapping[str, Any], plan: Mapping[str, Any], subscription: Wanted
) -> list[Wanted]:
    """The plan fee and the overage line of a deployment's subscription."""
    code = str(plan["plan_code"])
    included_hours = int(plan["included_cpu_seconds"]) // SECONDS_PER_HOUR
    lines = {
        "plan_fee": {
            "product_id": Ref(f"{MODULE}.{plan_xid_name(code)}"),
            "name": f"NexaCloud {plan['plan_name']} plan",
            "price_unit": cents_to_dollars(int(plan["monthly_price_cents"])),
            "product_uom_qty": Decimal(1),
        },
        "cpu_overage": {
            "product_id": Ref(f"{MODULE}.{OVERAGE_PRODUCT_NAME}"),
            "name": f"CPU overage above {included_hours:,} CPU-hours",
            # Dollars per CPU-hour, exactly: the rate is in cents with four decimals.
            "price_unit": (to_decimal(plan["overage_cents_per_cpu_hour"]) / 100).normalize(),
            "product_uom_qty": Decimal(0),
        },
    }
    wanted = []
    for suffix, values in lines.items():
        wanted.append(
            Wanted(
                Kind.DEPLOYMENT,
                subscription.nexacloud_id,
                SUBSCRIPTION_LINE,
                f"{subscription.name}_{suffix}",
                values={"order_id": Ref(subscription.external_id), **values},
                held=subscription.held,
                depends_on=(subscription.external_id, values["product_id"].xid),
            )
        )
    return wanted
