"""The import plan: each wanted record against what Odoo holds, and the action it needs.

``plan_import`` decides, per record, ``create`` (no external id yet, or one whose record was
deleted), ``update`` (naming each field that differs, Odoo's value → NexaCloud's), ``unchanged``,
``conflict`` (an Odoo record with the same ``ref``, e-mail or internal reference but no
``nexacloud`` external id; an external id naming a record of another model, or an archived one),
or the action a held record carries (``excluded``, ``invalid``). A record that points at a
conflicting one follows it: nothing is written until a person decides. Planning reads, never writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from fusion_billing_assets.importer.odoo_side import OdooSide
from fusion_billing_assets.importer.records import Action, Ref, Value, Wanted

PLAN_COLUMNS = [
    "billing_period",
    "nexacloud_kind",
    "nexacloud_id",
    "odoo_model",
    "external_id",
    "action",
    "changes",
    "odoo_id",
    "message",
    "planned_at",
]
# Odoo stores prices as floats: equal to six decimals is equal.
_PRICE_QUANTUM = Decimal("0.000001")


@dataclass(frozen=True)
class Change:
    field: str
    odoo: str
    nexacloud: str

    def __str__(self) -> str:
        return f"{self.field}: {self.odoo} → {self.nexacloud}"


@dataclass(frozen=True)
class Planned:
    """One record's decision: the action, what differs, the Odoo record it concerns, why."""

    wanted: Wanted
    action: Action
    odoo_id: int | None = None
    changes: tuple[Change, ...] = ()
    message: str | None = None
    # The columns ``load`` writes for it (``create``: every value; ``update``: the values compared).
    columns: Mapping[str, Value] | None = None


def plan_import(wanted: Sequence[Wanted], odoo: OdooSide) -> list[Planned]:
    """Every wanted record's action, in write order."""
    planned: dict[str, Planned] = {}
    look_alikes = _LookAlikes(odoo)
    for record in wanted:
        decision = _decide(record, odoo, look_alikes)
        blocker = next(
            (planned[xid] for xid in record.depends_on if xid in planned and not _writable(planned[xid])),
            None,
        )
        if blocker is not None and _writable(decision):
            decision = Planned(
                record,
                blocker.action,
                odoo_id=decision.odoo_id,
                message=f"waits for {blocker.wanted.external_id} ({blocker.action}): {blocker.message}",
            )
        planned[record.external_id] = decision
    return list(planned.values())


def plan_frame(planned: Sequence[Planned], period: date, planned_at: datetime) -> pd.DataFrame:
    """The plan as table ``odoo_import_plan`` holds it."""
    rows = [
        {
            "billing_period": period,
            "nexacloud_kind": str(p.wanted.kind),
            "nexacloud_id": p.wanted.nexacloud_id,
            "odoo_model": p.wanted.model,
            "external_id": p.wanted.external_id,
            "action": str(p.action),
            "changes": "; ".join(str(change) for change in p.changes) or None,
            "odoo_id": p.odoo_id,
            "message": p.message,
            "planned_at": planned_at,
        }
        for p in planned
    ]
    frame = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    frame["odoo_id"] = frame["odoo_id"].astype("Int64")
    return frame


def counts_by_action(planned: Sequence[Planned]) -> dict[str, int]:
    counts = {str(action): 0 for action in Action}
    for decision in planned:
        counts[str(decision.action)] += 1
    return counts


def _writable(decision: Planned) -> bool:
    return decision.action in (Action.CREATE, Action.UPDATE, Action.UNCHANGED)


class _LookAlikes:
    """Odoo's look-alike records by (model, field, value as compared): one lookup per key."""

    def __init__(self, odoo: OdooSide):
        self._by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for model, records in odoo.look_alikes.items():
            seen: set[int] = set()
            for record in records:
                if record["id"] in seen:
                    continue
                seen.add(record["id"])
                for name, value in record.items():
                    if isinstance(value, str) and value.strip():
                        self._by_key.setdefault((model, name, _compared(name, value)), []).append(record)

    def first(self, record: Wanted) -> tuple[dict[str, Any], list[str]] | None:
        """The first Odoo record sharing a natural key with ``record``, and the keys it shares."""
        matches: dict[int, tuple[dict[str, Any], list[str]]] = {}
        for name, value in record.natural_keys.items():
            if not value:
                continue
            for candidate in self._by_key.get((record.model, name, _compared(name, value)), []):
                matches.setdefault(candidate["id"], (candidate, []))[1].append(name)
        return matches[min(matches)] if matches else None


def _compared(name: str, value: str) -> str:
    # E-mail addresses are compared case-insensitively, as mail servers treat them.
    return value.strip().casefold() if name == "email" else value.strip()


def _decide(record: Wanted, odoo: OdooSide, look_alikes: _LookAlikes) -> Planned:
    if record.held is not None:
        action, reason = record.held
        return Planned(record, action, odoo_id=odoo.resolve(record.external_id), message=reason)
    target = odoo.external_ids.get(record.external_id)
    missing_refs = [
        ref.xid
        for ref in _refs(record)
        if not ref.optional
        and ref.xid.partition(".")[0] != record.external_id.partition(".")[0]
        and odoo.resolve(ref.xid) is None
    ]
    if missing_refs:
        return Planned(
            record,
            Action.CONFLICT,
            message=f"Odoo has no record for {', '.join(missing_refs)}: install or create it, then plan again",
        )
    if target is not None and target.model != record.model:
        return Planned(
            record,
            Action.CONFLICT,
            odoo_id=target.res_id,
            message=f"{record.external_id} names {target.model} {target.res_id}, not a {record.model}",
        )
    current = odoo.records.get(record.model, {}).get(target.res_id) if target is not None else None
    if current is None:
        look_alike = _look_alike(record, look_alikes)
        if look_alike is not None:
            return look_alike
        note = (
            f"{record.external_id} named {record.model} {target.res_id}, which no longer exists: "
            "a new record takes the external id"
            if target is not None
            else None
        )
        return Planned(
            record,
            Action.CREATE,
            message=_joined(note, _unresolved_note(record, odoo)),
            columns=_columns(record, odoo, creating=True),
        )
    if current.get("active") is False:
        return Planned(
            record,
            Action.CONFLICT,
            odoo_id=target.res_id,
            message=f"{record.external_id} names {record.model} {target.res_id}, which is archived: "
            "unarchive it or move the external id",
        )
    changes = tuple(_changes(record, current, odoo))
    if not changes:
        return Planned(record, Action.UNCHANGED, odoo_id=target.res_id)
    return Planned(
        record,
        Action.UPDATE,
        odoo_id=target.res_id,
        changes=changes,
        message=_unresolved_note(record, odoo),
        columns=_columns(record, odoo, creating=False),
    )


def _look_alike(record: Wanted, look_alikes: _LookAlikes) -> Planned | None:
    found = look_alikes.first(record)
    if found is None:
        return None
    candidate, matched = found
    keys = ", ".join(f"{name} {record.natural_keys[name]!r}" for name in matched)
    return Planned(
        record,
        Action.CONFLICT,
        odoo_id=int(candidate["id"]),
        message=f"{record.model} {candidate['id']} ({candidate.get('name') or 'no name'}) has the "
        f"same {keys} but no nexacloud external id: merge or link it by hand, or exclude the "
        "customer; nothing is written meanwhile",
    )


def _refs(record: Wanted) -> list[Ref]:
    return [
        value for value in [*record.values.values(), *record.on_create.values()] if isinstance(value, Ref)
    ]


def _columns(record: Wanted, odoo: OdooSide, *, creating: bool) -> dict[str, Value]:
    values = {**record.values, **(record.on_create if creating else {})}
    # An optional relation Odoo cannot resolve is left out rather than failing the batch.
    return {
        name: value
        for name, value in values.items()
        if not (isinstance(value, Ref) and value.optional and odoo.resolve(value.xid) is None)
    }


def _unresolved_note(record: Wanted, odoo: OdooSide) -> str | None:
    unresolved = [
        f"{name} ({value.xid})"
        for name, value in record.values.items()
        if isinstance(value, Ref) and value.optional and odoo.resolve(value.xid) is None
    ]
    return f"Odoo has no record for {', '.join(unresolved)}: left empty" if unresolved else None


def _joined(*notes: str | None) -> str | None:
    return "; ".join(note for note in notes if note) or None


def _changes(record: Wanted, current: Mapping[str, Any], odoo: OdooSide) -> list[Change]:
    changes = []
    for name, value in record.values.items():
        odoo_value = current.get(name)
        if isinstance(value, Ref):
            target = odoo.resolve(value.xid)
            if target is None and value.optional:
                continue
            odoo_id = odoo_value[0] if isinstance(odoo_value, list) and odoo_value else None
            if odoo_id != target:
                shown = f"{odoo_value[1]} (id {odoo_id})" if odoo_id else "empty"
                changes.append(
                    Change(name, shown, value.xid if target is None else f"{value.xid} (id {target})")
                )
        elif not _equal(value, odoo_value):
            changes.append(Change(name, _shown_odoo(odoo_value, like=value), _shown(value)))
    return changes


def _equal(value: Value, odoo_value: Any) -> bool:
    if isinstance(value, bool):
        return bool(odoo_value) is value
    if isinstance(value, Decimal):
        if isinstance(odoo_value, bool) or odoo_value is None:
            return False
        return Decimal(repr(odoo_value)).quantize(_PRICE_QUANTUM) == value.quantize(_PRICE_QUANTUM)
    if isinstance(value, date):
        return odoo_value == value.isoformat()
    if value is None or value == "":
        return odoo_value in (False, None, "")
    return odoo_value == value


def _shown(value: Value) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):
        return value.isoformat()
    if value is None or value == "":
        return "empty"
    return repr(value) if isinstance(value, str) else str(value)


def _shown_odoo(value: Any, *, like: Value) -> str:
    """Odoo's value as a person compares it with NexaCloud's: a price with as many decimals."""
    if value is False or value is None or value == "":
        return "empty"
    if isinstance(value, float):
        number = Decimal(repr(value))
        if isinstance(like, Decimal):
            quantum = Decimal(1).scaleb(like.as_tuple().exponent)
            if number.quantize(quantum) == number:
                return format(number.quantize(quantum), "f")
        return format(number.normalize(), "f")
    return repr(value) if isinstance(value, str) else str(value)
