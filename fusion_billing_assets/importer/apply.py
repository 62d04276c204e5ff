"""Writing an import plan to Odoo through ``load``, in batches, model by model (docs/design.md §9).

Only ``create`` and ``update`` records are sent; nothing is ever deleted, and no record is named
other than by its ``nexacloud`` external id, so a record without one is never touched. Models go
in write order (products, partners, subscriptions, subscription lines), a batch per ``load`` call:
one transaction in Odoo, created or updated with its external ids, all or nothing.

A batch Odoo refuses (``ids`` false) is sent again once without the rows its error messages name,
so one bad record costs only itself; the records that point at a refused one are not sent. A
batch that cannot be delivered (the server down, a timeout past the client's retries) stops the
apply there: what was loaded stays consistent, since each batch is its own transaction, and a
re-run plans again from what Odoo then holds, so it creates nothing twice. ``load`` by external id
is idempotent, which is also why the client may retry it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from fusion_billing_assets.importer.plan import Planned
from fusion_billing_assets.importer.records import WRITE_ORDER, Action, Ref, Value
from fusion_billing_assets.sources.odoo import OdooClient, OdooError

DEFAULT_BATCH_SIZE = 200


class Outcome(StrEnum):
    LOADED = "loaded"  # Odoo wrote the batch
    REFUSED = "refused"  # Odoo rolled the batch (or a row of it) back with an error message
    FAILED = (
        "failed"  # the call failed (refused key, server down, no answer): whether Odoo wrote it is unknown
    )
    SKIPPED = "skipped"  # not sent: it points at a refused record, or the apply stopped before it
    DRY_RUN = "dry_run"  # would have been sent


@dataclass(frozen=True)
class LogEntry:
    """One batch's outcome (``external_id`` None), or one row's message within it."""

    batch: int
    odoo_model: str
    outcome: Outcome
    records: int
    external_id: str | None = None
    odoo_id: int | None = None
    message: str | None = None


@dataclass
class ApplyResult:
    dry_run: bool
    log: list[LogEntry] = field(default_factory=list)
    # Records written, per model and action (create/update).
    written: dict[str, dict[str, int]] = field(default_factory=dict)
    stopped: str | None = None  # why the apply stopped before its end

    def outcomes(self) -> dict[str, Outcome]:
        """Each record's last outcome, by external id."""
        return {entry.external_id: entry.outcome for entry in self.log if entry.external_id}

    def counts_by_outcome(self) -> dict[str, int]:
        counts = {str(outcome): 0 for outcome in Outcome}
        for outcome in self.outcomes().values():
            counts[str(outcome)] += 1
        return counts

    @property
    def complete(self) -> bool:
        """Everything planned was written (or, dry, would be sent)."""
        return self.stopped is None and all(
            outcome in (Outcome.LOADED, Outcome.DRY_RUN) for outcome in self.outcomes().values()
        )


def apply_plan(
    client: OdooClient | None,
    planned: Sequence[Planned],
    *,
    dry_run: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[str], None] | None = None,
) -> ApplyResult:
    """Send the plan's ``create`` and ``update`` records to Odoo (or, ``dry_run``, only say so)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if client is None and not dry_run:
        raise ValueError("writing to Odoo needs a client of the importer's Odoo user")
    report = progress or (lambda line: None)
    result = ApplyResult(dry_run=dry_run)
    refused: set[str] = set()
    batch_number = 0
    for model in WRITE_ORDER:
        to_write = [
            p for p in planned if p.wanted.model == model and p.action in (Action.CREATE, Action.UPDATE)
        ]
        for batch in _batches(to_write, batch_size):
            batch_number += 1
            if result.stopped is not None:
                _each(result, batch_number, model, batch, Outcome.SKIPPED, result.stopped)
                continue
            logged = len(result.log)
            blocked = [p for p in batch if refused.intersection(p.wanted.depends_on)]
            for p in blocked:
                refused.add(p.wanted.external_id)
                result.log.append(
                    LogEntry(
                        batch_number,
                        model,
                        Outcome.SKIPPED,
                        1,
                        external_id=p.wanted.external_id,
                        odoo_id=p.odoo_id,
                        message="points at a record Odoo refused: "
                        + ", ".join(sorted(refused.intersection(p.wanted.depends_on))),
                    )
                )
            held = {id(p) for p in blocked}
            sendable = [p for p in batch if id(p) not in held]
            if sendable:
                _send(client, model, batch_number, sendable, result, refused, dry_run)
            outcomes = sorted({str(e.outcome) for e in result.log[logged:] if e.external_id is None})
            report(
                f"{model}: batch {batch_number}, {len(sendable)} record(s) {', '.join(outcomes) or 'skipped'}"
            )
    return result


def _send(
    client: OdooClient | None,
    model: str,
    batch_number: int,
    batch: list[Planned],
    result: ApplyResult,
    refused: set[str],
    dry_run: bool,
) -> None:
    fields, rows = load_rows(batch)
    if dry_run or client is None:
        _each(result, batch_number, model, batch, Outcome.DRY_RUN, None)
        return
    try:
        answer = client.call(model, "load", fields=fields, data=rows)
    except OdooError as error:
        result.stopped = f"batch {batch_number} of {model} did not go through: {error}"
        _each(result, batch_number, model, batch, Outcome.FAILED, str(error))
        return
    ids, messages = _answer(answer)
    if ids:
        _loaded(batch_number, model, batch, ids, result)
        for message in messages:
            result.log.append(_message_entry(batch_number, model, batch, message, Outcome.LOADED))
        return
    errors_by_row = {}
    for message in messages:
        entry = _message_entry(batch_number, model, batch, message, Outcome.REFUSED)
        result.log.append(entry)
        row = message.get("record")
        if isinstance(row, int) and 0 <= row < len(batch) and message.get("type") == "error":
            errors_by_row[row] = entry
    result.log.append(
        LogEntry(
            batch_number,
            model,
            Outcome.REFUSED,
            len(batch),
            message=f"Odoo refused the batch: {len(messages)} message(s), nothing of it written",
        )
    )
    if not errors_by_row or len(errors_by_row) == len(batch):
        refused.update(p.wanted.external_id for p in batch)
        unnamed = [p for row, p in enumerate(batch) if row not in errors_by_row]
        _each(result, batch_number, model, unnamed, Outcome.REFUSED, "refused with its batch")
        return
    refused.update(batch[row].wanted.external_id for row in errors_by_row)
    remaining = [p for row, p in enumerate(batch) if row not in errors_by_row]
    # Once more without the rows Odoo named: the rest of the batch was refused only with them.
    _send(client, model, batch_number, remaining, result, refused, dry_run)


def _each(
    result: ApplyResult,
    batch_number: int,
    model: str,
    batch: list[Planned],
    outcome: Outcome,
    why: str | None,
) -> None:
    """The batch's outcome, and the same outcome for each of its records."""
    result.log.append(LogEntry(batch_number, model, outcome, len(batch), message=why))
    for planned in batch:
        result.log.append(
            LogEntry(
                batch_number,
                model,
                outcome,
                1,
                external_id=planned.wanted.external_id,
                odoo_id=planned.odoo_id,
                message=why or str(planned.action),
            )
        )


def _answer(answer: Any) -> tuple[list[int] | None, list[dict[str, Any]]]:
    if not isinstance(answer, dict) or "ids" not in answer:
        raise OdooError(f"Odoo's load answered {type(answer).__name__}, not {{'ids', 'messages'}}")
    messages = [m for m in answer.get("messages") or [] if isinstance(m, dict)]
    ids = answer["ids"]
    return (list(ids) if ids else None), messages


def _loaded(batch_number: int, model: str, batch: list[Planned], ids: list[int], result: ApplyResult) -> None:
    if len(ids) != len(batch):
        raise OdooError(f"Odoo's load of {model} returned {len(ids)} ids for {len(batch)} rows")
    result.log.append(LogEntry(batch_number, model, Outcome.LOADED, len(batch)))
    written = result.written.setdefault(model, {str(Action.CREATE): 0, str(Action.UPDATE): 0})
    for planned, odoo_id in zip(batch, ids, strict=True):
        written[str(planned.action)] += 1
        result.log.append(
            LogEntry(
                batch_number,
                model,
                Outcome.LOADED,
                1,
                external_id=planned.wanted.external_id,
                odoo_id=int(odoo_id),
                message=str(planned.action),
            )
        )


def _message_entry(
    batch_number: int, model: str, batch: list[Planned], message: dict[str, Any], outcome: Outcome
) -> LogEntry:
    row = message.get("record")
    planned = batch[row] if isinstance(row, int) and 0 <= row < len(batch) else None
    field_name = message.get("field")
    text = f"{message.get('type', 'error')}: {message.get('message', '')}".strip()
    if field_name:
        text += f" (field {field_name})"
    return LogEntry(
        batch_number,
        model,
        outcome,
        1,
        external_id=planned.wanted.external_id if planned else None,
        odoo_id=planned.odoo_id if planned else None,
        message=text,
    )


def load_rows(batch: Sequence[Planned]) -> tuple[list[str], list[list[str]]]:
    """``load``'s ``fields`` and ``data`` for one batch: ``id`` first, a column per value written."""
    names = sorted({name for planned in batch for name in (planned.columns or {})})
    fields = ["id", *(f"{name}/id" if _is_ref(batch, name) else name for name in names)]
    rows = []
    for planned in batch:
        columns = planned.columns or {}
        rows.append([planned.wanted.external_id, *(_cell(columns.get(name)) for name in names)])
    return fields, rows


def _is_ref(batch: Sequence[Planned], name: str) -> bool:
    return any(isinstance((p.columns or {}).get(name), Ref) for p in batch)


def _cell(value: Value) -> str:
    """A value as a CSV import cell: Odoo's ``load`` takes strings only."""
    if value is None:
        return ""
    if isinstance(value, Ref):
        return value.xid
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _batches(planned: list[Planned], size: int) -> Iterator[list[Planned]]:
    """Batches of one column set each: ``load`` writes the same columns for every row of a call."""
    by_columns: dict[tuple[str, ...], list[Planned]] = {}
    for p in planned:
        by_columns.setdefault(tuple(sorted(p.columns or {})), []).append(p)
    for group in by_columns.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]
