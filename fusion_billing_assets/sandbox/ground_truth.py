"""The sandbox's ground truth: the manifest of injected differences and expected statuses, and the waiver file.

``manifest`` lists every difference and edge case the cast (``sandbox.scenarios``) injected, with a
sentence quoting the figures that make it, the status every customer must get in every closed
period, every usage record whose delivery to Odoo's ledger failed (``delivery_faults``, from
what the pushes dropped, altered or added, never from reading the two databases back), and the
lifecycle cases (``lifecycle``: each deployment a case touches, with the drift kind it must be
classified as and since when, from how the case was built; every other mapped deployment is in
sync, and ``not_built`` names a case the world was too small to hold); before writing it, it
refuses a world whose shaped cases do not have the shape their status claims.
``waivers_csv`` accepts the ``waived`` difference. Its figures come from the sandbox's own
arithmetic (``independent_charges``), as both systems' invoices do.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import date
from decimal import Decimal
from typing import Any

from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.periods import PeriodWindow, local_day
from fusion_billing_assets.billing.statuses import STATUSES, Status
from fusion_billing_assets.sandbox.independent_charges import (
    active_days,
    days_in_period,
    line_taxes,
    tax_rate,
    tax_rule_on,
)
from fusion_billing_assets.sandbox.lifecycle import KIND_OF_CASE, Case, Kind, Lifecycle
from fusion_billing_assets.sandbox.nexacloud_billing import SERVICE_CREDIT_CENTS, NexaCloudInvoice
from fusion_billing_assets.sandbox.odoo_billing import (
    LOST_WINDOWS,
    UNEXPLAINED_LINE_CENTS,
    WAIVED_FEE_CENTS,
    DeliveryFault,
    DeliveryKind,
    OdooRecords,
    UsageLedger,
    odoo_price_cents,
)
from fusion_billing_assets.sandbox.scenarios import DELIVERY_ROLES, TOLERANCE_CENTS, Casting, Role
from fusion_billing_assets.sandbox.world import PLANS, Customer, Deployment, World, utc_text

WAIVER_YEARS = 5


def manifest(
    world: World,
    invoices: list[NexaCloudInvoice],
    ledger: UsageLedger,
    odoo: OdooRecords,
    lifecycle: Lifecycle,
) -> dict[str, Any]:
    """The ground truth: injected differences, edge cases, every expected reconciliation row, the
    delivery faults and the lifecycle cases."""
    truth = _GroundTruth(world, invoices, ledger, odoo)
    _check_lifecycle(world, odoo, lifecycle)
    differences, edge_cases = [], []
    for casting in world.castings:
        for period in world.periods_of(casting):
            entry = {
                "period": period.isoformat(),
                "customer_id": casting.customer_id,
                "partner_id": truth.expected_partner(casting.customer_id),
                "status": casting.spec.status,
                "role": casting.role.value,
                "description": truth.describe(casting, world.window_of[period]),
            }
            (differences if casting.spec.difference else edge_cases).append(entry)
    truth.check()
    expected = []
    for window in world.closed:
        for customer in world.customers:
            role = world.role_in(customer.id, window.period)
            status = world.casting_of_customer[customer.id].spec.status if role else Status.MATCH
            expected.append(truth.expected_row(window.period, customer.id, status))
        partner = world.casting_of_role[Role.PARTNER_NOT_FROM_NEXACLOUD]
        if partner.period == window.period:
            expected.append(truth.expected_row(window.period, None, partner.spec.status))
    return {
        "seed": world.seed,
        "scale": asdict(world.scale),
        "timezone": world.timezone,
        "periods": [
            {
                "period": w.period.isoformat(),
                "closed": w is not world.provisional,
                "provisional": w is world.provisional,
            }
            for w in world.windows
        ],
        "provisional_usage_cutoff": world.usage_cutoff.strftime("%Y-%m-%d %H:%M:%S"),
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
        "delivery_faults": truth.delivery_faults(),
        "lifecycle": lifecycle_section(lifecycle),
    }


def lifecycle_section(lifecycle: Lifecycle) -> dict[str, Any]:
    """The manifest's ``lifecycle``: the moment judged and every deployment each case touches."""
    return {
        "as_of": utc_text(lifecycle.as_of, "seconds"),
        "grace_days": lifecycle.grace_days,
        "timezone": lifecycle.timezone,
        "cases": [
            {
                "case": entry.case.value,
                "kind": entry.kind.value,
                "deployment_id": entry.deployment_id,
                "customer_id": entry.customer_id,
                "subscription_id": entry.subscription_id,
                "since": None if entry.since is None else utc_text(entry.since, "seconds"),
                "description": entry.description,
            }
            for entry in lifecycle.entries
        ],
        "not_built": [{"case": case.value, "why": why} for case, why in lifecycle.not_built.items()],
    }


def _check_lifecycle(world: World, odoo: OdooRecords, lifecycle: Lifecycle) -> None:
    """Every case is there on a mapped deployment of its own, its own deployment of its kind."""
    seen: dict[int, Case] = {}
    for entry in lifecycle.entries:
        if entry.deployment_id in seen:
            raise RuntimeError(
                f"sandbox generator bug: deployment {entry.deployment_id} is in lifecycle cases "
                f"{seen[entry.deployment_id].value} and {entry.case.value}"
            )
        seen[entry.deployment_id] = entry.case
        if not world.imported(entry.customer_id) or odoo.subscription_of.get(entry.deployment_id) != (
            entry.subscription_id
        ):
            raise RuntimeError(
                f"sandbox generator bug: lifecycle case {entry.case.value}'s deployment {entry.deployment_id} "
                f"is not mapped to subscription {entry.subscription_id}"
            )
    for case in Case:
        if case in lifecycle.not_built:
            continue
        kinds = [entry.kind for entry in lifecycle.entries if entry.case is case]
        wanted = KIND_OF_CASE[case]
        # A look-alike's own deployment is in sync, as are the others its invoice bills.
        built = kinds.count(wanted) == 1 or (wanted is Kind.IN_SYNC and kinds)
        if not built or any(kind not in (wanted, Kind.IN_SYNC) for kind in kinds):
            raise RuntimeError(
                f"sandbox generator bug: lifecycle case {case.value} should hold one deployment that reads "
                f"as {wanted.value}, it holds {[kind.value for kind in kinds]}"
            )


def waivers_csv(world: World) -> str:
    """The waiver file accepting the ``waived`` difference (delta = Odoo − NexaCloud total)."""
    casting = world.casting_of_role[Role.WAIVED_ONBOARDING_FEE]
    customer = world.customer_by_id[casting.customer_id]
    (fee_tax,) = line_taxes([WAIVED_FEE_CENTS], tax_rate(customer.province, casting.period))
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


class _GroundTruth:
    """What both systems hold, read back for the manifest's sentences and its self-check."""

    def __init__(
        self, world: World, invoices: list[NexaCloudInvoice], ledger: UsageLedger, odoo: OdooRecords
    ):
        self.world = world
        self.ledger = ledger
        self.odoo = odoo
        self.nexacloud_invoice = {(i.customer_id, i.window.period): i for i in invoices}

    def delivery_faults(self) -> list[dict[str, Any]]:
        """One entry per usage record whose delivery failed, in a fixed order."""
        customer_of = {d.id: d.customer_id for d in self.world.deployments}
        entries = [
            {
                "role": fault.role.value,
                "kind": fault.kind.value,
                "period": fault.period.isoformat(),
                "customer_id": customer_of[fault.deployment_id],
                "deployment_id": fault.deployment_id,
                "subscription_id": self.odoo.subscription_of[fault.ledger_deployment_id],
                "idempotency_key": fault.idempotency_key,
                "window_start": utc_text(fault.window_start, "seconds"),
                "nexacloud_quantity": _quantity(fault.nexacloud_millis),
                "odoo_quantity": _quantity(fault.odoo_millis),
            }
            for fault in self.ledger.delivery_faults
        ]
        return sorted(
            entries,
            key=lambda e: (
                e["period"],
                e["customer_id"],
                e["deployment_id"],
                e["window_start"],
                e["kind"],
                e["subscription_id"],
                e["idempotency_key"],
            ),
        )

    def faults_of(self, role: Role) -> list[DeliveryFault]:
        return [fault for fault in self.ledger.delivery_faults if fault.role is role]

    def metered_millis(self, deployment_id: int, period: date) -> int:
        """NexaCloud's CPU milliseconds of a deployment in a period: the ledger's, with the faults undone."""
        millis = self.ledger.totals.get((deployment_id, period), 0)
        for fault in self.ledger.delivery_faults:
            if fault.period != period:
                continue
            if fault.deployment_id == deployment_id and fault.nexacloud_millis is not None:
                millis += fault.nexacloud_millis
            if fault.ledger_deployment_id == deployment_id and fault.odoo_millis is not None:
                millis -= fault.odoo_millis
        return millis

    def expected_partner(self, customer_id: int | None) -> int | None:
        if customer_id is None:
            return self.odoo.consulting_partner_id
        return self.odoo.partner_of.get(customer_id)

    def expected_row(self, period: date, customer_id: int | None, status: Status) -> dict[str, Any]:
        return {
            "period": period.isoformat(),
            "customer_id": customer_id,
            "partner_id": self.expected_partner(customer_id),
            "status": status,
        }

    def describe(self, casting: Casting, window: PeriodWindow) -> str:
        world, odoo = self.world, self.odoo
        role = casting.role
        if casting.customer_id is None:
            (invoice,) = odoo.invoice_totals[(odoo.consulting_partner_id, window.period)]
            return (
                f"Odoo partner {odoo.consulting_partner_id} (Lakeshore Consulting Group) has no NexaCloud "
                f"mapping and an invoice of {format_cents(invoice['subtotal'] + invoice['tax'])} for an "
                f"onboarding workshop."
            )
        customer = world.customer_by_id[casting.customer_id]
        primary = world.primary_of(customer.id)
        nexacloud = self.nexacloud_invoice[(customer.id, window.period)]
        total = format_cents(nexacloud.total_cents)
        rule = tax_rule_on(customer.province, window.period)
        if role is Role.ONE_CENT_OFF:
            return (
                f"Odoo's plan fee line for deployment {primary.id} is one cent above NexaCloud's; usage, "
                f"prices and tax rule agree and no line sits on a half cent."
            )
        if role is Role.GLOBAL_TAX_ROUNDING:
            odoo_tax = sum(
                t["tax"] for t in odoo.invoice_totals[(odoo.partner_of[customer.id], window.period)]
            )
            return (
                f"Odoo rounded the {rule.label} of this {len(nexacloud.lines)}-line invoice globally "
                f"({format_cents(odoo_tax)}) where NexaCloud rounds per line ({format_cents(nexacloud.tax_cents)}); "
                f"subtotals agree."
            )
        if role in (Role.LOST_USAGE_PUSHES, Role.DOUBLED_USAGE_PUSHES):
            fault = self.ledger.lost if role is Role.LOST_USAGE_PUSHES else self.ledger.doubled
            days = " and ".join(day.isoformat() for day in fault.days)
            seconds = Decimal(fault.millis).scaleb(-3)
            if role is Role.LOST_USAGE_PUSHES:
                return (
                    f"The usage pushes of deployment {fault.deployment.id} for {days} (local) never reached "
                    f"Odoo: its ledger is {seconds:,} CPU-seconds short and its overage lower."
                )
            return (
                f"The usage pushes of deployment {fault.deployment.id} for {days} (local) were retried with "
                f"new idempotency keys: Odoo's ledger counts {seconds:,} CPU-seconds twice."
            )
        if role is Role.OLD_PLAN_PRICE:
            return (
                f"Odoo's subscription for deployment {primary.id} still carries the old {primary.plan.name} price "
                f"{format_cents(odoo_price_cents(world, primary))} instead of "
                f"{format_cents(primary.plan.monthly_price_cents)}; Odoo's invoice uses it."
            )
        if role is Role.WRONG_PROVINCE_TAX:
            return (
                f"Odoo taxes this {customer.province} customer at Ontario's "
                f"{tax_rule_on('ON', window.period).label} instead of {rule.label}; subtotals agree."
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
                f"{odoo.hand_made_partner_id} without ref, no subscriptions and no invoices."
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
        if role is Role.USAGE_WITHOUT_KEY:
            (record,) = self.ledger.unkeyed
            day = local_day(record.window_start, world.timezone)
            seconds = Decimal(record.millis).scaleb(-3)
            return (
                f"NexaCloud usage record {record.id} (deployment {record.deployment_id}, window from "
                f"{record.window_start:%Y-%m-%d %H:%M} UTC, {seconds:,} CPU-seconds) "
                f"has no idempotency_key, so it was never pushed to Odoo and breaks the nexacloud/usage "
                f"contract (keyless_records must be 0): deployment {record.deployment_id}'s usage of "
                f"{day.isoformat()} (local) is set aside and the customer cannot be judged; both invoices "
                f"agree otherwise."
            )
        if casting.spec.delivery:
            return self._describe_delivery(casting, primary, window)
        return self._describe_edge_case(casting, customer, primary, window, rule.label)

    def _describe_delivery(self, casting: Casting, primary: Deployment, window: PeriodWindow) -> str:
        world, odoo = self.world, self.odoo
        role = casting.role
        sender = world.primary_of(world.casting_of_role[Role.PUSHED_TO_WRONG_SUBSCRIPTION].customer_id)
        faults = self.faults_of(
            Role.PUSHED_TO_WRONG_SUBSCRIPTION if role is Role.RECEIVED_ANOTHER_CUSTOMERS_PUSH else role
        )
        first = faults[0]
        window_text = f"window from {first.window_start:%Y-%m-%d %H:%M} UTC"
        key = first.idempotency_key
        if role is Role.PUSHES_LOST_UNDER_QUOTA:
            lost = sum(f.nexacloud_millis or 0 for f in faults)
            sentence = (
                f"The usage pushes of deployment {primary.id} for the {len(faults)} windows from "
                f"{first.window_start:%Y-%m-%d %H:%M} UTC ({_seconds(lost)} CPU-seconds) never reached Odoo's ledger"
            )
        elif role is Role.LOST_DAY_OFFSET_BY_DOUBLED_DAY:
            missing = [f for f in faults if f.kind is DeliveryKind.MISSING]
            extra = [f for f in faults if f.kind is DeliveryKind.EXTRA]
            lost_day = local_day(missing[0].window_start, world.timezone)
            doubled_day = local_day(extra[0].window_start, world.timezone)
            sentence = (
                f"The usage pushes of deployment {primary.id} for {lost_day.isoformat()} (local, {len(missing)} "
                f"records) never reached Odoo and those of {doubled_day.isoformat()} ({len(extra)} records) were "
                f"sent twice, the second time with freshly minted keys; both days hold "
                f"{_seconds(sum(f.odoo_millis or 0 for f in extra))} CPU-seconds, so the period's totals agree"
            )
        elif role is Role.RETRY_WITH_NEW_KEY:
            (extra,) = faults
            sentence = (
                f"The usage push of deployment {primary.id}'s {window_text} ({_seconds(extra.odoo_millis)} "
                f"CPU-seconds) was retried with a freshly minted key {key}: Odoo's ledger holds it twice"
            )
        elif role is Role.PUSHED_TO_WRONG_SUBSCRIPTION:
            receiver = world.primary_of(
                world.casting_of_role[Role.RECEIVED_ANOTHER_CUSTOMERS_PUSH].customer_id
            )
            sentence = (
                f"NexaCloud usage record {key} of deployment {primary.id} ({window_text}, "
                f"{_seconds(first.nexacloud_millis)} CPU-seconds) was pushed under its own key to subscription "
                f"{odoo.subscription_of[receiver.id]} of customer {receiver.customer_id}'s deployment "
                f"{receiver.id} instead of its own subscription {odoo.subscription_of[primary.id]}"
            )
        elif role is Role.RECEIVED_ANOTHER_CUSTOMERS_PUSH:
            sentence = (
                f"Odoo's subscription {odoo.subscription_of[primary.id]} of deployment {primary.id} holds "
                f"NexaCloud usage record {key} of customer {sender.customer_id}'s deployment {sender.id} "
                f"({window_text}, {_seconds(first.odoo_millis)} CPU-seconds), pushed to it by mistake"
            )
        else:
            (altered,) = faults
            sentence = (
                f"NexaCloud usage record {key} of deployment {primary.id} ({window_text}) was pushed under its "
                f"own key as {_seconds(altered.odoo_millis)} CPU-seconds, truncated from "
                f"{_seconds(altered.nexacloud_millis)}"
            )
        metered = self.metered_millis(primary.id, window.period)
        held = self.ledger.totals.get((primary.id, window.period), 0)
        return (
            f"{sentence}. NexaCloud metered {_seconds(metered)} and Odoo's ledger holds {_seconds(held)} of "
            f"its {primary.plan.included_cpu_seconds:,} included CPU-seconds: no overage on either side, "
            f"so both invoices match."
        )

    def _describe_edge_case(
        self, casting: Casting, customer: Customer, primary: Deployment, window: PeriodWindow, tax_label: str
    ) -> str:
        world = self.world
        role = casting.role
        others = [d for d in world.deployments_of[customer.id] if not d.primary]
        if role in (Role.CREATED_MID_MONTH, Role.TERMINATED_MID_MONTH, Role.DST_CHANGE):
            deployment = others[0]
            moment = (
                deployment.created_at if role is not Role.TERMINATED_MID_MONTH else deployment.terminated_at
            )
            local = moment.astimezone(world.zone).strftime("%Y-%m-%d %H:%M %Z")
            days = active_days(deployment.created_at, deployment.terminated_at, window.period, world.zone)
            verb = "terminated" if role is Role.TERMINATED_MID_MONTH else "created"
            sentence = (
                f"Deployment {deployment.id} was {verb} {local}: {days} of {days_in_period(window.period)} "
                f"days of its plan fee"
            )
            if role is Role.DST_CHANGE:
                return (
                    f"{sentence}; created the night the clocks changed, its usage windows cross the change."
                )
            return f"{sentence}."
        if role is Role.SEVERAL_DEPLOYMENTS:
            return f"{len(world.deployments_of[customer.id])} deployments billed on one invoice."
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

    def check(self) -> None:
        """Refuse to write a manifest whose shaped cases do not have the shape their status claims."""
        self._check_delivery()
        world, odoo = self.world, self.odoo
        sign = {"out_invoice": 1, "out_refund": -1}
        keyless = world.casting_of_role[Role.USAGE_WITHOUT_KEY]
        customer_of = {d.id: d.customer_id for d in world.deployments}
        unkeyed = [(customer_of[r.deployment_id], r.period) for r in self.ledger.unkeyed]
        if unkeyed != [(keyless.customer_id, keyless.period)]:
            raise RuntimeError(
                f"sandbox generator bug: the usage records without an idempotency key belong to "
                f"(customer, period) {unkeyed}, not only to customer {keyless.customer_id} in "
                f"{keyless.period.isoformat()}"
            )
        for casting in world.castings:
            if casting.customer_id is None or not world.imported(casting.customer_id):
                continue
            for period in world.periods_of(casting):
                nexacloud = self.nexacloud_invoice[(casting.customer_id, period)]
                moves = odoo.invoice_totals.get((odoo.partner_of[casting.customer_id], period), [])
                counted = [m for m in moves if m["state"] != "cancel"]
                odoo_subtotal = sum(sign[m["move_type"]] * m["subtotal"] for m in counted)
                odoo_tax = sum(sign[m["move_type"]] * m["tax"] for m in counted)
                delta = odoo_subtotal + odoo_tax - nexacloud.total_cents
                status = casting.spec.status
                if status is Status.MATCH:
                    ok = delta == 0
                elif status is Status.WITHIN_TOLERANCE:
                    ok = 0 < abs(delta) <= TOLERANCE_CENTS
                elif status in (Status.ROUNDING_DIFFERENCE, Status.TAX_MISMATCH):
                    ok = odoo_subtotal == nexacloud.subtotal_cents and abs(delta) > TOLERANCE_CENTS
                elif status in (
                    Status.USAGE_MISMATCH,
                    Status.RATE_MISMATCH,
                    Status.AMOUNT_MISMATCH,
                    Status.WAIVED,
                ):
                    ok = abs(delta) > TOLERANCE_CENTS
                elif status is Status.SOURCE_DATA_ERROR:
                    # The keyless record is the only thing wrong: without it the row would match.
                    ok = delta == 0
                else:
                    ok = True
                if not ok:
                    raise RuntimeError(
                        f"sandbox generator bug: {casting.role.value} of customer {casting.customer_id} in "
                        f"{period.isoformat()} should read as {status}, but Odoo − NexaCloud = {delta} cents"
                    )

    def _check_delivery(self) -> None:
        """Each delivery fault is there, of its kind, on a deployment under its quota on both sides."""
        world = self.world
        # The kinds each role's faults must have: exactly these, or (a day's records) only these.
        exactly = {
            Role.PUSHES_LOST_UNDER_QUOTA: [DeliveryKind.MISSING] * LOST_WINDOWS,
            Role.RETRY_WITH_NEW_KEY: [DeliveryKind.EXTRA],
            Role.PUSHED_TO_WRONG_SUBSCRIPTION: [DeliveryKind.WRONG_SUBSCRIPTION],
            Role.PUSHED_WITH_OTHER_QUANTITY: [DeliveryKind.QUANTITY_DIFFERS],
        }
        only = {
            Role.LOST_USAGE_PUSHES: {DeliveryKind.MISSING},
            Role.DOUBLED_USAGE_PUSHES: {DeliveryKind.EXTRA},
            Role.LOST_DAY_OFFSET_BY_DOUBLED_DAY: {DeliveryKind.MISSING, DeliveryKind.EXTRA},
        }
        for role in {*exactly, *only}:
            found = [fault.kind for fault in self.faults_of(role)]
            if found != exactly[role] if role in exactly else set(found) != only[role]:
                raise RuntimeError(f"sandbox generator bug: {role.value} faulted {found}")
        offset = self.faults_of(Role.LOST_DAY_OFFSET_BY_DOUBLED_DAY)
        lost = sum(f.nexacloud_millis or 0 for f in offset if f.kind is DeliveryKind.MISSING)
        doubled = sum(f.odoo_millis or 0 for f in offset if f.kind is DeliveryKind.EXTRA)
        if lost != doubled:
            raise RuntimeError(
                f"sandbox generator bug: the lost day ({lost} ms) is not offset by the doubled one ({doubled} ms)"
            )
        for role in DELIVERY_ROLES:
            casting = world.casting_of_role[role]
            deployment = world.primary_of(casting.customer_id)
            quota = deployment.plan.included_millis
            sides = {
                "NexaCloud": self.metered_millis(deployment.id, casting.period),
                "Odoo": self.ledger.totals.get((deployment.id, casting.period), 0),
            }
            for side, millis in sides.items():
                if not 0 < millis < quota:
                    raise RuntimeError(
                        f"sandbox generator bug: {role.value}'s deployment {deployment.id} has {millis} ms in "
                        f"{side} in {casting.period.isoformat()}, not under its quota of {quota} ms"
                    )


def _quantity(millis: int | None) -> str | None:
    """CPU-seconds with three decimals, as both systems store them (``None`` stays ``None``)."""
    return None if millis is None else f"{Decimal(millis).scaleb(-3):.3f}"


def _seconds(millis: int | None) -> str:
    return f"{Decimal(millis or 0).scaleb(-3):,}"


def _manifest_order(row: dict[str, Any]) -> tuple:
    return (
        row["period"],
        row["customer_id"] is None,
        row["customer_id"] or 0,
        row["partner_id"] or 0,
        row.get("role", ""),
    )
