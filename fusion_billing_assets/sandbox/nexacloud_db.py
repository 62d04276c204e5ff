"""Writing the sandbox's NexaCloud database: the tables of ``sources.nexacloud_schema``, replaced on every run.

The tables are dropped and recreated at any SQLAlchemy URL (a SQLite file or PostgreSQL), so a
second run replaces the world instead of adding to it, and filled in bulk.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, create_engine
from sqlalchemy.engine import make_url

from fusion_billing_assets.sandbox.nexacloud_billing import NexaCloudInvoice, Progress, UsageRecord
from fusion_billing_assets.sandbox.world import MILLIS_PER_SECOND, PLANS, USAGE_METRIC, World, utc_text
from fusion_billing_assets.sources import nexacloud_schema as schema

BILLING_CURRENCY = "CAD"
INSERT_CHUNK_ROWS = 5_000


class _DriverValues:
    """Python values as the database driver takes them, bound exactly as SQLAlchemy's types would.

    Rows go to the driver's ``executemany`` directly: SQLAlchemy's per-row type processing costs
    more than the insert itself at hundreds of thousands of usage records. On SQLite, where
    ``DateTime`` ignores tzinfo, timestamps are naive UTC text in SQLAlchemy's storage format
    (``2026-10-01 04:00:00.000000``, so its queries compare them correctly) and NUMERIC is a float,
    as SQLAlchemy binds it; PostgreSQL takes aware datetimes and Decimals as they are.
    """

    def __init__(self, dialect_name: str):
        self.sqlite = dialect_name == "sqlite"

    def timestamp(self, moment: datetime | None) -> datetime | str | None:
        if moment is None or not self.sqlite:
            return moment
        return utc_text(moment, "microseconds")

    def day(self, day: date) -> date | str:
        return day.isoformat() if self.sqlite else day

    def decimal(self, value: Decimal) -> Decimal | float:
        return float(value) if self.sqlite else value

    def millis(self, millis: int) -> Decimal | float:
        # int / int is correctly rounded, the same float as float(Decimal("123.456")).
        return millis / MILLIS_PER_SECOND if self.sqlite else Decimal(millis).scaleb(-3)


def write_nexacloud(
    url: str,
    world: World,
    usage: list[UsageRecord],
    invoices: list[NexaCloudInvoice],
    report: Progress,
) -> dict[str, int]:
    """Replace the NexaCloud tables at ``url`` with the world's; returns the rows written per table."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)
    value = _DriverValues(engine.dialect.name)
    stamp = value.timestamp
    # Every deployment shares the same few thousand window boundaries.
    window_stamp = functools.cache(value.timestamp)
    tables: list[tuple[Table, Iterable[tuple[Any, ...]]]] = [
        (
            schema.customers,
            (
                (c.id, c.name, c.email, c.province, BILLING_CURRENCY, "active", stamp(c.created_at))
                for c in world.customers
            ),
        ),
        (
            schema.plans,
            (
                (
                    p.id,
                    p.code,
                    p.name,
                    p.monthly_price_cents,
                    p.included_cpu_seconds,
                    value.decimal(p.overage_cents_per_cpu_hour),
                    BILLING_CURRENCY,
                )
                for p in PLANS
            ),
        ),
        (
            schema.deployments,
            (
                (
                    d.id,
                    d.customer_id,
                    d.plan.id,
                    d.name,
                    d.region,
                    d.status,
                    stamp(d.created_at),
                    stamp(d.terminated_at),
                )
                for d in world.deployments
            ),
        ),
        (
            schema.usage_records,
            (
                (
                    r.id,
                    r.deployment_id,
                    USAGE_METRIC,
                    window_stamp(r.window_start),
                    window_stamp(r.window_end),
                    value.millis(r.millis),
                    stamp(r.recorded_at),
                    r.idempotency_key,
                )
                for r in usage
            ),
        ),
        (
            schema.invoices,
            (
                (
                    i.id,
                    i.customer_id,
                    value.day(i.window.period),
                    value.day(i.window.last_day),
                    BILLING_CURRENCY,
                    i.subtotal_cents,
                    i.tax_cents,
                    i.total_cents,
                    i.status,
                    i.stripe_invoice_id,
                    stamp(i.issued_at),
                )
                for i in invoices
            ),
        ),
        (
            schema.invoice_lines,
            (
                (
                    line_id,
                    invoice.id,
                    line.deployment_id,
                    line.kind.value,
                    line.description,
                    value.decimal(line.quantity),
                    value.decimal(line.unit_price_cents),
                    line.amount_cents,
                    line.tax_cents,
                )
                for line_id, (invoice, line) in enumerate(
                    ((invoice, line) for invoice in invoices for line in invoice.lines), start=1
                )
            ),
        ),
    ]
    counts = {}
    metadata = schema.metadata
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        with engine.begin() as connection:
            for table, rows in tables:
                counts[table.name] = _insert(connection, table, rows, report)
    finally:
        engine.dispose()
    return counts


def _insert(connection: Connection, table: Table, rows: Iterable[tuple[Any, ...]], report: Progress) -> int:
    """Insert rows holding every column of ``table`` in its order, in bulk; returns the row count.

    PostgreSQL through psycopg 3 gets ``COPY … FROM STDIN`` (about twice as fast as executemany at
    hundreds of thousands of rows); every other database ``executemany`` in chunks.
    """
    columns = ", ".join(column.name for column in table.columns)
    written = 0

    def count(batch: int) -> None:
        nonlocal written
        before, written = written, written + batch
        if before // 100_000 != written // 100_000:
            report(f"nexacloud {table.name}: {written:,} rows …")

    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count(1)
    else:
        marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        markers = ", ".join([marker] * len(table.columns))
        statement = f"INSERT INTO {table.name} ({columns}) VALUES ({markers})"
        iterator = iter(rows)
        while chunk := list(islice(iterator, INSERT_CHUNK_ROWS)):
            connection.exec_driver_sql(statement, chunk)
            count(len(chunk))
    report(f"nexacloud {table.name}: {written:,} rows")
    return written
