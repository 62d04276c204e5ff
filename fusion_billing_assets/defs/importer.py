"""The importer in Dagster: the period's import plan (an asset) and its apply (a job a person launches).

``importer/odoo_import_plan`` reads NexaCloud and Odoo and writes the plan to the warehouse; it
writes nothing to Odoo and uses the reconciliation's read-only Odoo user. ``apply_odoo_import``
plans again from what Odoo holds at that moment and, only with ``dry_run: false``, writes the plan
through ``load`` with the importer's own Odoo user (``odoo_importer``). The job is in no asset
selection, schedule or sensor: writing to Odoo is always a person's act (docs/design.md §9).
"""

from datetime import UTC, date, datetime

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    job,
    op,
)
from pydantic import Field

from fusion_billing_assets.billing.periods import PeriodWindow
from fusion_billing_assets.defs.frames import period_asset
from fusion_billing_assets.defs.odoo import request_cost
from fusion_billing_assets.defs.resources import ImportPolicy, NexaCloudDatabase, OdooAPI, Warehouse
from fusion_billing_assets.importer.apply import ApplyResult, apply_plan
from fusion_billing_assets.importer.exclusions import read_exclusions
from fusion_billing_assets.importer.nexacloud_side import wanted_for_periods
from fusion_billing_assets.importer.odoo_side import read_odoo_side
from fusion_billing_assets.importer.plan import Planned, counts_by_action, plan_frame, plan_import
from fusion_billing_assets.partitions import window_of
from fusion_billing_assets.sources.odoo import OdooClient
from fusion_billing_assets.warehouse import append_import_log, ensure_tables, replace_import_plan

GROUP = "importer"
APPLY_JOB = "apply_odoo_import"
SAMPLE_ROWS = 20
# The source assets the plan reads the same records as, shown as its lineage.
UPSTREAM = [AssetKey(["nexacloud", name]) for name in ("customers", "plans", "deployments")]


def plan_period(
    window: PeriodWindow, nexacloud: NexaCloudDatabase, client: OdooClient, policy: ImportPolicy
) -> list[Planned]:
    """The period's import plan, from NexaCloud's records and what Odoo holds now."""
    exclusions = read_exclusions(policy.exclusions_file)
    with nexacloud.get_connection() as connection:
        wanted = wanted_for_periods(connection, [window], exclusions=exclusions)
    return plan_import(wanted, read_odoo_side(client, wanted))


def record_plan(warehouse: Warehouse, period: date, planned: list[Planned]) -> pd.DataFrame:
    frame = plan_frame(planned, period, datetime.now(UTC))
    with warehouse.begin() as connection:
        ensure_tables(connection)
        replace_import_plan(connection, period, frame)
    return frame


def plan_metadata(window: PeriodWindow, planned: list[Planned], frame: pd.DataFrame) -> dict:
    """What a person reads of a plan: counts per action, and a sample of what is not unchanged."""
    counts = counts_by_action(planned)
    notable = frame.loc[frame["action"] != "unchanged"]
    sample = (
        notable.groupby("action", sort=False)
        .head(SAMPLE_ROWS // 4 or 1)
        .head(SAMPLE_ROWS)[["action", "external_id", "odoo_model", "odoo_id", "changes", "message"]]
    )
    return {
        "billing_period": window.key,
        "counts_by_action": MetadataValue.json(counts),
        "records": len(frame),
        "to_write": counts["create"] + counts["update"],
        "needs_a_person": counts["conflict"] + counts["invalid"],
        "sample": MetadataValue.md(
            sample.astype(object).where(sample.notna(), "").to_markdown(index=False)
            if len(sample)
            else "Nothing to write: every record is unchanged."
        ),
        "warehouse_table": "odoo_import_plan",
    }


@period_asset(GROUP, "odoo_import_plan", kinds={"odoo", "sql"}, deps=UPSTREAM)
def odoo_import_plan(
    context: AssetExecutionContext,
    nexacloud: NexaCloudDatabase,
    odoo: OdooAPI,
    import_policy: ImportPolicy,
    warehouse: Warehouse,
) -> MaterializeResult:
    """What the importer would write to Odoo for the period's customers, plans and deployments:
    each Odoo record with its action (create, update with the fields that differ, unchanged,
    conflict for a person, excluded, invalid). Reads both systems; writes only table
    ``odoo_import_plan``, never Odoo."""
    window = window_of(context.partition_key)
    with odoo.get_client() as client:
        planned = plan_period(window, nexacloud, client, import_policy)
        cost = request_cost(client)
    frame = record_plan(warehouse, window.period, planned)
    context.log.info(f"import plan {window.key}: {counts_by_action(planned)}")
    return MaterializeResult(metadata={**plan_metadata(window, planned, frame), **cost})


class ApplyImportConfig(Config):
    period: str = Field(description="The billing period whose records are imported, e.g. 2026-10-01.")
    dry_run: bool = Field(
        default=True, description="Plan and say what would be sent, without writing to Odoo (the default)."
    )


def log_frame(result: ApplyResult, run_id: str, period: date, logged_at: datetime) -> pd.DataFrame:
    rows = [
        {
            "run_id": run_id,
            "billing_period": period,
            "dry_run": result.dry_run,
            "batch": entry.batch,
            "odoo_model": entry.odoo_model,
            "external_id": entry.external_id,
            "outcome": str(entry.outcome),
            "records": entry.records,
            "odoo_id": entry.odoo_id,
            "message": entry.message,
            "logged_at": logged_at,
        }
        for entry in result.log
    ]
    frame = pd.DataFrame(rows, columns=list(_LOG_COLUMNS))
    frame["odoo_id"] = frame["odoo_id"].astype("Int64")
    return frame


_LOG_COLUMNS = (
    "run_id",
    "billing_period",
    "dry_run",
    "batch",
    "odoo_model",
    "external_id",
    "outcome",
    "records",
    "odoo_id",
    "message",
    "logged_at",
)


@op(
    description="Plan the period's import again and, with dry_run false, write it to Odoo through load.",
    out=Out(dict, description="Counts of the plan and of what was sent."),
)
def apply_period_import(
    context: OpExecutionContext,
    config: ApplyImportConfig,
    nexacloud: NexaCloudDatabase,
    odoo: OdooAPI,
    odoo_importer: OdooAPI,
    import_policy: ImportPolicy,
    warehouse: Warehouse,
):
    window = window_of(config.period)
    with odoo.get_client() as reader:
        planned = plan_period(window, nexacloud, reader, import_policy)
        read_cost = request_cost(reader)
    frame = record_plan(warehouse, window.period, planned)
    counts = counts_by_action(planned)
    context.log.info(f"import plan {window.key}: {counts}")
    if config.dry_run:
        result = apply_plan(None, planned, dry_run=True, batch_size=import_policy.batch_size)
        write_cost: dict = {}
    else:
        with odoo_importer.get_client() as writer:
            result = apply_plan(
                writer, planned, dry_run=False, batch_size=import_policy.batch_size, progress=context.log.info
            )
            write_cost = request_cost(writer)
    with warehouse.begin() as connection:
        ensure_tables(connection)
        append_import_log(
            connection, window.period, log_frame(result, context.run_id, window.period, datetime.now(UTC))
        )
    notable = frame.loc[~frame["action"].isin(["unchanged", "excluded"])].head(SAMPLE_ROWS)
    summary = {
        "billing_period": window.key,
        "dry_run": config.dry_run,
        "plan": counts,
        "notable": [
            [row.action, row.external_id, row.changes or row.message or ""] for row in notable.itertuples()
        ],
        "sent": result.counts_by_outcome(),
        "written": result.written,
    }
    metadata = {
        **plan_metadata(window, planned, frame),
        "dry_run": config.dry_run,
        "counts_by_outcome": MetadataValue.json(result.counts_by_outcome()),
        "written": MetadataValue.json(result.written),
        "odoo_messages": MetadataValue.md(_messages_markdown(result)),
        "read_cost": MetadataValue.json({k: getattr(v, "value", v) for k, v in read_cost.items()}),
        "write_cost": MetadataValue.json({k: getattr(v, "value", v) for k, v in write_cost.items()}),
        "warehouse_table": "odoo_import_log",
    }
    if not result.complete:
        raise Failure(
            description=_incomplete(result),
            metadata={**metadata, "summary": MetadataValue.json(summary)},
            allow_retries=False,
        )
    yield Output(summary, metadata=metadata)


def _messages_markdown(result: ApplyResult) -> str:
    messages = [
        e for e in result.log if e.external_id and e.outcome.value in ("refused", "failed", "skipped")
    ]
    if not messages:
        return "No message from Odoo."
    frame = pd.DataFrame(
        [(e.batch, e.odoo_model, e.external_id, e.outcome.value, e.message) for e in messages[:SAMPLE_ROWS]],
        columns=["batch", "odoo_model", "external_id", "outcome", "message"],
    )
    return frame.to_markdown(index=False)


def _incomplete(result: ApplyResult) -> str:
    counts = result.counts_by_outcome()
    first = next((e for e in result.log if e.external_id and e.outcome.value == "refused"), None)
    parts = [
        f"the import did not finish: {counts['loaded']} record(s) written, {counts['refused']} refused, "
        f"{counts['failed']} not gone through, {counts['skipped']} not sent"
    ]
    if result.stopped:
        parts.append(result.stopped)
    if first is not None:
        parts.append(f"first refusal: {first.external_id}: {first.message}")
    parts.append(
        "what was written stays; run the import again once the cause is fixed (nothing is created twice)"
    )
    return "; ".join(parts)


@job(
    name=APPLY_JOB,
    description="Write the period's import plan to Odoo (dry run unless dry_run is false). Launched by a "
    "person only: no schedule or sensor starts it.",
    # Never retried by the instance: a person decides to run an import again.
    tags={"fusion/writes": "odoo", "dagster/max_retries": "0"},
)
def apply_odoo_import():
    apply_period_import()
