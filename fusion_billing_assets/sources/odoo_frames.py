"""Odoo's side of a billing period as frames: links, partners, subscriptions, usage, invoices.

Model and field names are configuration (``OdooModels``) with the defaults of docs/design.md §5, not
literals scattered through the code. Reads page by keyset, invoice lines through their invoice's
conditions (``move_id.invoice_date`` …) rather than in batches of invoice ids, and the usage ledger is summed by Odoo itself with
``formatted_read_group`` (``read_group`` over ``/jsonrpc``), never pulled record by record.
Amounts arrive as floats in currency units and become integer cents through ``Decimal(str(x))``
with half-up rounding; refunds count negative.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd

from fusion_billing_assets.billing.charges import OdooProducts
from fusion_billing_assets.billing.money import dollars_to_cents
from fusion_billing_assets.billing.periods import PeriodWindow, local_day, local_midnight_utc
from fusion_billing_assets.sources.frames import (
    BOOL,
    DATE,
    DECIMAL,
    INT,
    NULLABLE_INT,
    TEXT,
    UTC_TIMESTAMP,
    typed_frame,
)
from fusion_billing_assets.sources.odoo import OdooClient, OdooError

BATCH_SIZE = 500


@dataclass(frozen=True)
class OdooModels:
    """Where the Nexa billing module keeps things in Odoo (docs/design.md §5)."""

    link: str = "ir.model.data"
    link_module: str = "nexacloud"
    partner: str = "res.partner"
    subscription: str = "sale.order"
    subscription_line: str = "sale.order.line"
    usage: str = "fusion.billing.usage"
    usage_module: str = "fusion_billing"
    usage_metric: str = "cpu_seconds"
    invoice: str = "account.move"
    invoice_line: str = "account.move.line"
    product: str = "product.product"
    products: OdooProducts = field(default_factory=OdooProducts)
    # Invoices are found by date first, then kept when a line belongs to the period: wide enough
    # for subscriptions billed in advance and for invoices issued weeks after the period.
    invoice_days_before: int = 45
    invoice_days_after: int = 75
    # An invoice still owed (account.move.payment_state): in_payment is paid, awaiting the bank.
    open_payment_states: tuple[str, ...] = ("not_paid", "partial")


LINK_COLUMNS = {"link_kind": TEXT, "nexacloud_id": INT, "odoo_model": TEXT, "odoo_id": INT, "xml_id": TEXT}
PARTNER_COLUMNS = {
    "partner_id": INT,
    "name": TEXT,
    "ref": TEXT,
    "email": TEXT,
    "commercial_partner_id": NULLABLE_INT,
    "active": BOOL,
}
SUBSCRIPTION_COLUMNS = {
    "subscription_id": INT,
    "name": TEXT,
    "partner_id": INT,
    "plan_name": TEXT,
    "state": TEXT,
    "start_date": DATE,
    "end_date": DATE,
    "currency": TEXT,
    "plan_product_code": TEXT,
    "plan_fee_cents": NULLABLE_INT,
    "overage_cents_per_cpu_hour": DECIMAL,
}
ODOO_USAGE_COLUMNS = {"subscription_id": INT, "cpu_milliseconds": INT, "records": INT}
ODOO_USAGE_DAY_COLUMNS = {"subscription_id": INT, "usage_date": DATE, "cpu_milliseconds": INT}
INVOICE_COLUMNS = {
    "move_id": INT,
    "name": TEXT,
    "move_type": TEXT,
    "state": TEXT,
    "partner_id": INT,
    "currency": TEXT,
    "invoice_date": DATE,
    "invoice_origin": TEXT,
    "untaxed_cents": INT,
    "tax_cents": INT,
    "total_cents": INT,
    # The sum of all its product lines' subtotals, in any period: what the header must say.
    "lines_untaxed_cents": INT,
}
INVOICE_LINE_COLUMNS = {
    "line_id": INT,
    "move_id": INT,
    "product_code": TEXT,
    "description": TEXT,
    "quantity": DECIMAL,
    "price_unit": DECIMAL,
    "subtotal_cents": INT,
    "tax_cents": INT,
    "total_cents": INT,
    "subscription_id": NULLABLE_INT,
    "deferred_start_date": DATE,
    "deferred_end_date": DATE,
    "line_period": DATE,
}


def fetch_account_links(client: OdooClient, models: OdooModels) -> pd.DataFrame:
    """The importer's mapping: ``customer_<id>`` → partner, ``deployment_<id>`` → subscription."""
    records = client.search_read_all(
        models.link,
        [["module", "=", models.link_module], ["model", "in", [models.partner, models.subscription]]],
        ["module", "name", "model", "res_id"],
    )
    rows = []
    for record in records:
        kind, _, nexacloud_id = record["name"].partition("_")
        if kind not in ("customer", "deployment") or not nexacloud_id.isdigit():
            continue  # other records the importer keeps under the same module
        rows.append(
            (
                kind,
                int(nexacloud_id),
                record["model"],
                int(record["res_id"]),
                f"{record['module']}.{record['name']}",
            )
        )
    return typed_frame(rows, LINK_COLUMNS, lenient=True)


def fetch_partners(client: OdooClient, models: OdooModels, partner_ids: Iterable[int]) -> pd.DataFrame:
    rows = [
        (
            record["id"],
            record["name"] or "",
            _text(record.get("ref")),
            _text(record.get("email")),
            _many2one_id(record.get("commercial_partner_id")),
            bool(record.get("active")),
        )
        for record in _read_by_ids(
            client, models.partner, partner_ids, ["name", "ref", "email", "commercial_partner_id", "active"]
        )
    ]
    frame = typed_frame(rows, PARTNER_COLUMNS, lenient=True)
    return frame


def fetch_subscriptions(client: OdooClient, models: OdooModels, window: PeriodWindow) -> pd.DataFrame:
    """Subscriptions running at some point of the period, with the prices on their order lines."""
    last_day = window.last_day.isoformat()
    domain = [
        ["is_subscription", "=", True],
        ["start_date", "<=", last_day],
        "|",
        ["end_date", "=", False],
        ["end_date", ">=", window.key],
    ]
    fields = [
        "name",
        "partner_id",
        "plan_id",
        "subscription_state",
        "start_date",
        "end_date",
        "currency_id",
        "order_line",
    ]
    orders = client.search_read_all(models.subscription, domain, fields)
    line_ids = [line_id for order in orders for line_id in order["order_line"] or []]
    lines = _read_by_ids(client, models.subscription_line, line_ids, ["order_id", "product_id", "price_unit"])
    codes = _product_codes(client, models, (_many2one_id(line["product_id"]) for line in lines))
    prices: dict[int, dict[str, Any]] = {}
    for line in lines:
        code = codes.get(_many2one_id(line["product_id"]), "")
        order_prices = prices.setdefault(_many2one_id(line["order_id"]), {})
        if code.startswith(models.products.plan_prefix):
            order_prices["plan_product_code"] = code
            order_prices["plan_fee_cents"] = dollars_to_cents(line["price_unit"])
        elif code == models.products.overage_code:
            # The order line prices one CPU-hour in currency units; keep the rate exact in cents.
            order_prices["overage_cents_per_cpu_hour"] = Decimal(str(line["price_unit"])) * 100
    rows = [
        (
            order["id"],
            order["name"],
            _many2one_id(order["partner_id"]),
            _many2one_name(order.get("plan_id")),
            _text(order.get("subscription_state")),
            _date(order.get("start_date")),
            _date(order.get("end_date")),
            _many2one_name(order.get("currency_id")),
            prices.get(order["id"], {}).get("plan_product_code"),
            prices.get(order["id"], {}).get("plan_fee_cents"),
            prices.get(order["id"], {}).get("overage_cents_per_cpu_hour"),
        )
        for order in orders
    ]
    frame = typed_frame(rows, SUBSCRIPTION_COLUMNS, lenient=True)
    return frame


LIFECYCLE_SUBSCRIPTION_COLUMNS = {
    "subscription_id": INT,
    "name": TEXT,
    "subscription_state": TEXT,
    "end_date": DATE,
}
OVERDUE_INVOICE_COLUMNS = {
    "move_id": INT,
    "invoice_name": TEXT,
    "subscription_id": INT,
    "invoice_date_due": DATE,
    "amount_total_cents": INT,
    "amount_residual_cents": INT,
    "subscription_total_cents": INT,
}
LATER_LINE_COLUMNS = {"subscription_id": INT, "invoice_name": TEXT, "service_start": DATE, "total_cents": INT}


def fetch_subscription_states(
    client: OdooClient, models: OdooModels, subscription_ids: Iterable[int]
) -> pd.DataFrame:
    """The lifecycle state of each given subscription (docs/design.md §11), in pages of ids."""
    records = _read_by_ids(
        client, models.subscription, subscription_ids, ["name", "subscription_state", "end_date"]
    )
    rows = [
        (
            record["id"],
            record["name"] or "",
            _text(record.get("subscription_state")),
            _date(record.get("end_date")),
        )
        for record in records
    ]
    return typed_frame(rows, LIFECYCLE_SUBSCRIPTION_COLUMNS, lenient=True)


def fetch_overdue_invoices(client: OdooClient, models: OdooModels, today: date) -> pd.DataFrame:
    """Posted customer invoices still owed and due before ``today``, one row per subscription they
    bill: what a suspension rests on. Two keyset reads, the moves and their product lines, the
    lines reached through their invoice's conditions."""
    move_domain = [
        ["move_type", "=", "out_invoice"],
        ["state", "=", "posted"],
        ["payment_state", "in", list(models.open_payment_states)],
        ["invoice_date_due", "<", today.isoformat()],
    ]
    moves = {
        move["id"]: move
        for move in client.search_read_all(
            models.invoice, move_domain, ["name", "invoice_date_due", "amount_total", "amount_residual"]
        )
    }
    owed: dict[tuple[int, int], int] = {}
    for line in client.search_read_all(
        models.invoice_line,
        [
            *([f"move_id.{name}", operator, value] for name, operator, value in move_domain),
            ["display_type", "=", "product"],
            ["subscription_id", "!=", False],
        ],
        ["move_id", "subscription_id", "price_total"],
    ):
        move_id = _many2one_id(line["move_id"])
        if move_id in moves:
            key = (move_id, _many2one_id(line["subscription_id"]))
            owed[key] = owed.get(key, 0) + dollars_to_cents(line["price_total"])
    rows = [
        (
            move_id,
            moves[move_id]["name"],
            subscription_id,
            _date(moves[move_id]["invoice_date_due"]),
            dollars_to_cents(moves[move_id]["amount_total"]),
            dollars_to_cents(moves[move_id]["amount_residual"]),
            cents,
        )
        for (move_id, subscription_id), cents in sorted(owed.items())
    ]
    return typed_frame(rows, OVERDUE_INVOICE_COLUMNS, lenient=True)


def fetch_lines_after(
    client: OdooClient, models: OdooModels, terminations: Mapping[int, date]
) -> pd.DataFrame:
    """Invoice lines of the given subscriptions whose service starts after their termination day.

    ``terminations`` maps a subscription to the local day its deployment was terminated. A line's
    service starts on its ``deferred_start_date``, or on its invoice's ``invoice_date`` when it has
    none (the rule that places a line in a period, §5); cancelled invoices and refunds do not bill.
    The subscriptions are read in lists of ``page_size`` ordered by termination day, each list only
    for the lines starting after its own earliest day, so years of terminations do not make every
    list read from the oldest one; each line is then judged against its own subscription's day.
    """
    if not terminations:
        return typed_frame([], LATER_LINE_COLUMNS)
    ordered = sorted(terminations, key=lambda subscription: (terminations[subscription], subscription))
    lines = []
    for start in range(0, len(ordered), client.page_size):
        chunk = ordered[start : start + client.page_size]
        earliest = terminations[chunk[0]].isoformat()
        domain = [
            ["subscription_id", "in", chunk],
            ["display_type", "=", "product"],
            ["move_id.move_type", "=", "out_invoice"],
            ["move_id.state", "!=", "cancel"],
            "|",
            ["deferred_start_date", ">", earliest],
            "&",
            ["deferred_start_date", "=", False],
            ["move_id.invoice_date", ">", earliest],
        ]
        lines.extend(
            client.search_read_all(
                models.invoice_line,
                domain,
                ["move_id", "subscription_id", "deferred_start_date", "price_total"],
            )
        )
    moves = {
        move["id"]: move
        for move in _read_by_ids(
            client,
            models.invoice,
            (_many2one_id(line["move_id"]) for line in lines),
            ["name", "invoice_date"],
        )
    }
    rows = []
    for line in lines:
        move = moves.get(_many2one_id(line["move_id"]))
        subscription_id = _many2one_id(line["subscription_id"])
        if move is None:
            continue  # cancelled, or removed, between the two reads
        start = _date(line.get("deferred_start_date")) or _date(move.get("invoice_date"))
        if start is not None and start > terminations[subscription_id]:
            rows.append((subscription_id, move["name"], start, dollars_to_cents(line["price_total"])))
    return typed_frame(sorted(rows), LATER_LINE_COLUMNS, lenient=True)


def fetch_plan_fees(
    client: OdooClient, models: OdooModels, subscription_ids: Iterable[int]
) -> dict[int, int]:
    """Each given subscription's monthly plan fee in cents: its plan line's unit price times quantity."""
    lines = [
        line
        for page in client.search_read_in(
            models.subscription_line,
            "order_id",
            subscription_ids,
            ["order_id", "product_id", "price_unit", "product_uom_qty"],
        )
        for line in page
    ]
    codes = _product_codes(client, models, (_many2one_id(line["product_id"]) for line in lines))
    fees: dict[int, int] = {}
    for line in lines:
        if codes.get(_many2one_id(line["product_id"]), "").startswith(models.products.plan_prefix):
            amount = Decimal(str(line["price_unit"])) * Decimal(str(line["product_uom_qty"] or 0))
            order_id = _many2one_id(line["order_id"])
            fees[order_id] = fees.get(order_id, 0) + dollars_to_cents(amount)
    return fees


def fetch_usage(client: OdooClient, models: OdooModels, window: PeriodWindow) -> pd.DataFrame:
    """The module's usage ledger summed by Odoo per subscription over the period.

    One group per subscription, not per local day: the days are read only for the subscriptions
    whose totals disagree with NexaCloud's (``fetch_usage_days``).
    """
    groups = _usage_groups(client, models, _usage_domain(models, window), ["subscription_id"], window)
    rows = [
        (
            _many2one_id(group["subscription_id"]),
            _milliseconds(group["quantity:sum"]),
            int(group["__count"]),
        )
        for group in groups
    ]
    frame = typed_frame(rows, ODOO_USAGE_COLUMNS, lenient=True)
    return frame.sort_values("subscription_id", ignore_index=True)


def fetch_usage_days(
    client: OdooClient,
    models: OdooModels,
    window: PeriodWindow,
    subscription_ids: Iterable[int],
    *,
    batch_size: int = BATCH_SIZE,
) -> pd.DataFrame:
    """The ledger of the given subscriptions only, summed by Odoo per subscription per local day.

    Subscriptions go in batches of ``subscription_id in [...]``, each batch's groups paged by the
    client; none given, no call. Day buckets are cut in the billing time zone.
    """
    wanted = sorted({int(subscription_id) for subscription_id in subscription_ids})
    rows = []
    for batch in _batches(wanted, batch_size):
        domain = [*_usage_domain(models, window), ["subscription_id", "in", batch]]
        groups = _usage_groups(client, models, domain, ["subscription_id", "timestamp:day"], window)
        rows += [
            (
                _many2one_id(group["subscription_id"]),
                _day_of_bucket(group["timestamp:day"], window),
                _milliseconds(group["quantity:sum"]),
            )
            for group in groups
        ]
    frame = typed_frame(rows, ODOO_USAGE_DAY_COLUMNS)
    return frame.sort_values(["subscription_id", "usage_date"], ignore_index=True)


LEDGER_SEGMENT_COLUMNS = {"subscription_id": INT, "usage_date": DATE, "records": INT, "cpu_milliseconds": INT}
LEDGER_RECORD_COLUMNS = {
    "id": INT,
    "subscription_id": INT,
    "idempotency_key": TEXT,
    "timestamp": UTC_TIMESTAMP,
    "cpu_milliseconds": INT,
}


def fetch_ledger_segments(client: OdooClient, models: OdooModels, window: PeriodWindow) -> pd.DataFrame:
    """The period's ledger per subscription and local day, counted and summed by Odoo.

    What the delivery check compares with NexaCloud's segments (docs/design.md §10): groups, never
    records, so a period without gaps costs only the group pages.
    """
    groups = _usage_groups(
        client, models, _usage_domain(models, window), ["subscription_id", "timestamp:day"], window
    )
    rows = [
        (
            _many2one_id(group["subscription_id"]),
            _day_of_bucket(group["timestamp:day"], window),
            int(group["__count"]),
            _milliseconds(group["quantity:sum"]),
        )
        for group in groups
    ]
    frame = typed_frame(rows, LEDGER_SEGMENT_COLUMNS)
    return frame.sort_values(["subscription_id", "usage_date"], ignore_index=True)


def fetch_ledger_records(
    client: OdooClient, models: OdooModels, window: PeriodWindow, segments: Iterable[tuple[int, date]]
) -> pd.DataFrame:
    """The ledger records of the given (subscription, local day) segments only.

    One domain per local day (its subscriptions as one ``in`` list, a page of them at a time), so
    the reads grow with the segments that disagree, not with the period.
    """
    by_day: dict[date, set[int]] = {}
    for subscription, day in segments:
        by_day.setdefault(day, set()).add(int(subscription))
    records = []
    for day, subscriptions in sorted(by_day.items()):
        domain = [
            ["metric", "=", models.usage_metric],
            ["timestamp", ">=", _odoo_datetime(local_midnight_utc(day, window.timezone))],
            ["timestamp", "<", _odoo_datetime(local_midnight_utc(day + timedelta(days=1), window.timezone))],
        ]
        for page in client.search_read_in(
            models.usage, "subscription_id", subscriptions, LEDGER_FIELDS, domain=domain
        ):
            records += page
    return _ledger_frame(records)


def fetch_ledger_by_keys(client: OdooClient, models: OdooModels, keys: Iterable[str]) -> pd.DataFrame:
    """The ledger records, in any period, that carry these idempotency keys."""
    domain = [["metric", "=", models.usage_metric]]
    records = [
        record
        for page in client.search_read_in(models.usage, "idempotency_key", keys, LEDGER_FIELDS, domain=domain)
        for record in page
    ]
    return _ledger_frame(records)


LEDGER_FIELDS = ["subscription_id", "idempotency_key", "timestamp", "quantity"]


def _ledger_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [
        (
            record["id"],
            _many2one_id(record["subscription_id"]),
            record["idempotency_key"] or None,
            _odoo_moment(record["timestamp"]),
            _milliseconds(record["quantity"]),
        )
        for record in records
    ]
    return typed_frame(rows, LEDGER_RECORD_COLUMNS)


def _odoo_moment(value: Any) -> datetime | None:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if value else None


def _usage_domain(models: OdooModels, window: PeriodWindow) -> list:
    return [
        ["metric", "=", models.usage_metric],
        ["timestamp", ">=", _odoo_datetime(window.start_utc)],
        ["timestamp", "<", _odoo_datetime(window.end_utc)],
    ]


def _usage_groups(
    client: OdooClient, models: OdooModels, domain: list, groupby: list[str], window: PeriodWindow
) -> list[dict[str, Any]]:
    try:
        return client.read_group(
            models.usage,
            domain,
            groupby=groupby,
            aggregates=["quantity:sum", "__count"],
            # Day buckets are cut in the time zone of the context: the billing time zone.
            context={**client.context, "tz": window.timezone},
        )
    except OdooError as error:
        if error.status == 404 or "does not exist" in str(error):
            raise OdooError(
                f"{error} The usage ledger model {models.usage!r} is provided by the Nexa billing module "
                f"({models.usage_module}); is it installed in this database?",
                status=error.status,
                error_name=error.error_name,
            ) from None
        raise


def fetch_invoices_and_lines(
    client: OdooClient, models: OdooModels, window: PeriodWindow
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customer invoices and refunds with at least one product line in the period.

    A line belongs to the period of its ``deferred_start_date``, or of its invoice's
    ``invoice_date`` when that is empty. Draft and posted invoices both count during dual-run;
    cancelled ones never do. Refund amounts are negated.
    """
    first = window.period - timedelta(days=models.invoice_days_before)
    last = window.last_day + timedelta(days=models.invoice_days_after)
    invoice_domain = [
        ["move_type", "in", ["out_invoice", "out_refund"]],
        ["state", "!=", "cancel"],
        ["invoice_date", ">=", first.isoformat()],
        ["invoice_date", "<=", last.isoformat()],
    ]
    moves = client.search_read_all(
        models.invoice,
        invoice_domain,
        [
            "name",
            "move_type",
            "state",
            "partner_id",
            "currency_id",
            "invoice_date",
            "invoice_origin",
            "amount_untaxed",
            "amount_tax",
            "amount_total",
        ],
    )
    by_id = {move["id"]: move for move in moves}
    # The lines of those invoices in one keyset read over the lines themselves, the invoices'
    # conditions reached through move_id: batches of invoice ids would cost a part-filled page
    # each. A line of an invoice created between the two reads belongs to no invoice read: left
    # for the next run, as its invoice is.
    line_records = [
        line
        for line in client.search_read_all(
            models.invoice_line,
            [
                *([f"move_id.{name}", operator, value] for name, operator, value in invoice_domain),
                ["display_type", "=", "product"],
            ],
            [
                "move_id",
                "product_id",
                "name",
                "quantity",
                "price_unit",
                "price_subtotal",
                "price_total",
                "subscription_id",
                "deferred_start_date",
                "deferred_end_date",
            ],
        )
        if _many2one_id(line["move_id"]) in by_id
    ]
    codes = _product_codes(client, models, (_many2one_id(line["product_id"]) for line in line_records))
    line_rows = []
    lines_untaxed: dict[int, int] = {}
    for line in line_records:
        move = by_id[_many2one_id(line["move_id"])]
        sign = -1 if move["move_type"] == "out_refund" else 1
        lines_untaxed[move["id"]] = lines_untaxed.get(move["id"], 0) + sign * dollars_to_cents(
            line["price_subtotal"]
        )
        deferred_start = _date(line.get("deferred_start_date"))
        line_period = (deferred_start or _date(move["invoice_date"])).replace(day=1)
        if line_period != window.period:
            continue
        subtotal = sign * dollars_to_cents(line["price_subtotal"])
        total = sign * dollars_to_cents(line["price_total"])
        line_rows.append(
            (
                line["id"],
                move["id"],
                codes.get(_many2one_id(line["product_id"])),
                _text(line.get("name")),
                Decimal(str(line["quantity"])),
                Decimal(str(line["price_unit"])),
                subtotal,
                total - subtotal,
                total,
                _many2one_id(line.get("subscription_id")),
                deferred_start,
                _date(line.get("deferred_end_date")),
                line_period,
            )
        )
    lines = typed_frame(line_rows, INVOICE_LINE_COLUMNS, lenient=True)
    in_period = set(lines["move_id"])
    invoice_rows = []
    for move in moves:
        if move["id"] not in in_period:
            continue
        sign = -1 if move["move_type"] == "out_refund" else 1
        invoice_rows.append(
            (
                move["id"],
                move["name"],
                move["move_type"],
                move["state"],
                _many2one_id(move["partner_id"]),
                _many2one_name(move["currency_id"]),
                _date(move["invoice_date"]),
                _text(move.get("invoice_origin")),
                sign * dollars_to_cents(move["amount_untaxed"]),
                sign * dollars_to_cents(move["amount_tax"]),
                sign * dollars_to_cents(move["amount_total"]),
                lines_untaxed.get(move["id"], 0),
            )
        )
    invoices = typed_frame(invoice_rows, INVOICE_COLUMNS, lenient=True)
    return invoices, lines


def _product_codes(
    client: OdooClient, models: OdooModels, product_ids: Iterable[int | None]
) -> dict[int, str]:
    records = _read_by_ids(client, models.product, product_ids, ["default_code"])
    return {record["id"]: record["default_code"] or "" for record in records}


def _read_by_ids(
    client: OdooClient, model: str, ids: Iterable[int | None], fields: Sequence[str]
) -> list[dict]:
    wanted = {int(i) for i in ids if i}
    return [record for page in client.search_read_in(model, "id", wanted, fields) for record in page]


def _batches(ids: Sequence[int], size: int = BATCH_SIZE) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def _many2one_id(value: Any) -> int | None:
    return int(value[0]) if value else None


def _many2one_name(value: Any) -> str | None:
    return str(value[1]) if value else None


def _text(value: Any) -> str | None:
    return value if value else None  # Odoo reads an empty char as false


def _date(value: Any) -> date | None:
    return date.fromisoformat(value[:10]) if value else None


def _odoo_datetime(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _milliseconds(quantity: Any) -> int:
    return int((Decimal(str(quantity)) * 1000).to_integral_value())


def _day_of_bucket(bucket: Any, window: PeriodWindow) -> date:
    """The local day of a ``timestamp:day`` group: ``[utc_start, label]``, the start in UTC."""
    start = datetime.strptime(bucket[0], "%Y-%m-%d %H:%M:%S")
    return local_day(start, window.timezone)
