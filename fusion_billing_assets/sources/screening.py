"""One period's source frames screened together: what can be used, and what is set aside.

Each source asset already marked the records that break its own contract (``validation``). Here
the frames of a period are taken together: the marked records come out, the records that
reference what the period does not hold come out too (``billing.isolation``), and each of them is
attributed to the customers it concerns. For every frame, rows in = rows used + rows set aside;
nothing is dropped unseen (docs/design.md §6.10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from fusion_billing_assets.billing.isolation import (
    concerned_customers,
    empty_set_aside,
    expected_gaps,
    mapping_conflicts,
    record_names,
    referential_set_aside,
)
from fusion_billing_assets.billing.periods import PeriodWindow
from fusion_billing_assets.billing.reconcile import PeriodInputs, account_mapping
from fusion_billing_assets.sources import validation as contracts
from fusion_billing_assets.sources.validation import FrameContract, set_aside_records, usable


def contract_of(source: str, window: PeriodWindow) -> FrameContract:
    """The contract of a source frame by its name (``nexacloud/usage`` …)."""
    by_name = {
        "nexacloud/customers": lambda: contracts.nexacloud_customers(window),
        "nexacloud/plans": contracts.nexacloud_plans,
        "nexacloud/deployments": lambda: contracts.nexacloud_deployments(window),
        "nexacloud/usage": contracts.nexacloud_usage,
        "nexacloud/invoices": lambda: contracts.nexacloud_invoices(window),
        "nexacloud/invoice_lines": contracts.nexacloud_invoice_lines,
        "odoo/account_links": contracts.odoo_account_links,
        "odoo/partners": contracts.odoo_partners,
        "odoo/subscriptions": contracts.odoo_subscriptions,
        "odoo/usage": contracts.odoo_usage,
        "odoo/invoices": lambda: contracts.odoo_invoices(window),
        "odoo/invoice_lines": lambda: contracts.odoo_invoice_lines(window),
    }
    return by_name[source]()


@dataclass(frozen=True)
class ScreenedPeriod:
    """The usable records of each frame, every set-aside record with its customer, the counts."""

    frames: dict[str, pd.DataFrame]
    set_aside: pd.DataFrame  # billing.isolation.SET_ASIDE_COLUMNS, one row per record and customer
    counts: dict[str, dict[str, int]]  # source -> rows_in, rows_used, rows_set_aside
    expected_gaps: dict[int, str] = field(default_factory=dict)
    # Every customer whose id could be read, set-aside ones included: each gets a result row.
    judged_customers: pd.DataFrame | None = None

    def usable(self, source: str) -> pd.DataFrame:
        return self.frames[source]


def screen_period(
    frames: Mapping[str, pd.DataFrame], window: PeriodWindow, mapping: pd.DataFrame | None = None
) -> ScreenedPeriod:
    """Screen the period's frames (by source name, as their assets produced them).

    ``mapping`` (``billing.reconcile.account_mapping``) adds its conflicts: a customer whose link is
    ambiguous is set aside like a broken record.
    """
    named = {source: contract_of(source, window) for source in frames}
    readable = {source: usable(frame, named[source]) for source, frame in frames.items()}
    own = [set_aside_records(frame, named[source]) for source, frame in frames.items()]
    referential = referential_set_aside(readable)
    screened = {
        source: _without(frame, referential[referential["source"] == source], named[source])
        for source, frame in readable.items()
    }
    broken = pd.concat([*own, referential], ignore_index=True)
    # Attribute through everything readable, set-aside records included: their ids still say whose they are.
    readable_all = {
        source: usable(frame.drop(columns=["set_aside"], errors="ignore"), named[source])
        for source, frame in frames.items()
    }
    attributed = concerned_customers(
        broken,
        deployments=readable_all.get("nexacloud/deployments", pd.DataFrame()),
        nexacloud_invoices=readable_all.get("nexacloud/invoices", pd.DataFrame()),
        odoo_invoices=readable_all.get("odoo/invoices", pd.DataFrame()),
        mapping=mapping if mapping is not None else _no_mapping(),
        odoo_invoice_lines=readable_all.get("odoo/invoice_lines"),
        partners=readable_all.get("odoo/partners"),
    )
    if mapping is not None:
        attributed = pd.concat(
            [
                attributed,
                mapping_conflicts(mapping, readable_all.get("nexacloud/deployments", pd.DataFrame())),
            ],
            ignore_index=True,
        )
    counts = {
        source: {
            "rows_in": len(frames[source]),
            "rows_used": len(screened[source]),
            "rows_set_aside": len(frames[source]) - len(screened[source]),
        }
        for source in frames
    }
    gaps = {}
    if {"nexacloud/customers", "nexacloud/plans", "nexacloud/deployments"} <= set(screened):
        gaps = {
            gap.customer_id: gap.reason
            for gap in expected_gaps(
                screened["nexacloud/customers"],
                screened["nexacloud/plans"],
                screened["nexacloud/deployments"],
                window,
            )
        }
    customers = readable_all.get("nexacloud/customers")
    judged = None
    if customers is not None:
        judged = customers[customers["customer_id"].notna()].drop_duplicates("customer_id")
        judged = judged.astype({"customer_id": "int64"})
    return ScreenedPeriod(
        frames=screened,
        set_aside=attributed if len(attributed) else empty_set_aside(),
        counts=counts,
        expected_gaps=gaps,
        judged_customers=judged,
    )


def set_aside_markdown(set_aside: pd.DataFrame, limit: int = 20) -> str:
    """The set-aside records for a person: source, record, whose, what is wrong."""
    if set_aside.empty:
        return "_No record set aside: every record of every source keeps its contract._"
    lines = ["| Source | Record | Customer | Partner | Problem |", "|---|---|---|---|---|"]
    for row in set_aside.head(limit).itertuples(index=False):
        customer = "—" if pd.isna(row.customer_id) else str(int(row.customer_id))
        partner = "—" if pd.isna(row.partner_id) else str(int(row.partner_id))
        problem = str(row.problem).replace("|", "\\|")
        lines.append(f"| {row.source} | {row.record} | {customer} | {partner} | {problem} |")
    if len(set_aside) > limit:
        lines.append(f"| … | and {len(set_aside) - limit} more | | | |")
    return "\n".join(lines)


def _without(frame: pd.DataFrame, broken: pd.DataFrame, contract: FrameContract) -> pd.DataFrame:
    """The frame without the records ``broken`` names (by the contract's key)."""
    if broken.empty:
        return frame
    return frame[~record_names(frame, list(contract.key)).isin(set(broken["record"]))]


def _no_mapping() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "link_kind": pd.Series(dtype=object),
            "nexacloud_id": pd.Series(dtype="Int64"),
            "odoo_id": pd.Series(dtype="Int64"),
        }
    )


# --- What each billing asset reads from a screened period ----------------------------------------

MAPPING_SOURCES = ("nexacloud/customers", "nexacloud/deployments", "odoo/partners", "odoo/invoices")
EXPECTED_SOURCES = ("nexacloud/customers", "nexacloud/plans", "nexacloud/deployments", "nexacloud/usage")


def mapped_accounts(
    frames: Mapping[str, pd.DataFrame], account_links: pd.DataFrame, window: PeriodWindow
) -> pd.DataFrame:
    """The account mapping over the usable records; links that break their contract are kept, so
    they make a conflict rather than an unmapped customer (``billing.reconcile.account_mapping``)."""
    readable = screen_period({source: frames[source] for source in MAPPING_SOURCES}, window)
    # Every customer whose id can be read keeps its link, set-aside ones too: its Odoo invoices
    # stay on its (source_data_error) row instead of vanishing.
    return account_mapping(
        readable.judged_customers,
        readable.usable("nexacloud/deployments"),
        account_links,
        readable.usable("odoo/partners"),
        readable.usable("odoo/invoices"),
    )


def billable(screened: ScreenedPeriod) -> dict[str, pd.DataFrame]:
    """What the expected charges are computed from: usable records, without the customers whose
    expected leg cannot be formed (``expected_gaps``)."""
    deployments = screened.usable("nexacloud/deployments")
    deployments = deployments[~deployments["customer_id"].isin(list(screened.expected_gaps))]
    usage = screened.usable("nexacloud/usage")
    return {
        "customers": screened.usable("nexacloud/customers"),
        "plans": screened.usable("nexacloud/plans"),
        "deployments": deployments,
        "usage": usage[usage["deployment_id"].isin(deployments["deployment_id"])],
    }


def period_inputs(
    screened: ScreenedPeriod,
    window: PeriodWindow,
    *,
    provisional: bool,
    usage_days: pd.DataFrame,
    expected_lines: pd.DataFrame,
    expected_invoices: pd.DataFrame,
    more_set_aside: pd.DataFrame | None = None,
) -> PeriodInputs:
    """The reconciliation's inputs: the usable records, every customer whose id could be read, the
    usage days that differ, the set-aside records (with ``more_set_aside``, e.g. refused waiver
    rows) and the expected gaps."""
    usable = screened.usable
    set_aside = screened.set_aside
    if more_set_aside is not None and len(more_set_aside):
        set_aside = pd.concat([set_aside, more_set_aside], ignore_index=True)
    return PeriodInputs(
        period=window.period,
        provisional=provisional,
        customers=screened.judged_customers,
        plans=usable("nexacloud/plans"),
        deployments=usable("nexacloud/deployments"),
        nexacloud_usage=usable("nexacloud/usage"),
        nexacloud_invoices=usable("nexacloud/invoices"),
        nexacloud_invoice_lines=usable("nexacloud/invoice_lines"),
        partners=usable("odoo/partners"),
        subscriptions=usable("odoo/subscriptions"),
        odoo_usage=usable("odoo/usage"),
        usage_days=usage_days,
        odoo_invoices=usable("odoo/invoices"),
        odoo_invoice_lines=usable("odoo/invoice_lines"),
        expected_lines=expected_lines,
        expected_invoices=expected_invoices,
        set_aside=set_aside,
        expected_gaps=screened.expected_gaps,
    )
