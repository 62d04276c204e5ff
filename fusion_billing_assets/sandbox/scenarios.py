"""The sandbox's cast: which customer plays which injected difference or edge case, and in which period.

Every reconciliation status of docs/design.md §6 is injected at least once, each on a customer of
its own, and shaped so the status is unambiguous under any sensible precedence with a tolerance of
one cent: a difference has exactly one cause, and every other leg (usage, rates, tax rule, currency,
invoice count) agrees. Edge cases are the realistic situations a reconciliation must get right and
still call ``match``; among them the usage **delivery** faults (docs/design.md §10): pushes lost,
doubled, re-keyed, misdirected or altered on a deployment kept under its plan's included
CPU-seconds, so Odoo's ledger differs from NexaCloud's metering and no bill changes. The generator
(``sandbox.generator``) builds the data each role describes; this module only decides who plays
what, so the ground truth reads in one place.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from fusion_billing_assets.billing.statuses import Status

# The tolerance the expected statuses assume: the one-cent difference is within it, every other
# difference is at least two cents.
TOLERANCE_CENTS = 1


class Role(StrEnum):
    # Injected differences.
    ONE_CENT_OFF = "one_cent_off"
    GLOBAL_TAX_ROUNDING = "global_tax_rounding"
    LOST_USAGE_PUSHES = "lost_usage_pushes"
    DOUBLED_USAGE_PUSHES = "doubled_usage_pushes"
    OLD_PLAN_PRICE = "old_plan_price"
    WRONG_PROVINCE_TAX = "wrong_province_tax"
    UNEXPLAINED_LINE = "unexplained_line"
    NO_ODOO_INVOICE = "no_odoo_invoice"
    VOID_NEXACLOUD_INVOICE = "void_nexacloud_invoice"
    CUSTOMER_NOT_IMPORTED = "customer_not_imported"
    PARTNER_NOT_FROM_NEXACLOUD = "partner_not_from_nexacloud"
    INVOICE_GENERATED_TWICE = "invoice_generated_twice"
    INVOICE_IN_USD = "invoice_in_usd"
    WAIVED_ONBOARDING_FEE = "waived_onboarding_fee"
    USAGE_WITHOUT_KEY = "usage_without_key"
    # Usage delivery faults under the quota: the bills still match.
    PUSHES_LOST_UNDER_QUOTA = "pushes_lost_under_quota"
    LOST_DAY_OFFSET_BY_DOUBLED_DAY = "lost_day_offset_by_doubled_day"
    RETRY_WITH_NEW_KEY = "retry_with_new_key"
    PUSHED_TO_WRONG_SUBSCRIPTION = "pushed_to_wrong_subscription"
    RECEIVED_ANOTHER_CUSTOMERS_PUSH = "received_another_customers_push"
    PUSHED_WITH_OTHER_QUANTITY = "pushed_with_other_quantity"
    # Edge cases that must reconcile as match.
    CREATED_MID_MONTH = "created_mid_month"
    TERMINATED_MID_MONTH = "terminated_mid_month"
    SEVERAL_DEPLOYMENTS = "several_deployments"
    DST_CHANGE = "dst_change"
    LATE_USAGE = "late_usage"
    REFUND = "refund"
    ZERO_USAGE = "zero_usage"
    USAGE_AT_QUOTA = "usage_at_quota"
    DRAFT_INVOICE = "draft_invoice"
    CANCELLED_INVOICE = "cancelled_invoice"
    UNDATED_LINES = "undated_lines"
    PROVINCE_ON = "province_on"
    PROVINCE_NS = "province_ns"
    PROVINCE_NB = "province_nb"
    PROVINCE_QC = "province_qc"
    PROVINCE_AB = "province_ab"


class Scope(StrEnum):
    PERIOD = "period"  # shows in one closed period
    EVERY_PERIOD = "every_period"  # a property of the set-up, so every closed period shows it


@dataclass(frozen=True)
class RoleSpec:
    role: Role
    status: Status
    scope: Scope
    province: str | None = None  # the province the role needs (its tax rate matters)
    difference: bool = True  # False: an edge case expected to match
    has_customer: bool = True  # False: an Odoo partner with no NexaCloud customer
    # True: its period is drawn from a stream of its own, not the world's (see ``cast_roles``), and
    # its customer's accounts are drawn as a plain customer's, so casting it changes no other draw.
    own_stream: bool = False
    # True: a usage delivery fault (docs/design.md §10) on a deployment kept under its quota.
    delivery: bool = False
    # The role whose period it shares instead of drawing one (both sides of one misdirected push).
    same_period_as: Role | None = None


def _edge(role: Role, scope: Scope = Scope.PERIOD, province: str | None = None) -> RoleSpec:
    return RoleSpec(role, Status.MATCH, scope, province, difference=False)


def _delivery(role: Role, same_period_as: Role | None = None) -> RoleSpec:
    return RoleSpec(
        role,
        Status.MATCH,
        Scope.PERIOD,
        difference=False,
        own_stream=True,
        delivery=True,
        same_period_as=same_period_as,
    )


ROLE_SPECS: tuple[RoleSpec, ...] = (
    RoleSpec(Role.ONE_CENT_OFF, Status.WITHIN_TOLERANCE, Scope.PERIOD, "ON"),
    RoleSpec(Role.GLOBAL_TAX_ROUNDING, Status.ROUNDING_DIFFERENCE, Scope.PERIOD, "ON"),
    RoleSpec(Role.LOST_USAGE_PUSHES, Status.USAGE_MISMATCH, Scope.PERIOD),
    RoleSpec(Role.DOUBLED_USAGE_PUSHES, Status.USAGE_MISMATCH, Scope.PERIOD),
    RoleSpec(Role.OLD_PLAN_PRICE, Status.RATE_MISMATCH, Scope.EVERY_PERIOD),
    RoleSpec(Role.WRONG_PROVINCE_TAX, Status.TAX_MISMATCH, Scope.EVERY_PERIOD, "AB"),
    RoleSpec(Role.UNEXPLAINED_LINE, Status.AMOUNT_MISMATCH, Scope.PERIOD),
    RoleSpec(Role.NO_ODOO_INVOICE, Status.MISSING_IN_ODOO, Scope.PERIOD),
    RoleSpec(Role.VOID_NEXACLOUD_INVOICE, Status.MISSING_IN_NEXACLOUD, Scope.PERIOD),
    RoleSpec(Role.CUSTOMER_NOT_IMPORTED, Status.UNMAPPED, Scope.EVERY_PERIOD),
    RoleSpec(Role.PARTNER_NOT_FROM_NEXACLOUD, Status.UNMAPPED, Scope.PERIOD, "ON", has_customer=False),
    RoleSpec(Role.INVOICE_GENERATED_TWICE, Status.DUPLICATE, Scope.PERIOD),
    RoleSpec(Role.INVOICE_IN_USD, Status.CURRENCY_MISMATCH, Scope.PERIOD),
    RoleSpec(Role.WAIVED_ONBOARDING_FEE, Status.WAIVED, Scope.PERIOD),
    _edge(Role.CREATED_MID_MONTH),
    _edge(Role.TERMINATED_MID_MONTH),
    _edge(Role.SEVERAL_DEPLOYMENTS, Scope.EVERY_PERIOD),
    _edge(Role.DST_CHANGE),
    _edge(Role.LATE_USAGE),
    _edge(Role.REFUND, province="ON"),
    _edge(Role.ZERO_USAGE),
    _edge(Role.USAGE_AT_QUOTA),
    _edge(Role.DRAFT_INVOICE),
    _edge(Role.CANCELLED_INVOICE),
    _edge(Role.UNDATED_LINES),
    _edge(Role.PROVINCE_ON, Scope.EVERY_PERIOD, "ON"),
    _edge(Role.PROVINCE_NS, Scope.EVERY_PERIOD, "NS"),
    _edge(Role.PROVINCE_NB, Scope.EVERY_PERIOD, "NB"),
    _edge(Role.PROVINCE_QC, Scope.EVERY_PERIOD, "QC"),
    _edge(Role.PROVINCE_AB, Scope.EVERY_PERIOD, "AB"),
    # Cast last and on a stream of its own, so it takes a customer nobody played and leaves every
    # draw of the roles above, and so their data, as it was.
    RoleSpec(Role.USAGE_WITHOUT_KEY, Status.SOURCE_DATA_ERROR, Scope.PERIOD, own_stream=True),
    # The delivery faults whose bills still match, cast after it the same way. The misdirected push
    # has two customers: the one whose record it is and the one whose subscription received it.
    _delivery(Role.PUSHES_LOST_UNDER_QUOTA),
    _delivery(Role.LOST_DAY_OFFSET_BY_DOUBLED_DAY),
    _delivery(Role.RETRY_WITH_NEW_KEY),
    _delivery(Role.PUSHED_TO_WRONG_SUBSCRIPTION),
    _delivery(Role.RECEIVED_ANOTHER_CUSTOMERS_PUSH, same_period_as=Role.PUSHED_TO_WRONG_SUBSCRIPTION),
    _delivery(Role.PUSHED_WITH_OTHER_QUANTITY),
)
SPECS_BY_ROLE = {spec.role: spec for spec in ROLE_SPECS}
DELIVERY_ROLES = tuple(spec.role for spec in ROLE_SPECS if spec.delivery)

# Customers nobody casts, so each period has matches that exercise nothing in particular.
PLAIN_CUSTOMERS_AT_LEAST = 3
MINIMUM_CUSTOMERS = sum(spec.has_customer for spec in ROLE_SPECS) + PLAIN_CUSTOMERS_AT_LEAST


@dataclass(frozen=True)
class Casting:
    """One role played by one customer (``None`` for an Odoo-only partner) in one closed period.

    ``period`` is ``None`` for a role of scope ``EVERY_PERIOD``.
    """

    role: Role
    customer_id: int | None
    period: date | None

    @property
    def spec(self) -> RoleSpec:
        return SPECS_BY_ROLE[self.role]

    def applies_to(self, period: date) -> bool:
        return self.period is None or self.period == period


def cast_roles(
    customer_ids: Sequence[int],
    closed_periods: Sequence[date],
    dst_period: date | None,
    rng: random.Random,
) -> tuple[Casting, ...]:
    """Give every role a customer of its own and a closed period, drawn from ``rng``.

    The DST edge case is only cast when a closed period contains a DST change (``dst_period``). A
    role with ``own_stream`` draws its period from a stream seeded by the role and its customer (who
    already depends on ``rng``), so casting it consumes nothing of ``rng``; one with ``same_period_as``
    takes that role's period.
    """
    if len(customer_ids) < MINIMUM_CUSTOMERS:
        raise ValueError(
            f"the sandbox needs at least {MINIMUM_CUSTOMERS} customers to hold one customer per injected "
            f"difference and edge case, got {len(customer_ids)}"
        )
    if not closed_periods:
        raise ValueError("the sandbox needs at least one closed period to inject differences into")
    candidates = sorted(customer_ids)
    rng.shuffle(candidates)
    castings: list[Casting] = []
    for spec in ROLE_SPECS:
        if spec.role is Role.DST_CHANGE and dst_period is None:
            continue
        customer_id = candidates.pop() if spec.has_customer else None
        if spec.role is Role.DST_CHANGE:
            period = dst_period
        elif spec.scope is Scope.EVERY_PERIOD:
            period = None
        elif spec.same_period_as is not None:
            period = next(c.period for c in castings if c.role is spec.same_period_as)
        elif spec.own_stream:
            period = random.Random(f"{spec.role.value}:{customer_id}").choice(list(closed_periods))
        else:
            period = rng.choice(list(closed_periods))
        castings.append(Casting(spec.role, customer_id, period))
    return tuple(castings)
