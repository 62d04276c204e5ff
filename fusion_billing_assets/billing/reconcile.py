"""The three-way reconciliation of one billing period: NexaCloud actual, Odoo computed, expected.

One row per customer (and per Odoo partner that no customer maps to), each with exactly one
status of docs/design.md §6 and a cause sentence carrying the figures that explain it. Statuses are
decided in this order of precedence (``billing.statuses.DECISION_ORDER``), the first that holds wins:

0. ``source_data_error``: a record of the customer (or of its deployments, plans, invoices, Odoo
   partner or subscriptions) breaks its source's contract or references what the period does not
   hold (``billing.isolation``); the cause names the records and fields. Its legs are shown as far
   as they could be read, but the customer is not judged;
1. ``unmapped``: the customer (or one of its deployments alive in the period) has no Odoo
   counterpart, or an Odoo partner invoiced in the period maps to no NexaCloud customer;
2. ``duplicate``: either side has more than one invoice (refunds aside) for the period;
3. ``currency_mismatch``: both sides invoiced, in different currencies;
4. ``missing_in_odoo`` / ``missing_in_nexacloud``: only one side invoiced;
5. ``match``: the totals are equal to the cent (with no invoice on either side, usage ledgers and
   prices still have to agree: a provisional month is judged on them);
6. for a difference, the first explanation that holds: ``rounding_difference`` (the tax is what
   the other rounding rule gives on the same lines), ``usage_mismatch`` (Odoo's usage ledger
   differs from NexaCloud's metering), ``rate_mismatch`` (the subscription's plan fee or overage
   rate differs from the plan), ``tax_mismatch`` (subtotals agree, tax does not),
   ``within_tolerance`` (unexplained but no larger than the tolerance), else ``amount_mismatch``;
7. ``waived``: any status but ``match`` and ``source_data_error`` whose exact difference is accepted in the waiver file
   becomes ``waived``, its cause keeping the underlying one with the reason and approver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pandas as pd

from fusion_billing_assets.billing.charges import ChargeKind, OdooProducts
from fusion_billing_assets.billing.expected import (
    GLOBAL_HALF_UP,
    PER_LINE_HALF_EVEN,
    PER_LINE_HALF_UP,
    tax_under_other_rounding,
)
from fusion_billing_assets.billing.isolation import SET_ASIDE, empty_set_aside
from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.statuses import Status
from fusion_billing_assets.billing.tax import tax_rule
from fusion_billing_assets.billing.waivers import Waiver, find_waiver
from fusion_billing_assets.warehouse import LINE_COLUMNS, RESULT_COLUMNS


@dataclass(frozen=True)
class Policy:
    tolerance_cents: int = 0
    products: OdooProducts = field(default_factory=OdooProducts)


@dataclass(frozen=True)
class PeriodInputs:
    """Every frame of one period the reconciliation reads, as the source assets produce them."""

    period: date
    provisional: bool
    customers: pd.DataFrame
    plans: pd.DataFrame
    deployments: pd.DataFrame
    nexacloud_usage: pd.DataFrame
    nexacloud_invoices: pd.DataFrame
    nexacloud_invoice_lines: pd.DataFrame
    partners: pd.DataFrame
    subscriptions: pd.DataFrame
    odoo_usage: pd.DataFrame
    # Per local day, the mapped (deployment, subscription) pairs whose usage totals disagree, on
    # the days they differ (``usage_days_that_differ``): what a usage_mismatch's cause names.
    usage_days: pd.DataFrame
    odoo_invoices: pd.DataFrame
    odoo_invoice_lines: pd.DataFrame
    expected_lines: pd.DataFrame
    expected_invoices: pd.DataFrame
    # Set-aside records attributed to the customers (or orphan partners) they concern
    # (``billing.isolation.concerned_customers``); those rows get ``source_data_error``.
    set_aside: pd.DataFrame = field(default_factory=empty_set_aside)
    # Customers whose expected leg cannot be formed, and why: it stays empty, the rest is judged.
    expected_gaps: Mapping[int, str] = field(default_factory=dict)


def account_mapping(
    customers: pd.DataFrame,
    deployments: pd.DataFrame,
    account_links: pd.DataFrame,
    partners: pd.DataFrame,
    odoo_invoices: pd.DataFrame,
) -> pd.DataFrame:
    """Customer ↔ partner and deployment ↔ subscription, with the unmapped of both sides.

    Columns: ``link_kind`` (customer/deployment), ``nexacloud_id`` and ``odoo_id`` (either may be
    missing), ``mapped``, and ``conflict``: why a link cannot be trusted, or None. Invoice partners
    are folded to their commercial partner, so an invoice addressed to a contact of the customer
    still finds it.

    A mapping is one to one. A NexaCloud record linked to two Odoo records, an Odoo record linked
    from two NexaCloud records, or a link that broke its contract (``set_aside``) is a conflict:
    the NexaCloud record is left unmapped with the reason, so no customer is judged on another's
    usage or prices, and an Odoo partner in conflict keeps its invoices on a row of its own.
    """
    problems = account_links[SET_ASIDE] if SET_ASIDE in account_links.columns else None
    readable = account_links if problems is None else account_links[problems.isna()]
    links = readable[["link_kind", "nexacloud_id", "odoo_id"]].astype(
        {"nexacloud_id": "int64", "odoo_id": "int64"}
    )
    conflicts = _link_conflicts(links, account_links if problems is not None else None)
    trusted = links[~pd.MultiIndex.from_frame(links[["link_kind", "nexacloud_id"]]).isin(list(conflicts))]
    customer_links = trusted[trusted["link_kind"] == "customer"]
    deployment_links = trusted[trusted["link_kind"] == "deployment"]
    customer_side = pd.DataFrame({"nexacloud_id": customers["customer_id"].astype("int64")}).merge(
        customer_links[["nexacloud_id", "odoo_id"]], on="nexacloud_id", how="left"
    )
    customer_side.insert(0, "link_kind", "customer")
    deployment_side = pd.DataFrame({"nexacloud_id": deployments["deployment_id"].astype("int64")}).merge(
        deployment_links[["nexacloud_id", "odoo_id"]], on="nexacloud_id", how="left"
    )
    deployment_side.insert(0, "link_kind", "deployment")
    invoiced = set(_commercial_partner(odoo_invoices["partner_id"], partners))
    orphan_partners = sorted(invoiced - set(customer_links["odoo_id"]))
    partner_side = pd.DataFrame(
        {"link_kind": "customer", "nexacloud_id": pd.NA, "odoo_id": orphan_partners},
        columns=customer_side.columns,
    )
    mapping = pd.concat([customer_side, deployment_side, partner_side], ignore_index=True)
    mapping["nexacloud_id"] = mapping["nexacloud_id"].astype("Int64")
    mapping["odoo_id"] = mapping["odoo_id"].astype("Int64")
    mapping["mapped"] = mapping["nexacloud_id"].notna() & mapping["odoo_id"].notna()
    partner_conflicts = {
        odoo_id: reason
        for (kind, _), (odoo_id, reason) in conflicts.items()
        if kind == "customer" and odoo_id
    }
    mapping["conflict"] = [
        conflicts.get((kind, int(nexacloud_id)), (None, None))[1]
        if not pd.isna(nexacloud_id)
        else partner_conflicts.get(int(odoo_id))
        for kind, nexacloud_id, odoo_id in zip(
            mapping["link_kind"], mapping["nexacloud_id"], mapping["odoo_id"], strict=True
        )
    ]
    return mapping


def _link_conflicts(
    links: pd.DataFrame, all_links: pd.DataFrame | None
) -> dict[tuple[str, int], tuple[int | None, str]]:
    """(link kind, NexaCloud id) → (the Odoo id concerned, why its link cannot be trusted)."""
    conflicts: dict[tuple[str, int], tuple[int | None, str]] = {}
    odoo_model = {"customer": "partner", "deployment": "subscription"}
    for (kind, nexacloud_id), group in links.groupby(["link_kind", "nexacloud_id"]):
        if group["odoo_id"].nunique() > 1:
            targets = ", ".join(str(odoo_id) for odoo_id in sorted(group["odoo_id"].unique()))
            conflicts[(kind, int(nexacloud_id))] = (
                None,
                f"NexaCloud {kind} {nexacloud_id} is linked to Odoo {odoo_model[kind]}s {targets}",
            )
    for (kind, odoo_id), group in links.drop_duplicates().groupby(["link_kind", "odoo_id"]):
        if group["nexacloud_id"].nunique() > 1:
            sources = ", ".join(str(nexacloud_id) for nexacloud_id in sorted(group["nexacloud_id"].unique()))
            for nexacloud_id in group["nexacloud_id"].unique():
                conflicts[(kind, int(nexacloud_id))] = (
                    int(odoo_id),
                    f"Odoo {odoo_model[kind]} {odoo_id} is linked from NexaCloud {kind}s {sources}",
                )
    if all_links is not None:
        broken = all_links[all_links[SET_ASIDE].notna()]
        for kind, nexacloud_id, odoo_id, problem in zip(
            broken["link_kind"], broken["nexacloud_id"], broken["odoo_id"], broken[SET_ASIDE], strict=True
        ):
            if not pd.isna(nexacloud_id) and kind in odoo_model:
                conflicts.setdefault(
                    (kind, int(nexacloud_id)),
                    (None if pd.isna(odoo_id) else int(odoo_id), f"its link breaks the contract ({problem})"),
                )
    return conflicts


USAGE_DAY_COLUMNS = (
    "deployment_id",
    "subscription_id",
    "usage_date",
    "nexacloud_cpu_milliseconds",
    "odoo_cpu_milliseconds",
)


def empty_usage_days() -> pd.DataFrame:
    """``usage_days_that_differ``'s frame when no pair's totals disagree."""
    return pd.DataFrame(
        {
            column: pd.Series(dtype=object if column == "usage_date" else "int64")
            for column in USAGE_DAY_COLUMNS
        }
    )


def usage_pairs_that_differ(
    nexacloud_usage: pd.DataFrame, odoo_usage: pd.DataFrame, mapping: pd.DataFrame
) -> pd.DataFrame:
    """The mapped (deployment, subscription) pairs whose usage totals over the period disagree.

    ``nexacloud_usage`` and ``odoo_usage`` are the usage frames as their assets produce them, one
    row per deployment and per subscription; a side without a row has used nothing. A pair with a
    set-aside total on either side is not compared: its customer cannot be judged anyway.
    Columns ``deployment_id``, ``subscription_id``, ``nexacloud_cpu_milliseconds``,
    ``odoo_cpu_milliseconds``, sorted by deployment.
    """
    links = mapping[(mapping["link_kind"] == "deployment") & mapping["nexacloud_id"].notna()]
    links = links[links["odoo_id"].notna()]
    pairs = pd.DataFrame(
        {
            "deployment_id": links["nexacloud_id"].astype("int64").to_numpy(),
            "subscription_id": links["odoo_id"].astype("int64").to_numpy(),
        }
    )
    nexacloud, nexacloud_broken = _usage_totals(nexacloud_usage, "deployment_id")
    odoo, odoo_broken = _usage_totals(odoo_usage, "subscription_id")
    pairs = pairs[
        ~pairs["deployment_id"].isin(nexacloud_broken) & ~pairs["subscription_id"].isin(odoo_broken)
    ]
    pairs = pairs.assign(
        nexacloud_cpu_milliseconds=pairs["deployment_id"].map(nexacloud).fillna(0).astype("int64"),
        odoo_cpu_milliseconds=pairs["subscription_id"].map(odoo).fillna(0).astype("int64"),
    )
    differ = pairs["nexacloud_cpu_milliseconds"] != pairs["odoo_cpu_milliseconds"]
    return pairs[differ].sort_values("deployment_id", ignore_index=True)


def usage_days_that_differ(
    pairs: pd.DataFrame, nexacloud_days: pd.DataFrame, odoo_days: pd.DataFrame
) -> pd.DataFrame:
    """The local days on which each pair's usage differs, with both sides' CPU milliseconds.

    ``pairs`` is ``usage_pairs_that_differ``; ``nexacloud_days`` holds ``deployment_id``,
    ``usage_date``, ``cpu_milliseconds`` and ``odoo_days`` ``subscription_id``, ``usage_date``,
    ``cpu_milliseconds``, for (at least) those pairs. A day one side has no usage on counts 0.
    Columns ``USAGE_DAY_COLUMNS``, sorted by deployment and day.
    """
    keys = pairs[["deployment_id", "subscription_id"]]
    nexacloud = keys.merge(
        nexacloud_days.groupby(["deployment_id", "usage_date"], as_index=False)["cpu_milliseconds"].sum(),
        on="deployment_id",
    ).rename(columns={"cpu_milliseconds": "nexacloud_cpu_milliseconds"})
    odoo = keys.merge(
        odoo_days.groupby(["subscription_id", "usage_date"], as_index=False)["cpu_milliseconds"].sum(),
        on="subscription_id",
    ).rename(columns={"cpu_milliseconds": "odoo_cpu_milliseconds"})
    days = nexacloud.merge(odoo, on=["deployment_id", "subscription_id", "usage_date"], how="outer")
    for column in ("nexacloud_cpu_milliseconds", "odoo_cpu_milliseconds"):
        days[column] = days[column].fillna(0).astype("int64")
    days = days[days["nexacloud_cpu_milliseconds"] != days["odoo_cpu_milliseconds"]]
    days = days.reindex(columns=list(USAGE_DAY_COLUMNS)).astype(
        {"deployment_id": "int64", "subscription_id": "int64", "usage_date": object}
    )
    return days.sort_values(["deployment_id", "usage_date"], ignore_index=True)


def _usage_totals(usage: pd.DataFrame, key: str) -> tuple[pd.Series, set[int]]:
    """CPU milliseconds by ``key`` over the records that keep their contract, and the keys of those set aside."""
    broken = usage[SET_ASIDE].notna() if SET_ASIDE in usage.columns else pd.Series(False, index=usage.index)
    kept = usage[~broken & usage[key].notna()]
    totals = kept.groupby(kept[key].astype("int64"))["cpu_milliseconds"].sum()
    return totals, {int(value) for value in usage.loc[broken, key].dropna()}


def reconcile(
    inputs: PeriodInputs,
    mapping: pd.DataFrame,
    waivers: Sequence[Waiver],
    policy: Policy,
    reconciled_at: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The period's results (one row per customer or orphan partner) and per-deployment detail.

    Computed over whole frames: the legs are grouped sums and joins, each row's reason (hence its
    status) is the first rule of the precedence that holds, evaluated for all rows at once, and a
    plain match's cause is assembled from columns. Only the rows that are no plain match, a few
    dozen in a period, have their cause written one by one.
    """
    ledger = _Ledger(inputs, mapping, policy)
    lines = ledger.deployment_lines()
    rows = ledger.rows(lines)
    cpu = [frame[f"{side}_cpu_milliseconds"] for frame in (rows, lines) for side in ("nexacloud", "odoo")]
    (
        rows["nexacloud_cpu_seconds"],
        rows["odoo_cpu_seconds"],
        lines["nexacloud_cpu_seconds"],
        lines["odoo_cpu_seconds"],
    ) = _seconds_of(*cpu)
    reasons, rounding = ledger.reasons(rows, lines)
    rows["status"] = reasons.map(_STATUS_OF_REASON).astype(object)
    rows["cause"] = ledger.causes(rows, reasons, rounding, lines)
    results = _set_aside_rows(_note_expected_gaps(rows, inputs.expected_gaps), inputs.set_aside)
    results = _waived(results, waivers, inputs.period, reconciled_at.date())
    results["billing_period"] = inputs.period
    results["provisional"] = inputs.provisional
    results["reconciled_at"] = reconciled_at
    return _result_frame(results), _line_frame(lines, inputs.period)


# Why a row has its status, in the order they are tried (docs/design.md §6.5): the first that holds
# wins. A plain match's cause is built from columns; every other reason's row by row.
_STATUS_OF_REASON = {
    "orphan_partner": Status.UNMAPPED,
    "no_partner": Status.UNMAPPED,
    "unmapped_deployments": Status.UNMAPPED,
    "nexacloud_duplicate": Status.DUPLICATE,
    "odoo_duplicate": Status.DUPLICATE,
    "currency": Status.CURRENCY_MISMATCH,
    "missing_in_odoo": Status.MISSING_IN_ODOO,
    "missing_in_nexacloud": Status.MISSING_IN_NEXACLOUD,
    "unbilled_usage": Status.USAGE_MISMATCH,
    "unbilled_rate": Status.RATE_MISMATCH,
    "unbilled_amount": Status.AMOUNT_MISMATCH,
    "unbilled_match": Status.MATCH,
    "match_despite_usage": Status.MATCH,
    "match": Status.MATCH,
    "rounding": Status.ROUNDING_DIFFERENCE,
    "usage": Status.USAGE_MISMATCH,
    "rate": Status.RATE_MISMATCH,
    "tax": Status.TAX_MISMATCH,
    "tolerance": Status.WITHIN_TOLERANCE,
    "amount": Status.AMOUNT_MISMATCH,
}


class _Ledger:
    """One period's frames summed once per customer, partner, deployment and subscription."""

    def __init__(self, inputs: PeriodInputs, mapping: pd.DataFrame, policy: Policy):
        self.inputs = inputs
        self.policy = policy
        customer_links = mapping[mapping["link_kind"] == "customer"]
        linked = customer_links[customer_links["nexacloud_id"].notna() & customer_links["odoo_id"].notna()]
        self.partner_of = _last_by(linked["nexacloud_id"], linked["odoo_id"])
        self.orphans = sorted(
            int(odoo_id) for odoo_id in customer_links.loc[customer_links["nexacloud_id"].isna(), "odoo_id"]
        )
        deployment_links = mapping[(mapping["link_kind"] == "deployment") & mapping["odoo_id"].notna()]
        self.subscription_of = _last_by(deployment_links["nexacloud_id"], deployment_links["odoo_id"])
        self.partner_names = _indexed(inputs.partners, "partner_id", "name", keep="last")
        # Invoices addressed to a contact belong to its company, as the ledger folds them.
        self.odoo_partner = _commercial_partner(inputs.odoo_invoices["partner_id"], inputs.partners)
        invoices, lines = inputs.nexacloud_invoices, inputs.nexacloud_invoice_lines
        odoo_invoices, odoo_lines = inputs.odoo_invoices, inputs.odoo_invoice_lines
        customer_of_line = lines["invoice_id"].map(_indexed(invoices, "invoice_id", "customer_id"))
        partner_of_line = odoo_lines["move_id"].map(
            pd.Series(self.odoo_partner.to_numpy(), index=odoo_invoices["move_id"].to_numpy())
        )
        category = _odoo_category(odoo_lines["product_code"], policy.products)
        kind = lines["kind"].astype("category")
        # Each line's amount under its kind (NexaCloud) or product (Odoo), 0 under the others.
        nexacloud_amounts = {
            "base_cents": lines["amount_cents"].where(kind == ChargeKind.BASE, 0),
            "overage_cents": lines["amount_cents"].where(kind == ChargeKind.OVERAGE, 0),
        }
        odoo_amounts = {
            "plan_fee_cents": odoo_lines["subtotal_cents"].where(category == _PLAN_FEE, 0),
            "overage_cents": odoo_lines["subtotal_cents"].where(category == _OVERAGE, 0),
        }
        expected, subscriptions = inputs.expected_lines, inputs.subscriptions
        # Each owner's figures in one table, looked up once per row.
        self.by_customer = _keyed(
            _invoice_summaries(invoices, invoices["customer_id"], "subtotal_cents"),
            _sums(customer_of_line, **nexacloud_amounts),
            **{
                f"expected_{column}": _indexed(inputs.expected_invoices, "customer_id", column)
                for column in ("subtotal_cents", "tax_cents", "total_cents")
            },
        )
        self.by_partner = _keyed(
            _invoice_summaries(odoo_invoices, self.odoo_partner, "untaxed_cents"),
            _sums(partner_of_line, **odoo_amounts),
        )
        self.by_deployment = _keyed(
            _sums(lines["deployment_id"], **nexacloud_amounts, tax_cents=lines["tax_cents"]),
            _sums(
                inputs.nexacloud_usage["deployment_id"],
                cpu_milliseconds=inputs.nexacloud_usage["cpu_milliseconds"],
            ),
            plan_id=_indexed(inputs.deployments, "deployment_id", "plan_id", keep="last"),
            **{
                name: _indexed(expected, "deployment_id", column, keep="last")
                for name, column in (
                    ("expected_plan_id", "plan_id"),
                    ("active_days", "active_days"),
                    ("expected_base_cents", "base_cents"),
                    ("expected_overage_cents", "overage_cents"),
                    ("expected_tax_cents", "tax_cents"),
                )
            },
        )
        self.by_subscription = _keyed(
            _sums(odoo_lines["subscription_id"], **odoo_amounts, tax_cents=odoo_lines["tax_cents"]),
            _sums(
                inputs.odoo_usage["subscription_id"], cpu_milliseconds=inputs.odoo_usage["cpu_milliseconds"]
            ),
            price_cents=_indexed(subscriptions, "subscription_id", "plan_fee_cents"),
            overage_rate=_indexed(subscriptions, "subscription_id", "overage_cents_per_cpu_hour"),
        )
        plans = inputs.plans.set_index("plan_id")
        # The plan's rate as the exact Decimal it prices with, converted once per plan.
        self.plans = plans.assign(overage_rate=plans["overage_cents_per_cpu_hour"].dropna().map(Decimal))
        self.usage_days = {
            (int(deployment_id), int(subscription_id)): sorted(days)
            for (deployment_id, subscription_id), days in inputs.usage_days.groupby(
                ["deployment_id", "subscription_id"]
            )["usage_date"]
        }
        self.province_of = dict(
            zip(inputs.customers["customer_id"], inputs.customers["province"], strict=True)
        )

    # --- per deployment -------------------------------------------------------------------------

    def deployment_lines(self) -> pd.DataFrame:
        """One line per deployment of each customer, customers in their frame's order and each
        customer's deployments in theirs; ``customer_position`` is the customer's row."""
        customers = pd.DataFrame({"customer_id": self.inputs.customers["customer_id"].to_numpy()})
        deployments = self.inputs.deployments[["deployment_id", "customer_id"]].reset_index(drop=True)
        lines = (
            customers.reset_index(names="customer_position")
            .merge(deployments.reset_index(names="deployment_position"), on="customer_id")
            .sort_values(["customer_position", "deployment_position"], kind="stable", ignore_index=True)
        )
        subscription = lines["deployment_id"].map(self.subscription_of)
        deployment = _aligned(self.by_deployment, lines["deployment_id"])
        ledger = _aligned(self.by_subscription, subscription)
        has_expected = deployment["expected_plan_id"].notna()
        plan = _aligned(self.plans, deployment["expected_plan_id"].where(has_expected, deployment["plan_id"]))
        return lines.assign(
            partner_id=lines["customer_id"].map(self.partner_of),
            subscription_id=subscription,
            plan_code=_objects(plan["plan_code"]),
            active_days=_like_records(deployment["active_days"]),
            nexacloud_cpu_milliseconds=_whole(deployment["cpu_milliseconds"]),
            odoo_cpu_milliseconds=_whole(ledger["cpu_milliseconds"]),
            nexacloud_plan_price_cents=_like_records(plan["monthly_price_cents"]),
            odoo_plan_price_cents=_like_records(ledger["price_cents"]),
            nexacloud_overage_rate=_objects(plan["overage_rate"]),
            odoo_overage_rate=_objects(ledger["overage_rate"]),
            nexacloud_base_cents=_whole(deployment["base_cents"]),
            nexacloud_overage_cents=_whole(deployment["overage_cents"]),
            nexacloud_tax_cents=_whole(deployment["tax_cents"]),
            odoo_plan_fee_cents=_whole(ledger["plan_fee_cents"]),
            odoo_overage_cents=_whole(ledger["overage_cents"]),
            odoo_tax_cents=_whole(ledger["tax_cents"]),
            expected_base_cents=_whole(deployment["expected_base_cents"]),
            expected_overage_cents=_whole(deployment["expected_overage_cents"]),
            expected_tax_cents=_whole(deployment["expected_tax_cents"]),
            note=np.where(subscription.isna(), "no Odoo subscription mapped", None),
        )

    # --- per customer and orphan partner ----------------------------------------------------------

    def rows(self, lines: pd.DataFrame) -> pd.DataFrame:
        """The three legs of every customer (in the customers frame's order), then of every invoiced
        partner no customer maps to, then of every partner a set-aside record concerns that has no
        row yet (a contact whose company cannot be read, say): no set-aside record goes unnamed."""
        customers = self.inputs.customers
        partner_ids = pd.Series(customers["customer_id"].to_numpy()).map(self.partner_of)
        shown = {int(partner_id) for partner_id in partner_ids.dropna()} | set(self.orphans)
        unnamed = self.inputs.set_aside
        unnamed = unnamed[unnamed["customer_id"].isna() & unnamed["partner_id"].notna()]
        orphans = self.orphans + sorted({int(partner_id) for partner_id in unnamed["partner_id"]} - shown)
        cpu = lines.groupby("customer_position")[
            ["nexacloud_cpu_milliseconds", "odoo_cpu_milliseconds"]
        ].sum()
        cpu = cpu.reindex(range(len(customers) + len(orphans)), fill_value=0)
        customer_ids = pd.Series(
            np.concatenate(
                [customers["customer_id"].to_numpy(dtype="float64"), np.full(len(orphans), np.nan)]
            )
        ).astype("Int64")
        partner_ids = pd.Series(
            np.concatenate([partner_ids.to_numpy(dtype="float64"), np.array(orphans, dtype="float64")])
        ).astype("Int64")
        orphan_names = _objects(pd.Series(orphans, dtype="int64").map(self.partner_names))
        names = pd.Series(
            np.concatenate([customers["name"].to_numpy(dtype=object), orphan_names.to_numpy(dtype=object)])
        )
        nexacloud = _aligned(self.by_customer, customer_ids)
        odoo = _aligned(self.by_partner, partner_ids)
        gaps = customer_ids.isin(list(self.inputs.expected_gaps))
        row = pd.DataFrame(
            {
                "customer_id": customer_ids,
                "partner_id": partner_ids,
                "customer_name": names,
                "nexacloud_invoice_count": _whole(nexacloud["invoices"]),
                "odoo_invoice_count": _whole(odoo["out_invoices"]),
                "odoo_moves": _whole(odoo["invoices"]),
                "nexacloud_currency": _objects(nexacloud["currency"]),
                "odoo_currency": _objects(odoo["currency"]),
                "nexacloud_subtotal_cents": _whole(nexacloud["subtotal_cents"]),
                "nexacloud_tax_cents": _whole(nexacloud["tax_cents"]),
                "nexacloud_total_cents": _whole(nexacloud["total_cents"]),
                "odoo_subtotal_cents": _whole(odoo["subtotal_cents"]),
                "odoo_tax_cents": _whole(odoo["tax_cents"]),
                "odoo_total_cents": _whole(odoo["total_cents"]),
                # None where our third opinion cannot be formed (``expected_gaps``).
                **{
                    f"expected_{leg}_cents": _whole(nexacloud[f"expected_{leg}_cents"])
                    .astype("Int64")
                    .mask(gaps)
                    for leg in ("subtotal", "tax", "total")
                },
                "plan_fee_delta_cents": _whole(odoo["plan_fee_cents"]) - _whole(nexacloud["base_cents"]),
                "overage_delta_cents": _whole(odoo["overage_cents"]) - _whole(nexacloud["overage_cents"]),
                "nexacloud_cpu_milliseconds": cpu["nexacloud_cpu_milliseconds"],
                "odoo_cpu_milliseconds": cpu["odoo_cpu_milliseconds"],
                "waiver_reason": None,
                "waiver_approver": None,
            }
        )
        row["delta_cents"] = row["odoo_total_cents"] - row["nexacloud_total_cents"]
        row["tax_delta_cents"] = row["odoo_tax_cents"] - row["nexacloud_tax_cents"]
        return row

    # --- statuses -------------------------------------------------------------------------------

    def reasons(self, rows: pd.DataFrame, lines: pd.DataFrame) -> tuple[pd.Series, dict[int, str]]:
        """Each row's reason (``_STATUS_OF_REASON``), the first rule of docs/design.md §6.5 that
        holds; and the rounding explanation of every row whose reason is ``rounding``."""
        by_customer = lines["customer_position"]
        mapped = lines["subscription_id"].notna()
        unmapped = _any_of(by_customer, ~mapped, len(rows))
        usage_gap = _any_of(
            by_customer,
            mapped & (lines["odoo_cpu_milliseconds"] != lines["nexacloud_cpu_milliseconds"]),
            len(rows),
        )
        rate_gap = _any_of(by_customer, mapped & _rates_differ(lines), len(rows))
        has_nexacloud, has_odoo = rows["nexacloud_invoice_count"] > 0, rows["odoo_moves"] > 0
        neither = ~has_nexacloud & ~has_odoo
        delta = rows["delta_cents"]
        subtotals_agree = rows["odoo_subtotal_cents"] == rows["nexacloud_subtotal_cents"]
        rules = {
            "orphan_partner": rows["customer_id"].isna(),
            "no_partner": rows["partner_id"].isna(),
            "unmapped_deployments": unmapped,
            "nexacloud_duplicate": rows["nexacloud_invoice_count"] > 1,
            "odoo_duplicate": rows["odoo_invoice_count"] > 1,
            # Compared as Python compares them: no currency on both sides is no difference.
            "currency": has_nexacloud
            & has_odoo
            & (rows["nexacloud_currency"].fillna("") != rows["odoo_currency"].fillna("")),
            "missing_in_odoo": has_nexacloud & ~has_odoo,
            "missing_in_nexacloud": has_odoo & ~has_nexacloud,
            "unbilled_usage": neither & usage_gap,
            "unbilled_rate": neither & rate_gap,
            "unbilled_amount": neither
            & (not self.inputs.provisional)
            & (rows["expected_total_cents"].fillna(0) > 0),
            "unbilled_match": neither,
            "match_despite_usage": (delta == 0) & usage_gap,
            "match": delta == 0,
        }
        decided = pd.Series(False, index=rows.index)
        for holds in rules.values():
            decided |= holds
        candidates = rows.index[~decided & subtotals_agree & (rows["tax_delta_cents"] != 0)]
        rounding = {index: text for index in candidates if (text := self._rounding(rows.loc[index]))}
        rules |= {
            "rounding": rows.index.isin(list(rounding)),
            "usage": usage_gap,
            "rate": rate_gap,
            "tax": subtotals_agree,
            "tolerance": delta.abs() <= self.policy.tolerance_cents,
        }
        first = np.select(
            [np.asarray(holds, dtype=bool) for holds in rules.values()], range(len(rules)), len(rules)
        )
        reasons = pd.Categorical.from_codes(first, categories=[*rules, "amount"])
        return pd.Series(reasons, index=rows.index), rounding

    def _rounding(self, row: pd.Series) -> str | None:
        """Why the tax differs when each side's tax is what one rounding rule gives on NexaCloud's
        line amounts of the customer's invoices at the province's rate; None when it is not."""
        customer_id = int(row["customer_id"])
        invoices = self.inputs.nexacloud_invoices
        invoice_ids = invoices.loc[invoices["customer_id"] == customer_id, "invoice_id"]
        lines = self.inputs.nexacloud_invoice_lines
        amounts = [
            int(amount)
            for invoice_id in invoice_ids
            for amount in lines.loc[lines["invoice_id"] == invoice_id, "amount_cents"]
        ]
        rule = self._tax_rule(customer_id)
        if not amounts or rule is None:
            return None
        alternatives = tax_under_other_rounding(amounts, rule.rate)
        # Both taxes must be what a rounding rule gives on these lines: a wrong rate on either
        # side is a tax_mismatch, not a rounding difference.
        odoo_rule = _rounding_giving(alternatives, row["odoo_tax_cents"])
        nexacloud_rule = _rounding_giving(alternatives, row["nexacloud_tax_cents"])
        if odoo_rule is None or nexacloud_rule is None:
            return None
        return (
            f"subtotals agree at {format_cents(row['nexacloud_subtotal_cents'])}; the {rule.label} of the "
            f"{len(amounts)} lines is {format_cents(row['odoo_tax_cents'])} rounded {odoo_rule} (Odoo) and "
            f"{format_cents(row['nexacloud_tax_cents'])} rounded {nexacloud_rule} (NexaCloud)."
        )

    # --- causes ---------------------------------------------------------------------------------

    def causes(
        self, rows: pd.DataFrame, reasons: pd.Series, rounding: dict[int, str], lines: pd.DataFrame
    ) -> pd.Series:
        """Each row's cause sentence, with the figures that explain its status."""
        causes = pd.Series([None] * len(rows), index=rows.index, dtype=object)
        match = (reasons == "match").to_numpy(dtype=bool)
        causes[match] = (
            "NexaCloud and Odoo both billed "
            + _cents_text(rows.loc[match, "nexacloud_total_cents"])
            + " (subtotal "
            + _cents_text(rows.loc[match, "nexacloud_subtotal_cents"])
            + " + tax "
            + _cents_text(rows.loc[match, "nexacloud_tax_cents"])
            + ")."
        )
        unbilled = (reasons == "unbilled_match").to_numpy(dtype=bool)
        expected = rows.loc[unbilled, "expected_total_cents"]
        causes[unbilled] = (
            f"No invoice on either side {self._when()}; usage ledgers and prices agree"
            + np.where(expected.isna(), ".", " (expected so far " + _cents_text(expected.fillna(0)) + ").")
        )
        others = rows[~match & ~unbilled]
        if len(others):
            explain = _Explanations(self, others, lines)
            for index, values in zip(others.index, others.to_numpy(dtype=object), strict=True):
                row = dict(zip(others.columns, values, strict=True))
                causes[index] = explain.cause(reasons[index], index, row, rounding.get(index))
        return causes

    def _when(self) -> str:
        return "so far this month" if self.inputs.provisional else "for the period"

    def _tax_rule(self, customer_id: int):
        province = self.province_of.get(customer_id)
        try:
            return tax_rule(province, self.inputs.period) if province else None
        except ValueError:
            return None


class _Explanations:
    """The figures behind the causes of the rows that are no plain match: their invoices, their
    deployments' lines, written out one row at a time."""

    def __init__(self, ledger: _Ledger, rows: pd.DataFrame, lines: pd.DataFrame):
        self.ledger = ledger
        customers = {int(customer_id) for customer_id in rows["customer_id"].dropna()}
        partners = {int(partner_id) for partner_id in rows["partner_id"].dropna()}
        invoices = ledger.inputs.nexacloud_invoices
        invoices = invoices[invoices["customer_id"].isin(customers)]
        self.invoice_ids = {
            int(customer): list(group) for customer, group in invoices.groupby("customer_id")["invoice_id"]
        }
        chosen = ledger.odoo_partner.isin(partners)
        moves = ledger.inputs.odoo_invoices[chosen]
        self.moves: dict[int, list[tuple]] = {}
        for partner, *move in zip(
            ledger.odoo_partner[chosen], moves["move_id"], moves["name"], moves["move_type"], strict=True
        ):
            self.moves.setdefault(int(partner), []).append(tuple(move))
        lines = lines[lines["customer_position"].isin(rows.index)]
        self.lines: dict[int, list[dict]] = {}
        for values in lines.to_numpy(dtype=object):
            line = dict(zip(lines.columns, values, strict=True))
            self.lines.setdefault(int(line["customer_position"]), []).append(
                {
                    **line,
                    "deployment_id": int(line["deployment_id"]),
                    "subscription_id": _integer(line["subscription_id"]),
                    "nexacloud_plan_price_cents": _integer(line["nexacloud_plan_price_cents"]),
                    "odoo_plan_price_cents": _integer(line["odoo_plan_price_cents"]),
                }
            )

    def cause(self, reason: str, position: int, row: dict, rounding: str | None) -> str:
        customer_id, partner_id = _integer(row["customer_id"]), _integer(row["partner_id"])
        nexacloud_total, odoo_total = (
            format_cents(row["nexacloud_total_cents"]),
            format_cents(row["odoo_total_cents"]),
        )
        invoice_ids = self.invoice_ids.get(customer_id, [])
        odoo = self.moves.get(partner_id, [])
        lines = self.lines.get(position, [])
        when = self.ledger._when()
        difference = f"Odoo − NexaCloud = {format_cents(row['delta_cents'])}"
        if reason == "orphan_partner":
            return (
                f"Odoo partner {partner_id} ({row['customer_name']}) was invoiced {odoo_total} "
                f"on {_names(odoo)} but maps to no NexaCloud customer."
            )
        if reason == "no_partner":
            return (
                f"NexaCloud customer {customer_id} maps to no Odoo partner (no ir.model.data "
                f"customer_{customer_id}); NexaCloud billed {nexacloud_total}."
            )
        if reason == "unmapped_deployments":
            unmapped = [line["deployment_id"] for line in lines if line["subscription_id"] is None]
            return (
                f"Deployment{'s' if len(unmapped) > 1 else ''} {_listing(unmapped)} of customer {customer_id} "
                f"map{'' if len(unmapped) > 1 else 's'} to no Odoo subscription; NexaCloud billed "
                f"{nexacloud_total}, Odoo {odoo_total}."
            )
        if reason == "nexacloud_duplicate":
            return (
                f"NexaCloud has {row['nexacloud_invoice_count']} invoices for the period "
                f"({_listing(invoice_ids)}) totalling {nexacloud_total}; Odoo invoiced {odoo_total}."
            )
        if reason == "odoo_duplicate":
            return (
                f"Odoo has {row['odoo_invoice_count']} invoices for the period ({_names(odoo, 'out_invoice')}) "
                f"totalling {odoo_total} where NexaCloud billed {nexacloud_total} once."
            )
        if reason == "currency":
            return (
                f"NexaCloud bills this customer in {row['nexacloud_currency']} ({nexacloud_total}) but Odoo "
                f"invoiced in {row['odoo_currency']} ({odoo_total} on {_names(odoo)})."
            )
        if reason == "missing_in_odoo":
            return (
                f"NexaCloud billed {nexacloud_total} (invoice {_listing(invoice_ids)}); "
                f"Odoo has no invoice for partner {partner_id} in the period."
            )
        if reason == "missing_in_nexacloud":
            return (
                f"Odoo invoiced {odoo_total} ({_names(odoo)}) but NexaCloud has no "
                f"non-void invoice for the period."
            )
        if reason == "unbilled_usage":
            return f"No invoice on either side {when}, but: {self._usage_gaps(lines)}"
        if reason == "unbilled_rate":
            return f"No invoice on either side {when}, but: {self._rate_gaps(lines)}"
        if reason == "unbilled_amount":
            # Both systems failing to bill is no agreement: the usage and plans call for a bill.
            return (
                f"Neither NexaCloud nor Odoo billed the period, although its usage and plans call for "
                f"{format_cents(row['expected_total_cents'])}."
            )
        if reason == "match_despite_usage":
            return (
                f"NexaCloud and Odoo both billed {nexacloud_total} "
                f"(subtotal {format_cents(row['nexacloud_subtotal_cents'])} + tax "
                f"{format_cents(row['nexacloud_tax_cents'])}). "
                f"Odoo's usage ledger differs nonetheless: {self._usage_gaps(lines)}"
            )
        if reason == "rounding":
            return f"{difference}: {rounding}"
        if reason == "usage":
            return f"{self._usage_gaps(lines)} {difference} ({_components(row)})."
        if reason == "rate":
            return f"{self._rate_gaps(lines)} {difference} ({_components(row)})."
        if reason == "tax":
            rule = self.ledger._tax_rule(customer_id)
            return (
                f"Subtotals agree at {format_cents(row['nexacloud_subtotal_cents'])} but Odoo charged "
                f"{format_cents(row['odoo_tax_cents'])} tax where NexaCloud charged "
                f"{format_cents(row['nexacloud_tax_cents'])} ({rule.label if rule else 'no known tax rule'} for "
                f"{self.ledger.province_of.get(customer_id)}): {difference}, beyond any rounding."
            )
        if reason == "tolerance":
            return (
                f"{difference}, within the tolerance of {format_cents(self.ledger.policy.tolerance_cents)}; "
                "usage, prices and tax rule agree."
            )
        return f"{difference} that usage, prices and the tax rule do not explain ({_components(row)})."

    def _usage_gaps(self, lines: list[dict]) -> str:
        sentences = []
        for line in lines:
            difference = line["odoo_cpu_milliseconds"] - line["nexacloud_cpu_milliseconds"]
            if line["subscription_id"] is None or difference == 0:
                continue
            days = self.ledger.usage_days.get((line["deployment_id"], line["subscription_id"]), [])
            more_or_less = "more" if difference > 0 else "less"
            sentences.append(
                f"Odoo's usage ledger for subscription {line['subscription_id']} has "
                f"{_seconds_text(abs(difference))} CPU-seconds {more_or_less} than NexaCloud metered for "
                f"deployment {line['deployment_id']}"
                + (f", differing on {_listing(day.isoformat() for day in days)}" if days else "")
                + "."
            )
        return " ".join(sentences)

    def _rate_gaps(self, lines: list[dict]) -> str:
        sentences = []
        for line in lines:
            if line["subscription_id"] is None:
                continue
            nexacloud_fee, odoo_fee = line["nexacloud_plan_price_cents"], line["odoo_plan_price_cents"]
            if odoo_fee is not None and nexacloud_fee is not None and odoo_fee != nexacloud_fee:
                sentences.append(
                    f"Odoo's subscription {line['subscription_id']} (deployment {line['deployment_id']}) carries a "
                    f"plan fee of {format_cents(odoo_fee)} where NexaCloud's {line['plan_code']} plan is "
                    f"{format_cents(nexacloud_fee)}."
                )
            nexacloud_rate, odoo_rate = line["nexacloud_overage_rate"], line["odoo_overage_rate"]
            if odoo_rate is not None and nexacloud_rate is not None and odoo_rate != nexacloud_rate:
                sentences.append(
                    f"Odoo's subscription {line['subscription_id']} (deployment {line['deployment_id']}) prices "
                    f"overage at {odoo_rate.normalize():f}¢ per CPU-hour where the {line['plan_code']} plan says "
                    f"{nexacloud_rate.normalize():f}¢."
                )
        return " ".join(sentences)


def _components(row: dict) -> str:
    other = (
        row["delta_cents"] - row["plan_fee_delta_cents"] - row["overage_delta_cents"] - row["tax_delta_cents"]
    )
    parts = [
        f"plan fee {format_cents(row['plan_fee_delta_cents'])}",
        f"overage {format_cents(row['overage_delta_cents'])}",
        f"tax {format_cents(row['tax_delta_cents'])}",
    ]
    if other:
        parts.append(f"other lines {format_cents(other)}")
    return "; ".join(parts)


def _rates_differ(lines: pd.DataFrame) -> pd.Series:
    """Lines whose subscription's plan fee or overage rate differs from the plan's, both known."""
    fees = lines[["nexacloud_plan_price_cents", "odoo_plan_price_cents"]]
    rates = lines[["nexacloud_overage_rate", "odoo_overage_rate"]]
    fee_differs = fees.notna().all(axis=1) & (fees.iloc[:, 0] != fees.iloc[:, 1])
    rate_differs = rates.notna().all(axis=1) & (rates.iloc[:, 0] != rates.iloc[:, 1])
    return fee_differs | rate_differs


def _any_of(positions: pd.Series, holds: pd.Series, length: int) -> pd.Series:
    """Per row position, whether ``holds`` for any of its lines."""
    found = np.zeros(length, dtype=bool)
    found[positions[holds].to_numpy()] = True
    return pd.Series(found)


_ROUNDING_NAMES = {
    PER_LINE_HALF_UP: "per line, half-up",
    GLOBAL_HALF_UP: "globally (round_globally)",
    PER_LINE_HALF_EVEN: "per line, half-even",
}


def _rounding_giving(alternatives: dict[str, int], tax_cents: int) -> str | None:
    """The rounding rule (named for people) that gives this tax on the lines, if any."""
    return next((_ROUNDING_NAMES[name] for name, tax in alternatives.items() if tax == tax_cents), None)


_PLAN_FEE, _OVERAGE, _OTHER = "plan_fee", "overage", "other"


def _sums(keys: pd.Series, **values: pd.Series) -> pd.DataFrame:
    """The sum of each of ``values`` per key (values without a key left out), by whole-number key."""
    sums = pd.DataFrame(values).groupby(keys).sum()
    return sums.set_axis(sums.index.astype("int64"))


def _keyed(*tables: pd.DataFrame, **columns: pd.Series) -> pd.DataFrame:
    """Figures of the same owners side by side, one row per owner any of them knows."""
    return pd.concat([*tables, pd.DataFrame(columns)], axis=1)


def _aligned(table: pd.DataFrame, keys: pd.Series) -> pd.DataFrame:
    """The rows of ``table`` for ``keys`` (missing for a missing key), in their order and index."""
    found = table.reindex(keys.to_numpy(dtype="float64", na_value=np.nan))
    return found.set_axis(keys.index)


def _whole(values: pd.Series) -> pd.Series:
    """Whole numbers, 0 where there is none."""
    return values.fillna(0).astype("int64")


def _like_records(values: pd.Series) -> pd.Series:
    """Whole numbers typed as a frame built from records types them: ``int64`` when none is
    missing, ``float64`` with NaN when some are, objects (None) when all are."""
    missing = values.isna()
    if not missing.any():
        return values.astype("int64")
    if missing.all():
        return pd.Series([None] * len(values), index=values.index, dtype=object)
    return pd.Series(values.to_numpy(dtype="float64", na_value=np.nan), index=values.index)


def _objects(values: pd.Series) -> pd.Series:
    """Values as objects, None where missing."""
    return values.astype(object).where(values.notna(), None)


def _integer(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _last_by(keys: pd.Series, values: pd.Series) -> pd.Series:
    """``values`` indexed by ``keys`` (both whole numbers, pairs with a missing one left out), the
    last pair winning for a repeated key."""
    pairs = pd.DataFrame({"key": keys.to_numpy(), "value": values.to_numpy()}).dropna()
    pairs = pairs.drop_duplicates("key", keep="last")
    return pd.Series(pairs["value"].astype("int64").to_numpy(), index=pairs["key"].astype("int64").to_numpy())


def _indexed(frame: pd.DataFrame, key: str, column: str, *, keep: str | None = None) -> pd.Series:
    """``frame[column]`` indexed by ``frame[key]``; with ``keep="last"`` a repeated key keeps its
    last value (as a dict built from the rows would), else a repeated key is an error on lookup."""
    values = pd.Series(frame[column].to_numpy(), index=frame[key].to_numpy())
    return values[~values.index.duplicated(keep=keep)] if keep else values


def _invoice_summaries(invoices: pd.DataFrame, owners: pd.Series, subtotal_column: str) -> pd.DataFrame:
    """Per customer (or partner) ``owners`` names: invoice counts (``out_invoices`` leaves Odoo's
    refunds out), currencies joined by "/" in alphabetical order, and summed amounts."""
    grouped = invoices.groupby(owners)
    summary = grouped[[subtotal_column, "tax_cents", "total_cents"]].sum()
    summary = summary.rename(columns={subtotal_column: "subtotal_cents"})
    summary["invoices"] = grouped.size()
    summary["out_invoices"] = (
        (invoices["move_type"] == "out_invoice").groupby(owners).sum()
        if "move_type" in invoices
        else summary["invoices"]
    )
    summary["currency"] = grouped["currency"].first()
    summary["currencies"] = grouped["currency"].nunique()
    # Several currencies for one owner are rare: join them only where there are.
    several = summary.index[summary["currencies"] > 1]
    if len(several):
        chosen = owners.isin(several)
        joined = (
            pd.DataFrame({"owner": owners[chosen], "currency": invoices.loc[chosen, "currency"]})
            .dropna()
            .drop_duplicates()
            .sort_values("currency")
            .groupby("owner")["currency"]
            .agg("/".join)
        )
        summary.loc[joined.index, "currency"] = joined
    return summary


def _odoo_category(product_codes: pd.Series, products: OdooProducts) -> pd.Series:
    # A period has a handful of product codes: categorise each once.
    codes, uniques = pd.factorize(product_codes.fillna(""))
    uniques = pd.Series(uniques, dtype=object)
    categories = np.where(
        uniques == products.overage_code,
        _OVERAGE,
        np.where(uniques.str.startswith(products.plan_prefix), _PLAN_FEE, _OTHER),
    ).astype(object)
    return pd.Series(categories[codes], index=product_codes.index, dtype=object)


def _commercial_partner(partner_ids: pd.Series, partners: pd.DataFrame) -> pd.Series:
    """Each partner's commercial partner (its company), or itself when it has none."""
    commercial = partners.drop_duplicates("partner_id", keep="last").set_index("partner_id")
    companies = partner_ids.map(commercial["commercial_partner_id"])
    return companies.where(companies.notna(), partner_ids).astype("int64")


def _names(moves: Sequence[tuple], move_type: str | None = None) -> str:
    """The Odoo invoices, (move_id, name, move_type) each, by name."""
    # Odoo names a draft "/" until it is posted.
    return ", ".join(
        str(name) if name and name != "/" else f"draft move {move_id}"
        for move_id, name, kind in moves
        if move_type is None or kind == move_type
    )


def _listing(values) -> str:
    items = [str(value) for value in values]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _seconds(milliseconds: int) -> Decimal:
    return Decimal(int(milliseconds)) / 1000


def _seconds_of(*milliseconds: pd.Series) -> list[pd.Series]:
    """Columns of CPU milliseconds as ``_seconds``, each distinct value converted once (the two
    sides mostly agree, and a customer with one deployment has its deployment's figures)."""
    values = np.concatenate([column.to_numpy(dtype="int64") for column in milliseconds])
    codes, distinct = pd.factorize(values)
    seconds = np.array([_seconds(value) for value in distinct.tolist()], dtype=object)[codes]
    ends = np.cumsum([len(column) for column in milliseconds])
    return [
        pd.Series(part, index=column.index, dtype=object)
        for column, part in zip(milliseconds, np.split(seconds, ends[:-1]), strict=True)
    ]


def _seconds_text(milliseconds: int) -> str:
    seconds = _seconds(milliseconds)
    return f"{seconds:,.3f}".rstrip("0").rstrip(".")


# ``format_cents`` over a column: "$1,234.56", "-$1.00", assembled from groups of three digits.
_DIGITS = np.array([str(number) for number in range(1000)], dtype=object)
_THREE_DIGITS = np.array([f"{number:03d}" for number in range(1000)], dtype=object)
_CENTS = np.array([f".{number:02d}" for number in range(100)], dtype=object)
_SIGNS = np.array(["$", "-$"], dtype=object)


def _cents_text(cents: pd.Series) -> np.ndarray:
    """``format_cents`` of every value of the column, computed for the column at once."""
    values = cents.to_numpy(dtype="int64")
    dollars, remainder = np.divmod(np.abs(values), 100)
    return _SIGNS[(values < 0).astype("int64")] + _dollars_text(dollars) + _CENTS[remainder]


def _dollars_text(dollars: np.ndarray) -> np.ndarray:
    """Whole dollars with a comma between thousands: ``1234567 → "1,234,567"``."""
    text = _DIGITS[dollars % 1000]
    large = dollars >= 1000
    if large.any():
        text[large] = _dollars_text(dollars[large] // 1000) + "," + _THREE_DIGITS[dollars[large] % 1000]
    return text


def _set_aside_rows(results: pd.DataFrame, set_aside: pd.DataFrame) -> pd.DataFrame:
    """The rows of customers (and orphan partners) with set-aside records: ``source_data_error``,
    the cause naming each record, its source and what is wrong with it."""
    if set_aside.empty or results.empty:
        return results
    results = results.copy()
    customer_rows = results["customer_id"].notna()
    concerned = (
        ("customer", "customer_id", customer_rows, set_aside["customer_id"].notna()),
        (
            "partner",
            "partner_id",
            ~customer_rows,
            set_aside["customer_id"].isna() & set_aside["partner_id"].notna(),
        ),
    )
    for kind, column, rows, records in concerned:
        causes = {
            int(key): _set_aside_cause(group, kind) for key, group in set_aside[records].groupby(column)
        }
        keys = results.loc[rows, column].dropna()
        hit = keys.index[keys.isin(list(causes))]
        results.loc[hit, "status"] = Status.SOURCE_DATA_ERROR
        results.loc[hit, "cause"] = keys[hit].astype("int64").map(causes)
    return results


def _set_aside_cause(records: pd.DataFrame, kind: str) -> str:
    named = "; ".join(
        f"{record.source} {record.record}: {record.problem}"
        for record in records.head(_SET_ASIDE_NAMED).itertuples(index=False)
    )
    more = len(records) - min(len(records), _SET_ASIDE_NAMED)
    return (
        f"Set aside: {len(records)} record(s) break their source's contract, so this "
        f"{kind} cannot be judged: {named}"
        + (f"; and {more} more" if more else "")
        + ". Fix them in their source and re-run the period."
    )


def _note_expected_gaps(results: pd.DataFrame, gaps: Mapping[int, str]) -> pd.DataFrame:
    """Say in the cause why a customer's expected leg is empty."""
    if not gaps or results.empty:
        return results
    results = results.copy()
    customers = results["customer_id"].dropna()
    noted = customers.index[customers.isin(list(gaps))]
    results.loc[noted, "cause"] = (
        results.loc[noted, "cause"]
        + " Our expected leg is left empty: "
        + customers[noted].astype("int64").map(gaps)
        + "."
    )
    return results


def _waived(results: pd.DataFrame, waivers: Sequence[Waiver], period: date, on_date: date) -> pd.DataFrame:
    """Customer rows whose exact difference a waiver accepts: ``waived``, the cause keeping the
    underlying one with the reason and approver. A match and a source data error are never waived."""
    if not waivers:
        return results
    candidates = results.index[
        ~results["status"].isin([Status.MATCH, Status.SOURCE_DATA_ERROR]) & results["customer_id"].notna()
    ]
    for index in candidates:
        row = results.loc[index]
        waiver = find_waiver(waivers, period, int(row["customer_id"]), int(row["delta_cents"]), on_date)
        if waiver is not None:
            results.at[index, "status"] = Status.WAIVED
            results.at[index, "cause"] = (
                f"{row['cause']} Accepted by {waiver.approver}: {waiver.reason} (waiver line {waiver.line})."
            )
            results.at[index, "waiver_reason"] = waiver.reason
            results.at[index, "waiver_approver"] = waiver.approver
    return results


# How many set-aside records a cause names before it says "and N more".
_SET_ASIDE_NAMED = 5


def _result_frame(results: pd.DataFrame) -> pd.DataFrame:
    frame = results.reindex(columns=RESULT_COLUMNS)
    # Stored and compared as plain text, whoever reads the frame next.
    frame["status"] = frame["status"].map(str)
    for column in (
        "customer_id",
        "partner_id",
        "expected_subtotal_cents",
        "expected_tax_cents",
        "expected_total_cents",
    ):
        frame[column] = frame[column].astype("Int64")
    return frame


def _line_frame(lines: pd.DataFrame, period: date) -> pd.DataFrame:
    if lines.empty:
        return pd.DataFrame(columns=LINE_COLUMNS)
    frame = lines.reindex(columns=LINE_COLUMNS)
    frame["billing_period"] = period
    for column in ("customer_id", "partner_id", "deployment_id", "subscription_id"):
        frame[column] = frame[column].astype("Int64")
    return frame
