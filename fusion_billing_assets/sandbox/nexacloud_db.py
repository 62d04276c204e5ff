"""Writing the sandbox's NexaCloud database: the tables of ``sources.nexacloud_schema``, replaced on every run.

The tables are dropped and recreated at any SQLAlchemy URL (a SQLite file or PostgreSQL), so a
second run replaces the world instead of adding to it, and filled in bulk from streams (``COPY``
on PostgreSQL), so that millions of usage records are never held in memory.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, create_engine
from sqlalchemy.engine import make_url

from fusion_billing_assets.sandbox.nexacloud_billing import NexaCloudInvoice, Progress, UsageRecord, reporting
from fusion_billing_assets.sandbox.world import MILLIS_PER_SECOND, PLANS, USAGE_METRIC, World, utc_text
from fusion_billing_assets.sources import nexacloud_schema as schema

BILLING_CURRENCY = "CAD"
INSERT_CHUNK_ROWS = 50_000


class _DriverValues:
    """Python values as the database driver takes them, bound exactly as SQLAlchemy's types would.

    Rows go to the driver directly: SQLAlchemy's per-row type processing costs more than the
    insert itself at millions of usage records. On SQLite, where ``DateTime`` ignores tzinfo,
    timestamps are naive UTC text in SQLAlchemy's storage format (``2026-10-01 04:00:00.000000``,
    so its queries compare them correctly) and NUMERIC is a float, as SQLAlchemy binds it.
    PostgreSQL's ``COPY`` takes timestamps and quantities as the text it parses (explicitly UTC,
    exact decimals), several times cheaper to produce than aware datetimes and Decimals to adapt.
    """

    def __init__(self, dialect_name: str):
        self.sqlite = dialect_name == "sqlite"

    def timestamp(self, moment: datetime | None) -> str | None:
        if moment is None:
            return None
        text = utc_text(moment, "microseconds")
        return text if self.sqlite else f"{text}+00"

    def day(self, day: date) -> date | str:
        return day.isoformat() if self.sqlite else day

    def decimal(self, value: Decimal) -> Decimal | float:
        return float(value) if self.sqlite else value

    def millis(self, millis: int) -> str | float:
        if self.sqlite:
            # int / int is correctly rounded, the same float as float(Decimal("123.456")).
            return millis / MILLIS_PER_SECOND
        return f"{millis // MILLIS_PER_SECOND}.{millis % MILLIS_PER_SECOND:03d}"


class NexaCloudWriter:
    """The NexaCloud tables at ``url``, dropped, recreated and filled in one transaction.

    Use as a context manager: the accounts, then the usage stream (whose totals the invoices are
    billed from), then the invoices; ``rows`` counts what each table received. Nothing is
    committed unless the block ends without an error, except what ``commit`` committed before.
    """

    def __init__(self, url: str, report: Progress):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self._engine = create_engine(parsed)
        self._report = report
        self._value = _DriverValues(self._engine.dialect.name)
        self.rows: dict[str, int] = {}

    def __enter__(self) -> NexaCloudWriter:
        schema.metadata.drop_all(self._engine)
        schema.metadata.create_all(self._engine)
        self._transaction = self._engine.begin()
        self._connection = self._transaction.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._transaction.__exit__(*exc_info)
            if exc_info[0] is None and self._engine.dialect.name == "postgresql":
                # A bulk load leaves the planner without statistics, which a live database has:
                # without them it misjudges a period's usage by orders of magnitude.
                with self._engine.begin() as connection:
                    connection.exec_driver_sql("ANALYZE")
        finally:
            self._engine.dispose()

    def commit(self) -> None:
        """Commit what is written so far, for other readers to see, and go on in a new transaction."""
        self._transaction.__exit__(None, None, None)
        self._transaction = self._engine.begin()
        self._connection = self._transaction.__enter__()

    def accounts(self, world: World) -> None:
        stamp, value = self._value.timestamp, self._value
        self._write(
            schema.customers,
            (
                (c.id, c.name, c.email, c.province, BILLING_CURRENCY, "active", stamp(c.created_at))
                for c in world.customers
            ),
        )
        self._write(
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
        )
        self._write(
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
        )

    def usage(self, usage: Iterable[UsageRecord]) -> dict[tuple[int, date], int]:
        """Write the usage stream; return its CPU milliseconds per (deployment, period)."""
        # Every deployment shares the same few thousand window boundaries, and ingestion times are
        # a boundary plus one of a few hundred delays: each is formatted once.
        stamp = functools.cache(self._value.timestamp)
        millis = self._value.millis
        totals: dict[tuple[int, date], int] = defaultdict(int)

        def rows() -> Iterator[tuple[Any, ...]]:
            for r in usage:
                totals[(r.deployment_id, r.period)] += r.millis
                yield (
                    r.id,
                    r.deployment_id,
                    USAGE_METRIC,
                    stamp(r.window_start),
                    stamp(r.window_end),
                    millis(r.millis),
                    stamp(r.recorded_at),
                    r.idempotency_key,
                )

        with _constraints_checked_after(self._connection, schema.usage_records, self._report):
            self._write(schema.usage_records, reporting(rows(), "nexacloud usage_records", self._report))
        return dict(totals)

    def invoices(self, invoices: list[NexaCloudInvoice]) -> None:
        stamp, value = self._value.timestamp, self._value
        self._write(
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
        )
        self._write(
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
        )

    def _write(self, table: Table, rows: Iterable[tuple[Any, ...]]) -> None:
        self.rows[table.name] = _insert(self._connection, table, rows)


@contextmanager
def _constraints_checked_after(connection: Connection, table: Table, report: Progress) -> Iterator[None]:
    """On PostgreSQL, the table's foreign-key and unique constraints dropped during the block and
    added back after it, in the same transaction.

    Checked row by row, they cost PostgreSQL more than the load itself at millions of rows; added
    back, they are checked once over the whole table, and a violation still fails the transaction.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    constraints = connection.exec_driver_sql(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %(table)s::regclass AND contype IN ('f', 'u') ORDER BY conname",
        {"table": table.name},
    ).all()
    for name, _ in constraints:
        connection.exec_driver_sql(f'ALTER TABLE {table.name} DROP CONSTRAINT "{name}"')
    yield
    started = time.monotonic()
    for name, definition in constraints:
        connection.exec_driver_sql(f'ALTER TABLE {table.name} ADD CONSTRAINT "{name}" {definition}')
    report(
        f"nexacloud {table.name}: {len(constraints)} constraints checked in {time.monotonic() - started:.1f} s"
    )


def _insert(connection: Connection, table: Table, rows: Iterable[tuple[Any, ...]]) -> int:
    """Insert rows holding every column of ``table`` in its order, in bulk; returns the row count.

    PostgreSQL through psycopg 3 gets ``COPY … FROM STDIN`` (about twice as fast as executemany at
    hundreds of thousands of rows); every other database ``executemany`` in chunks. The rows are
    streamed: only one chunk is ever held.
    """
    columns = ", ".join(column.name for column in table.columns)
    written = 0
    if connection.dialect.name == "postgresql" and connection.dialect.driver == "psycopg":
        cursor = connection.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                written += 1
        return written
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    markers = ", ".join([marker] * len(table.columns))
    statement = f"INSERT INTO {table.name} ({columns}) VALUES ({markers})"
    iterator = iter(rows)
    while chunk := list(islice(iterator, INSERT_CHUNK_ROWS)):
        connection.exec_driver_sql(statement, chunk)
        written += len(chunk)
    return written
