"""The slice of Odoo 19's data model that the Odoo test double serves (docs/design.md §5).

Records are plain dicts keyed by field name, as the sandbox generator writes them to
``odoo.json``: ``id`` is an int; a many2one holds the related id or ``None``; a one2many or
many2many holds a list of ids (a one2many is derived from its inverse many2one when absent);
dates are ``"YYYY-MM-DD"`` and datetimes ``"YYYY-MM-DD HH:MM:SS"`` in UTC; numbers are
floats; empty values are ``None``. The test double renders them as Odoo does on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    type: str  # char, text, selection, integer, float, monetary, boolean, date, datetime,
    # many2one, one2many, many2many
    relation: str | None = None
    inverse: str | None = None


CHAR = Field("char")
SELECTION = Field("selection")
INTEGER = Field("integer")
FLOAT = Field("float")
MONETARY = Field("monetary")
BOOLEAN = Field("boolean")
DATE = Field("date")
DATETIME = Field("datetime")


def many2one(relation: str) -> Field:
    return Field("many2one", relation=relation)


def one2many(relation: str, inverse: str) -> Field:
    return Field("one2many", relation=relation, inverse=inverse)


# Every model has ``id`` (integer) and ``display_name`` (char, derived from ``name``) as well.
MODELS: dict[str, dict[str, Field]] = {
    "ir.model.data": {
        "module": CHAR,
        "name": CHAR,
        "model": CHAR,
        "res_id": INTEGER,
    },
    "res.currency": {
        "name": CHAR,
    },
    "res.partner": {
        "name": CHAR,
        "ref": CHAR,
        "email": CHAR,
        "commercial_partner_id": many2one("res.partner"),
        "active": BOOLEAN,
    },
    "product.product": {
        "name": CHAR,
        "default_code": CHAR,
    },
    "sale.subscription.plan": {
        "name": CHAR,
    },
    "sale.order": {
        "name": CHAR,
        "partner_id": many2one("res.partner"),
        "is_subscription": BOOLEAN,
        "plan_id": many2one("sale.subscription.plan"),
        "subscription_state": SELECTION,
        "start_date": DATE,
        "end_date": DATE,
        "currency_id": many2one("res.currency"),
        "order_line": one2many("sale.order.line", "order_id"),
    },
    "sale.order.line": {
        "name": CHAR,
        "order_id": many2one("sale.order"),
        "product_id": many2one("product.product"),
        "price_unit": FLOAT,
        "product_uom_qty": FLOAT,
    },
    "fusion.billing.usage": {
        "name": CHAR,
        "subscription_id": many2one("sale.order"),
        "metric": CHAR,
        "quantity": FLOAT,
        "idempotency_key": CHAR,
        "timestamp": DATETIME,
    },
    "account.move": {
        "name": CHAR,
        "move_type": SELECTION,
        "state": SELECTION,
        "partner_id": many2one("res.partner"),
        "currency_id": many2one("res.currency"),
        "invoice_date": DATE,
        "invoice_origin": CHAR,
        "amount_untaxed": MONETARY,
        "amount_tax": MONETARY,
        "amount_total": MONETARY,
        "invoice_line_ids": one2many("account.move.line", "move_id"),
    },
    "account.move.line": {
        "name": CHAR,
        "move_id": many2one("account.move"),
        "display_type": SELECTION,
        "product_id": many2one("product.product"),
        "quantity": FLOAT,
        "price_unit": FLOAT,
        "price_subtotal": MONETARY,
        "price_total": MONETARY,
        "subscription_id": many2one("sale.order"),
        "deferred_start_date": DATE,
        "deferred_end_date": DATE,
    },
}

# Credentials of the sandbox's Odoo test double. They open nothing real; production reads
# ODOO_DATABASE / ODOO_API_KEY / ODOO_LOGIN from the environment.
SANDBOX_DATABASE = "nexa-sandbox"
SANDBOX_LOGIN = "reconciliation-bot"
SANDBOX_API_KEY = "sandbox-read-only-key"
SANDBOX_UID = 2
