"""NexaCloud as partitioned frames: customers, plans, deployments, usage, invoices, invoice lines.

Each asset reads one billing period from NexaCloud's database (read-only), validates the frame
against its contract and records what a person needs to trust it. The SQL lives in
``sources.nexacloud``; the referential checks below block downstream assets of a broken period.
"""

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

from fusion_billing_assets.billing.charges import active_days
from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.defs.frames import OWNERS, referential_check_result, validated_output
from fusion_billing_assets.defs.resources import NexaCloudDatabase
from fusion_billing_assets.partitions import billing_periods, window_of
from fusion_billing_assets.sources import nexacloud as queries
from fusion_billing_assets.sources import validation as contracts

GROUP = "nexacloud"
POOL = "nexacloud_db"
KINDS = {"sql", "pandas"}


def _nexacloud_asset(name: str, **options):
    return asset(
        key=[GROUP, name],
        group_name=GROUP,
        partitions_def=billing_periods,
        kinds=KINDS,
        owners=OWNERS,
        pool=POOL,
        **options,
    )


@_nexacloud_asset("customers")
def nexacloud_customers(context: AssetExecutionContext, nexacloud: NexaCloudDatabase) -> Output[pd.DataFrame]:
    """NexaCloud's customers as they stood in the billing period: who may be billed, in which
    province (the tax region) and currency."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_customers(connection, window)
    by_province = frame.groupby("province").size().to_dict() if len(frame) else {}
    return validated_output(
        context,
        frame,
        contracts.nexacloud_customers(window),
        window,
        source=nexacloud.describe(),
        metadata={"customers_by_province": MetadataValue.json(by_province)},
    )


@_nexacloud_asset("plans")
def nexacloud_plans(context: AssetExecutionContext, nexacloud: NexaCloudDatabase) -> Output[pd.DataFrame]:
    """NexaCloud's price list: each plan's monthly fee, included CPU-seconds and overage rate."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_plans(connection)
    return validated_output(context, frame, contracts.nexacloud_plans(), window, source=nexacloud.describe())


@_nexacloud_asset("deployments")
def nexacloud_deployments(
    context: AssetExecutionContext, nexacloud: NexaCloudDatabase
) -> Output[pd.DataFrame]:
    """Deployments alive at any moment of the billing period, with the number of local calendar
    days they were active (what the plan fee is prorated by)."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_deployments(connection, window)
    frame["active_days"] = pd.Series(
        [
            active_days(created.to_pydatetime(), None if pd.isna(ended) else ended.to_pydatetime(), window)
            for created, ended in zip(frame["created_at"], frame["terminated_at"], strict=True)
        ],
        index=frame.index,
        dtype="int64",
    )
    partial = int((frame["active_days"] < window.days).sum())
    return validated_output(
        context,
        frame,
        contracts.nexacloud_deployments(window),
        window,
        source=nexacloud.describe(),
        metadata={"deployments_active_part_of_the_period": partial},
    )


@_nexacloud_asset("usage")
def nexacloud_usage(context: AssetExecutionContext, nexacloud: NexaCloudDatabase) -> Output[pd.DataFrame]:
    """Metered CPU usage per deployment per local day of the period, summed by NexaCloud's
    database; usage ingested after the period ended (late usage) is also counted apart."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_usage(connection, window)
    total_ms, late_ms = int(frame["cpu_milliseconds"].sum()), int(frame["late_cpu_milliseconds"].sum())
    return validated_output(
        context,
        frame,
        contracts.nexacloud_usage(window),
        window,
        source=nexacloud.describe(),
        metadata={
            "cpu_hours": round(total_ms / 3_600_000, 3),
            "late_cpu_hours": round(late_ms / 3_600_000, 3),
            "usage_records": int(frame["records"].sum()),
            "late_usage_records": int(frame["late_records"].sum()),
            "deployments_with_usage": int(frame["deployment_id"].nunique()),
        },
    )


@_nexacloud_asset("invoices")
def nexacloud_invoices(context: AssetExecutionContext, nexacloud: NexaCloudDatabase) -> Output[pd.DataFrame]:
    """What NexaCloud actually billed for the period: one row per non-void invoice."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_invoices(connection, window)
    return validated_output(
        context,
        frame,
        contracts.nexacloud_invoices(window),
        window,
        source=nexacloud.describe(),
        metadata={
            "total_billed": format_cents(int(frame["total_cents"].sum())),
            "subtotal_billed": format_cents(int(frame["subtotal_cents"].sum())),
            "tax_billed": format_cents(int(frame["tax_cents"].sum())),
            "invoices_by_status": MetadataValue.json(
                frame.groupby("status").size().to_dict() if len(frame) else {}
            ),
        },
    )


@_nexacloud_asset("invoice_lines")
def nexacloud_invoice_lines(
    context: AssetExecutionContext, nexacloud: NexaCloudDatabase
) -> Output[pd.DataFrame]:
    """The lines of the period's NexaCloud invoices: plan fee, overage, credits and adjustments."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_invoice_lines(connection, window)
    amount_by_kind = frame.groupby("kind")["amount_cents"].sum() if len(frame) else pd.Series(dtype="int64")
    return validated_output(
        context,
        frame,
        contracts.nexacloud_invoice_lines(),
        window,
        source=nexacloud.describe(),
        metadata={
            "amount_by_kind": MetadataValue.json(
                {kind: format_cents(int(c)) for kind, c in amount_by_kind.items()}
            ),
        },
    )


@asset_check(
    asset=nexacloud_deployments,
    additional_ins={"customers": AssetIn(key=[GROUP, "customers"]), "plans": AssetIn(key=[GROUP, "plans"])},
    blocking=True,
    description="Every deployment's customer and plan exist in the same period's frames.",
)
def deployments_reference_known_customers_and_plans(
    context, nexacloud_deployments: pd.DataFrame, customers: pd.DataFrame, plans: pd.DataFrame
) -> AssetCheckResult:
    orphans = nexacloud_deployments[
        ~nexacloud_deployments["customer_id"].isin(customers["customer_id"])
        | ~nexacloud_deployments["plan_id"].isin(plans["plan_id"])
    ]
    return referential_check_result(
        context, orphans["deployment_id"], "deployment_id", "deployments with an unknown customer or plan"
    )


@asset_check(
    asset=nexacloud_usage,
    additional_ins={"deployments": AssetIn(key=[GROUP, "deployments"])},
    blocking=True,
    description="Every deployment with usage in the period is a deployment alive in the period.",
)
def usage_references_known_deployments(
    context, nexacloud_usage: pd.DataFrame, deployments: pd.DataFrame
) -> AssetCheckResult:
    orphans = nexacloud_usage[~nexacloud_usage["deployment_id"].isin(deployments["deployment_id"])]
    return referential_check_result(
        context, orphans["deployment_id"], "deployment_id", "usage of deployments not alive in the period"
    )


@asset_check(
    asset=nexacloud_invoice_lines,
    additional_ins={"invoices": AssetIn(key=[GROUP, "invoices"])},
    blocking=True,
    description="Every invoice line belongs to one of the period's invoices, whose totals its lines add up to.",
)
def invoice_lines_add_up_to_their_invoices(
    context, nexacloud_invoice_lines: pd.DataFrame, invoices: pd.DataFrame
) -> AssetCheckResult:
    sums = nexacloud_invoice_lines.groupby("invoice_id")[["amount_cents", "tax_cents"]].sum()
    joined = invoices.set_index("invoice_id").join(sums, how="left", rsuffix="_lines").fillna(0)
    disagreeing = joined[
        (joined["subtotal_cents"] != joined["amount_cents"])
        | (joined["tax_cents"] != joined["tax_cents_lines"])
    ].reset_index()
    orphan_lines = nexacloud_invoice_lines[
        ~nexacloud_invoice_lines["invoice_id"].isin(invoices["invoice_id"])
    ]
    offenders = pd.concat([disagreeing[["invoice_id"]], orphan_lines[["invoice_id"]]]).drop_duplicates()
    return referential_check_result(
        context, offenders["invoice_id"], "invoice_id", "invoices whose lines do not add up or are missing"
    )


assets = [
    nexacloud_customers,
    nexacloud_plans,
    nexacloud_deployments,
    nexacloud_usage,
    nexacloud_invoices,
    nexacloud_invoice_lines,
]
asset_checks = [
    deployments_reference_known_customers_and_plans,
    usage_references_known_deployments,
    invoice_lines_add_up_to_their_invoices,
]
