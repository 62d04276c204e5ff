"""What Odoo holds of the records an import wants, read in pages (never one call per record).

Reads, with the reconciliation's read-only client: the external ids of module ``nexacloud``; the
external ids of Odoo's own records the imported ones point at (currencies, provinces, the monthly
plan); every record those external ids point at, per model, by id lists of one page each; and,
for the records without an external id yet, the Odoo records that could already be them — a
partner with the same ``ref`` or e-mail, a product with the same internal reference — which are
conflicts. Requests: per model ⌈records / page size⌉, plus a constant (docs/design.md §9).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fusion_billing_assets.importer.records import (
    MODULE,
    PARTNER,
    PRODUCT,
    SUBSCRIPTION,
    SUBSCRIPTION_LINE,
    Ref,
    Wanted,
)
from fusion_billing_assets.sources.odoo import OdooClient

XID_MODEL = "ir.model.data"

# What the plan compares, per model, and ``active`` to tell an archived record.
READ_FIELDS: dict[str, tuple[str, ...]] = {
    PARTNER: ("name", "email", "ref", "is_company", "state_id", "active"),
    PRODUCT: ("name", "default_code", "list_price", "active"),
    SUBSCRIPTION: (
        "partner_id",
        "plan_id",
        "is_subscription",
        "start_date",
        "end_date",
        "subscription_state",
        "currency_id",
    ),
    SUBSCRIPTION_LINE: ("order_id", "product_id", "name", "price_unit", "product_uom_qty"),
}


@dataclass(frozen=True)
class ExternalId:
    model: str
    res_id: int


@dataclass
class OdooSide:
    """Odoo's records as the plan compares them: external ids, their records, look-alikes."""

    external_ids: dict[str, ExternalId] = field(default_factory=dict)  # "module.name" -> target
    records: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    # Per model, records without a ``nexacloud`` external id that share a natural key with a wanted one.
    look_alikes: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def resolve(self, xid: str) -> int | None:
        """The database id an external id names, if it names a record that exists.

        Records of the models the import writes are read, so a deleted one is known; Odoo's own
        records (a currency, a province, the monthly plan) are taken at their external id's word.
        """
        target = self.external_ids.get(xid)
        if target is None:
            return None
        if target.model in READ_FIELDS and target.res_id not in self.records.get(target.model, {}):
            return None
        return target.res_id

    def owned_ids(self, model: str) -> set[int]:
        """Records of ``model`` that a ``nexacloud`` external id names."""
        prefix = f"{MODULE}."
        return {
            target.res_id
            for xid, target in self.external_ids.items()
            if xid.startswith(prefix) and target.model == model
        }


def read_odoo_side(client: OdooClient, wanted: Sequence[Wanted]) -> OdooSide:
    side = OdooSide()
    # Only the external ids of the wanted records: the cost follows the plan, not all Odoo holds.
    names = [record.name for record in wanted]
    for page in client.search_read_in(
        XID_MODEL,
        "name",
        names,
        ["module", "name", "model", "res_id"],
        domain=[["module", "=", MODULE]],
        unique=True,  # (module, name) is unique in ir.model.data
    ):
        _keep_external_ids(side, page)
    foreign = sorted(
        {
            value.xid
            for record in wanted
            for value in [*record.values.values(), *record.on_create.values()]
            if isinstance(value, Ref) and not value.xid.startswith(f"{MODULE}.")
        }
    )
    if foreign:
        modules = sorted({xid.partition(".")[0] for xid in foreign})
        names = sorted({xid.partition(".")[2] for xid in foreign})
        _read_external_ids(client, side, [["module", "in", modules], ["name", "in", names]])
    wanted_models = {record.model for record in wanted}
    ids_by_model: dict[str, set[int]] = defaultdict(set)
    for target in side.external_ids.values():
        if target.model in READ_FIELDS:
            ids_by_model[target.model].add(target.res_id)
    for model in READ_FIELDS:
        if model in wanted_models or ids_by_model[model]:
            _read_records(client, side, model, sorted(ids_by_model[model]))
    _read_look_alikes(client, side, wanted)
    return side


def _read_external_ids(client: OdooClient, side: OdooSide, domain: list[Any]) -> None:
    for page in client.search_read_pages(XID_MODEL, domain, ["module", "name", "model", "res_id"]):
        _keep_external_ids(side, page)


def _keep_external_ids(side: OdooSide, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        side.external_ids[f"{row['module']}.{row['name']}"] = ExternalId(row["model"], int(row["res_id"]))


def _read_records(client: OdooClient, side: OdooSide, model: str, ids: Sequence[int]) -> None:
    for page in client.search_read_in(model, "id", ids, READ_FIELDS[model]):
        for record in page:
            side.records[model][int(record["id"])] = record


def _read_look_alikes(client: OdooClient, side: OdooSide, wanted: Iterable[Wanted]) -> None:
    """Odoo records that share a natural key with a wanted record not yet in Odoo: conflicts.

    One domain per page of such records, all their keys OR'd: a partner's ``ref`` (exact) or
    e-mail (``=ilike``: any case, as the plan compares it), a product's ``default_code``.
    """
    candidates: dict[str, list[Wanted]] = defaultdict(list)
    for record in wanted:
        if record.held is None and side.resolve(record.external_id) is None and record.natural_keys:
            candidates[record.model].append(record)
    for model, records in candidates.items():
        owned = side.owned_ids(model)
        seen: set[int] = set()
        for start in range(0, len(records), client.page_size):
            terms = [
                [name, "=ilike" if name == "email" else "=", value]
                for record in records[start : start + client.page_size]
                for name, value in sorted(record.natural_keys.items())
                if value
            ]
            domain = ["|"] * (len(terms) - 1) + terms
            for page in client.search_read_pages(model, domain, READ_FIELDS[model]):
                for found in page:
                    if int(found["id"]) not in owned and int(found["id"]) not in seen:
                        seen.add(int(found["id"]))
                        side.look_alikes[model].append(found)
