"""What finance needs to trust a figure later (docs/design.md §12): which inputs gave it, who
accepted it, and what moved since.

Plain pandas and hashlib, no Dagster: the reconciliation asset fingerprints its inputs with these
functions, the warehouse keeps the fingerprints beside every run's rows, and a re-run of a
signed-off period is compared with the signed-off run here.

A fingerprint is a row count and a SHA-256 of the content: the column names, then every value
hashed by pandas (``hash_pandas_object``, stable across processes and machines). Two frames with the
same rows in the same order give the same fingerprint; any changed value, added or removed row
gives another one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.statuses import Status

# The figures of a result row a sign-off vouches for: a change in any of them is a change.
SIGNED_FIGURES = (
    "status",
    "nexacloud_total_cents",
    "odoo_total_cents",
    "expected_total_cents",
    "delta_cents",
    "nexacloud_cpu_seconds",
    "odoo_cpu_seconds",
)
ROW_KEY = ("customer_id", "partner_id")


@dataclass(frozen=True)
class InputFingerprint:
    rows: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "sha256": self.sha256}


def frame_fingerprint(frame: pd.DataFrame) -> InputFingerprint:
    """The identity of a source frame's content: its columns, its rows in order, every value."""
    digest = hashlib.sha256(json.dumps([str(column) for column in frame.columns]).encode())
    if len(frame):
        # Decimals, dates and other objects hash by their text; numbers and timestamps natively.
        hashed = pd.util.hash_pandas_object(_hashable(frame), index=False)
        digest.update(hashed.to_numpy().tobytes())
    return InputFingerprint(rows=len(frame), sha256=digest.hexdigest())


def file_fingerprint(path: Path | str | None) -> InputFingerprint:
    """A file's bytes (the waiver file); a missing file is an input too: no rows, its own hash."""
    if path is None or not Path(path).is_file():
        return InputFingerprint(rows=0, sha256=hashlib.sha256(b"(no file)").hexdigest())
    content = Path(path).read_bytes()
    return InputFingerprint(rows=content.count(b"\n"), sha256=hashlib.sha256(content).hexdigest())


def settings_fingerprint(settings: Mapping[str, Any]) -> InputFingerprint:
    """The rules a period was judged by (tolerance, tax rounding, …), as canonical JSON."""
    canonical = json.dumps(dict(settings), sort_keys=True, default=str).encode()
    return InputFingerprint(rows=len(settings), sha256=hashlib.sha256(canonical).hexdigest())


def combined_fingerprint(fingerprints: Mapping[str, InputFingerprint]) -> str:
    """One hash over every input's fingerprint, by input name."""
    canonical = json.dumps({name: fp.as_json() for name, fp in sorted(fingerprints.items())}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def changed_inputs(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The names of the inputs whose fingerprint differs between two runs (as stored: JSON dicts)."""
    names = sorted(set(before) | set(after))
    return [name for name in names if _as_dict(before.get(name)) != _as_dict(after.get(name))]


def changes_since_signoff(signed: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """The result rows whose status or any signed figure moved, one row per customer or partner.

    Columns: the row key, ``change`` (``changed``, ``added`` or ``removed``), ``old_status``,
    ``new_status``, ``old_delta_cents``, ``new_delta_cents``, ``old_nexacloud_total_cents``,
    ``new_nexacloud_total_cents``, ``old_odoo_total_cents``, ``new_odoo_total_cents`` and
    ``moved``: the figures that differ, as ``name old → new``.
    """
    columns = [*ROW_KEY, *SIGNED_FIGURES]
    old = _keyed(signed[columns])
    new = _keyed(current[columns])
    joined = old.join(new, how="outer", lsuffix="_old", rsuffix="_new")
    rows = []
    for key, row in joined.iterrows():
        in_old = not pd.isna(row["status_old"])
        in_new = not pd.isna(row["status_new"])
        moved = [
            f"{figure} {_shown(figure, row[f'{figure}_old'])} → {_shown(figure, row[f'{figure}_new'])}"
            for figure in SIGNED_FIGURES
            if in_old and in_new and not _same(row[f"{figure}_old"], row[f"{figure}_new"])
        ]
        if in_old and in_new and not moved:
            continue
        rows.append(
            {
                "customer_id": _key_value(key[0]),
                "partner_id": _key_value(key[1]),
                "change": "changed" if in_old and in_new else ("added" if in_new else "removed"),
                **{
                    f"{age}_{figure}": row[f"{figure}_{suffix}"]
                    for age, suffix in (("old", "old"), ("new", "new"))
                    for figure in ("status", "delta_cents", "nexacloud_total_cents", "odoo_total_cents")
                },
                "moved": "; ".join(moved) if moved else ("new row" if in_new else "row gone"),
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            *ROW_KEY,
            "change",
            "old_status",
            "old_delta_cents",
            "old_nexacloud_total_cents",
            "old_odoo_total_cents",
            "new_status",
            "new_delta_cents",
            "new_nexacloud_total_cents",
            "new_odoo_total_cents",
            "moved",
        ],
    )
    for column in ROW_KEY:
        frame[column] = frame[column].astype("Int64")
    return frame


def changes_markdown(changes: pd.DataFrame, why: Sequence[str], limit: int = 20) -> str:
    """The rows that moved since sign-off, for a person: who, what moved, and which inputs changed."""
    if changes.empty:
        return "_Unchanged since sign-off._"
    because = (
        f"Inputs that changed since the signed-off run: {', '.join(why)}."
        if why
        else "No input fingerprint changed: the reconciliation itself judged differently."
    )
    lines = [because, "", "| Customer | Partner | Change | Status | Moved |", "|---|---|---|---|---|"]
    for row in changes.head(limit).itertuples(index=False):
        status = f"{row.old_status} → {row.new_status}"
        lines.append(
            f"| {_text_id(row.customer_id)} | {_text_id(row.partner_id)} | {row.change} | {status} | {row.moved} |"
        )
    if len(changes) > limit:
        lines.append(f"| … | | | | and {len(changes) - limit} more |")
    return "\n".join(lines)


def changes_fingerprint(changes: pd.DataFrame) -> str:
    """The identity of a set of changes since sign-off: the same changes are not news twice."""
    keys = sorted(
        (_text_id(row.customer_id), _text_id(row.partner_id), str(row.new_status), str(row.moved))
        for row in changes.itertuples(index=False)
    )
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]


def signoff_refusals(
    *,
    period_closed: bool,
    run_provisional: bool,
    latest_run_failed: bool,
    results: pd.DataFrame,
    accepted_unexplained: Sequence[str],
) -> list[str]:
    """Why a period cannot be signed off as it stands (empty: it can).

    ``accepted_unexplained`` names the rows that count against the switch and are accepted anyway:
    ``<customer_id>``, or ``partner:<partner_id>`` for an Odoo partner without a customer. Every
    such row must be named; naming a row that is not unexplained is refused too, so a typo cannot
    slip through.
    """
    refusals = []
    if not period_closed or run_provisional:
        refusals.append(
            "the period is provisional: only a closed period reconciled after it closed can be signed off"
        )
    if latest_run_failed:
        refusals.append("the latest reconciliation run of the period failed: re-run it before signing off")
    if results.empty:
        refusals.append("the period has no reconciliation results to sign off")
    held_back = {
        row_name(row): row
        for row in results.itertuples(index=False)
        if Status(row.status).counts_against_switch
    }
    accepted = set(accepted_unexplained)
    missing = sorted(set(held_back) - accepted)
    if missing:
        listing = ", ".join(f"{name} ({held_back[name].status})" for name in missing)
        refusals.append(
            f"{len(missing)} unexplained difference(s) not accepted: {listing}; "
            "name each with --accept-unexplained to sign off anyway"
        )
    unknown = sorted(accepted - set(held_back))
    if unknown:
        refusals.append(
            f"--accept-unexplained names rows that are not unexplained differences: {', '.join(unknown)}"
        )
    return refusals


def row_name(row: Any) -> str:
    """How a person names a result row: the customer id, or ``partner:<id>`` for an orphan partner."""
    if not pd.isna(row.customer_id):
        return str(int(row.customer_id))
    return f"partner:{int(row.partner_id)}"


def _hashable(frame: pd.DataFrame) -> pd.DataFrame:
    converted = {}
    for column in frame.columns:
        values = frame[column]
        if values.dtype == object:
            converted[column] = values.map(lambda value: None if _missing(value) else repr(value))
        else:
            converted[column] = values
    return pd.DataFrame(converted)


def _missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    keyed = frame.assign(
        customer_id=frame["customer_id"].astype("Int64").fillna(-1).astype("int64"),
        partner_id=frame["partner_id"].astype("Int64").fillna(-1).astype("int64"),
    )
    return keyed.set_index(list(ROW_KEY))


def _key_value(value: int) -> int | None:
    return None if value == -1 else int(value)


def _same(old: Any, new: Any) -> bool:
    if _missing(old) and _missing(new):
        return True
    return not _missing(old) and not _missing(new) and old == new


def _shown(figure: str, value: Any) -> str:
    if _missing(value):
        return "—"
    if figure.endswith("_cents"):
        return format_cents(int(value))
    return str(value)


def _text_id(value: Any) -> str:
    return "—" if _missing(value) else str(int(value))


def _as_dict(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value)
    return value
