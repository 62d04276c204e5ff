"""Odoo as partitioned frames: account links, partners, subscriptions, usage ledger, invoices.

Each asset reads one billing period from Odoo through the client (JSON-2, or legacy /jsonrpc),
validates the frame and records what it cost the Odoo server (requests and pages) beside the
figures a person checks.
"""

import pandas as pd
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    MetadataValue,
    Output,
    multi_asset,
)

from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.defs.frames import (
    OWNERS,
    in_its_own_words,
    period_asset,
    referential_check_result,
    validated_output,
)
from fusion_billing_assets.defs.resources import OdooAPI
from fusion_billing_assets.partitions import billing_periods, window_of
from fusion_billing_assets.sources import odoo_frames as queries
from fusion_billing_assets.sources import validation as contracts
from fusion_billing_assets.sources.odoo import OdooClient

GROUP = "odoo"
POOL = "odoo_api"
KINDS = {"odoo", "pandas"}
MODELS = queries.OdooModels()


INVOICED_PARTNERS_EXIST = AssetCheckSpec(
    "invoiced_partners_exist",
    asset=[GROUP, "partners"],
    description="Every partner invoiced in the period exists in Odoo.",
)
INVOICE_LINES_BELONG_TO_KNOWN_INVOICES = AssetCheckSpec(
    "invoice_lines_belong_to_known_invoices",
    asset=[GROUP, "invoice_lines"],
    description="Every Odoo invoice line's invoice (move) is among the period's invoices.",
)


def _odoo_asset(name: str, **options):
    return period_asset(GROUP, name, kinds=KINDS, pool=POOL, **options)


def request_cost(client: OdooClient) -> dict:
    """What a step's reads cost the Odoo server, as the metadata every Odoo-reading asset shows."""
    return {
        "odoo_requests": client.stats.requests,
        "odoo_pages": client.stats.pages,
        "odoo_retries": client.stats.retries,
        "odoo_calls": MetadataValue.json(client.stats.calls_by_method),
        "odoo_rows": MetadataValue.json(client.stats.rows_by_method),
    }


@_odoo_asset("account_links")
def odoo_account_links(context: AssetExecutionContext, odoo: OdooAPI) -> Output[pd.DataFrame]:
    """The importer's mapping between NexaCloud and Odoo: customer → partner and deployment →
    subscription, as recorded in ``ir.model.data``."""
    window = window_of(context.partition_key)
    with odoo.get_client() as client:
        frame = queries.fetch_account_links(client, MODELS)
        cost = request_cost(client)
        source = client.describe()
    return validated_output(
        context,
        frame,
        contracts.odoo_account_links(),
        window,
        source=source,
        metadata=lambda f: {
            **cost,
            "links_by_kind": MetadataValue.json(f.groupby("link_kind").size().to_dict()),
        },
    )


@_odoo_asset("subscriptions")
def odoo_subscriptions(context: AssetExecutionContext, odoo: OdooAPI) -> Output[pd.DataFrame]:
    """Odoo subscriptions running during the period, with the plan fee and the overage rate on
    their order lines: what Odoo will charge each deployment."""
    window = window_of(context.partition_key)
    with odoo.get_client() as client:
        frame = queries.fetch_subscriptions(client, MODELS, window)
        cost, source = request_cost(client), client.describe()
    return validated_output(
        context,
        frame,
        contracts.odoo_subscriptions(),
        window,
        source=source,
        metadata=lambda f: {
            **cost,
            "subscriptions_without_plan_fee": int(f["plan_fee_cents"].isna().sum()),
            "subscriptions_without_overage_rate": int(f["overage_cents_per_cpu_hour"].isna().sum()),
        },
    )


@_odoo_asset("usage")
def odoo_usage(context: AssetExecutionContext, odoo: OdooAPI) -> Output[pd.DataFrame]:
    """Odoo's usage ledger (what NexaCloud pushed to ``/usage``), summed by Odoo per subscription
    over the period."""
    window = window_of(context.partition_key)
    with odoo.get_client() as client:
        frame = queries.fetch_usage(client, MODELS, window)
        cost, source = request_cost(client), client.describe()
    return validated_output(
        context,
        frame,
        contracts.odoo_usage(),
        window,
        source=source,
        metadata=lambda f: {
            **cost,
            "cpu_hours": round(int(f["cpu_milliseconds"].sum()) / 3_600_000, 3),
            "ledger_records": int(f["records"].sum()),
            "subscriptions_with_usage": int(f["subscription_id"].nunique()),
        },
    )


@multi_asset(
    outs={
        "invoices": AssetOut(
            key=[GROUP, "invoices"],
            description="Odoo's customer invoices and refunds of the period (refunds negative), draft or posted.",
            **{"group_name": GROUP, "owners": OWNERS, "kinds": KINDS},
        ),
        "invoice_lines": AssetOut(
            key=[GROUP, "invoice_lines"],
            description="The product lines of those invoices that belong to the period "
            "(by deferred start date, else invoice date).",
            **{"group_name": GROUP, "owners": OWNERS, "kinds": KINDS},
        ),
    },
    partitions_def=billing_periods,
    pool=POOL,
    check_specs=[INVOICE_LINES_BELONG_TO_KNOWN_INVOICES],
)
@in_its_own_words
def odoo_invoices(context: AssetExecutionContext, odoo: OdooAPI):
    """Odoo's invoices of the period and their lines, read together: the lines come in batches
    of ``move_id in [...]``, never one call per invoice."""
    window = window_of(context.partition_key)
    with odoo.get_client() as client:
        invoices, lines = queries.fetch_invoices_and_lines(client, MODELS, window)
        cost, source = request_cost(client), client.describe()
    yield validated_output(
        context,
        invoices,
        contracts.odoo_invoices(window),
        window,
        source=source,
        output_name="invoices",
        metadata=lambda f: {
            **cost,
            "total_invoiced": format_cents(int(f["total_cents"].sum())),
            "untaxed_invoiced": format_cents(int(f["untaxed_cents"].sum())),
            "tax_invoiced": format_cents(int(f["tax_cents"].sum())),
            "refunds": int((f["move_type"] == "out_refund").sum()),
            "invoices_by_state": MetadataValue.json(f.groupby("state").size().to_dict()),
        },
    )
    yield validated_output(
        context,
        lines,
        contracts.odoo_invoice_lines(window),
        window,
        source=source,
        output_name="invoice_lines",
        metadata=lambda f: {"subtotal_of_lines": format_cents(int(f["subtotal_cents"].sum()))},
    )
    yield referential_check_result(
        INVOICE_LINES_BELONG_TO_KNOWN_INVOICES,
        window,
        {
            "odoo/invoices": (invoices, contracts.odoo_invoices(window)),
            "odoo/invoice_lines": (lines, contracts.odoo_invoice_lines(window)),
        },
        "odoo/invoice_lines",
        "line_id",
        "invoice lines whose invoice is missing",
    )


@_odoo_asset(
    "partners",
    ins={
        "account_links": AssetIn(key=[GROUP, "account_links"]),
        "invoices": AssetIn(key=[GROUP, "invoices"]),
    },
    check_specs=[INVOICED_PARTNERS_EXIST],
)
def odoo_partners(
    context: AssetExecutionContext, odoo: OdooAPI, account_links: pd.DataFrame, invoices: pd.DataFrame
):
    """The Odoo partners that matter for the period: every partner mapped to a NexaCloud customer
    and every partner invoiced in the period, mapped or not."""
    window = window_of(context.partition_key)
    linked = account_links.loc[account_links["link_kind"] == "customer", "odoo_id"]
    partner_ids = {int(partner_id) for partner_id in [*linked.dropna(), *invoices["partner_id"].dropna()]}
    with odoo.get_client() as client:
        frame = queries.fetch_partners(client, MODELS, partner_ids)
        cost, source = request_cost(client), client.describe()
    output = validated_output(
        context,
        frame,
        contracts.odoo_partners(),
        window,
        source=source,
        metadata=lambda f: {**cost, "archived_partners": int((~f["active"]).sum())},
    )
    yield output
    yield referential_check_result(
        INVOICED_PARTNERS_EXIST,
        window,
        {
            "odoo/partners": (output.value, contracts.odoo_partners()),
            "odoo/invoices": (invoices, contracts.odoo_invoices(window)),
        },
        "odoo/invoices",
        "move_id",
        "invoices whose partner does not exist",
    )


assets = [odoo_account_links, odoo_subscriptions, odoo_usage, odoo_invoices, odoo_partners]
