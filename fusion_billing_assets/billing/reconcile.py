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
from functools import partial

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
    """The period's results (one row per customer or orphan partner) and per-deployment detail."""
    ledger = _Ledger(inputs, mapping, policy)
    rows, lines = [], []
    for customer in inputs.customers.itertuples(index=False):
        row, customer_lines = ledger.customer_row(int(customer.customer_id), customer.name)
        rows.append(row)
        lines.extend(customer_lines)
    for partner_id in ledger.orphan_partners():
        rows.append(ledger.orphan_partner_row(partner_id))
    # A set-aside record that concerns an Odoo partner with no row yet (a contact whose company
    # cannot be read, say) gets a row of its own: no set-aside record goes unnamed.
    shown = {
        int(row["partner_id"])
        for row in rows
        if row["partner_id"] is not None and not pd.isna(row["partner_id"])
    }
    unnamed = inputs.set_aside[
        inputs.set_aside["customer_id"].isna() & inputs.set_aside["partner_id"].notna()
    ]
    for partner_id in sorted({int(partner_id) for partner_id in unnamed["partner_id"]} - shown):
        rows.append(ledger.orphan_partner_row(partner_id))
    results = _set_aside_rows(_note_expected_gaps(pd.DataFrame(rows), inputs.expected_gaps), inputs.set_aside)
    for row_index, row in results.iterrows():
        waiver = (
            find_waiver(
                waivers, inputs.period, int(row["customer_id"]), int(row["delta_cents"]), reconciled_at.date()
            )
            if row["status"] not in (Status.MATCH, Status.SOURCE_DATA_ERROR) and pd.notna(row["customer_id"])
            else None
        )
        if waiver is not None:
            results.at[row_index, "status"] = Status.WAIVED
            results.at[row_index, "cause"] = (
                f"{row['cause']} Accepted by {waiver.approver}: {waiver.reason} (waiver line {waiver.line})."
            )
            results.at[row_index, "waiver_reason"] = waiver.reason
            results.at[row_index, "waiver_approver"] = waiver.approver
    results["billing_period"] = inputs.period
    results["provisional"] = inputs.provisional
    results["reconciled_at"] = reconciled_at
    return _result_frame(results), _line_frame(pd.DataFrame(lines), inputs.period)


class _Ledger:
    """One period's frames indexed for the questions a customer row asks."""

    def __init__(self, inputs: PeriodInputs, mapping: pd.DataFrame, policy: Policy):
        self.inputs = inputs
        self.policy = policy
        customers = mapping[mapping["link_kind"] == "customer"]
        self.partner_of = {
            int(row.nexacloud_id): int(row.odoo_id)
            for row in customers.itertuples()
            if pd.notna(row.nexacloud_id) and pd.notna(row.odoo_id)
        }
        self.orphans = sorted(int(row.odoo_id) for row in customers.itertuples() if pd.isna(row.nexacloud_id))
        deployments = mapping[mapping["link_kind"] == "deployment"]
        self.subscription_of = {
            int(row.nexacloud_id): int(row.odoo_id)
            for row in deployments.itertuples()
            if pd.notna(row.odoo_id)
        }
        self.partner_names = dict(zip(inputs.partners["partner_id"], inputs.partners["name"], strict=True))
        odoo_invoices = inputs.odoo_invoices.assign(
            commercial_partner_id=_commercial_partner(inputs.odoo_invoices["partner_id"], inputs.partners)
        )
        self.odoo_invoices_by_partner = dict(tuple(odoo_invoices.groupby("commercial_partner_id")))
        self.nexacloud_invoices_by_customer = dict(tuple(inputs.nexacloud_invoices.groupby("customer_id")))
        # Every per-customer and per-deployment figure is summed here in one pass over each frame:
        # looking rows up customer by customer in whole frames would grow with the square of them.
        nexacloud_lines = inputs.nexacloud_invoice_lines.merge(
            inputs.nexacloud_invoices[["invoice_id", "customer_id"]], on="invoice_id", how="left"
        )
        odoo_lines = inputs.odoo_invoice_lines.assign(
            category=_odoo_category(inputs.odoo_invoice_lines["product_code"], policy.products)
        ).merge(odoo_invoices[["move_id", "commercial_partner_id"]], on="move_id", how="left")
        self.nexacloud_lines_by_invoice = _groups(nexacloud_lines, "invoice_id")
        self.nexacloud_by_customer = _invoice_summaries(
            inputs.nexacloud_invoices, "customer_id", "subtotal_cents"
        )
        self.odoo_by_partner = _invoice_summaries(odoo_invoices, "commercial_partner_id", "untaxed_cents")
        self.nexacloud_kind_by_customer = _sums(nexacloud_lines, ["customer_id", "kind"], "amount_cents")
        self.odoo_category_by_partner = _sums(
            odoo_lines, ["commercial_partner_id", "category"], "subtotal_cents"
        )
        self.nexacloud_kind_by_deployment = _sums(nexacloud_lines, ["deployment_id", "kind"], "amount_cents")
        self.nexacloud_tax_by_deployment = _sums(nexacloud_lines, ["deployment_id"], "tax_cents")
        self.odoo_category_by_subscription = _sums(
            odoo_lines, ["subscription_id", "category"], "subtotal_cents"
        )
        self.odoo_tax_by_subscription = _sums(odoo_lines, ["subscription_id"], "tax_cents")
        self.nexacloud_cpu = _sums(inputs.nexacloud_usage, ["deployment_id"], "cpu_milliseconds")
        self.odoo_cpu = _sums(inputs.odoo_usage, ["subscription_id"], "cpu_milliseconds")
        self.deployments_by_customer = {
            int(customer): [int(d) for d in ids]
            for customer, ids in inputs.deployments.groupby("customer_id")["deployment_id"]
        }
        self.expected_by_customer = inputs.expected_invoices.set_index("customer_id").to_dict("index")
        self.expected_lines = inputs.expected_lines.set_index("deployment_id").to_dict("index")
        self.plans = inputs.plans.set_index("plan_id").to_dict("index")
        self.plan_of_deployment = dict(
            zip(inputs.deployments["deployment_id"], inputs.deployments["plan_id"], strict=True)
        )
        self.subscriptions = inputs.subscriptions.set_index("subscription_id").to_dict("index")
        self.usage_days = {
            (int(deployment_id), int(subscription_id)): sorted(days)
            for (deployment_id, subscription_id), days in inputs.usage_days.groupby(
                ["deployment_id", "subscription_id"]
            )["usage_date"]
        }
        self.province_of = dict(
            zip(inputs.customers["customer_id"], inputs.customers["province"], strict=True)
        )

    def orphan_partners(self) -> list[int]:
        return self.orphans

    # --- one customer ---------------------------------------------------------------------------

    def customer_row(self, customer_id: int, name: str) -> tuple[dict, list[dict]]:
        partner_id = self.partner_of.get(customer_id)
        nexacloud = self.nexacloud_invoices_by_customer.get(customer_id, _EMPTY_NEXACLOUD)
        odoo = self.odoo_invoices_by_partner.get(partner_id, _EMPTY_ODOO) if partner_id else _EMPTY_ODOO
        deployment_ids = self.deployments_by_customer.get(customer_id, [])
        lines = [
            self._deployment_line(customer_id, partner_id, deployment_id) for deployment_id in deployment_ids
        ]
        row = self._legs(customer_id, partner_id, name, nexacloud, odoo, lines)
        row["status"], row["cause"] = self._judge(
            customer_id, partner_id, nexacloud, odoo, deployment_ids, lines, row
        )
        return row, lines

    def orphan_partner_row(self, partner_id: int) -> dict:
        odoo = self.odoo_invoices_by_partner.get(partner_id, _EMPTY_ODOO)
        name = self.partner_names.get(partner_id)
        row = self._legs(None, partner_id, name, _EMPTY_NEXACLOUD, odoo, [])
        row["status"] = Status.UNMAPPED
        row["cause"] = (
            f"Odoo partner {partner_id} ({name}) was invoiced {format_cents(row['odoo_total_cents'])} "
            f"on {_names(odoo)} but maps to no NexaCloud customer."
        )
        return row

    def _legs(self, customer_id, partner_id, name, nexacloud, odoo, lines) -> dict:
        gap = self.inputs.expected_gaps.get(customer_id)
        expected = self.expected_by_customer.get(customer_id, {})
        nexacloud_sums = self.nexacloud_by_customer.get(customer_id, _NO_INVOICES)
        odoo_sums = self.odoo_by_partner.get(partner_id, _NO_INVOICES)
        nexacloud_kind = partial(_lookup, self.nexacloud_kind_by_customer, customer_id)
        odoo_category = partial(_lookup, self.odoo_category_by_partner, partner_id)
        row = {
            "customer_id": customer_id,
            "partner_id": partner_id,
            "customer_name": name,
            "nexacloud_invoice_count": nexacloud_sums["invoices"],
            "odoo_invoice_count": odoo_sums["out_invoices"],
            "nexacloud_currency": nexacloud_sums["currency"],
            "odoo_currency": odoo_sums["currency"],
            "nexacloud_subtotal_cents": nexacloud_sums["subtotal_cents"],
            "nexacloud_tax_cents": nexacloud_sums["tax_cents"],
            "nexacloud_total_cents": nexacloud_sums["total_cents"],
            "odoo_subtotal_cents": odoo_sums["subtotal_cents"],
            "odoo_tax_cents": odoo_sums["tax_cents"],
            "odoo_total_cents": odoo_sums["total_cents"],
            "expected_subtotal_cents": None if gap else int(expected.get("subtotal_cents", 0)),
            "expected_tax_cents": None if gap else int(expected.get("tax_cents", 0)),
            "expected_total_cents": None if gap else int(expected.get("total_cents", 0)),
            "plan_fee_delta_cents": odoo_category(_PLAN_FEE) - nexacloud_kind(ChargeKind.BASE),
            "overage_delta_cents": odoo_category(_OVERAGE) - nexacloud_kind(ChargeKind.OVERAGE),
            "nexacloud_cpu_seconds": _seconds(sum(line["nexacloud_cpu_milliseconds"] for line in lines)),
            "odoo_cpu_seconds": _seconds(sum(line["odoo_cpu_milliseconds"] for line in lines)),
            "waiver_reason": None,
            "waiver_approver": None,
        }
        row["delta_cents"] = row["odoo_total_cents"] - row["nexacloud_total_cents"]
        row["tax_delta_cents"] = row["odoo_tax_cents"] - row["nexacloud_tax_cents"]
        return row

    def _judge(self, customer_id, partner_id, nexacloud, odoo, deployment_ids, lines, row) -> tuple[str, str]:
        nexacloud_total, odoo_total = row["nexacloud_total_cents"], row["odoo_total_cents"]
        if partner_id is None:
            return Status.UNMAPPED, (
                f"NexaCloud customer {customer_id} maps to no Odoo partner (no ir.model.data "
                f"customer_{customer_id}); NexaCloud billed {format_cents(nexacloud_total)}."
            )
        unmapped = [
            deployment_id for deployment_id in deployment_ids if deployment_id not in self.subscription_of
        ]
        if unmapped:
            return Status.UNMAPPED, (
                f"Deployment{'s' if len(unmapped) > 1 else ''} {_listing(unmapped)} of customer {customer_id} "
                f"map{'' if len(unmapped) > 1 else 's'} to no Odoo subscription; NexaCloud billed "
                f"{format_cents(nexacloud_total)}, Odoo {format_cents(odoo_total)}."
            )
        if row["nexacloud_invoice_count"] > 1:
            return Status.DUPLICATE, (
                f"NexaCloud has {row['nexacloud_invoice_count']} invoices for the period "
                f"({_listing(nexacloud['invoice_id'])}) totalling {format_cents(nexacloud_total)}; "
                f"Odoo invoiced {format_cents(odoo_total)}."
            )
        if row["odoo_invoice_count"] > 1:
            return Status.DUPLICATE, (
                f"Odoo has {row['odoo_invoice_count']} invoices for the period ({_names(odoo, 'out_invoice')}) "
                f"totalling {format_cents(odoo_total)} where NexaCloud billed {format_cents(nexacloud_total)} once."
            )
        has_nexacloud, has_odoo = len(nexacloud) > 0, len(odoo) > 0
        if has_nexacloud and has_odoo and row["nexacloud_currency"] != row["odoo_currency"]:
            return Status.CURRENCY_MISMATCH, (
                f"NexaCloud bills this customer in {row['nexacloud_currency']} "
                f"({format_cents(nexacloud_total)}) but Odoo invoiced in {row['odoo_currency']} "
                f"({format_cents(odoo_total)} on {_names(odoo)})."
            )
        if has_nexacloud and not has_odoo:
            return Status.MISSING_IN_ODOO, (
                f"NexaCloud billed {format_cents(nexacloud_total)} (invoice {_listing(nexacloud['invoice_id'])}); "
                f"Odoo has no invoice for partner {partner_id} in the period."
            )
        if has_odoo and not has_nexacloud:
            return Status.MISSING_IN_NEXACLOUD, (
                f"Odoo invoiced {format_cents(odoo_total)} ({_names(odoo)}) but NexaCloud has no "
                f"non-void invoice for the period."
            )
        usage_gaps = self._usage_gaps(lines)
        rate_gaps = self._rate_gaps(lines)
        delta = row["delta_cents"]
        if delta == 0:
            if not has_nexacloud and not has_odoo:
                return self._without_invoices(usage_gaps, rate_gaps, row)
            note = f" Odoo's usage ledger differs nonetheless: {usage_gaps}" if usage_gaps else ""
            return Status.MATCH, (
                f"NexaCloud and Odoo both billed {format_cents(nexacloud_total)} "
                f"(subtotal {format_cents(row['nexacloud_subtotal_cents'])} + tax "
                f"{format_cents(row['nexacloud_tax_cents'])}).{note}"
            )
        difference = f"Odoo − NexaCloud = {format_cents(delta)}"
        rounding = self._rounding_explanation(customer_id, nexacloud, row)
        if rounding:
            return Status.ROUNDING_DIFFERENCE, f"{difference}: {rounding}"
        if usage_gaps:
            return Status.USAGE_MISMATCH, f"{usage_gaps} {difference} ({self._components(row)})."
        if rate_gaps:
            return Status.RATE_MISMATCH, f"{rate_gaps} {difference} ({self._components(row)})."
        if row["odoo_subtotal_cents"] == row["nexacloud_subtotal_cents"]:
            return Status.TAX_MISMATCH, (
                f"Subtotals agree at {format_cents(row['nexacloud_subtotal_cents'])} but Odoo charged "
                f"{format_cents(row['odoo_tax_cents'])} tax where NexaCloud charged "
                f"{format_cents(row['nexacloud_tax_cents'])} ({self._tax_label(customer_id)} for "
                f"{self.province_of.get(customer_id)}): {difference}, beyond any rounding."
            )
        if abs(delta) <= self.policy.tolerance_cents:
            return Status.WITHIN_TOLERANCE, (
                f"{difference}, within the tolerance of {format_cents(self.policy.tolerance_cents)}; "
                "usage, prices and tax rule agree."
            )
        return Status.AMOUNT_MISMATCH, (
            f"{difference} that usage, prices and the tax rule do not explain ({self._components(row)})."
        )

    def _without_invoices(self, usage_gaps: str, rate_gaps: str, row: dict) -> tuple[str, str]:
        when = "so far this month" if self.inputs.provisional else "for the period"
        if usage_gaps:
            return Status.USAGE_MISMATCH, f"No invoice on either side {when}, but: {usage_gaps}"
        if rate_gaps:
            return Status.RATE_MISMATCH, f"No invoice on either side {when}, but: {rate_gaps}"
        if not self.inputs.provisional and (row["expected_total_cents"] or 0) > 0:
            # Both systems failing to bill is no agreement: the usage and plans call for a bill.
            return Status.AMOUNT_MISMATCH, (
                f"Neither NexaCloud nor Odoo billed the period, although its usage and plans call for "
                f"{format_cents(row['expected_total_cents'])}."
            )
        expected = row["expected_total_cents"]
        return Status.MATCH, (
            f"No invoice on either side {when}; usage ledgers and prices agree"
            + (f" (expected so far {format_cents(expected)})." if expected is not None else ".")
        )

    # --- explanations ---------------------------------------------------------------------------

    def _rounding_explanation(self, customer_id: int, nexacloud: pd.DataFrame, row: dict) -> str | None:
        if row["odoo_subtotal_cents"] != row["nexacloud_subtotal_cents"] or row["tax_delta_cents"] == 0:
            return None
        amounts = [
            int(amount)
            for invoice_id in nexacloud["invoice_id"]
            for amount in self.nexacloud_lines_by_invoice.get(int(invoice_id), _NO_LINES)["amount_cents"]
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

    def _usage_gaps(self, lines: list[dict]) -> str:
        sentences = []
        for line in lines:
            difference = line["odoo_cpu_milliseconds"] - line["nexacloud_cpu_milliseconds"]
            if line["subscription_id"] is None or difference == 0:
                continue
            days = self._days_that_differ(line["deployment_id"], line["subscription_id"])
            more_or_less = "more" if difference > 0 else "less"
            sentences.append(
                f"Odoo's usage ledger for subscription {line['subscription_id']} has "
                f"{_seconds_text(abs(difference))} CPU-seconds {more_or_less} than NexaCloud metered for "
                f"deployment {line['deployment_id']}"
                + (f", differing on {_listing(days)}" if days else "")
                + "."
            )
        return " ".join(sentences)

    def _days_that_differ(self, deployment_id: int, subscription_id: int) -> list[str]:
        return [day.isoformat() for day in self.usage_days.get((deployment_id, subscription_id), [])]

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

    def _components(self, row: dict) -> str:
        other = (
            row["delta_cents"]
            - row["plan_fee_delta_cents"]
            - row["overage_delta_cents"]
            - row["tax_delta_cents"]
        )
        parts = [
            f"plan fee {format_cents(row['plan_fee_delta_cents'])}",
            f"overage {format_cents(row['overage_delta_cents'])}",
            f"tax {format_cents(row['tax_delta_cents'])}",
        ]
        if other:
            parts.append(f"other lines {format_cents(other)}")
        return "; ".join(parts)

    def _tax_rule(self, customer_id: int):
        province = self.province_of.get(customer_id)
        try:
            return tax_rule(province, self.inputs.period) if province else None
        except ValueError:
            return None

    def _tax_label(self, customer_id: int) -> str:
        rule = self._tax_rule(customer_id)
        return rule.label if rule else "no known tax rule"

    # --- per deployment -------------------------------------------------------------------------

    def _deployment_line(self, customer_id: int, partner_id: int | None, deployment_id: int) -> dict:
        subscription_id = self.subscription_of.get(deployment_id)
        expected = self.expected_lines.get(deployment_id)
        plan_id = expected["plan_id"] if expected is not None else self.plan_of_deployment.get(deployment_id)
        plan = self.plans.get(int(plan_id)) if plan_id is not None else None
        subscription = self.subscriptions.get(subscription_id) if subscription_id is not None else None
        nexacloud_kind = partial(_lookup, self.nexacloud_kind_by_deployment, deployment_id)
        odoo_category = partial(_lookup, self.odoo_category_by_subscription, subscription_id)
        odoo_fee = None if subscription is None else subscription["plan_fee_cents"]
        return {
            "customer_id": customer_id,
            "partner_id": partner_id,
            "deployment_id": deployment_id,
            "subscription_id": subscription_id,
            "plan_code": None if plan is None else plan["plan_code"],
            "active_days": None if expected is None else int(expected["active_days"]),
            "nexacloud_cpu_milliseconds": self.nexacloud_cpu.get((deployment_id,), 0),
            "odoo_cpu_milliseconds": self.odoo_cpu.get((subscription_id,), 0)
            if subscription_id is not None
            else 0,
            "nexacloud_plan_price_cents": None if plan is None else int(plan["monthly_price_cents"]),
            "odoo_plan_price_cents": None if odoo_fee is None or pd.isna(odoo_fee) else int(odoo_fee),
            "nexacloud_overage_rate": None if plan is None else Decimal(plan["overage_cents_per_cpu_hour"]),
            "odoo_overage_rate": None if subscription is None else subscription["overage_cents_per_cpu_hour"],
            "nexacloud_base_cents": nexacloud_kind(ChargeKind.BASE),
            "nexacloud_overage_cents": nexacloud_kind(ChargeKind.OVERAGE),
            "nexacloud_tax_cents": self.nexacloud_tax_by_deployment.get((deployment_id,), 0),
            "odoo_plan_fee_cents": odoo_category(_PLAN_FEE),
            "odoo_overage_cents": odoo_category(_OVERAGE),
            "odoo_tax_cents": self.odoo_tax_by_subscription.get((subscription_id,), 0),
            "expected_base_cents": 0 if expected is None else int(expected["base_cents"]),
            "expected_overage_cents": 0 if expected is None else int(expected["overage_cents"]),
            "expected_tax_cents": 0 if expected is None else int(expected["tax_cents"]),
            "note": None if subscription_id is not None else "no Odoo subscription mapped",
        }


_ROUNDING_NAMES = {
    PER_LINE_HALF_UP: "per line, half-up",
    GLOBAL_HALF_UP: "globally (round_globally)",
    PER_LINE_HALF_EVEN: "per line, half-even",
}


def _rounding_giving(alternatives: dict[str, int], tax_cents: int) -> str | None:
    """The rounding rule (named for people) that gives this tax on the lines, if any."""
    return next((_ROUNDING_NAMES[name] for name, tax in alternatives.items() if tax == tax_cents), None)


_EMPTY_NEXACLOUD = pd.DataFrame(
    {"invoice_id": pd.Series(dtype="int64"), "currency": pd.Series(dtype=object)}
    | {column: pd.Series(dtype="int64") for column in ("subtotal_cents", "tax_cents", "total_cents")}
)
_EMPTY_ODOO = pd.DataFrame(
    {
        "move_id": pd.Series(dtype="int64"),
        "name": pd.Series(dtype=object),
        "move_type": pd.Series(dtype=object),
        "currency": pd.Series(dtype=object),
    }
    | {column: pd.Series(dtype="int64") for column in ("untaxed_cents", "tax_cents", "total_cents")}
)


_PLAN_FEE, _OVERAGE, _OTHER = "plan_fee", "overage", "other"
_NO_INVOICES = {
    "invoices": 0,
    "out_invoices": 0,
    "currency": None,
    "subtotal_cents": 0,
    "tax_cents": 0,
    "total_cents": 0,
}
_NO_LINES = pd.DataFrame({"amount_cents": pd.Series(dtype="int64")})


def _groups(frame: pd.DataFrame, column: str) -> dict:
    return {int(key): group for key, group in frame.groupby(column)}


def _sums(frame: pd.DataFrame, keys: list[str], column: str) -> dict[tuple, int]:
    """``{(key, …): sum}`` of ``column``; keys as plain ints and strings for dict lookups."""
    sums = frame.dropna(subset=keys).groupby(keys)[column].sum()
    return {
        tuple(_plain(part) for part in (key if isinstance(key, tuple) else (key,))): int(total)
        for key, total in sums.items()
    }


def _lookup(sums: dict[tuple, int], *key) -> int:
    return sums.get(tuple(_plain(part) for part in key), 0)


def _plain(value):
    return int(value) if isinstance(value, (int, np.integer)) else value


def _invoice_summaries(invoices: pd.DataFrame, key: str, subtotal_column: str) -> dict[int, dict]:
    """Per customer (or partner): invoice counts, currencies and summed amounts."""
    if invoices.empty:
        return {}
    grouped = invoices.groupby(key)
    sums = grouped[[subtotal_column, "tax_cents", "total_cents"]].sum()
    counts = grouped.size()
    is_invoice = (
        invoices["move_type"] == "out_invoice" if "move_type" in invoices else pd.Series(True, invoices.index)
    )
    out_invoices = is_invoice.groupby(invoices[key]).sum()
    currencies = (
        invoices[[key, "currency"]]
        .dropna()
        .drop_duplicates()
        .sort_values("currency")
        .groupby(key)["currency"]
        .agg("/".join)
    )
    return {
        int(owner): {
            "invoices": int(counts[owner]),
            "out_invoices": int(out_invoices[owner]),
            "currency": currencies.get(owner),
            "subtotal_cents": int(sums.at[owner, subtotal_column]),
            "tax_cents": int(sums.at[owner, "tax_cents"]),
            "total_cents": int(sums.at[owner, "total_cents"]),
        }
        for owner in counts.index
    }


def _odoo_category(product_codes: pd.Series, products: OdooProducts) -> pd.Series:
    codes = product_codes.fillna("")
    category = pd.Series(_OTHER, index=codes.index, dtype=object)
    category[codes.str.startswith(products.plan_prefix)] = _PLAN_FEE
    category[codes == products.overage_code] = _OVERAGE
    return category


def _commercial_partner(partner_ids: pd.Series, partners: pd.DataFrame) -> pd.Series:
    commercial = dict(zip(partners["partner_id"], partners["commercial_partner_id"], strict=True))
    return partner_ids.map(lambda pid: int(commercial[pid]) if pd.notna(commercial.get(pid)) else int(pid))


def _names(odoo: pd.DataFrame, move_type: str | None = None) -> str:
    moves = odoo if move_type is None else odoo[odoo["move_type"] == move_type]
    # Odoo names a draft "/" until it is posted.
    return ", ".join(
        str(name) if name and name != "/" else f"draft move {move_id}"
        for move_id, name in zip(moves["move_id"], moves["name"], strict=True)
    )


def _listing(values) -> str:
    items = [str(value) for value in values]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _seconds(milliseconds: int) -> Decimal:
    return Decimal(int(milliseconds)) / 1000


def _seconds_text(milliseconds: int) -> str:
    seconds = _seconds(milliseconds)
    return f"{seconds:,.3f}".rstrip("0").rstrip(".")


def _set_aside_rows(results: pd.DataFrame, set_aside: pd.DataFrame) -> pd.DataFrame:
    """The rows of customers (and orphan partners) with set-aside records: ``source_data_error``,
    the cause naming each record, its source and what is wrong with it."""
    if set_aside.empty or results.empty:
        return results
    results = results.copy()
    by_customer = set_aside[set_aside["customer_id"].notna()].groupby("customer_id")
    by_partner = set_aside[set_aside["customer_id"].isna() & set_aside["partner_id"].notna()].groupby(
        "partner_id"
    )
    for index, row in results.iterrows():
        if pd.notna(row["customer_id"]):
            key, groups = int(row["customer_id"]), by_customer
        elif pd.notna(row["partner_id"]):
            key, groups = int(row["partner_id"]), by_partner
        else:
            continue
        if key not in groups.groups:
            continue
        records = groups.get_group(key)
        named = "; ".join(
            f"{record.source} {record.record}: {record.problem}"
            for record in records.head(_SET_ASIDE_NAMED).itertuples(index=False)
        )
        more = len(records) - min(len(records), _SET_ASIDE_NAMED)
        results.at[index, "status"] = Status.SOURCE_DATA_ERROR
        results.at[index, "cause"] = (
            f"Set aside: {len(records)} record(s) break their source's contract, so this "
            f"{'customer' if pd.notna(row['customer_id']) else 'partner'} cannot be judged: {named}"
            + (f"; and {more} more" if more else "")
            + ". Fix them in their source and re-run the period."
        )
    return results


def _note_expected_gaps(results: pd.DataFrame, gaps: Mapping[int, str]) -> pd.DataFrame:
    """Say in the cause why a customer's expected leg is empty."""
    if not gaps or results.empty:
        return results
    results = results.copy()
    for index, customer_id in results["customer_id"].items():
        if pd.notna(customer_id) and int(customer_id) in gaps:
            results.at[index, "cause"] = (
                f"{results.at[index, 'cause']} Our expected leg is left empty: {gaps[int(customer_id)]}."
            )
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
    lines = lines.assign(
        billing_period=period,
        nexacloud_cpu_seconds=lines["nexacloud_cpu_milliseconds"].map(_seconds),
        odoo_cpu_seconds=lines["odoo_cpu_milliseconds"].map(_seconds),
    )
    frame = lines.reindex(columns=LINE_COLUMNS)
    for column in ("customer_id", "partner_id", "deployment_id", "subscription_id"):
        frame[column] = frame[column].astype("Int64")
    return frame
