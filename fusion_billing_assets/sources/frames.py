"""Typed frames from source rows: one place that decides how each kind of column is held.

Integer ids and cents are ``int64`` (``Int64`` where a source allows null), rates and quantities
exact ``Decimal``, dates ``datetime.date``, timestamps timezone-aware UTC. Typing the columns
explicitly keeps an empty period's frame the same shape as a full one.

Source frames are typed leniently (``lenient=True``): a value that cannot be read as its column's
kind (a ``false`` where Odoo should have an id, a date that is not one) does not stop the frame. The
value becomes missing and the record is marked in the ``set_aside`` column with the field and what
was there, so the record is set aside downstream and everything else carries on (docs/design.md §6.10).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from fusion_billing_assets.billing.isolation import SET_ASIDE

INT = "int64"
NULLABLE_INT = "Int64"
TEXT = "text"
BOOL = "bool"
DECIMAL = "decimal"
DATE = "date"
UTC_TIMESTAMP = "utc"

_KIND_NAMES = {
    INT: "whole number",
    NULLABLE_INT: "whole number",
    DECIMAL: "number",
    DATE: "date",
    UTC_TIMESTAMP: "timestamp",
}


def typed_frame(
    rows: Iterable[Iterable[Any]], columns: Mapping[str, str], *, lenient: bool = False
) -> pd.DataFrame:
    """The rows as a frame with one kind per column.

    Strict (the default, for what this project wrote itself): a value that is not of its kind is an
    error. Lenient (for source records): it becomes missing and its record is marked in
    ``SET_ASIDE``, which the frame then always has.
    """
    frame = pd.DataFrame.from_records(list(rows), columns=list(columns))
    if not lenient:
        for column, kind in columns.items():
            frame[column] = _converted(frame[column], kind)
        return frame
    problems = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for column, kind in columns.items():
        original = frame[column]
        converted, unreadable = _converted_leniently(original, kind)
        frame[column] = converted
        for label in original.index[unreadable]:
            value = original[label]
            problem = (
                f"{column}: missing (got {value!r})"
                if value is None or value is False or pd.isna(value)
                else f"{column}: not a {_KIND_NAMES.get(kind, kind)} (got {value!r})"
            )
            problems[label] = add_problem(problems[label], problem)
    frame[SET_ASIDE] = problems
    return frame


def add_problem(existing: str | None, problem: str) -> str:
    return problem if existing is None or pd.isna(existing) else f"{existing}; {problem}"


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


def _converted_leniently(values: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    """The converted column and which of its values could not be read (those become missing)."""
    present = values.notna() & values.map(lambda value: value is not False)
    if kind in (INT, NULLABLE_INT):
        numbers = pd.to_numeric(values.where(present), errors="coerce")
        whole = numbers.notna() & (numbers == numbers.round())
        unreadable = present & ~whole
        if kind == INT:
            # A missing id or amount is unreadable too: the column's kind allows no null.
            unreadable |= ~present
        converted = numbers.where(whole).astype("Int64")
        return (converted if unreadable.any() or kind == NULLABLE_INT else converted.astype(INT)), unreadable
    if kind == DECIMAL:
        converted = values.map(_decimal_or_unreadable)
        unreadable = present & converted.map(lambda value: value is _UNREADABLE)
        return converted.map(lambda value: None if value is _UNREADABLE else value).astype(object), unreadable
    if kind == DATE:
        converted = values.map(_date_or_unreadable)
        unreadable = present & converted.map(lambda value: value is _UNREADABLE)
        return converted.map(lambda value: None if value is _UNREADABLE else value).astype(object), unreadable
    if kind == UTC_TIMESTAMP:
        converted = pd.to_datetime(values.where(present), utc=True, errors="coerce")
        return converted, present & converted.isna()
    return _converted(values.where(present, None) if kind == TEXT else values, kind), pd.Series(
        False, index=values.index
    )


_UNREADABLE = object()


def _decimal_or_unreadable(value: Any) -> Any:
    try:
        return as_decimal(value) if value is not False else None
    except (ArithmeticError, ValueError, TypeError):
        return _UNREADABLE


def _date_or_unreadable(value: Any) -> Any:
    try:
        return as_date(value) if value is not False else None
    except (ValueError, TypeError):
        return _UNREADABLE


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
