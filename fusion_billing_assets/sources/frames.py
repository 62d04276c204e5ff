"""Typed frames from source rows: one place that decides how each kind of column is held.

Integer ids and cents are ``int64`` (``Int64`` where a source allows null), rates and quantities
exact ``Decimal``, dates ``datetime.date``, timestamps timezone-aware UTC. Typing the columns
explicitly keeps an empty period's frame the same shape as a full one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

INT = "int64"
NULLABLE_INT = "Int64"
TEXT = "text"
BOOL = "bool"
DECIMAL = "decimal"
DATE = "date"
UTC_TIMESTAMP = "utc"


def typed_frame(rows: Iterable[Iterable[Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(list(rows), columns=list(columns))
    for column, kind in columns.items():
        frame[column] = _converted(frame[column], kind)
    return frame


def as_decimal(value: Any) -> Decimal | None:
    """Exact decimal from a source number: PostgreSQL NUMERIC is a Decimal, SQLite's a float."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def as_date(value: Any) -> date | None:
    if value is None or (not isinstance(value, (str, date)) and pd.isna(value)):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _converted(values: pd.Series, kind: str) -> pd.Series:
    if kind in (INT, NULLABLE_INT):
        return values.astype(kind)
    if kind == BOOL:
        return values.astype(bool)
    if kind == DECIMAL:
        return values.map(as_decimal).astype(object)
    if kind == DATE:
        return values.map(as_date).astype(object)
    if kind == UTC_TIMESTAMP:
        # Sources store UTC: SQLite hands it back naive, PostgreSQL aware.
        return pd.to_datetime(values, utc=True)
    if kind == TEXT:
        return values.astype(object).where(values.notna(), None)
    raise ValueError(f"unknown column kind {kind!r}")
