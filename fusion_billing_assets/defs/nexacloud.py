"""NexaCloud as partitioned frames: customers, plans, deployments, usage, invoices, invoice lines.

Each asset reads one billing period from NexaCloud's database (read-only), validates the frame
against its contract, marking the records that break it, and records what a person needs to trust
it. The SQL lives in ``sources.nexacloud``. Checks on deployments, usage and invoice lines verify
that the frames of a period reference each other; what fails them is set aside in the
reconciliation (its customers get ``source_data_error``), never silently dropped.
"""

import pandas as pd
from dagster import AssetCheckSpec, AssetExecutionContext, AssetIn, MetadataValue, Output

from fusion_billing_assets.billing.expected import active_days_per_deployment
from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.defs.frames import (
    period_asset,
    referential_check_result,
    validated_output,
)
from fusion_billing_assets.defs.resources import NexaCloudDatabase
from fusion_billing_assets.partitions import window_of
from fusion_billing_assets.sources import nexacloud as queries
from fusion_billing_assets.sources import validation as contracts

GROUP = "nexacloud"
POOL = "nexacloud_db"
KINDS = {"sql", "pandas"}

DEPLOYMENTS_REFERENCE_KNOWN_CUSTOMERS_AND_PLANS = AssetCheckSpec(
    "deployments_reference_known_customers_and_plans",
    asset=[GROUP, "deployments"],
    description="Every deployment's customer and plan exist in the same period's frames.",
)
USAGE_REFERENCES_KNOWN_DEPLOYMENTS = AssetCheckSpec(
    "usage_references_known_deployments",
    asset=[GROUP, "usage"],
    description="Every deployment with usage in the period is a deployment alive in the period.",
)
INVOICE_LINES_ADD_UP_TO_THEIR_INVOICES = AssetCheckSpec(
    "invoice_lines_add_up_to_their_invoices",
    asset=[GROUP, "invoice_lines"],
    description="Every line belongs to one of the period's invoices, whose subtotal and tax its lines add up to.",
)


def _nexacloud_asset(name: str, **options):
    return period_asset(GROUP, name, kinds=KINDS, pool=POOL, **options)


@_nexacloud_asset("customers")
def nexacloud_customers(context: AssetExecutionContext, nexacloud: NexaCloudDatabase) -> Output[pd.DataFrame]:
    """NexaCloud's customers as they stood in the billing period: who may be billed, in which
    province (the tax region) and currency."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_customers(connection, window)
    return validated_output(
        context,
        frame,
        contracts.nexacloud_customers(window),
        window,
        source=nexacloud.describe(),
        metadata=lambda f: {
            "customers_by_province": MetadataValue.json(f.groupby("province").size().to_dict())
        },
    )


@_nexacloud_asset("plans")
def nexacloud_plans(context: AssetExecutionContext, nexacloud: NexaCloudDatabase) -> Output[pd.DataFrame]:
    """NexaCloud's price list: each plan's monthly fee, included CPU-seconds and overage rate."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_plans(connection)
    return validated_output(context, frame, contracts.nexacloud_plans(), window, source=nexacloud.describe())


@_nexacloud_asset(
    "deployments",
    ins={"customers": AssetIn(key=[GROUP, "customers"]), "plans": AssetIn(key=[GROUP, "plans"])},
    check_specs=[DEPLOYMENTS_REFERENCE_KNOWN_CUSTOMERS_AND_PLANS],
)
def nexacloud_deployments(
    context: AssetExecutionContext, nexacloud: NexaCloudDatabase, customers: pd.DataFrame, plans: pd.DataFrame
):
    """Deployments alive at any moment of the billing period, with the number of local calendar
    days they were active (what the plan fee is prorated by)."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_deployments(connection, window)
    if {"created_at", "terminated_at"} <= set(frame.columns):
        frame["active_days"] = active_days_per_deployment(frame, window)
    output = validated_output(
        context,
        frame,
        contracts.nexacloud_deployments(window),
        window,
        source=nexacloud.describe(),
        metadata=lambda f: {
            "deployments_active_part_of_the_period": int((f["active_days"] < window.days).sum())
        },
    )
    yield output
    yield referential_check_result(
        DEPLOYMENTS_REFERENCE_KNOWN_CUSTOMERS_AND_PLANS,
        window,
        {
            "nexacloud/customers": (customers, contracts.nexacloud_customers(window)),
            "nexacloud/plans": (plans, contracts.nexacloud_plans()),
            "nexacloud/deployments": (output.value, contracts.nexacloud_deployments(window)),
        },
        "nexacloud/deployments",
        "deployment_id",
        "deployments with an unknown customer or plan",
    )


@_nexacloud_asset(
    "usage",
    ins={"deployments": AssetIn(key=[GROUP, "deployments"])},
    check_specs=[USAGE_REFERENCES_KNOWN_DEPLOYMENTS],
)
def nexacloud_usage(context: AssetExecutionContext, nexacloud: NexaCloudDatabase, deployments: pd.DataFrame):
    """Metered CPU usage per deployment over the period, summed by NexaCloud's database; usage
    ingested after the period ended (late usage) is also counted apart."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_usage(connection, window)
        negative = (
            queries.fetch_negative_usage(connection, window)
            if "negative_records" in frame.columns and frame["negative_records"].any()
            else None
        )
    if negative is not None:
        # A negative reading hides inside its deployment's sum: name each one on that deployment.
        frame = queries.name_negative_usage(frame, negative)
    output = validated_output(
        context,
        frame,
        contracts.nexacloud_usage(),
        window,
        source=nexacloud.describe(),
        metadata=lambda f: {
            "cpu_hours": round(int(f["cpu_milliseconds"].sum()) / 3_600_000, 3),
            "late_cpu_hours": round(int(f["late_cpu_milliseconds"].sum()) / 3_600_000, 3),
            "usage_records": int(f["records"].sum()),
            "late_usage_records": int(f["late_records"].sum()),
            "deployments_with_usage": int(f["deployment_id"].nunique()),
        },
    )
    yield output
    yield referential_check_result(
        USAGE_REFERENCES_KNOWN_DEPLOYMENTS,
        window,
        {
            "nexacloud/deployments": (deployments, contracts.nexacloud_deployments(window)),
            "nexacloud/usage": (output.value, contracts.nexacloud_usage()),
        },
        "nexacloud/usage",
        "deployment_id",
        "deployments with usage that are not alive in the period",
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
        metadata=lambda f: {
            "total_billed": format_cents(int(f["total_cents"].sum())),
            "subtotal_billed": format_cents(int(f["subtotal_cents"].sum())),
            "tax_billed": format_cents(int(f["tax_cents"].sum())),
            "invoices_by_status": MetadataValue.json(f.groupby("status").size().to_dict()),
        },
    )


@_nexacloud_asset(
    "invoice_lines",
    ins={"invoices": AssetIn(key=[GROUP, "invoices"])},
    check_specs=[INVOICE_LINES_ADD_UP_TO_THEIR_INVOICES],
)
def nexacloud_invoice_lines(
    context: AssetExecutionContext, nexacloud: NexaCloudDatabase, invoices: pd.DataFrame
):
    """The lines of the period's NexaCloud invoices: plan fee, overage, credits and adjustments."""
    window = window_of(context.partition_key)
    with nexacloud.get_connection() as connection:
        frame = queries.fetch_invoice_lines(connection, window)
    output = validated_output(
        context,
        frame,
        contracts.nexacloud_invoice_lines(),
        window,
        source=nexacloud.describe(),
        metadata=lambda f: {
            "amount_by_kind": MetadataValue.json(
                {kind: format_cents(int(c)) for kind, c in f.groupby("kind")["amount_cents"].sum().items()}
            )
        },
    )
    yield output
    frames = {
        "nexacloud/invoices": (invoices, contracts.nexacloud_invoices(window)),
        "nexacloud/invoice_lines": (output.value, contracts.nexacloud_invoice_lines()),
    }
    yield referential_check_result(
        INVOICE_LINES_ADD_UP_TO_THEIR_INVOICES,
        window,
        frames,
        ("nexacloud/invoice_lines", "nexacloud/invoices"),
        "invoice_id",
        "invoices whose lines do not add up to them, or lines of unknown invoices",
    )


assets = [
    nexacloud_customers,
    nexacloud_plans,
    nexacloud_deployments,
    nexacloud_usage,
    nexacloud_invoices,
    nexacloud_invoice_lines,
]
