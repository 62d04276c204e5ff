"""The usage repair: re-push to Odoo what the delivery check found missing (docs/design.md §10).

``repair_usage_delivery`` takes the period's ``missing`` gaps from ``billing_usage_gaps``, reads
each record again from NexaCloud by its key, and pushes it to Odoo's ``POST /usage`` with its
**original** idempotency key, so a repair that runs twice, or races the metering, cannot bill
twice. ``dry_run`` (the default) pushes nothing. Every record's outcome goes to
``usage_repair_log``. ``quantity_differs``, ``wrong_subscription`` and ``extra`` are never
"fixed" here: the run lists them with what the endpoint would need, for a person. After an applied
repair, ``usage_repair_followups`` materializes ``billing/usage_delivery`` of the period again (a
read), so the delivery check shows the result. No schedule or sensor starts the repair.
"""

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
from dagster import (
    AssetSelection,
    Config,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    RunRequest,
    RunStatusSensorContext,
    SkipReason,
    define_asset_job,
    job,
    op,
    run_status_sensor,
)
from pydantic import Field

from fusion_billing_assets.defs.delivery import USAGE_DELIVERY
from fusion_billing_assets.defs.resources import NexaCloudDatabase, OdooUsageEndpoint, Warehouse
from fusion_billing_assets.partitions import window_of
from fusion_billing_assets.sources import nexacloud as nexacloud_queries
from fusion_billing_assets.sources.odoo_usage import MAX_BATCH, PushResult, batches
from fusion_billing_assets.warehouse import append_repair_log, ensure_tables, read_usage_gaps

REPAIR_JOB = "repair_usage_delivery"
CHECK_JOB = "check_usage_delivery"
REPAIR_OP = "repair_period_usage"
SHOWN = 20
OUTCOMES = ("created", "duplicate", "conflict", "rejected", "failed", "dry_run")
# What the endpoint would need to put right each kind a person handles.
BY_HAND = {
    "quantity_differs": "the ledger record under this key carries another quantity: correct it in Odoo "
    "(the endpoint answers 409 to the same key with another quantity)",
    "wrong_subscription": "the record is under another customer's subscription: move it in Odoo to "
    "the deployment's subscription (re-pushing the key there would bill it twice)",
    "extra": "NexaCloud never issued this key: remove the ledger record in Odoo if it is a duplicate "
    "push (the endpoint cannot delete)",
}


class RepairUsageConfig(Config):
    period: str = Field(description="The billing period whose missing usage is pushed, e.g. 2026-10-01.")
    dry_run: bool = Field(
        default=True, description="Say what would be pushed, without pushing to Odoo (the default)."
    )


def push_records(missing: pd.DataFrame, nexacloud_records: pd.DataFrame) -> list[dict]:
    """The ``/usage`` records of the missing gaps, from NexaCloud's own records, keys unchanged."""
    by_key = nexacloud_records.drop_duplicates("idempotency_key").set_index("idempotency_key")
    records = []
    for gap in missing.itertuples(index=False):
        if gap.idempotency_key not in by_key.index:
            continue
        source = by_key.loc[gap.idempotency_key]
        records.append(
            {
                "subscription_id": int(gap.subscription_id),
                "metric": "cpu_seconds",
                "quantity": float(Decimal(int(source["cpu_milliseconds"])) / 1000),
                "idempotency_key": gap.idempotency_key,
                "timestamp": pd.Timestamp(source["window_start"])
                .tz_convert(UTC)
                .strftime("%Y-%m-%d %H:%M:%S"),
            }
        )
    return records


def repair_log(
    results: list[PushResult], records: list[dict], run_id: str, period, dry_run: bool, at: datetime
) -> pd.DataFrame:
    quantity_of = {r["idempotency_key"]: Decimal(str(r["quantity"])) for r in records}
    batch_of = {
        record["idempotency_key"]: number
        for number, batch in enumerate(batches(records, MAX_BATCH), start=1)
        for record in batch
    }
    frame = pd.DataFrame(
        [
            {
                "run_id": run_id,
                "billing_period": period,
                "dry_run": dry_run,
                "batch": batch_of[result.idempotency_key],
                "subscription_id": result.subscription_id,
                "idempotency_key": result.idempotency_key,
                "quantity": quantity_of[result.idempotency_key],
                "outcome": result.outcome,
                "http_status": result.http_status,
                "message": result.message,
                "logged_at": at,
            }
            for result in results
        ],
        columns=[
            "run_id",
            "billing_period",
            "dry_run",
            "batch",
            "subscription_id",
            "idempotency_key",
            "quantity",
            "outcome",
            "http_status",
            "message",
            "logged_at",
        ],
    )
    frame["http_status"] = frame["http_status"].astype("Int64")
    return frame


@op(
    name=REPAIR_OP,
    description="Push the period's missing usage records to Odoo's /usage with their original keys "
    "(a dry run unless dry_run is false).",
    out=Out(dict, description="What was pushed, and what is left for a person."),
)
def repair_period_usage(
    context: OpExecutionContext,
    config: RepairUsageConfig,
    nexacloud: NexaCloudDatabase,
    odoo_usage: OdooUsageEndpoint,
    warehouse: Warehouse,
):
    window = window_of(config.period)
    with warehouse.begin() as connection:
        ensure_tables(connection)
        gaps = read_usage_gaps(connection, window.period)
    missing = gaps[gaps["kind"] == "missing"]
    by_hand = gaps[gaps["kind"] != "missing"]
    with nexacloud.get_connection() as connection:
        sources = nexacloud_queries.fetch_usage_by_keys(connection, missing["idempotency_key"])
    records = push_records(missing, sources)
    gone = sorted(set(missing["idempotency_key"]) - {r["idempotency_key"] for r in records})
    if config.dry_run:
        results = [
            PushResult(r["idempotency_key"], r["subscription_id"], "dry_run", None, "would be pushed")
            for r in records
        ]
    else:
        results = []
        with odoo_usage.get_pusher() as pusher:
            for number, batch in enumerate(batches(records, MAX_BATCH), start=1):
                results += pusher.push(batch)
                context.log.info(f"/usage batch {number}: {len(batch)} record(s) sent")
    log = repair_log(results, records, context.run_id, window.period, config.dry_run, datetime.now(UTC))
    with warehouse.begin() as connection:
        ensure_tables(connection)
        append_repair_log(connection, window.period, log)
    counts = {outcome: int((log["outcome"] == outcome).sum()) for outcome in OUTCOMES}
    summary = {
        "billing_period": window.key,
        "dry_run": config.dry_run,
        "missing": len(missing),
        "pushed": counts,
        "no_longer_in_nexacloud": gone,
        "for_a_person": by_hand["kind"].value_counts().to_dict(),
    }
    metadata = {
        "billing_period": window.key,
        "dry_run": config.dry_run,
        "counts_by_outcome": MetadataValue.json(counts),
        "missing_records": len(missing),
        "for_a_person": MetadataValue.md(_by_hand_markdown(by_hand)),
        "answers": MetadataValue.md(_answers_markdown(log)),
        "warehouse_table": "usage_repair_log",
    }
    unresolved = counts["failed"] + counts["conflict"] + counts["rejected"]
    if unresolved:
        raise Failure(
            description=f"the usage repair of {window.key} left {unresolved} record(s) unpushed: "
            f"{counts['failed']} failed, {counts['conflict']} conflict, {counts['rejected']} rejected "
            f"(first: {_first_problem(log)}); what Odoo stored stays, and a repair run again pushes "
            "the same keys, so nothing is billed twice",
            metadata={**metadata, "summary": MetadataValue.json(summary)},
            allow_retries=False,
        )
    yield Output(summary, metadata=metadata)


def _first_problem(log: pd.DataFrame) -> str:
    bad = log[log["outcome"].isin(["failed", "conflict", "rejected"])]
    row = bad.iloc[0]
    return f"{row['idempotency_key']}: {row['outcome']}, {row['message']}"


def _answers_markdown(log: pd.DataFrame) -> str:
    if log.empty:
        return "Nothing to push: the period has no missing usage record."
    shown = log.head(SHOWN)[["batch", "subscription_id", "idempotency_key", "quantity", "outcome", "message"]]
    return shown.astype(object).where(shown.notna(), "").to_markdown(index=False)


def _by_hand_markdown(gaps: pd.DataFrame) -> str:
    if gaps.empty:
        return "Nothing for a person: every gap of the period is a missing record."
    rows = gaps.head(SHOWN).assign(what_to_do=lambda frame: frame["kind"].map(BY_HAND))
    shown = rows[
        [
            "kind",
            "deployment_id",
            "subscription_id",
            "idempotency_key",
            "window_start",
            "nexacloud_quantity",
            "odoo_quantity",
            "what_to_do",
        ]
    ]
    return shown.astype(object).where(shown.notna(), "").to_markdown(index=False)


@job(
    name=REPAIR_JOB,
    description="Push the period's missing usage records to Odoo with their original keys (dry run "
    "unless dry_run is false). Launched by a person only: no schedule or sensor starts it.",
    tags={"fusion/writes": "odoo", "dagster/max_retries": "0"},
)
def repair_usage_delivery():
    repair_period_usage()


check_usage_delivery = define_asset_job(
    CHECK_JOB,
    selection=AssetSelection.assets(USAGE_DELIVERY),
    description="Check one period's usage delivery again (reads both systems; writes billing_usage_gaps).",
)


@run_status_sensor(
    name="usage_repair_followups",
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[repair_usage_delivery],
    request_job=check_usage_delivery,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="After an applied usage repair, checks the period's usage delivery again.",
)
def usage_repair_followups(context: RunStatusSensorContext):
    config = context.dagster_run.run_config.get("ops", {}).get(REPAIR_OP, {}).get("config", {})
    if config.get("dry_run", True):
        return SkipReason("A dry run pushed nothing: the delivery check stays as it was.")
    period = config["period"]
    return RunRequest(
        run_key=f"usage-repair:{context.dagster_run.run_id}",
        partition_key=period,
        tags={"fusion/reason": f"usage repair run {context.dagster_run.run_id} of {period}"},
    )
