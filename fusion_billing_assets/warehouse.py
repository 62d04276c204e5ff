"""The results contract in the warehouse: ``billing_reconciliation`` and its per-deployment detail.

People and other tools read these tables (docs/design.md §6), so their columns are written down once,
here. Amounts are integer cents; CPU-seconds keep their three decimals; ``delta_cents`` and every
component delta are Odoo minus NexaCloud.

Writing a period replaces it: its rows in both tables are deleted and the new ones inserted in
the caller's transaction, so a reader sees the old period or the new one, never a mix. A period
holds tens of thousands of rows, so they are checked and converted column by column and written in
bulk: by ``COPY`` on PostgreSQL (psycopg 3), by one ``executemany`` of tuples on SQLite. Reading
returns frames typed like the source frames (``sources.frames``), whichever database holds them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    func,
    select,
)
from sqlalchemy.exc import DBAPIError

from fusion_billing_assets.billing.money import to_decimal
from fusion_billing_assets.billing.periods import parse_period
from fusion_billing_assets.sources.frames import (
    BOOL,
    DATE,
    DECIMAL,
    INT,
    NULLABLE_INT,
    TEXT,
    UTC_TIMESTAMP,
    as_date,
    typed_frame,
)

metadata = MetaData()


def _result_columns() -> list[Column]:
    """The columns of a result row, fresh for each table that holds result rows."""
    return [
        Column("billing_period", Date, nullable=False),
        # Null for the row of an Odoo partner that no NexaCloud customer maps to.
        Column("customer_id", BigInteger, nullable=True),
        # Null for a NexaCloud customer that maps to no Odoo partner.
        Column("partner_id", BigInteger, nullable=True),
        Column("customer_name", Text, nullable=True),
        Column("status", Text, nullable=False),
        Column("cause", Text, nullable=False),
        Column("nexacloud_invoice_count", Integer, nullable=False),
        Column("odoo_invoice_count", Integer, nullable=False),
        Column("nexacloud_currency", Text, nullable=True),
        Column("odoo_currency", Text, nullable=True),
        Column("nexacloud_subtotal_cents", BigInteger, nullable=False),
        Column("nexacloud_tax_cents", BigInteger, nullable=False),
        Column("nexacloud_total_cents", BigInteger, nullable=False),
        Column("odoo_subtotal_cents", BigInteger, nullable=False),
        Column("odoo_tax_cents", BigInteger, nullable=False),
        Column("odoo_total_cents", BigInteger, nullable=False),
        # Null when the expected leg cannot be formed (a plan priced in another currency …).
        Column("expected_subtotal_cents", BigInteger, nullable=True),
        Column("expected_tax_cents", BigInteger, nullable=True),
        Column("expected_total_cents", BigInteger, nullable=True),
        Column("delta_cents", BigInteger, nullable=False),
        Column("plan_fee_delta_cents", BigInteger, nullable=False),
        Column("overage_delta_cents", BigInteger, nullable=False),
        Column("tax_delta_cents", BigInteger, nullable=False),
        Column("nexacloud_cpu_seconds", Numeric(18, 3), nullable=False),
        Column("odoo_cpu_seconds", Numeric(18, 3), nullable=False),
        Column("waiver_reason", Text, nullable=True),
        Column("waiver_approver", Text, nullable=True),
        Column("provisional", Boolean, nullable=False),
        Column("reconciled_at", DateTime(timezone=True), nullable=False),
    ]


billing_reconciliation = Table(
    "billing_reconciliation",
    metadata,
    *_result_columns(),
    Index("billing_reconciliation_period_status", "billing_period", "status"),
)

# Every run's rows, kept (docs/design.md §12): the current view above is one of them.
billing_reconciliation_history = Table(
    "billing_reconciliation_history",
    metadata,
    Column("run_id", Text, nullable=False),
    *_result_columns(),
    Column("inputs_fingerprint", Text, nullable=False),
    Index("billing_reconciliation_history_period_run", "billing_period", "run_id"),
)

# One row per reconciliation run of a period: when, on which inputs, with which totals.
billing_reconciliation_runs = Table(
    "billing_reconciliation_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("billing_period", Date, nullable=False),
    Column("reconciled_at", DateTime(timezone=True), nullable=False),
    Column("provisional", Boolean, nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("counts_by_status", Text, nullable=False),  # JSON
    Column("total_variance_cents", BigInteger, nullable=False),
    Column("inputs_fingerprint", Text, nullable=False),
    Column("input_fingerprints", Text, nullable=False),  # JSON: input name -> {rows, sha256}
    # JSON: what the run's source frames said, for the checks that judge the stored rows later.
    Column("source_facts", Text, nullable=False),
    Index("billing_reconciliation_runs_period", "billing_period", "reconciled_at"),
)

# Who accepted which run of a closed period; revoked, never deleted.
billing_signoffs = Table(
    "billing_signoffs",
    metadata,
    Column("signoff_id", Integer, primary_key=True, autoincrement=True),
    Column("billing_period", Date, nullable=False),
    Column("run_id", Text, nullable=False),
    Column("signed_by", Text, nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    Column("note", Text, nullable=True),
    Column("counts_by_status", Text, nullable=False),  # JSON
    Column("total_variance_cents", BigInteger, nullable=False),
    Column("accepted_unexplained", Text, nullable=False),  # JSON list of row names
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_by", Text, nullable=True),
    Column("revoke_reason", Text, nullable=True),
    Index("billing_signoffs_period", "billing_period"),
)

billing_reconciliation_lines = Table(
    "billing_reconciliation_lines",
    metadata,
    Column("billing_period", Date, nullable=False),
    Column("customer_id", BigInteger, nullable=True),
    Column("partner_id", BigInteger, nullable=True),
    Column("deployment_id", BigInteger, nullable=True),
    Column("subscription_id", BigInteger, nullable=True),
    Column("plan_code", Text, nullable=True),
    Column("active_days", Integer, nullable=True),
    Column("nexacloud_cpu_seconds", Numeric(18, 3), nullable=False),
    Column("odoo_cpu_seconds", Numeric(18, 3), nullable=False),
    Column("nexacloud_plan_price_cents", BigInteger, nullable=True),
    Column("odoo_plan_price_cents", BigInteger, nullable=True),
    Column("nexacloud_overage_rate", Numeric(12, 4), nullable=True),
    Column("odoo_overage_rate", Numeric(12, 4), nullable=True),
    Column("nexacloud_base_cents", BigInteger, nullable=False),
    Column("nexacloud_overage_cents", BigInteger, nullable=False),
    Column("nexacloud_tax_cents", BigInteger, nullable=False),
    Column("odoo_plan_fee_cents", BigInteger, nullable=False),
    Column("odoo_overage_cents", BigInteger, nullable=False),
    Column("odoo_tax_cents", BigInteger, nullable=False),
    Column("expected_base_cents", BigInteger, nullable=False),
    Column("expected_overage_cents", BigInteger, nullable=False),
    Column("expected_tax_cents", BigInteger, nullable=False),
    Column("note", Text, nullable=True),
    Index("billing_reconciliation_lines_period", "billing_period", "customer_id"),
)

# The importer's plan of a period (docs/design.md §9): one row per Odoo record the period's
# NexaCloud records need, with its action; replaced whole by every planning of the period.
odoo_import_plan = Table(
    "odoo_import_plan",
    metadata,
    Column("billing_period", Date, nullable=False),
    Column("nexacloud_kind", Text, nullable=False),  # customer, plan, deployment
    Column("nexacloud_id", Text, nullable=False),  # a customer or deployment id, a plan code
    Column("odoo_model", Text, nullable=False),
    Column("external_id", Text, nullable=False),  # nexacloud.<name>
    Column("action", Text, nullable=False),  # create, update, unchanged, conflict, excluded, invalid
    Column("changes", Text, nullable=True),  # "field: Odoo's value → NexaCloud's; …"
    Column("odoo_id", BigInteger, nullable=True),
    Column("message", Text, nullable=True),
    Column("planned_at", DateTime(timezone=True), nullable=False),
    Index("odoo_import_plan_period_action", "billing_period", "action"),
)

# What every apply (and dry run) sent and what Odoo answered, kept: a batch's row has no
# external id; each record's row, and each of Odoo's messages, names its record.
odoo_import_log = Table(
    "odoo_import_log",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("billing_period", Date, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("batch", Integer, nullable=False),
    Column("odoo_model", Text, nullable=False),
    Column("external_id", Text, nullable=True),
    Column("outcome", Text, nullable=False),  # loaded, refused, failed, skipped, dry_run
    Column("records", Integer, nullable=False),
    Column("odoo_id", BigInteger, nullable=True),
    Column("message", Text, nullable=True),
    Column("logged_at", DateTime(timezone=True), nullable=False),
    Index("odoo_import_log_period_run", "billing_period", "run_id"),
)

# The usage records that did not reach Odoo's ledger as NexaCloud issued them (docs/design.md
# §10), and the ledger records NexaCloud never issued; replaced whole per period.
billing_usage_gaps = Table(
    "billing_usage_gaps",
    metadata,
    Column("billing_period", Date, nullable=False),
    Column("deployment_id", BigInteger, nullable=True),  # null for an extra ledger record
    Column("subscription_id", BigInteger, nullable=False),  # where the record is, or should be
    Column("idempotency_key", Text, nullable=False),
    Column("kind", Text, nullable=False),  # missing, quantity_differs, wrong_subscription, extra
    Column("window_start", DateTime(timezone=True), nullable=True),
    Column("nexacloud_quantity", Numeric(18, 3), nullable=True),  # CPU-seconds
    Column("odoo_quantity", Numeric(18, 3), nullable=True),
    Column("found_at", DateTime(timezone=True), nullable=False),
    Index("billing_usage_gaps_period_kind", "billing_period", "kind"),
)

# What every usage repair (and dry run) pushed to Odoo's /usage and what each record got back.
usage_repair_log = Table(
    "usage_repair_log",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("billing_period", Date, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("batch", Integer, nullable=False),
    Column("subscription_id", BigInteger, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("quantity", Numeric(18, 3), nullable=False),
    Column("outcome", Text, nullable=False),  # created, duplicate, conflict, rejected, failed, dry_run
    Column("http_status", Integer, nullable=True),
    Column("message", Text, nullable=True),
    Column("logged_at", DateTime(timezone=True), nullable=False),
    Index("usage_repair_log_period_run", "billing_period", "run_id"),
)


def _lifecycle_columns() -> list[Column]:
    return [
        Column("run_id", Text, nullable=False),
        Column("observed_at", DateTime(timezone=True), nullable=False),
        Column("customer_id", BigInteger, nullable=False),
        Column("deployment_id", BigInteger, nullable=False),
        Column("partner_id", BigInteger, nullable=True),
        Column("subscription_id", BigInteger, nullable=False),
        Column("kind", Text, nullable=False),  # in_sync or a drift kind (docs/design.md §11)
        Column("nexacloud_state", Text, nullable=False),  # running, suspended, terminated
        Column("odoo_state", Text, nullable=False),  # subscription_state, and the invoices overdue
        Column("since", DateTime(timezone=True), nullable=True),  # when the drift became true
        Column("amount_at_stake_cents", BigInteger, nullable=False),
        Column("cause", Text, nullable=False),
    ]


# The control loop as last observed: one row per mapped deployment, replaced whole per observation.
billing_lifecycle_drift = Table(
    "billing_lifecycle_drift",
    metadata,
    *_lifecycle_columns(),
    Index("billing_lifecycle_drift_kind", "kind", "since"),
)

# Every observation's drifts, kept: the in-sync rows of an observation live only in the current view.
billing_lifecycle_drift_history = Table(
    "billing_lifecycle_drift_history",
    metadata,
    *_lifecycle_columns(),
    Index("billing_lifecycle_drift_history_run", "run_id"),
    Index("billing_lifecycle_drift_history_deployment", "deployment_id", "observed_at"),
)

# One row per observation: when, judged as of when, with which grace period, and what it found.
billing_lifecycle_observations = Table(
    "billing_lifecycle_observations",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("observed_at", DateTime(timezone=True), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("grace_days", Integer, nullable=False),
    Column("deployments", Integer, nullable=False),
    Column("counts_by_kind", Text, nullable=False),  # JSON
    Column("older_than_grace", Integer, nullable=False),
    Index("billing_lifecycle_observations_observed", "observed_at"),
)

RESULT_COLUMNS = [column.name for column in billing_reconciliation.columns]
LINE_COLUMNS = [column.name for column in billing_reconciliation_lines.columns]


# Namespace of the PostgreSQL advisory locks that serialize two writers of the same period.
_PERIOD_LOCK_NAMESPACE = 0x0B111


def ensure_tables(connection: Connection) -> None:
    """Create the results tables and their indexes where they do not exist yet."""
    metadata.create_all(connection, checkfirst=True)


def lock_period(connection: Connection, period: date) -> None:
    """Make the caller's transaction the period's only writer until it commits or rolls back.

    Call it as the transaction's first statement, so that everything the transaction reads and
    writes — the current view, the history, the runs — belongs to one run: a second writer of
    the period waits here for the first to finish, then sees what it committed and replaces it
    whole. On PostgreSQL this is a transaction-scoped advisory lock per period (taking it again in
    the same transaction is harmless). On SQLite the guard is the database's single write lock,
    which the warehouse's transactions hold from ``BEGIN IMMEDIATE`` on
    (``defs.resources.Warehouse``): by the time this runs it is already held.
    """
    if connection.dialect.name == "postgresql":
        key = parse_period(period).toordinal()
        connection.execute(select(func.pg_advisory_xact_lock(_PERIOD_LOCK_NAMESPACE, key)))


def replace_period(connection: Connection, period: date, results: pd.DataFrame, lines: pd.DataFrame) -> None:
    """Replace one billing period's rows in both tables, in the caller's transaction.

    ``results`` carries exactly ``RESULT_COLUMNS`` and ``lines`` exactly ``LINE_COLUMNS``, every
    row of the ``period``. Both frames are checked before anything is written. If a statement
    fails, the exception leaves this function with the period half-written: the caller must let it
    roll the transaction back (``engine.begin()`` does), which restores the previous rows. No
    savepoint is taken here, because pysqlite commits a savepoint that opens a transaction on its
    release, which would break the caller's atomicity on SQLite.

    It takes the period's lock (``lock_period``) before deleting, in case the caller has not:
    two runs of the same period would otherwise each delete what they see and both insert.
    """
    period = parse_period(period)
    result_columns = _bound_columns(billing_reconciliation, results, period)
    line_columns = _bound_columns(billing_reconciliation_lines, lines, period)
    lock_period(connection, period)
    for table in (billing_reconciliation_lines, billing_reconciliation):
        connection.execute(table.delete().where(table.c.billing_period == period))
    _insert(connection, billing_reconciliation, result_columns)
    _insert(connection, billing_reconciliation_lines, line_columns)


@dataclass(frozen=True)
class RunRecord:
    """One reconciliation run of a period and the fingerprints of the inputs it read."""

    run_id: str
    period: date
    reconciled_at: datetime
    provisional: bool
    input_fingerprints: Mapping[str, Mapping[str, Any]]  # input name -> {"rows", "sha256"}
    inputs_fingerprint: str
    # e.g. the customer ids and each system's invoice total of the frames the run read.
    source_facts: Mapping[str, Any] = field(default_factory=dict)


def record_run(connection: Connection, run: RunRecord, results: pd.DataFrame) -> None:
    """Keep a run's rows and fingerprints in the history, in the caller's transaction.

    Called beside ``replace_period`` in the same transaction, so the history never holds a run
    the current view does not also show (or showed). A run recorded again (a retried step) is
    replaced, not doubled.
    """
    period = parse_period(run.period)
    history = results.assign(run_id=run.run_id, inputs_fingerprint=run.inputs_fingerprint)
    columns = _bound_columns(billing_reconciliation_history, history, period)
    variance = int(results["delta_cents"].abs().sum()) if len(results) else 0
    counts = results["status"].value_counts().sort_index().to_dict() if len(results) else {}
    runs, history_table = billing_reconciliation_runs, billing_reconciliation_history
    connection.execute(history_table.delete().where(history_table.c.run_id == run.run_id))
    connection.execute(runs.delete().where(runs.c.run_id == run.run_id))
    connection.execute(
        runs.insert(),
        {
            "run_id": run.run_id,
            "billing_period": period,
            "reconciled_at": _utc_datetime(run.reconciled_at),
            "provisional": run.provisional,
            "row_count": len(results),
            "counts_by_status": json.dumps({str(k): int(v) for k, v in counts.items()}, sort_keys=True),
            "total_variance_cents": variance,
            "inputs_fingerprint": run.inputs_fingerprint,
            "input_fingerprints": json.dumps(run.input_fingerprints, sort_keys=True),
            "source_facts": json.dumps(run.source_facts, sort_keys=True),
        },
    )
    _insert(connection, history_table, columns)


def prune_history(connection: Connection, period: date, keep_runs: int) -> int:
    """Drop all but the ``keep_runs`` latest runs of a period (0: keep all); signed-off runs stay.

    Returns the number of runs dropped.
    """
    if keep_runs <= 0:
        return 0
    period = parse_period(period)
    runs = read_runs(connection, period)
    signed = {row["run_id"] for row in read_signoffs(connection, [period]).to_dict("records")}
    dropped = [run_id for run_id in runs["run_id"].iloc[:-keep_runs] if run_id not in signed]
    history, run_table = billing_reconciliation_history, billing_reconciliation_runs
    for run_id in dropped:
        connection.execute(history.delete().where(history.c.run_id == run_id))
        connection.execute(run_table.delete().where(run_table.c.run_id == run_id))
    return len(dropped)


def read_runs(connection: Connection, period: date) -> pd.DataFrame:
    """Every recorded run of a period, oldest first, fingerprints as dicts."""
    table = billing_reconciliation_runs
    statement = (
        select(table)
        .where(table.c.billing_period == parse_period(period))
        .order_by(table.c.reconciled_at, table.c.run_id)
    )
    frame = typed_frame(
        connection.execute(statement), {column.name: _handling(column)[0] for column in table.columns}
    )
    for column in ("counts_by_status", "input_fingerprints", "source_facts"):
        frame[column] = frame[column].map(json.loads)
    return frame


def read_run_results(connection: Connection, run_id: str) -> pd.DataFrame:
    """The result rows one run produced, as ``billing_reconciliation`` holds them."""
    table = billing_reconciliation_history
    statement = (
        select(*(table.c[name] for name in RESULT_COLUMNS))
        .where(table.c.run_id == run_id)
        .order_by(table.c.customer_id.nulls_last(), table.c.partner_id.nulls_last())
    )
    kinds = {name: _handling(table.c[name])[0] for name in RESULT_COLUMNS}
    return typed_frame(connection.execute(statement), kinds)


def record_signoff(
    connection: Connection,
    *,
    period: date,
    run_id: str,
    signed_by: str,
    signed_at: datetime,
    note: str | None,
    results: pd.DataFrame,
    accepted_unexplained: Iterable[str],
) -> int:
    """Record who accepted which run of a period, with its totals by status. Returns its id."""
    counts = results["status"].value_counts().sort_index().to_dict()
    inserted = connection.execute(
        billing_signoffs.insert().returning(billing_signoffs.c.signoff_id),
        {
            "billing_period": parse_period(period),
            "run_id": run_id,
            "signed_by": signed_by,
            "signed_at": _utc_datetime(signed_at),
            "note": note,
            "counts_by_status": json.dumps({str(k): int(v) for k, v in counts.items()}, sort_keys=True),
            "total_variance_cents": int(results["delta_cents"].abs().sum()),
            "accepted_unexplained": json.dumps(sorted(accepted_unexplained)),
        },
    )
    return int(inserted.scalar_one())


def revoke_signoff(
    connection: Connection, *, period: date, revoked_by: str, revoked_at: datetime, reason: str
) -> int | None:
    """Mark the period's active sign-off revoked (kept, never deleted); its id, or None if none."""
    active = active_signoff(connection, period)
    if active is None:
        return None
    table = billing_signoffs
    connection.execute(
        table.update()
        .where(table.c.signoff_id == active["signoff_id"])
        .values(revoked_at=_utc_datetime(revoked_at), revoked_by=revoked_by, revoke_reason=reason)
    )
    return int(active["signoff_id"])


def read_signoffs(connection: Connection, periods: Iterable[date] | None = None) -> pd.DataFrame:
    """Sign-offs, revoked ones included, oldest first."""
    table = billing_signoffs
    statement = select(table).order_by(table.c.billing_period, table.c.signed_at, table.c.signoff_id)
    if periods is not None:
        statement = statement.where(table.c.billing_period.in_([parse_period(p) for p in periods]))
    frame = typed_frame(
        connection.execute(statement), {column.name: _handling(column)[0] for column in table.columns}
    )
    for column in ("counts_by_status", "accepted_unexplained"):
        frame[column] = frame[column].map(json.loads)
    return frame


def active_signoff(connection: Connection, period: date) -> dict[str, Any] | None:
    """The period's latest sign-off that was not revoked, as a dict, or None."""
    signoffs = read_signoffs(connection, [period])
    active = signoffs[signoffs["revoked_at"].isna()]
    return None if active.empty else active.iloc[-1].to_dict()


def read_period(connection: Connection, period: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One period's results and detail lines, typed as they were written."""
    period = parse_period(period)
    return (
        _read(connection, billing_reconciliation, [period]),
        _read(connection, billing_reconciliation_lines, [period]),
    )


def replace_import_plan(connection: Connection, period: date, plan: pd.DataFrame) -> None:
    """Replace the period's import plan, in the caller's transaction (the previous plan stays on failure)."""
    period = parse_period(period)
    columns = _bound_columns(odoo_import_plan, plan, period)
    lock_period(connection, period)
    connection.execute(odoo_import_plan.delete().where(odoo_import_plan.c.billing_period == period))
    _insert(connection, odoo_import_plan, columns)


def append_import_log(connection: Connection, period: date, log: pd.DataFrame) -> None:
    """Keep an apply's log rows (a run logged again, a retried step, replaces its rows)."""
    period = parse_period(period)
    columns = _bound_columns(odoo_import_log, log, period)
    for run_id in set(log["run_id"]):
        connection.execute(odoo_import_log.delete().where(odoo_import_log.c.run_id == run_id))
    _insert(connection, odoo_import_log, columns)


def replace_usage_gaps(connection: Connection, period: date, gaps: pd.DataFrame) -> None:
    """Replace the period's usage gaps, in the caller's transaction."""
    period = parse_period(period)
    columns = _bound_columns(billing_usage_gaps, gaps, period)
    lock_period(connection, period)
    connection.execute(billing_usage_gaps.delete().where(billing_usage_gaps.c.billing_period == period))
    _insert(connection, billing_usage_gaps, columns)


def read_usage_gaps(connection: Connection, period: date) -> pd.DataFrame:
    table = billing_usage_gaps
    statement = (
        select(table)
        .where(table.c.billing_period == parse_period(period))
        .order_by(table.c.subscription_id, table.c.window_start, table.c.idempotency_key)
    )
    return _typed(connection, table, statement)


def append_repair_log(connection: Connection, period: date, log: pd.DataFrame) -> None:
    """Keep a repair's log rows (a run logged again replaces its rows)."""
    period = parse_period(period)
    columns = _bound_columns(usage_repair_log, log, period)
    for run_id in set(log["run_id"]):
        connection.execute(usage_repair_log.delete().where(usage_repair_log.c.run_id == run_id))
    _insert(connection, usage_repair_log, columns)


def read_repair_log(connection: Connection, run_id: str | None = None) -> pd.DataFrame:
    table = usage_repair_log
    statement = select(table).order_by(table.c.logged_at, table.c.batch, table.c.idempotency_key)
    if run_id is not None:
        statement = statement.where(table.c.run_id == run_id)
    return _typed(connection, table, statement)


def read_import_plan(connection: Connection, period: date) -> pd.DataFrame:
    table = odoo_import_plan
    statement = (
        select(table)
        .where(table.c.billing_period == parse_period(period))
        .order_by(table.c.odoo_model, table.c.external_id)
    )
    return _typed(connection, table, statement)


def read_import_log(connection: Connection, run_id: str | None = None) -> pd.DataFrame:
    """Every apply's log, or one run's, in the order it was written."""
    table = odoo_import_log
    statement = select(table).order_by(table.c.logged_at, table.c.batch)
    if run_id is not None:
        statement = statement.where(table.c.run_id == run_id)
    return _typed(connection, table, statement)


# The advisory lock that makes one observation of the control loop the only writer at a time.
_LIFECYCLE_LOCK_KEY = 1


@dataclass(frozen=True)
class LifecycleObservation:
    run_id: str
    observed_at: datetime
    as_of: datetime
    grace_days: int
    counts_by_kind: Mapping[str, int]
    older_than_grace: int


def replace_lifecycle_drift(
    connection: Connection, observation: LifecycleObservation, judged: pd.DataFrame
) -> None:
    """Make ``judged`` (every mapped deployment, ``lifecycle.DRIFT_COLUMNS``) the current view of
    the control loop, keep its drifts in the history and record the observation, in the caller's
    transaction: a failure leaves the previous observation in place. A run observed again (a
    retried step) replaces what it wrote."""
    frame = judged.assign(run_id=observation.run_id, observed_at=observation.observed_at)
    frame = frame[[column.name for column in billing_lifecycle_drift.columns]]
    # A refused value is reported by the deployment whose row holds it.
    frame.index = [f"deployment {deployment}" for deployment in frame["deployment_id"]]
    current = _bound_columns(billing_lifecycle_drift, frame, None)
    kept = _bound_columns(billing_lifecycle_drift_history, frame[frame["kind"] != "in_sync"], None)
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(_PERIOD_LOCK_NAMESPACE, _LIFECYCLE_LOCK_KEY)))
    history, observations = billing_lifecycle_drift_history, billing_lifecycle_observations
    connection.execute(billing_lifecycle_drift.delete())
    connection.execute(history.delete().where(history.c.run_id == observation.run_id))
    connection.execute(observations.delete().where(observations.c.run_id == observation.run_id))
    _insert(connection, billing_lifecycle_drift, current)
    _insert(connection, history, kept)
    connection.execute(
        observations.insert().values(
            run_id=observation.run_id,
            observed_at=observation.observed_at,
            as_of=observation.as_of,
            grace_days=observation.grace_days,
            deployments=len(judged),
            counts_by_kind=json.dumps(dict(observation.counts_by_kind), sort_keys=True),
            older_than_grace=observation.older_than_grace,
        )
    )


def read_lifecycle_drift(connection: Connection) -> pd.DataFrame:
    """The last observation of every mapped deployment."""
    table = billing_lifecycle_drift
    return _typed(connection, table, select(table).order_by(table.c.deployment_id))


def read_lifecycle_history(connection: Connection, run_id: str | None = None) -> pd.DataFrame:
    """The drifts of every observation, or of one, oldest first."""
    table = billing_lifecycle_drift_history
    statement = select(table).order_by(table.c.observed_at, table.c.deployment_id)
    if run_id is not None:
        statement = statement.where(table.c.run_id == run_id)
    return _typed(connection, table, statement)


def read_lifecycle_observations(connection: Connection) -> pd.DataFrame:
    """Every observation of the control loop, oldest first, its counts as a dict."""
    table = billing_lifecycle_observations
    observations = _typed(connection, table, select(table).order_by(table.c.observed_at))
    observations["counts_by_kind"] = observations["counts_by_kind"].map(json.loads)
    return observations


def _typed(connection: Connection, table: Table, statement: Any) -> pd.DataFrame:
    return typed_frame(
        connection.execute(statement), {column.name: _handling(column)[0] for column in table.columns}
    )


def read_results(connection: Connection, periods: Iterable[date] | None = None) -> pd.DataFrame:
    """The results of the given periods, or of every period when ``periods`` is None."""
    return _read(connection, billing_reconciliation, None if periods is None else list(periods))


def _read(connection: Connection, table: Table, periods: list[date] | None) -> pd.DataFrame:
    statement = select(table).order_by(
        table.c.billing_period, table.c.customer_id.nulls_last(), table.c.partner_id.nulls_last()
    )
    if table is billing_reconciliation_lines:
        statement = statement.order_by(
            table.c.deployment_id.nulls_last(), table.c.subscription_id.nulls_last()
        )
    if periods is not None:
        statement = statement.where(table.c.billing_period.in_(periods))
    return _typed(connection, table, statement)


def _handling(column: Column) -> tuple[str, Callable[[Any], Any]]:
    """How ``sources.frames`` holds a column of this type, and how one frame value is bound to it."""
    if isinstance(column.type, Integer):
        return (NULLABLE_INT if column.nullable else INT), _whole_number
    if isinstance(column.type, Numeric):
        return DECIMAL, to_decimal
    if isinstance(column.type, Boolean):
        return BOOL, bool
    if isinstance(column.type, DateTime):
        return UTC_TIMESTAMP, _utc_datetime
    if isinstance(column.type, Date):
        return DATE, as_date
    if isinstance(column.type, Text):
        return TEXT, str
    raise TypeError(f"no frame kind for column {column.name} of type {column.type}")


# The columns that name a row in a message, in the tables that have them.
_ROW_NAMES = ("customer_id", "partner_id", "deployment_id", "external_id", "idempotency_key")


def _bound_columns(table: Table, frame: pd.DataFrame, period: date | None) -> list[list[Any]]:
    """Each column's values as plain Python (None where missing), after checking shape, values and period.

    A column of the dtype its kind expects (ints, floats, bools, datetimes, Decimals, dates, text)
    is checked and converted whole; only the values that check refuses, and every value of a
    column of unexpected content, go through the column's one-value converter (``_handling``), which
    either converts them or names the problem. Of several problems, the one raised is the first
    in reading order: the earliest row, in it the leftmost column, the row's period last.
    """
    expected = [column.name for column in table.columns]
    missing = [name for name in expected if name not in frame.columns]
    extra = [name for name in frame.columns if name not in expected]
    if missing or extra:
        raise ValueError(
            f"{table.name} frame does not match its contract: missing {missing}, unexpected {extra}"
        )
    bound: dict[str, list[Any]] = {}
    problems: list[tuple[int, int, str]] = []
    for position, column in enumerate(table.columns):
        kind, converter = _handling(column)
        series = frame[column.name]
        present = series.notna().to_numpy(dtype=bool)
        values, refused = _COLUMN_CONVERTERS[kind](series, present)
        if refused.any():
            # Python scalars, as the one-value converters expect and as messages show them.
            originals, labels = series.tolist(), frame.index.tolist()
            for row in np.flatnonzero(refused):
                try:
                    values[row] = converter(originals[row])
                except (TypeError, ValueError) as error:
                    message = f"{table.name} row {labels[row]!r}: column {column.name}: {error}"
                    problems.append((int(row), position, message))
                    break
        bound[column.name] = values.tolist()
    periods = np.asarray(bound.get("billing_period", []), dtype=object)
    elsewhere = np.flatnonzero(periods != period) if period is not None else []
    if len(elsewhere):
        row = int(elsewhere[0])
        named = ", ".join(f"{name}={bound[name][row]}" for name in _ROW_NAMES if name in bound)
        problems.append(
            (
                row,
                len(expected),
                f"{table.name} row {frame.index.tolist()[row]!r} ({named}) is for billing period "
                f"{periods[row]}, not {period.isoformat()}",
            )
        )
    if problems:
        raise ValueError(min(problems)[2])
    return [bound[name] for name in expected]


# Each converter takes a column and which of its values are present, and returns the values as an
# object array (None where missing) with the values it refused, left for the one-value converter.


def _whole_numbers(series: pd.Series, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if pd.api.types.is_bool_dtype(series.dtype):
        return _nothing(series), present
    if pd.api.types.is_integer_dtype(series.dtype):
        return _objects(series, present), _none_refused(series)
    if pd.api.types.is_float_dtype(series.dtype):
        # A column of ints with a missing value becomes floats in pandas; 12.0 is still 12 cents.
        numbers = series.to_numpy(dtype=float, na_value=np.nan)
        whole = np.isfinite(numbers) & (numbers == np.trunc(numbers)) & (np.abs(numbers) < 2.0**63)
        values = _nothing(series)
        values[whole] = numbers[whole].astype(np.int64).astype(object)
        return values, present & ~whole
    if pd.api.types.infer_dtype(series, skipna=True) in ("integer", "empty"):
        try:
            # NumPy integers among Python ones become Python ones.
            return _objects(series.astype("Int64"), present), _none_refused(series)
        except (OverflowError, TypeError, ValueError):
            pass  # an int beyond 64 bits: converted on its own below, for the database to refuse
    return _nothing(series), present


def _numbers(series: pd.Series, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact numbers: Decimals as they are, ints, and floats, whose text is their shortest repr."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return _nothing(series), present
    if pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_float_dtype(series.dtype):
        finite = np.isfinite(series.to_numpy(dtype=float, na_value=np.nan))
        return _objects(series, present), present & ~finite
    if pd.api.types.infer_dtype(series, skipna=True) in ("decimal", "empty"):
        # NaN is already missing; the infinities are what is left to refuse.
        infinite = series.isin([Decimal("Infinity"), Decimal("-Infinity")]).to_numpy(dtype=bool)
        return _objects(series, present), infinite
    return _nothing(series), present


def _booleans(series: pd.Series, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if pd.api.types.is_bool_dtype(series.dtype):
        return _objects(series, present), _none_refused(series)
    return _nothing(series), present


def _utc_datetimes(series: pd.Series, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _per_distinct_value(series, _utc_datetime)


def _dates(series: pd.Series, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _per_distinct_value(series, as_date)


def _per_distinct_value(series: pd.Series, converter: Callable[[Any], Any]) -> tuple[np.ndarray, np.ndarray]:
    """The one-value converter applied once per distinct value, and the values it refused.

    For dates and times: a period's rows share their period and their reconciliation time.
    """
    try:
        codes, uniques = pd.factorize(series)
    except TypeError:  # unhashable values: each goes through the converter on its own
        return _nothing(series), series.notna().to_numpy(dtype=bool)
    # One more slot, left None and not refused, for the code of a missing value (-1).
    converted = np.full(len(uniques) + 1, None, dtype=object)
    refused = np.zeros(len(uniques) + 1, dtype=bool)
    for index, value in enumerate(uniques):
        try:
            converted[index] = converter(value)
        except (TypeError, ValueError):
            refused[index] = True
    return converted[codes], refused[codes]


def _texts(series: pd.Series, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return _objects(series, present), _none_refused(series)
    return _nothing(series), present


def _objects(series: pd.Series, present: np.ndarray) -> np.ndarray:
    """The values as Python objects (NumPy's ints, floats and bools become Python's), None where missing."""
    values = series.to_numpy(dtype=object, copy=True)
    values[~present] = None
    return values


def _nothing(series: pd.Series) -> np.ndarray:
    return np.full(len(series), None, dtype=object)


def _none_refused(series: pd.Series) -> np.ndarray:
    return np.zeros(len(series), dtype=bool)


_COLUMN_CONVERTERS: dict[str, Callable[[pd.Series, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    INT: _whole_numbers,
    NULLABLE_INT: _whole_numbers,
    DECIMAL: _numbers,
    BOOL: _booleans,
    UTC_TIMESTAMP: _utc_datetimes,
    DATE: _dates,
    TEXT: _texts,
}


def _insert(connection: Connection, table: Table, columns: list[list[Any]]) -> None:
    """Insert the bound columns' rows into the table, in the caller's transaction."""
    if not columns[0]:
        return
    if connection.dialect.name == "postgresql":
        _copy(connection, table, columns)
        return
    # Plain DB-API values, as SQLAlchemy would bind them (SQLite: dates and times as text, Decimals
    # as floats), so that the rows read back as they do when SQLAlchemy writes them.
    dialect = connection.dialect
    insert = table.insert().compile(dialect=dialect)
    by_name = dict(zip((column.name for column in table.columns), columns, strict=True))
    stored = []
    for name in insert.positiontup:
        values = by_name[name]
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            # Once per distinct value: a period's rows share their period and reconciliation time.
            codes, uniques = pd.factorize(np.asarray(values, dtype=object))
            processed = np.fromiter(map(process, uniques), dtype=object, count=len(uniques))
            values = np.append(processed, None)[codes].tolist()
        stored.append(values)
    statement = str(insert)
    connection.exec_driver_sql(statement, list(zip(*stored, strict=True)))


def _copy(connection: Connection, table: Table, columns: list[list[Any]]) -> None:
    """Stream the rows with ``COPY … FROM STDIN`` through psycopg, in the caller's transaction.

    The psycopg cursor is the SQLAlchemy connection's own, so the COPY is part of the transaction
    that took the period's lock and deleted its rows: if it fails, rolling back restores them. Its
    errors are raised as SQLAlchemy's (an ``IntegrityError`` for a NOT NULL column left empty …),
    like every other statement's.
    """
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name),
        sql.SQL(", ").join(sql.Identifier(column.name) for column in table.columns),
    )
    driver = connection.connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in zip(*columns, strict=True):
                copy.write_row(row)
    except psycopg.Error as error:
        raise DBAPIError.instance(
            statement.as_string(driver), None, error, psycopg.Error, dialect=connection.dialect
        ) from error


def _whole_number(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is a boolean, not a number")
    number = int(value)
    # int() truncates a Decimal: 12.5 cents is refused, not stored as 12.
    if isinstance(value, Decimal) and number != value:
        raise ValueError(f"{value!r} is not a whole number")
    return number


def _utc_datetime(value: Any) -> datetime:
    # SQLite stores the wall clock without its offset: write UTC so that reading back as UTC is
    # right. A naive time is taken as UTC, as the sources hand them out.
    moment = pd.Timestamp(value)
    if moment.tzinfo is None:
        moment = moment.tz_localize(UTC)
    return moment.tz_convert(UTC).to_pydatetime()
