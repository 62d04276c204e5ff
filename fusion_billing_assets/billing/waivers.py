"""The waiver file: differences someone accepted, with a reason and an approver (docs/design.md §6 ``waived``).

A version-controlled CSV, one accepted difference per row::

    period,customer_id,delta_cents,reason,approver,expires_on
    2026-09-01,16,1575,Onboarding sold in Odoo only,"Dana Whitfield, Controller",2031-09-01

``delta_cents`` is the difference accepted (Odoo − NexaCloud total). A waiver applies to exactly
that difference: when the difference moves, the waiver no longer describes it and someone has to
look again. ``expires_on`` (inclusive) may be empty. Blank lines and lines starting with ``#``
are ignored. ``load_waivers`` validates the whole file, so a typo stops with the file, line and
field to fix instead of silently not waiving. The reconciliation reads it with ``read_waivers``
instead: a row that cannot be trusted is refused with the same message and sets aside only the
customer (and period) it names, never the other periods or customers (docs/design.md §6.10).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from fusion_billing_assets.billing.periods import parse_period

WAIVER_COLUMNS = ("period", "customer_id", "delta_cents", "reason", "approver", "expires_on")

_INTEGER = re.compile(r"[+-]?[0-9]+")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class WaiverFileError(ValueError):
    """The waiver file is missing or holds an entry that cannot be trusted; names file, line and field."""

    def __init__(self, path: Path | str, message: str, *, line: int | None = None, field: str | None = None):
        self.path = Path(path)
        self.line = line
        self.field = field
        where = str(self.path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field}"
        super().__init__(f"waiver file {where}: {message}")


@dataclass(frozen=True)
class Waiver:
    """One accepted difference of one customer in one period; ``line`` is where it stands in the file."""

    period: date
    customer_id: int
    delta_cents: int
    reason: str
    approver: str
    expires_on: date | None
    line: int

    def is_expired(self, on_date: date) -> bool:
        return self.expires_on is not None and on_date > self.expires_on


@dataclass(frozen=True)
class RefusedWaiver:
    """A row of the waiver file that cannot be trusted, and whom it would have concerned."""

    line: int
    period: date | None  # None when the row's period cannot be read: it may concern any period
    customer_id: int | None  # None when the row's customer cannot be read
    error: WaiverFileError


@dataclass(frozen=True)
class WaiverFile:
    waivers: tuple[Waiver, ...]
    refused: tuple[RefusedWaiver, ...]

    def refused_for(self, period: date) -> list[RefusedWaiver]:
        """The refused rows that may concern ``period``: its own, and those whose period is unreadable."""
        return [row for row in self.refused if row.period is None or row.period == period]


def load_waivers(path: Path | str, *, required: bool = True) -> tuple[Waiver, ...]:
    """Every waiver of the file at ``path``, validated; a missing file is an error unless not ``required``."""
    waiver_file = read_waivers(path, required=required)
    if waiver_file.refused:
        raise waiver_file.refused[0].error
    return waiver_file.waivers


def read_waivers(path: Path | str, *, required: bool = True) -> WaiverFile:
    """The waivers of the file, each row that cannot be trusted refused on its own.

    A file that cannot be read at all (missing when ``required``, not UTF-8, not CSV, a wrong
    header) is still an error: no row of it can be trusted.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        if required:
            raise WaiverFileError(path, "the file does not exist") from None
        return WaiverFile((), ())
    except (OSError, UnicodeDecodeError) as error:
        raise WaiverFileError(path, f"cannot be read: {error}") from None

    records = _records(path, text)
    header = next(records, None)
    if header is None:
        raise WaiverFileError(path, f"the file has no header; expected {','.join(WAIVER_COLUMNS)}")
    header_line, columns = header
    _check_header(path, header_line, columns)

    waivers: list[Waiver] = []
    refused: list[RefusedWaiver] = []
    first_line_of: dict[tuple[date, int], int] = {}
    for line, values in records:
        if len(values) != len(columns):
            error = WaiverFileError(
                path, f"{len(values)} fields where the header has {len(columns)}", line=line
            )
            refused.append(RefusedWaiver(line, None, None, error))
            continue
        row = dict(zip(columns, values, strict=True))
        try:
            waiver = _waiver(path, line, row)
        except WaiverFileError as error:
            refused.append(RefusedWaiver(line, _readable_period(row), _readable_customer(row), error))
            continue
        key = (waiver.period, waiver.customer_id)
        if key in first_line_of:
            error = WaiverFileError(
                path,
                f"a second waiver for customer {waiver.customer_id} in {waiver.period.isoformat()} "
                f"(the first is on line {first_line_of[key]}); one period and customer has one accepted "
                f"difference",
                line=line,
                field="customer_id",
            )
            refused.append(RefusedWaiver(line, waiver.period, waiver.customer_id, error))
            continue
        first_line_of[key] = line
        waivers.append(waiver)
    # A customer with a refused row has no trusted waiver for that period: both rows are refused.
    doubted = {(row.period, row.customer_id) for row in refused if row.customer_id is not None}
    trusted = tuple(
        waiver
        for waiver in waivers
        if (waiver.period, waiver.customer_id) not in doubted and (None, waiver.customer_id) not in doubted
    )
    return WaiverFile(trusted, tuple(refused))


def _readable_period(row: dict[str, str]) -> date | None:
    period = _date(row.get("period", ""), parse_period)
    return None if isinstance(period, str) else period


def _readable_customer(row: dict[str, str]) -> int | None:
    value = row.get("customer_id", "")
    return int(value) if _INTEGER.fullmatch(value) and int(value) > 0 else None


def find_waiver(
    waivers: Iterable[Waiver], period: date | str, customer_id: int, delta_cents: int, on_date: date
) -> Waiver | None:
    """The waiver accepting exactly this difference of this customer in this period, unexpired on ``on_date``.

    A waiver whose ``delta_cents`` is not the difference found does not apply: it accepted another
    difference, and the one found now is unexplained until someone accepts it again.
    """
    period = parse_period(period)
    for waiver in waivers:
        if (
            waiver.period == period
            and waiver.customer_id == int(customer_id)
            and waiver.delta_cents == int(delta_cents)
            and not waiver.is_expired(on_date)
        ):
            return waiver
    return None


def _records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the line each starts on, blank and ``#`` comment lines left out."""
    # Lines end at \n (or \r\n) only, as csv reads them: str.splitlines would also split at U+2028.
    reader = csv.reader(_without_comments(io.StringIO(text, newline="")), strict=True)
    last_line = 0
    try:
        for values in reader:
            start, last_line = last_line + 1, reader.line_num
            if values:
                yield start, [value.strip() for value in values]
    except csv.Error as error:
        raise WaiverFileError(path, f"not valid CSV: {error}", line=reader.line_num) from None


def _without_comments(lines: Iterable[str]) -> Iterator[str]:
    """The lines with comments and whitespace-only lines blanked, keeping the numbering.

    A line is a comment only between records: inside a quoted field (an odd number of quotes so
    far) a ``#`` is text.
    """
    inside_quotes = False
    for line in lines:
        if not inside_quotes and (not line.strip() or line.lstrip().startswith("#")):
            yield "\n"
            continue
        inside_quotes ^= line.count('"') % 2 == 1
        yield line


def _check_header(path: Path, line: int, columns: list[str]) -> None:
    duplicated = sorted({column for column in columns if columns.count(column) > 1})
    unknown = [column for column in columns if column not in WAIVER_COLUMNS]
    missing = [column for column in WAIVER_COLUMNS if column not in columns]
    problems = []
    if duplicated:
        problems.append(f"repeated column(s) {', '.join(duplicated)}")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if problems:
        raise WaiverFileError(
            path, f"{'; '.join(problems)}; expected the header {','.join(WAIVER_COLUMNS)}", line=line
        )


def _waiver(path: Path, line: int, values: dict[str, str]) -> Waiver:
    def refuse(field: str, problem: str) -> WaiverFileError:
        return WaiverFileError(path, f"{problem} (got {values[field]!r})", line=line, field=field)

    period = _date(values["period"], parse_period)
    if isinstance(period, str):
        raise refuse("period", f"{period}; a billing period is the first day of a month, like 2026-10-01")

    numbers = {}
    for field in ("customer_id", "delta_cents"):
        if not _INTEGER.fullmatch(values[field]):
            raise refuse(field, "must be a whole number of cents or an id, without decimals or separators")
        numbers[field] = int(values[field])
    if numbers["customer_id"] <= 0:
        raise refuse("customer_id", "must be a NexaCloud customer id, a positive whole number")
    if numbers["delta_cents"] == 0:
        raise refuse("delta_cents", "a waiver accepts a difference, and a zero difference needs none")

    if not values["reason"]:
        raise refuse("reason", "must say why the difference is accepted")
    if not values["approver"]:
        raise refuse("approver", "must say who accepted the difference")

    expires_on = None
    if values["expires_on"]:
        expires_on = _date(values["expires_on"], date.fromisoformat)
        if isinstance(expires_on, str):
            raise refuse("expires_on", f"{expires_on}; write a date like 2027-03-31, or leave it empty")
        if expires_on < period:
            raise refuse("expires_on", f"the waiver expires before its period {period.isoformat()} begins")

    return Waiver(
        period=period,
        customer_id=numbers["customer_id"],
        delta_cents=numbers["delta_cents"],
        reason=values["reason"],
        approver=values["approver"],
        expires_on=expires_on,
        line=line,
    )


def _date(text: str, parse: Callable[[str], date]) -> date | str:
    """The date ``text`` spells as YYYY-MM-DD, or why it is not one."""
    if not _ISO_DATE.fullmatch(text):
        return "not a date written YYYY-MM-DD"
    try:
        return parse(text)
    except ValueError as error:
        return str(error)
