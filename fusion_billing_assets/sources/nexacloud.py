"""Everything that touches the NexaCloud database: the read-only engine and, later, its queries.

NexaCloud's database belongs to the platform team; we only ever read it. The engine makes a write
impossible rather than merely unlikely: PostgreSQL sessions start with
``default_transaction_read_only`` and a statement timeout, and a SQLite file is opened with
``mode=ro``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    and_,
    case,
    cast,
    create_engine,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.sql import Select

from fusion_billing_assets.billing.periods import (
    PeriodWindow,
    as_utc,
    local_midnight_utc,
    next_period,
)
from fusion_billing_assets.sources.frames import (
    DATE,
    DECIMAL,
    INT,
    NULLABLE_INT,
    SET_ASIDE,
    TEXT,
    UTC_TIMESTAMP,
    add_problem,
    typed_frame,
)
from fusion_billing_assets.sources.nexacloud_schema import (
    customers,
    deployments,
    invoice_lines,
    invoices,
    plans,
    usage_records,
)


class NexaCloudUnavailable(RuntimeError):
    """The NexaCloud database cannot be opened as configured."""


def read_only_engine(url: str, *, statement_timeout_ms: int = 120_000) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        options = f"-c default_transaction_read_only=on -c statement_timeout={int(statement_timeout_ms)}"
        return create_engine(
            parsed,
            connect_args={"options": options, "application_name": "fusion_billing_assets"},
            pool_pre_ping=True,
        )
    if backend == "sqlite":
        return _read_only_sqlite_engine(parsed.database)
    raise NexaCloudUnavailable(
        f"NexaCloud on a {backend!r} database is not supported (postgresql or sqlite)."
    )


def _read_only_sqlite_engine(database: str | None) -> Engine:
    if not database or database == ":memory:":
        raise NexaCloudUnavailable("NexaCloud on SQLite needs a database file, not an in-memory database.")
    path = Path(database).resolve()
    if not path.is_file():
        raise NexaCloudUnavailable(f"NexaCloud SQLite database {path} does not exist.")
    uri = f"{path.as_uri()}?mode=ro"
    return create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False))


# --- Queries (docs/design.md §4). Bound parameters only; portable between PostgreSQL and SQLite. ---

CUSTOMER_COLUMNS = {
    "customer_id": INT,
    "name": TEXT,
    "email": TEXT,
    "province": TEXT,
    "currency": TEXT,
    "status": TEXT,
    "created_at": UTC_TIMESTAMP,
}
PLAN_COLUMNS = {
    "plan_id": INT,
    "plan_code": TEXT,
    "plan_name": TEXT,
    "monthly_price_cents": INT,
    "included_cpu_seconds": INT,
    "overage_cents_per_cpu_hour": DECIMAL,
    "currency": TEXT,
}
DEPLOYMENT_COLUMNS = {
    "deployment_id": INT,
    "customer_id": INT,
    "plan_id": INT,
    "name": TEXT,
    "region": TEXT,
    "status": TEXT,
    "created_at": UTC_TIMESTAMP,
    "terminated_at": UTC_TIMESTAMP,
}
USAGE_COLUMNS = {
    "deployment_id": INT,
    "cpu_milliseconds": INT,
    "records": INT,
    "late_cpu_milliseconds": INT,
    "late_records": INT,
    "negative_records": INT,
    # Records without an idempotency key: Odoo cannot deduplicate them, so a doubled reading
    # would be billed twice.
    "keyless_records": INT,
}
USAGE_DAY_COLUMNS = {"deployment_id": INT, "usage_date": DATE, "cpu_milliseconds": INT}
USAGE_SEGMENT_COLUMNS = {"deployment_id": INT, "usage_date": DATE, "records": INT, "cpu_milliseconds": INT}
USAGE_RECORD_COLUMNS = {
    "deployment_id": INT,
    "idempotency_key": TEXT,
    "window_start": UTC_TIMESTAMP,
    "cpu_milliseconds": INT,
}
# Segments (deployment, local day) per statement when reading their records: bound parameters stay
# within SQLite's limits.
SEGMENTS_PER_QUERY = 200
KEYS_PER_QUERY = 500
# Deployments per ``IN (...)`` of the per-day query: with the day boundaries' parameters, well
# below SQLite's oldest limit of 999 bound parameters per statement.
USAGE_DAYS_CHUNK = 500
INVOICE_COLUMNS = {
    "invoice_id": INT,
    "customer_id": INT,
    "period_start": DATE,
    "period_end": DATE,
    "currency": TEXT,
    "subtotal_cents": INT,
    "tax_cents": INT,
    "total_cents": INT,
    "status": TEXT,
    "stripe_invoice_id": TEXT,
    "issued_at": UTC_TIMESTAMP,
}
INVOICE_LINE_COLUMNS = {
    "invoice_line_id": INT,
    "invoice_id": INT,
    "deployment_id": NULLABLE_INT,
    "kind": TEXT,
    "description": TEXT,
    "quantity": DECIMAL,
    "unit_price_cents": DECIMAL,
    "amount_cents": INT,
    "tax_cents": INT,
}


def fetch_customers(connection: Connection, window: PeriodWindow) -> pd.DataFrame:
    """Every customer that existed before the period ended, whatever its status now."""
    query = select(
        customers.c.id.label("customer_id"),
        customers.c.name,
        customers.c.email,
        customers.c.province,
        customers.c.currency,
        customers.c.status,
        customers.c.created_at,
    ).where(customers.c.created_at < window.end_utc)
    return _frame(connection, query.order_by(customers.c.id), CUSTOMER_COLUMNS)


def fetch_plans(connection: Connection) -> pd.DataFrame:
    query = select(
        plans.c.id.label("plan_id"),
        plans.c.code.label("plan_code"),
        plans.c.name.label("plan_name"),
        plans.c.monthly_price_cents,
        plans.c.included_cpu_seconds,
        plans.c.overage_cents_per_cpu_hour,
        plans.c.currency,
    ).order_by(plans.c.id)
    return _frame(connection, query, PLAN_COLUMNS)


def fetch_deployments(connection: Connection, window: PeriodWindow) -> pd.DataFrame:
    """Deployments alive at any moment of the period: created before its end, not terminated before its start."""
    query = (
        select(
            deployments.c.id.label("deployment_id"),
            deployments.c.customer_id,
            deployments.c.plan_id,
            deployments.c.name,
            deployments.c.region,
            deployments.c.status,
            deployments.c.created_at,
            deployments.c.terminated_at,
        )
        .where(
            deployments.c.created_at < window.end_utc,
            or_(deployments.c.terminated_at.is_(None), deployments.c.terminated_at > window.start_utc),
        )
        .order_by(deployments.c.id)
    )
    return _frame(connection, query, DEPLOYMENT_COLUMNS)


DEPLOYMENT_STATE_COLUMNS = {
    "deployment_id": INT,
    "customer_id": INT,
    "status": TEXT,
    "terminated_at": UTC_TIMESTAMP,
    "customer_status": TEXT,
}


def fetch_deployment_states(connection: Connection) -> pd.DataFrame:
    """Every deployment's lifecycle state now, with its customer's status (docs/design.md §11)."""
    query = (
        select(
            deployments.c.id.label("deployment_id"),
            deployments.c.customer_id,
            deployments.c.status,
            deployments.c.terminated_at,
            customers.c.status.label("customer_status"),
        )
        # A deployment whose customer is missing is kept, its customer status empty: judged
        # not_judged, never dropped.
        .join(customers, customers.c.id == deployments.c.customer_id, isouter=True)
        .order_by(deployments.c.id)
    )
    return _frame(connection, query, DEPLOYMENT_STATE_COLUMNS)


def fetch_usage(connection: Connection, window: PeriodWindow) -> pd.DataFrame:
    """CPU-seconds per deployment over the period, summed by the database.

    Quantities are summed as integer milliseconds, exactly: PostgreSQL's NUMERIC sums exactly, and
    on SQLite, whose NUMERIC is a float, each record is rounded to its three decimals first. Records ingested
    after the period ended (late usage) are counted apart as well as in the totals. One row per
    deployment, not per local day: the days are read only where the totals disagree with Odoo's
    (``fetch_usage_days``), a per-day breakdown of every deployment costs the database 3–4 times
    more (docs/design.md §8).
    """
    quantity = usage_records.c.quantity
    is_late = usage_records.c.recorded_at > window.end_utc
    if connection.dialect.name == "postgresql":
        # NUMERIC(18,3) sums exactly: a thousand times the sum is each record's milliseconds added
        # up, without rounding and casting every one of millions of rows first, and FILTER counts
        # without a CASE per row. This keeps the query within a few percent of a bare sum.
        totals = (
            cast(func.sum(quantity) * 1000, BigInteger),
            func.count(),
            cast(func.coalesce(func.sum(quantity).filter(is_late), 0) * 1000, BigInteger),
            func.count().filter(is_late),
            func.count().filter(quantity < 0),
            func.count() - func.count(usage_records.c.idempotency_key),
        )
    else:
        milliseconds = _milliseconds()
        totals = (
            func.sum(milliseconds),
            func.count(),
            func.coalesce(func.sum(case((is_late, milliseconds), else_=0)), 0),
            func.coalesce(func.sum(case((is_late, 1), else_=0)), 0),
            func.coalesce(func.sum(case((quantity < 0, 1), else_=0)), 0),
            func.coalesce(func.sum(case((usage_records.c.idempotency_key.is_(None), 1), else_=0)), 0),
        )
    # Summing first would hide a negative reading inside its total: negatives are counted apart.
    names = (
        "cpu_milliseconds",
        "records",
        "late_cpu_milliseconds",
        "late_records",
        "negative_records",
        "keyless_records",
    )
    query = (
        select(
            usage_records.c.deployment_id,
            *(total.label(name) for total, name in zip(totals, names, strict=True)),
        )
        .where(*_usage_in_period(window))
        .group_by(usage_records.c.deployment_id)
        .order_by(usage_records.c.deployment_id)
    )
    return _frame(connection, query, USAGE_COLUMNS)


def fetch_usage_days(
    connection: Connection,
    window: PeriodWindow,
    deployment_ids: Iterable[int],
    *,
    chunk_size: int = USAGE_DAYS_CHUNK,
) -> pd.DataFrame:
    """CPU-seconds per local day of the period for the given deployments only, summed by the database.

    The same records and milliseconds as ``fetch_usage``, so a deployment's days add up to its
    total. The deployments go in chunks of bound ``IN (...)`` parameters; none given, no query.
    """
    wanted = sorted({int(deployment_id) for deployment_id in deployment_ids})
    usage_date = _local_day_of(usage_records.c.window_start, window)
    rows = []
    for start in range(0, len(wanted), chunk_size):
        query = (
            select(
                usage_records.c.deployment_id,
                usage_date.label("usage_date"),
                func.sum(_milliseconds()).label("cpu_milliseconds"),
            )
            .where(
                *_usage_in_period(window),
                usage_records.c.deployment_id.in_(wanted[start : start + chunk_size]),
            )
            .group_by(usage_records.c.deployment_id, usage_date)
            .order_by(usage_records.c.deployment_id, usage_date)
        )
        rows += connection.execute(query).all()
    return typed_frame(rows, USAGE_DAY_COLUMNS)


def fetch_usage_segments(connection: Connection, window: PeriodWindow) -> pd.DataFrame:
    """The keyed records of the period per deployment and local day: how many, and their milliseconds.

    What the delivery check compares with Odoo's ledger segment by segment (docs/design.md §10);
    records without an idempotency key were never pushed and are not counted.
    """
    usage_date = _local_day_of(usage_records.c.window_start, window)
    query = (
        select(
            usage_records.c.deployment_id,
            usage_date.label("usage_date"),
            func.count().label("records"),
            _summed_milliseconds(connection).label("cpu_milliseconds"),
        )
        .where(*_usage_in_period(window), usage_records.c.idempotency_key.is_not(None))
        .group_by(usage_records.c.deployment_id, usage_date)
        .order_by(usage_records.c.deployment_id, usage_date)
    )
    return typed_frame(connection.execute(query).all(), USAGE_SEGMENT_COLUMNS)


def fetch_usage_records(
    connection: Connection, window: PeriodWindow, segments: Iterable[tuple[int, date]]
) -> pd.DataFrame:
    """The keyed records of the given (deployment, local day) segments only, one by one."""
    wanted = sorted({(int(deployment), day) for deployment, day in segments})
    rows = []
    for start in range(0, len(wanted), SEGMENTS_PER_QUERY):
        chunk = wanted[start : start + SEGMENTS_PER_QUERY]
        in_segments = or_(
            *(
                and_(
                    usage_records.c.deployment_id == deployment,
                    usage_records.c.window_start >= local_midnight_utc(day, window.timezone),
                    usage_records.c.window_start
                    < local_midnight_utc(day + timedelta(days=1), window.timezone),
                )
                for deployment, day in chunk
            )
        )
        query = _usage_record_query().where(
            *_usage_in_period(window), usage_records.c.idempotency_key.is_not(None), in_segments
        )
        rows += connection.execute(query).all()
    return typed_frame(rows, USAGE_RECORD_COLUMNS)


def fetch_usage_by_keys(connection: Connection, keys: Iterable[str]) -> pd.DataFrame:
    """NexaCloud's usage records that carry these idempotency keys, in any period."""
    wanted = sorted(set(keys))
    rows = []
    for start in range(0, len(wanted), KEYS_PER_QUERY):
        query = _usage_record_query().where(
            usage_records.c.idempotency_key.in_(wanted[start : start + KEYS_PER_QUERY])
        )
        rows += connection.execute(query).all()
    return typed_frame(rows, USAGE_RECORD_COLUMNS)


def _usage_record_query() -> Select:
    return select(
        usage_records.c.deployment_id,
        usage_records.c.idempotency_key,
        usage_records.c.window_start,
        _milliseconds().label("cpu_milliseconds"),
    ).order_by(usage_records.c.deployment_id, usage_records.c.window_start, usage_records.c.id)


def _summed_milliseconds(connection: Connection):
    if connection.dialect.name == "postgresql":
        # NUMERIC(18,3) sums exactly; see fetch_usage.
        return cast(func.sum(usage_records.c.quantity) * 1000, BigInteger)
    return func.sum(_milliseconds())


def _milliseconds():
    return cast(func.round(usage_records.c.quantity * 1000), BigInteger)


def _usage_in_period(window: PeriodWindow) -> tuple:
    return (
        usage_records.c.metric == "cpu_seconds",
        usage_records.c.window_start >= window.start_utc,
        usage_records.c.window_start < window.end_utc,
    )


def latest_usage_recorded_at(connection: Connection, window: PeriodWindow) -> datetime | None:
    """When NexaCloud last ingested usage belonging to the period (late usage moves it)."""
    latest = connection.execute(
        select(func.max(usage_records.c.recorded_at)).where(
            usage_records.c.window_start >= window.start_utc,
            usage_records.c.window_start < window.end_utc,
        )
    ).scalar_one_or_none()
    if latest is None:
        return None
    moment = latest if isinstance(latest, datetime) else datetime.fromisoformat(str(latest))
    return as_utc(moment)


def name_negative_usage(usage: pd.DataFrame, negative: pd.DataFrame) -> pd.DataFrame:
    """The usage frame with each deployment that holds a negative reading set aside, naming the record.

    ``negative`` is ``fetch_negative_usage``: the offending records themselves, whose deployment's
    total in ``usage`` may well be positive.
    """
    named = usage.copy()
    for record in negative.itertuples(index=False):
        rows = named.index[named["deployment_id"] == record.deployment_id]
        problem = (
            f"quantity: usage record {record.usage_record_id} (idempotency_key={record.idempotency_key}, "
            f"window_start={record.window_start:%Y-%m-%d %H:%M}Z) has quantity {record.quantity}, "
            "which must be >= 0"
        )
        for label in rows:
            named.at[label, SET_ASIDE] = add_problem(named.at[label, SET_ASIDE], problem)
    return named


def fetch_negative_usage(connection: Connection, window: PeriodWindow, limit: int = 50) -> pd.DataFrame:
    """The usage records of the period with a negative quantity, to name them in an error."""
    query = (
        select(
            usage_records.c.id.label("usage_record_id"),
            usage_records.c.deployment_id,
            usage_records.c.window_start,
            usage_records.c.quantity,
            usage_records.c.idempotency_key,
        )
        .where(usage_records.c.quantity < 0, *_usage_in_period(window))
        .order_by(usage_records.c.id)
        .limit(limit)
    )
    return _frame(
        connection,
        query,
        {
            "usage_record_id": INT,
            "deployment_id": INT,
            "window_start": UTC_TIMESTAMP,
            "quantity": DECIMAL,
            "idempotency_key": TEXT,
        },
    )


def fetch_invoices(connection: Connection, window: PeriodWindow) -> pd.DataFrame:
    """NexaCloud's invoices of the period (by ``period_start``), void ones left out."""
    query = (
        select(
            invoices.c.id.label("invoice_id"),
            invoices.c.customer_id,
            invoices.c.period_start,
            invoices.c.period_end,
            invoices.c.currency,
            invoices.c.subtotal_cents,
            invoices.c.tax_cents,
            invoices.c.total_cents,
            invoices.c.status,
            invoices.c.stripe_invoice_id,
            invoices.c.issued_at,
        )
        .where(_invoice_in_period(window))
        .order_by(invoices.c.id)
    )
    return _frame(connection, query, INVOICE_COLUMNS)


def fetch_invoice_lines(connection: Connection, window: PeriodWindow) -> pd.DataFrame:
    """The lines of the period's non-void invoices, and every line whose invoice does not exist.

    A line without its invoice belongs to no period that can be told, so it is read with every
    period: the reconciliation sets it aside and names it, where an inner join would drop it unseen.
    """
    query = (
        select(
            invoice_lines.c.id.label("invoice_line_id"),
            invoice_lines.c.invoice_id,
            invoice_lines.c.deployment_id,
            invoice_lines.c.kind,
            invoice_lines.c.description,
            invoice_lines.c.quantity,
            invoice_lines.c.unit_price_cents,
            invoice_lines.c.amount_cents,
            invoice_lines.c.tax_cents,
        )
        .outerjoin(invoices, invoices.c.id == invoice_lines.c.invoice_id)
        .where(or_(_invoice_in_period(window), invoices.c.id.is_(None)))
        .order_by(invoice_lines.c.id)
    )
    return _frame(connection, query, INVOICE_LINE_COLUMNS)


def _invoice_in_period(window: PeriodWindow):
    return and_(
        invoices.c.period_start >= window.period,
        invoices.c.period_start < next_period(window.period),
        invoices.c.status != "void",
    )


def _local_day_of(timestamp_column, window: PeriodWindow):
    """The local calendar day of a UTC timestamp, as a CASE over the period's day boundaries.

    Portable (no time zone functions in SQL) and exact across DST: the boundaries are computed
    in Python from the billing time zone, one per local day, and bound as parameters.
    """
    boundaries = _local_day_starts_utc(window)
    branches = [
        (timestamp_column < next_start, literal(day.isoformat()))
        for day, next_start in zip(window.local_days(), boundaries[1:], strict=True)
    ]
    return case(*branches, else_=literal(None))


def _local_day_starts_utc(window: PeriodWindow) -> list[datetime]:
    return [*(local_midnight_utc(day, window.timezone) for day in window.local_days()), window.end_utc]


def _frame(connection: Connection, query: Select, columns: dict[str, str]) -> pd.DataFrame:
    return typed_frame(connection.execute(query).all(), columns, lenient=True)
