"""The slice of Odoo 19's data model that the Odoo test double serves (docs/design.md §5).

What the reconciliation reads (§5.3), what the importer writes (§9), and the lifecycle states of
both systems' control loop (§11): a subscription's ``subscription_state`` and ``end_date``, and an
invoice's ``payment_state``, ``invoice_date_due`` and ``amount_residual``, with Odoo 19's values.

Records are plain dicts keyed by field name, in the storage format the sandbox generator writes
to the double's store (``sandbox.odoo_store``): ``id`` is an int; a many2one holds the related id or ``None``; a one2many or
many2many holds a list of ids (a one2many is derived from its inverse many2one when absent);
dates are ``"YYYY-MM-DD"`` and datetimes ``"YYYY-MM-DD HH:MM:SS"`` in UTC; numbers are
floats; empty values are ``None``. The test double renders them as Odoo does on the wire.

A field added to the slice after a store was made holds NULL in that store's records, as a column
Odoo adds on a module update does; a field with a ``default`` (``active``) reads as its default
there. ``required`` and ``string`` matter to writes only (``load``, ``create``, ``write``): the
double refuses a record without its required fields, and names a field by its ``string`` in
messages, as Odoo does; records given to the double directly are not checked for them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    type: str  # char, text, selection, integer, float, monetary, boolean, date, datetime,
    # many2one, one2many, many2many
    relation: str | None = None
    inverse: str | None = None
    required: bool = False
    string: str | None = None  # the label; derived from the name when None
    default: object = None  # what a record that never set the field holds (``active``: True)

    def label(self, name: str) -> str:
        """The label of this field under ``name``, as ``fields_get`` gives it and ``load`` quotes it."""
        if self.string is not None:
            return self.string
        return name.removesuffix("_ids").removesuffix("_id").replace("_", " ").title()


CHAR = Field("char")
SELECTION = Field("selection")
INTEGER = Field("integer")
FLOAT = Field("float")
MONETARY = Field("monetary")
BOOLEAN = Field("boolean")
DATE = Field("date")
DATETIME = Field("datetime")
ACTIVE = Field("boolean", default=True)


def many2one(relation: str, *, required: bool = False, string: str | None = None) -> Field:
    return Field("many2one", relation=relation, required=required, string=string)


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
    "res.country.state": {
        "name": CHAR,
        "code": CHAR,
    },
    "res.partner": {
        "name": CHAR,
        "ref": CHAR,
        "email": CHAR,
        "commercial_partner_id": many2one("res.partner"),
        "active": ACTIVE,
        "is_company": Field("boolean", string="Is a Company"),
        "state_id": many2one("res.country.state", string="State"),
    },
    "product.product": {
        "name": CHAR,
        "default_code": CHAR,
        "list_price": Field("float", string="Sales Price"),
        "active": ACTIVE,
    },
    "sale.subscription.plan": {
        "name": CHAR,
    },
    "sale.order": {
        "name": CHAR,
        "partner_id": many2one("res.partner", required=True, string="Customer"),
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
        "order_id": many2one("sale.order", required=True, string="Order Reference"),
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
        # Payment (docs/design.md §11): not_paid, partial, in_payment, paid or reversed; the due
        # date of the payment terms; what is still owed, in the invoice's currency.
        "payment_state": Field("selection", string="Payment Status"),
        "invoice_date_due": Field("date", string="Due Date"),
        "amount_residual": Field("monetary", string="Amount Due"),
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

# Odoo's description of each model (``ir.model``'s name), as its API documentation shows it.
MODEL_NAMES: dict[str, str] = {
    "ir.model.data": "Model Data",
    "res.currency": "Currency",
    "res.country.state": "Country state",
    "res.partner": "Contact",
    "product.product": "Product Variant",
    "sale.subscription.plan": "Subscription Plan",
    "sale.order": "Sales Order",
    "sale.order.line": "Sales Order Line",
    "fusion.billing.usage": "Billing Usage",
    "account.move": "Journal Entry",
    "account.move.line": "Journal Item",
}
# The Odoo module that brings each model.
MODEL_MODULES: dict[str, str] = {
    "ir.model.data": "base",
    "res.currency": "base",
    "res.country.state": "base",
    "res.partner": "base",
    "product.product": "product",
    "sale.subscription.plan": "sale_subscription",
    "sale.order": "sale",
    "sale.order.line": "sale",
    "fusion.billing.usage": "fusion_billing",
    "account.move": "account",
    "account.move.line": "account",
}

# The importer's user (docs/design.md §9): reads everything, and writes (``load``, ``create``,
# ``write``) these models only; nothing is ever deleted.
SANDBOX_IMPORTER_LOGIN = "nexacloud-importer"
SANDBOX_IMPORTER_API_KEY = "sandbox-importer-key"
SANDBOX_IMPORTER_UID = 3
SANDBOX_IMPORTER_MODELS = frozenset({"res.partner", "product.product", "sale.order", "sale.order.line"})

# NexaCloud's metering (docs/design.md §10): pushes usage to ``POST /usage``, to the subscriptions
# of imported customers only (a ``sale.order`` subscription whose partner has an external id in
# module ``nexacloud``), and does nothing else: no model method, read or write, over JSON-2 or
# ``/jsonrpc``.
SANDBOX_METERING_LOGIN = "nexacloud-metering"
SANDBOX_METERING_API_KEY = "sandbox-metering-key"
SANDBOX_METERING_UID = 4
# Contract v1 of ``/usage``: the metrics it takes, and the most records one batch may hold.
USAGE_METRICS = frozenset({"cpu_seconds"})
USAGE_BATCH_LIMIT = 1000
