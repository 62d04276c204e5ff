"""The results contract in the warehouse: ``billing_reconciliation`` and its per-deployment detail.

People and other tools read these tables (docs/design.md §6), so their columns are written down once,
here. Amounts are integer cents; CPU-seconds keep their three decimals; ``delta_cents`` and every
component delta are Odoo minus NexaCloud.

Writing a period replaces it: its rows in both tables are deleted and the new ones inserted in
the caller's transaction, so a reader sees the old period or the new one, never a mix. Reading
returns frames typed like the source frames (``sources.frames``), whichever database holds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
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

billing_reconciliation = Table(
    "billing_reconciliation",
    metadata,
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
    Column("expected_subtotal_cents", BigInteger, nullable=False),
    Column("expected_tax_cents", BigInteger, nullable=False),
    Column("expected_total_cents", BigInteger, nullable=False),
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
    Index("billing_reconciliation_period_status", "billing_period", "status"),
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

RESULT_COLUMNS = [column.name for column in billing_reconciliation.columns]
LINE_COLUMNS = [column.name for column in billing_reconciliation_lines.columns]


# Namespace of the PostgreSQL advisory locks that serialize two writers of the same period.
_PERIOD_LOCK_NAMESPACE = 0x0B111


def ensure_tables(connection: Connection) -> None:
    """Create the results tables and their indexes where they do not exist yet."""
    metadata.create_all(connection, checkfirst=True)


def replace_period(connection: Connection, period: date, results: pd.DataFrame, lines: pd.DataFrame) -> None:
    """Replace one billing period's rows in both tables, in the caller's transaction.

    ``results`` carries exactly ``RESULT_COLUMNS`` and ``lines`` exactly ``LINE_COLUMNS``, every
    row of the ``period``. Both frames are checked before anything is written. If a statement
    fails, the exception leaves this function with the period half-written: the caller must let it
    roll the transaction back (``engine.begin()`` does), which restores the previous rows. No
    savepoint is taken here, because pysqlite commits a savepoint that opens a transaction on its
    release, which would break the caller's atomicity on SQLite.
    """
    period = parse_period(period)
    result_rows = _bound_rows(billing_reconciliation, results, period)
    line_rows = _bound_rows(billing_reconciliation_lines, lines, period)
    if connection.dialect.name == "postgresql":
        # Two runs of the same period would otherwise each delete what they see and both insert.
        connection.execute(select(func.pg_advisory_xact_lock(_PERIOD_LOCK_NAMESPACE, period.toordinal())))
    for table in (billing_reconciliation_lines, billing_reconciliation):
        connection.execute(table.delete().where(table.c.billing_period == period))
    for table, rows in ((billing_reconciliation, result_rows), (billing_reconciliation_lines, line_rows)):
        if rows:
            connection.execute(table.insert(), rows)


def read_period(connection: Connection, period: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One period's results and detail lines, typed as they were written."""
    period = parse_period(period)
    return (
        _read(connection, billing_reconciliation, [period]),
        _read(connection, billing_reconciliation_lines, [period]),
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
    return typed_frame(
        connection.execute(statement), {column.name: _handling(column)[0] for column in table.columns}
    )


def _handling(column: Column) -> tuple[str, Callable[[Any], Any]]:
    """How ``sources.frames`` holds a column of this type, and how a frame value is bound to it."""
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


def _bound_rows(table: Table, frame: pd.DataFrame, period: date) -> list[dict[str, Any]]:
    """Plain Python parameters for an executemany insert, after checking shape and period."""
    expected = [column.name for column in table.columns]
    missing = [name for name in expected if name not in frame.columns]
    extra = [name for name in frame.columns if name not in expected]
    if missing or extra:
        raise ValueError(
            f"{table.name} frame does not match its contract: missing {missing}, unexpected {extra}"
        )
    converters = {column.name: _handling(column)[1] for column in table.columns}
    rows = []
    for label, values in zip(frame.index, frame[expected].itertuples(index=False, name=None), strict=True):
        row = {}
        for name, value in zip(expected, values, strict=True):
            try:
                row[name] = None if _is_missing(value) else converters[name](value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{table.name} row {label!r}: column {name}: {error}") from None
        if row["billing_period"] != period:
            raise ValueError(
                f"{table.name} row {label!r} (customer_id={row['customer_id']}, "
                f"partner_id={row['partner_id']}) is for billing period {row['billing_period']}, "
                f"not {period.isoformat()}"
            )
        rows.append(row)
    return rows


def _is_missing(value: Any) -> bool:
    """None, NaN, NA and NaT, as pandas leaves them in a frame, all become SQL NULL."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _whole_number(value: Any) -> int:
    # A column of ints with a missing value becomes floats in pandas; 12.0 is still 12 cents.
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is a boolean, not a number")
    return int(value)


def _utc_datetime(value: Any) -> datetime:
    # SQLite stores the wall clock without its offset: write UTC so that reading back as UTC is
    # right. A naive time is taken as UTC, as the sources hand them out.
    moment = pd.Timestamp(value)
    if moment.tzinfo is None:
        moment = moment.tz_localize(UTC)
    return moment.tz_convert(UTC).to_pydatetime()
