"""Usage delivery in Dagster: did every NexaCloud usage record of the period reach Odoo's ledger?

``billing/usage_delivery`` compares both systems per (subscription, local day), reads record by
record only the segments that disagree, and writes every gap to ``billing_usage_gaps``; its check
``every_usage_record_delivered`` fails (ERROR, not blocking) while a gap remains. The repair, a
person's act, is the job in ``defs/usage_repair.py``. The logic is ``billing/delivery.py``.
"""

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    MaterializeResult,
    MetadataValue,
)

from fusion_billing_assets.billing.delivery import (
    GapKind,
    cents_at_stake,
    classify,
    counts_by_kind,
    deployment_links,
    millis_at_stake,
    segments_that_disagree,
)
from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.periods import PeriodWindow, local_day
from fusion_billing_assets.defs.frames import period_asset, period_metadata
from fusion_billing_assets.defs.odoo import MODELS, request_cost
from fusion_billing_assets.defs.resources import NexaCloudDatabase, OdooAPI, Warehouse
from fusion_billing_assets.partitions import window_of
from fusion_billing_assets.sources import nexacloud as nexacloud_queries
from fusion_billing_assets.sources import odoo_frames as odoo_queries
from fusion_billing_assets.warehouse import ensure_tables, replace_usage_gaps

GROUP = "reconciliation"
KEY_PREFIX = "billing"
USAGE_DELIVERY = AssetKey([KEY_PREFIX, "usage_delivery"])
EVERY_USAGE_RECORD_DELIVERED = "every_usage_record_delivered"
SAMPLE_GAPS = 20
MAX_LISTED = 50

DELIVERY_CHECK = AssetCheckSpec(
    EVERY_USAGE_RECORD_DELIVERED,
    asset=USAGE_DELIVERY,
    description="Every NexaCloud usage record of the period is in Odoo's ledger, once, under its "
    "deployment's subscription, with its quantity; and the ledger holds nothing NexaCloud never issued.",
)


def find_gaps(
    window: PeriodWindow, nexacloud: NexaCloudDatabase, odoo: OdooAPI, mapping: pd.DataFrame
) -> tuple[pd.DataFrame, dict]:
    """The period's gaps (``billing.delivery.GAP_COLUMNS`` plus ``usage_date``) and what it cost."""
    links = deployment_links(mapping)
    with nexacloud.get_connection() as connection, odoo.get_client() as client:
        nexacloud_segments = nexacloud_queries.fetch_usage_segments(connection, window)
        ledger_segments = odoo_queries.fetch_ledger_segments(client, MODELS, window)
        disagree = segments_that_disagree(nexacloud_segments, ledger_segments, links)
        segments = list(zip(disagree["subscription_id"], disagree["usage_date"], strict=True))
        in_segments = nexacloud_segments.merge(links, on="deployment_id").merge(
            disagree[["subscription_id", "usage_date"]], on=["subscription_id", "usage_date"]
        )
        nexacloud_records = nexacloud_queries.fetch_usage_records(
            connection, window, zip(in_segments["deployment_id"], in_segments["usage_date"], strict=True)
        )
        ledger = odoo_queries.fetch_ledger_records(client, MODELS, window, segments)
        # A key of these segments the ledger holds elsewhere (another subscription or day).
        unseen = set(nexacloud_records["idempotency_key"]) - set(ledger["idempotency_key"])
        ledger = pd.concat(
            [ledger, odoo_queries.fetch_ledger_by_keys(client, MODELS, unseen)], ignore_index=True
        ).drop_duplicates("id")
        # A ledger key these segments' NexaCloud records lack may still be NexaCloud's.
        strangers = set(ledger["idempotency_key"]) - set(nexacloud_records["idempotency_key"])
        issued = set(nexacloud_queries.fetch_usage_by_keys(connection, strangers)["idempotency_key"])
        cost = {
            **request_cost(client),
            "segments_compared": len(nexacloud_segments.merge(links, on="deployment_id")),
            "ledger_segments": len(ledger_segments),
            "segments_that_disagree": len(disagree),
            "nexacloud_records_read": len(nexacloud_records),
            "ledger_records_read": len(ledger),
        }
    gaps = classify(nexacloud_records, ledger, links, issued)
    gaps["usage_date"] = [
        local_day(moment, window.timezone) if pd.notna(moment) else None for moment in gaps["window_start"]
    ]
    return gaps, cost


def gap_frame(gaps: pd.DataFrame, window: PeriodWindow, found_at: datetime) -> pd.DataFrame:
    """The gaps as table ``billing_usage_gaps`` holds them (CPU-seconds with three decimals)."""

    def seconds(millis: pd.Series) -> list:
        return [None if pd.isna(m) else Decimal(int(m)) / 1000 for m in millis]

    return pd.DataFrame(
        {
            "billing_period": window.period,
            "deployment_id": gaps["deployment_id"],
            "subscription_id": gaps["subscription_id"],
            "idempotency_key": gaps["idempotency_key"],
            "kind": gaps["kind"],
            "window_start": gaps["window_start"],
            "nexacloud_quantity": seconds(gaps["nexacloud_cpu_milliseconds"]),
            "odoo_quantity": seconds(gaps["odoo_cpu_milliseconds"]),
            "found_at": found_at,
        }
    )


def money_at_stake(gaps: pd.DataFrame, subscriptions: pd.DataFrame) -> pd.Series:
    """Cents each gap can move: its CPU at the subscription's overage rate (0 without a rate)."""
    rates = dict(
        zip(subscriptions["subscription_id"], subscriptions["overage_cents_per_cpu_hour"], strict=True)
    )
    millis = millis_at_stake(gaps)
    return pd.Series(
        [
            cents_at_stake(int(ms), Decimal(str(rates[sub])) / 100) if pd.notna(rates.get(sub)) else 0
            for ms, sub in zip(millis, gaps["subscription_id"], strict=True)
        ],
        index=gaps.index,
        dtype="int64",
    )


@period_asset(
    GROUP,
    "usage_delivery",
    key_prefix=KEY_PREFIX,
    kinds={"sql", "odoo", "pandas"},
    ins={
        "mapping": AssetIn(key=[KEY_PREFIX, "account_mapping"]),
        "subscriptions": AssetIn(key=["odoo", "subscriptions"]),
    },
    check_specs=[DELIVERY_CHECK],
)
def usage_delivery(
    context: AssetExecutionContext,
    nexacloud: NexaCloudDatabase,
    odoo: OdooAPI,
    warehouse: Warehouse,
    mapping: pd.DataFrame,
    subscriptions: pd.DataFrame,
):
    """Whether every NexaCloud usage record of the period reached Odoo's ledger: each gap (missing,
    quantity differs, wrong subscription, extra) with its record, the CPU-seconds and the money
    at stake; written to ``billing_usage_gaps``. A lost push under the quota changes no bill, so
    only this shows it."""
    window = window_of(context.partition_key)
    gaps, cost = find_gaps(window, nexacloud, odoo, mapping)
    found_at = datetime.now(UTC)
    table = gap_frame(gaps, window, found_at)
    with warehouse.begin() as connection:
        ensure_tables(connection)
        replace_usage_gaps(connection, window.period, table)
    summary = delivery_summary(gaps, subscriptions)
    context.log.info(f"usage delivery {window.key}: {summary['counts_by_kind']}")
    yield MaterializeResult(
        metadata={
            **period_metadata(window, f"{nexacloud.describe()} and {odoo.url}"),
            "counts_by_kind": MetadataValue.json(summary["counts_by_kind"]),
            "gaps": len(gaps),
            "cpu_seconds_at_stake": MetadataValue.json(summary["cpu_seconds_by_kind"]),
            "money_at_stake": summary["money"],
            "money_at_stake_cents": summary["cents"],
            "days_affected": MetadataValue.json(summary["days"]),
            "sample": MetadataValue.md(_sample(gaps)),
            "warehouse_table": "billing_usage_gaps",
            **cost,
        },
    )
    yield AssetCheckResult(
        check_name=EVERY_USAGE_RECORD_DELIVERED,
        passed=gaps.empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "billing_period": window.key,
            "counts_by_kind": MetadataValue.json(summary["counts_by_kind"]),
            "money_at_stake": summary["money"],
            "days_affected": MetadataValue.json(summary["days"]),
            "offending_idempotency_keys": MetadataValue.json(sorted(gaps["idempotency_key"])[:MAX_LISTED]),
            "offending_subscription_ids": MetadataValue.json(
                sorted({int(s) for s in gaps["subscription_id"]})[:MAX_LISTED]
            ),
        },
    )


def delivery_summary(gaps: pd.DataFrame, subscriptions: pd.DataFrame) -> dict:
    """Counts, CPU-seconds and money at stake by kind, and the local days the gaps fall on."""
    cents = money_at_stake(gaps, subscriptions) if len(gaps) else pd.Series(dtype="int64")
    millis = millis_at_stake(gaps) if len(gaps) else pd.Series(dtype="int64")
    by_kind = {str(kind): str(Decimal(int(millis[gaps["kind"] == kind].sum())) / 1000) for kind in GapKind}
    return {
        "counts_by_kind": counts_by_kind(gaps),
        "cpu_seconds_by_kind": by_kind,
        "cents": int(cents.sum()),
        "money": format_cents(int(cents.sum())),
        "days": sorted({str(day) for day in gaps["usage_date"].dropna()}) if len(gaps) else [],
    }


def _sample(gaps: pd.DataFrame) -> str:
    if gaps.empty:
        return "Every usage record of the period is in Odoo's ledger, once, as NexaCloud issued it."
    shown = gaps.head(SAMPLE_GAPS)[
        [
            "kind",
            "deployment_id",
            "subscription_id",
            "idempotency_key",
            "window_start",
            "nexacloud_cpu_milliseconds",
            "odoo_cpu_milliseconds",
        ]
    ]
    return shown.astype(object).where(shown.notna(), "").to_markdown(index=False)


assets = [usage_delivery]
