"""The Odoo test double receives the importer's writes with Odoo 19's semantics (docs/design.md §9).

``load`` creates or updates by external id, in one transaction per call, all or nothing, with
Odoo's messages; ``create`` and ``write`` answer as Odoo does over JSON-2 and ``/jsonrpc``; the
reconciliation's user stays read-only, the importer's writes four models only, nobody deletes,
and a store opened read-only refuses every write. The double serves a SQLite file store here,
and a PostgreSQL one for the tests marked ``postgres``; what is written is read back with the
production client, as the reconciliation reads it. Expected ids and messages are worked out by
hand from the seed below and Odoo's sources (``BaseModel.load``, ``ir.fields.converter``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fusion_billing_assets.sandbox.odoo_models import (
    SANDBOX_API_KEY,
    SANDBOX_DATABASE,
    SANDBOX_IMPORTER_API_KEY,
    SANDBOX_IMPORTER_LOGIN,
    SANDBOX_IMPORTER_UID,
    SANDBOX_LOGIN,
    SANDBOX_UID,
)
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn
from fusion_billing_assets.sandbox.odoo_store import dump_models, load_models
from fusion_billing_assets.sources.odoo import OdooClient
from tests.conftest import throwaway_postgres_database

# Partners 1 and 5, a province with Odoo's external id, one subscription, an invoice, a usage
# record; customer_3's partner (99) was deleted, its external id left behind.
SEED: dict[str, list[dict[str, Any]]] = {
    "res.currency": [{"id": 1, "name": "CAD"}],
    "res.country.state": [{"id": 8, "name": "Ontario", "code": "ON"}],
    "sale.subscription.plan": [{"id": 1, "name": "Monthly"}],
    "res.partner": [
        {"id": 1, "name": "Acme Cloud", "ref": "NC1", "commercial_partner_id": 1},
        {"id": 5, "name": "Hand-made Ltd", "email": "ap@handmade.test"},
    ],
    "product.product": [{"id": 3, "name": "CPU overage", "default_code": "NC-CPU-OVERAGE"}],
    "sale.order": [{"id": 10, "name": "SUB-0010", "partner_id": 1}],
    "ir.model.data": [
        {"id": 1, "module": "base", "name": "state_ca_on", "model": "res.country.state", "res_id": 8},
        {"id": 2, "module": "nexacloud", "name": "customer_1", "model": "res.partner", "res_id": 1},
        {"id": 3, "module": "nexacloud", "name": "deployment_7", "model": "sale.order", "res_id": 10},
        {"id": 4, "module": "nexacloud", "name": "customer_3", "model": "res.partner", "res_id": 99},
    ],
    "account.move": [{"id": 1, "name": "INV/2026/00001", "partner_id": 1}],
    "fusion.billing.usage": [{"id": 1, "subscription_id": 10, "quantity": 5.0}],
}
PARTNER_COLUMNS = ["id", "name", "email", "ref", "is_company", "state_id/id"]
IMPORTER = {"api_key": SANDBOX_IMPORTER_API_KEY, "login": SANDBOX_IMPORTER_LOGIN}
RECONCILIATION = {"api_key": SANDBOX_API_KEY, "login": SANDBOX_LOGIN}
PROTOCOLS = ["json2", "jsonrpc"]


@pytest.fixture(scope="module")
def seeded_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "odoo.sqlite"
    load_models(f"sqlite:///{path}", SEED).dispose()
    return path


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """One PostgreSQL database for the module; each test seeds it afresh."""
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store holding the seed: a copy of a SQLite file, or (``BOTH_BACKENDS``) PostgreSQL too."""
    if getattr(request, "param", "sqlite") == "sqlite":
        path = tmp_path / "odoo.sqlite"
        shutil.copyfile(request.getfixturevalue("seeded_sqlite"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_database")
    load_models(url, SEED).dispose()  # tables dropped and made again
    return url


# The tests that run on PostgreSQL as well: what differs there is SQL (ids, NUMERIC, dates, rollback).
BOTH_BACKENDS = pytest.mark.parametrize(
    "store_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def app(store_url: str) -> Iterator[OdooStandIn]:
    standin = OdooStandIn.from_store(store_url, writable=True)
    yield standin
    standin.close()


@contextmanager
def odoo_client(
    app: OdooStandIn, protocol: str = "json2", user: dict[str, str] = IMPORTER
) -> Iterator[OdooClient]:
    """The production client, in-process, as the importer (or another user)."""
    with httpx.Client(base_url="http://odoo.test", transport=httpx.WSGITransport(app=app)) as http:
        yield OdooClient(http, protocol=protocol, database=SANDBOX_DATABASE, **user)


def load(app: OdooStandIn, model: str, fields: list[str], data: list[list[str]], **arguments: Any) -> dict:
    with odoo_client(app) as client:
        return client.call(model, "load", fields=fields, data=data, **arguments)


def read(app: OdooStandIn, model: str, fields: list[str], domain: list | None = None) -> list[dict[str, Any]]:
    with odoo_client(app, user=RECONCILIATION) as client:
        return client.search_read_all(model, domain or [], fields)


def xids(app: OdooStandIn) -> dict[str, tuple[str, int]]:
    """``module.name`` → (model, res_id) of every external id, read as the reconciliation reads them."""
    rows = read(app, "ir.model.data", ["module", "name", "model", "res_id"])
    return {f"{row['module']}.{row['name']}": (row["model"], row["res_id"]) for row in rows}


def json2(app: OdooStandIn, model: str, method: str, *, key: str = SANDBOX_IMPORTER_API_KEY, **arguments):
    with httpx.Client(base_url="http://odoo.test", transport=httpx.WSGITransport(app=app)) as http:
        return http.post(
            f"/json/2/{model}/{method}",
            json=arguments,
            headers={"Authorization": f"bearer {key}", "X-Odoo-Database": SANDBOX_DATABASE},
        )


def execute_kw(
    app: OdooStandIn,
    model: str,
    method: str,
    args: list,
    kwargs: dict | None = None,
    *,
    uid: int = SANDBOX_IMPORTER_UID,
    key: str = SANDBOX_IMPORTER_API_KEY,
) -> dict[str, Any]:
    """The JSON-RPC envelope of one ``object.execute_kw`` call."""
    params = {
        "service": "object",
        "method": "execute_kw",
        "args": [SANDBOX_DATABASE, uid, key, model, method, args, kwargs or {}],
    }
    with httpx.Client(base_url="http://odoo.test", transport=httpx.WSGITransport(app=app)) as http:
        response = http.post("/jsonrpc", json={"jsonrpc": "2.0", "method": "call", "params": params, "id": 1})
    assert response.status_code == 200, response.text
    return response.json()


def message(row: int, text: str, **keys: Any) -> dict[str, Any]:
    """One of load's messages as Odoo shapes it: the row it is about, twice, and its text."""
    return {"rows": {"from": row, "to": row}, "record": row, "type": "error", "message": text, **keys}


def not_found_action(model: str, *, by_name: bool = False) -> dict[str, Any]:
    """The "Possible Values" action Odoo attaches to a relation that matches nothing: the related
    model's records for a name, its external ids for an external or database id."""
    action = {
        "name": "Possible Values",
        "type": "ir.actions.act_window",
        "target": "new",
        "view_mode": "list,form",
        "views": [[False, "list"], [False, "form"]],
        "context": {"create": False},
        "help": "See all possible values",
    }
    if by_name:
        return {**action, "res_model": model}
    return {**action, "res_model": "ir.model.data", "domain": [["model", "=", model]]}


# --- load: creating and updating by external id ------------------------------------------------


@BOTH_BACKENDS
def test_load_creates_the_records_and_their_external_ids(app):
    answer = load(
        app,
        "res.partner",
        PARTNER_COLUMNS,
        [
            ["nexacloud.customer_2", "Globex", "billing@globex.test", "NC2", "1", "base.state_ca_on"],
            # Without a module the external id is __import__'s, as in Odoo.
            ["customer_4", "Initech", "", "NC4", "0", ""],
        ],
    )
    # Partners 1 and 5 exist: the new ones are 6 and 7, in row order.
    assert answer == {"ids": [6, 7], "messages": [], "nextrow": 0}
    assert xids(app) == {
        "base.state_ca_on": ("res.country.state", 8),
        "nexacloud.customer_1": ("res.partner", 1),
        "nexacloud.deployment_7": ("sale.order", 10),
        "nexacloud.customer_3": ("res.partner", 99),
        "nexacloud.customer_2": ("res.partner", 6),
        "__import__.customer_4": ("res.partner", 7),
    }
    partners = read(
        app, "res.partner", ["name", "email", "ref", "is_company", "state_id", "active"], [["id", ">", 5]]
    )
    assert partners == [
        {
            "id": 6,
            "name": "Globex",
            "email": "billing@globex.test",
            "ref": "NC2",
            "is_company": True,
            "state_id": [8, "Ontario"],
            "active": True,
        },
        {
            "id": 7,
            "name": "Initech",
            "email": False,
            "ref": "NC4",
            "is_company": False,
            "state_id": False,
            "active": True,
        },
    ]


@BOTH_BACKENDS
def test_a_second_identical_load_creates_nothing_and_answers_the_same_ids(app):
    rows = [
        ["nexacloud.customer_2", "Globex", "billing@globex.test", "NC2", "1", "base.state_ca_on"],
        ["nexacloud.customer_4", "Initech", "", "NC4", "0", ""],
    ]
    first = load(app, "res.partner", PARTNER_COLUMNS, rows)
    before = (read(app, "res.partner", ["name"]), xids(app))
    second = load(app, "res.partner", PARTNER_COLUMNS, rows)
    assert first == second == {"ids": [6, 7], "messages": [], "nextrow": 0}
    assert (read(app, "res.partner", ["name"]), xids(app)) == before


def test_an_existing_external_id_updates_its_record_with_the_given_columns_only(app):
    answer = load(
        app, "res.partner", ["id", "email", "is_company"], [["nexacloud.customer_1", "ap@acme.test", "yes"]]
    )
    assert answer == {"ids": [1], "messages": [], "nextrow": 0}
    [acme] = read(app, "res.partner", ["name", "ref", "email", "is_company"], [["id", "=", 1]])
    assert acme == {"id": 1, "name": "Acme Cloud", "ref": "NC1", "email": "ap@acme.test", "is_company": True}


def test_a_database_id_column_updates_that_record_and_an_unknown_one_is_an_error(app):
    assert load(app, "res.partner", [".id", "ref"], [["5", "NC5"]]) == {
        "ids": [5],
        "messages": [],
        "nextrow": 0,
    }
    assert read(app, "res.partner", ["ref"], [["id", "=", 5]]) == [{"id": 5, "ref": "NC5"}]
    answer = load(app, "res.partner", [".id", "ref"], [["999", "NC999"]])
    assert answer["ids"] is False
    assert answer["messages"] == [message(0, "Unknown database identifier '999'", field=".id")]


@BOTH_BACKENDS
def test_one_bad_row_among_good_ones_leaves_the_store_exactly_as_it_was(app, store_url):
    before = dump_models(store_url)
    answer = load(
        app,
        "product.product",
        ["id", "default_code", "name", "list_price"],
        [
            ["nexacloud.plan_starter", "NC-PLAN-starter", "Starter", "29.00"],
            ["nexacloud.plan_pro", "NC-PLAN-pro", "Pro", "12,50"],  # a decimal comma: not a number
            ["nexacloud.plan_max", "NC-PLAN-max", "Max", "199.00"],
        ],
    )
    assert answer == {
        "ids": False,
        "messages": [
            message(
                1,
                "'12,50' does not seem to be a number for field 'Sales Price'",
                field="list_price",
                field_name="Sales Price",
            )
        ],
        "nextrow": 0,
    }
    after = dump_models(store_url)
    assert after == before  # not even row 0, nor its external id
    assert (len(after["product.product"]), len(after["ir.model.data"])) == (1, 4)


def test_an_external_id_of_a_record_of_another_model_is_an_error(app):
    answer = load(
        app,
        "res.partner",
        ["id", "name"],
        [["nexacloud.customer_9", "Hooli"], ["nexacloud.deployment_7", "X"]],
    )
    assert answer["ids"] is False
    # Odoo's ValidationError from _load_records; ir.model.data row 3 holds deployment_7.
    assert answer["messages"] == [
        message(
            1,
            "For external id nexacloud.deployment_7 when trying to create/update a record of model "
            "res.partner found record of different model sale.order (3)",
        )
    ]
    assert "nexacloud.customer_9" not in xids(app)


@BOTH_BACKENDS
def test_a_deleted_records_external_id_is_repointed_to_a_new_record(app):
    answer = load(app, "res.partner", ["id", "name", "ref"], [["nexacloud.customer_3", "Umbrella", "NC3"]])
    assert answer == {"ids": [6], "messages": [], "nextrow": 0}
    assert xids(app)["nexacloud.customer_3"] == ("res.partner", 6)
    rows = read(app, "ir.model.data", ["res_id"], [["name", "=", "customer_3"]])
    assert [row["res_id"] for row in rows] == [6]  # one external id, on the new record


# --- load: relations -----------------------------------------------------------------------------


@BOTH_BACKENDS
def test_a_relation_by_external_id_finds_a_partner_loaded_in_an_earlier_call(app):
    assert load(app, "res.partner", ["id", "name"], [["nexacloud.customer_2", "Globex"]])["ids"] == [6]
    answer = load(
        app,
        "sale.order",
        ["id", "partner_id/id", "plan_id/.id", "is_subscription", "start_date", "currency_id/.id"],
        [["nexacloud.deployment_20", "nexacloud.customer_2", "1", "1", "2026-03-01", "1"]],
    )
    assert answer == {"ids": [11], "messages": [], "nextrow": 0}
    [order] = read(
        app, "sale.order", ["partner_id", "plan_id", "is_subscription", "start_date"], [["id", "=", 11]]
    )
    assert order == {
        "id": 11,
        "partner_id": [6, "Globex"],
        "plan_id": [1, "Monthly"],
        "is_subscription": True,
        "start_date": "2026-03-01",
    }


def test_lines_point_at_their_order_by_external_id(app):
    answer = load(
        app,
        "sale.order",
        ["id", "partner_id/id"],
        [["nexacloud.deployment_21", "nexacloud.customer_1"]],
    )
    assert answer["ids"] == [11]
    lines = load(
        app,
        "sale.order.line",
        ["id", "order_id/id", "product_id/.id", "price_unit", "product_uom_qty"],
        [
            ["nexacloud.deployment_21_fee", "nexacloud.deployment_21", "3", "49.0", "1"],
            ["nexacloud.deployment_7_cpu", "nexacloud.deployment_7", "3", "0.05", "0"],
        ],
    )
    assert lines == {"ids": [1, 2], "messages": [], "nextrow": 0}
    orders = read(app, "sale.order", ["order_line"], [["id", "in", [10, 11]]])
    assert orders == [{"id": 10, "order_line": [2]}, {"id": 11, "order_line": [1]}]


def test_a_row_may_point_at_a_record_an_earlier_row_of_the_same_call_made(app):
    answer = load(
        app,
        "res.partner",
        ["id", "name", "commercial_partner_id/id"],
        [
            ["nexacloud.customer_2", "Globex", ""],
            ["nexacloud.contact_2", "Jane at Globex", "nexacloud.customer_2"],
        ],
    )
    assert answer == {"ids": [6, 7], "messages": [], "nextrow": 0}
    assert read(app, "res.partner", ["commercial_partner_id"], [["id", "=", 7]]) == [
        {"id": 7, "commercial_partner_id": [6, "Globex"]}
    ]


def test_a_relation_by_name_matches_the_exact_display_name(app):
    answer = load(app, "sale.order", ["partner_id"], [["Hand-made Ltd"], ["Hand-made"]])
    assert answer["ids"] is False
    assert answer["messages"] == [
        message(
            1,
            "No matching record found for name 'Hand-made' in field 'Customer'",
            field="partner_id",
            moreinfo=not_found_action("res.partner", by_name=True),
            field_name="Customer",
        ),
        message(1, "Missing required value for the field 'Customer' (partner_id)", field="partner_id"),
    ]
    assert load(app, "sale.order", ["partner_id"], [["Hand-made Ltd"]])["ids"] == [11]
    assert read(app, "sale.order", ["partner_id"], [["id", "=", 11]]) == [
        {"id": 11, "partner_id": [5, "Hand-made Ltd"]}
    ]


def test_a_relation_that_does_not_resolve_is_an_error_message_in_odoos_words(app):
    answer = load(
        app,
        "sale.order",
        ["id", "partner_id/id"],
        [
            ["nexacloud.deployment_30", "nexacloud.customer_1"],
            ["nexacloud.deployment_31", "nexacloud.customer_404"],
        ],
    )
    assert answer["ids"] is False
    assert answer["messages"] == [
        message(
            1,
            "No matching record found for external id 'nexacloud.customer_404' in field 'Customer'",
            field="partner_id",
            moreinfo=not_found_action("res.partner"),
            field_name="Customer",
        ),
        # Without its customer the order cannot be created either, as in Odoo.
        message(1, "Missing required value for the field 'Customer' (partner_id)", field="partner_id"),
    ]


def test_an_external_id_counts_only_if_its_record_exists_in_the_related_model(app):
    # As Odoo's _xmlid_to_record_id joins the related table: customer_3's partner is gone, and
    # customer_1 names a partner, not an order (there is no sale.order 1).
    answer = load(
        app,
        "sale.order.line",
        ["order_id/id"],
        [["nexacloud.customer_1"], ["nexacloud.deployment_7"]],
    )
    assert answer["ids"] is False
    assert answer["messages"] == [
        message(
            0,
            "No matching record found for external id 'nexacloud.customer_1' in field 'Order Reference'",
            field="order_id",
            moreinfo=not_found_action("sale.order"),
            field_name="Order Reference",
        ),
        message(0, "Missing required value for the field 'Order Reference' (order_id)", field="order_id"),
    ]
    dangling = load(app, "sale.order", ["partner_id/id"], [["nexacloud.customer_3"]])
    assert dangling["messages"][0]["message"] == (
        "No matching record found for external id 'nexacloud.customer_3' in field 'Customer'"
    )


def test_a_relation_to_a_record_of_another_model_with_the_same_id_is_invalid(app):
    # deployment_7 is sale.order 10; res.partner 10 exists too, so Odoo finds the row and names the model.
    with odoo_client(app) as client:
        assert client.call("res.partner", "create", vals_list=[{"name": f"P{n}"} for n in range(6, 11)]) == [
            6,
            7,
            8,
            9,
            10,
        ]
    answer = load(app, "sale.order", ["partner_id/id"], [["nexacloud.deployment_7"]])
    assert answer["ids"] is False
    assert answer["messages"][0] == message(
        0,
        "Invalid external ID nexacloud.deployment_7: expected model 'res.partner', found 'sale.order'",
        field="partner_id",
    )


@pytest.mark.parametrize(
    ("model", "fields", "row", "text", "field"),
    [
        (
            "sale.order.line",
            ["id", "price_unit"],
            ["nexacloud.line_1", "49.0"],
            "Missing required value for the field 'Order Reference' (order_id)",
            "order_id",
        ),
        (
            "sale.order",
            ["id", "start_date"],
            ["nexacloud.deployment_40", "2026-03-01"],
            "Missing required value for the field 'Customer' (partner_id)",
            "partner_id",
        ),
        (
            # Emptying a required field of an existing record is refused as well.
            "sale.order",
            ["id", "partner_id/id"],
            ["nexacloud.deployment_7", ""],
            "Missing required value for the field 'Customer' (partner_id)",
            "partner_id",
        ),
    ],
)
def test_a_record_without_its_required_relation_is_an_error_message(app, model, fields, row, text, field):
    answer = load(app, model, fields, [row])
    assert answer == {"ids": False, "messages": [message(0, text, field=field)], "nextrow": 0}


# --- load: cells converted as Odoo's import converts them --------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("1", True), ("0", False), ("true", True), ("FALSE", False), ("Yes", True), ("no", False), ("", False)],
)
def test_boolean_cells(app, cell, expected):
    assert load(app, "res.partner", ["id", "is_company"], [["nexacloud.customer_1", cell]])["ids"] == [1]
    assert read(app, "res.partner", ["is_company"], [["id", "=", 1]]) == [{"id": 1, "is_company": expected}]


@pytest.mark.parametrize(
    ("cell", "expected"), [("29.00", 29.0), ("0.05", 0.05), ("1e2", 100.0), ("-3", -3.0), ("", 0.0)]
)
def test_number_cells(app, cell, expected):
    assert load(app, "product.product", ["id", "name", "list_price"], [["nexacloud.plan_x", "X", cell]])[
        "ids"
    ] == [4]
    assert read(app, "product.product", ["list_price"], [["id", "=", 4]]) == [
        {"id": 4, "list_price": expected}
    ]


@BOTH_BACKENDS
def test_date_cells_and_empty_cells(app):
    answer = load(
        app,
        "sale.order",
        ["id", "partner_id/id", "start_date", "end_date"],
        [["nexacloud.deployment_7", "nexacloud.customer_1", "2026-01-15", ""]],
    )
    assert answer["ids"] == [10]
    assert read(app, "sale.order", ["start_date", "end_date"], [["id", "=", 10]]) == [
        {"id": 10, "start_date": "2026-01-15", "end_date": False}
    ]


@pytest.mark.parametrize(
    ("model", "column", "cell", "text", "details"),
    [
        (
            "res.partner",
            "is_company",
            "maybe",
            "Unknown value 'maybe' for boolean field 'Is a Company'",
            {"moreinfo": "Use '1' for yes and '0' for no", "field_name": "Is a Company"},
        ),
        (
            "product.product",
            "list_price",
            "$29",
            "'$29' does not seem to be a number for field 'Sales Price'",
            {"field_name": "Sales Price"},
        ),
        (
            "sale.order",
            "start_date",
            "2026-02-30",
            "'2026-02-30' does not seem to be a valid date for field 'Start Date'",
            {"moreinfo": "Use the format '2012-12-31'", "field_name": "Start Date"},
        ),
        (
            "sale.order",
            "start_date",
            "15/01/2026",
            "'15/01/2026' does not seem to be a valid date for field 'Start Date'",
            {"moreinfo": "Use the format '2012-12-31'", "field_name": "Start Date"},
        ),
    ],
)
def test_a_cell_that_does_not_convert_is_an_error_message_naming_its_field(
    app, store_url, model, column, cell, text, details
):
    before = dump_models(store_url)
    xid = {
        "res.partner": "nexacloud.customer_1",
        "product.product": "nexacloud.plan_x",
        "sale.order": "nexacloud.deployment_7",
    }[model]
    answer = load(app, model, ["id", column], [[xid, cell]])
    assert answer == {"ids": False, "messages": [message(0, text, field=column, **details)], "nextrow": 0}
    assert dump_models(store_url) == before


# --- load: what is not a message ---------------------------------------------------------------


def test_an_unknown_column_is_a_500_value_error_over_json2_and_an_error_envelope_over_jsonrpc(app):
    response = json2(
        app, "product.product", "load", fields=["id", "plan_fee"], data=[["nexacloud.plan_x", "9"]]
    )
    assert response.status_code == 500
    body = response.json()
    assert (body["name"], body["message"]) == ("builtins.ValueError", "Invalid field name 'plan_fee'")

    envelope = execute_kw(app, "product.product", "load", [["id", "plan_fee"], [["nexacloud.plan_x", "9"]]])
    assert envelope["error"]["code"] == 0
    assert envelope["error"]["message"] == "Odoo Server Error"
    assert envelope["error"]["data"]["name"] == "builtins.ValueError"
    assert envelope["error"]["data"]["message"] == "Invalid field name 'plan_fee'"
    assert read(app, "product.product", ["name"]) == [{"id": 3, "name": "CPU overage"}]


def test_one2many_columns_are_refused_with_the_way_to_load_lines(app):
    response = json2(app, "sale.order", "load", fields=["id", "order_line/price_unit"], data=[["x", "1"]])
    assert response.status_code == 422
    assert "order_id/id" in response.json()["message"]


# --- create and write --------------------------------------------------------------------------


@BOTH_BACKENDS
def test_create_and_write_answer_as_odoo_does_over_both_protocols(app):
    one = json2(app, "res.partner", "create", vals_list={"name": "Hooli", "is_company": True, "state_id": 8})
    assert (one.status_code, one.json()) == (200, [6])  # JSON-2: a list of ids, even for one record
    many = json2(app, "res.partner", "create", vals_list=[{"name": "Pied Piper"}, {"name": "Raviga"}])
    assert many.json() == [7, 8]
    assert json2(app, "res.partner", "write", ids=[6, 7], vals={"email": "ap@hooli.test"}).json() is True

    assert execute_kw(app, "res.partner", "create", [{"name": "Aviato"}])["result"] == 9  # one dict: its id
    assert execute_kw(app, "res.partner", "create", [[{"name": "Bachmanity"}]])["result"] == [10]
    assert execute_kw(app, "res.partner", "create", [], {"vals_list": {"name": "Endframe"}})["result"] == 11
    assert execute_kw(app, "res.partner", "write", [[9], {"ref": "AV"}])["result"] is True

    partners = read(app, "res.partner", ["name", "email", "ref", "is_company", "state_id"], [["id", ">", 5]])
    assert [(p["id"], p["name"], p["email"], p["ref"]) for p in partners] == [
        (6, "Hooli", "ap@hooli.test", False),
        (7, "Pied Piper", "ap@hooli.test", False),
        (8, "Raviga", False, False),
        (9, "Aviato", False, "AV"),
        (10, "Bachmanity", False, False),
        (11, "Endframe", False, False),
    ]
    assert (partners[0]["is_company"], partners[0]["state_id"]) == (True, [8, "Ontario"])
    assert len(xids(app)) == 4  # neither creates external ids


def test_write_renames_and_the_display_name_follows(app):
    assert (
        json2(app, "sale.order", "write", ids=[10], vals={"name": "S00100", "partner_id": 5}).json() is True
    )
    assert read(app, "sale.order", ["name", "display_name", "partner_id"]) == [
        {"id": 10, "name": "S00100", "display_name": "S00100", "partner_id": [5, "Hand-made Ltd"]}
    ]
    assert read(app, "ir.model.data", ["res_id"], [["name", "=", "deployment_7"]]) == [
        {"id": 3, "res_id": 10}
    ]


@pytest.mark.parametrize(
    ("method", "arguments", "status", "name", "text"),
    [
        (
            "write",
            {"ids": [10, 404], "vals": {"name": "x"}},
            404,
            "odoo.exceptions.MissingError",
            "sale.order(404,)",
        ),
        (
            "write",
            {"ids": [10], "vals": {"plan_fee": 1}},
            500,
            "builtins.ValueError",
            "Invalid field 'plan_fee' in 'sale.order'",
        ),
        (
            "create",
            {"vals_list": [{"plan_fee": 1}]},
            500,
            "builtins.ValueError",
            "Invalid field 'plan_fee' in 'sale.order'",
        ),
        (
            "create",
            {"vals_list": [{"name": "x"}]},
            422,
            "odoo.exceptions.ValidationError",
            "'Customer' (partner_id)",
        ),
        (
            "create",
            {"vals_list": [{"partner_id": 404}]},
            422,
            "odoo.exceptions.ValidationError",
            "res.partner(404,)",
        ),
        (
            "write",
            {"ids": [10], "vals": {"partner_id": False}},
            422,
            "odoo.exceptions.ValidationError",
            "(partner_id)",
        ),
        (
            "create",
            {"vals_list": [{"partner_id": 1, "start_date": "soon"}]},
            500,
            "builtins.ValueError",
            "soon",
        ),
    ],
)
def test_a_create_or_write_odoo_would_refuse_is_refused_and_leaves_nothing(
    app, store_url, method, arguments, status, name, text
):
    before = dump_models(store_url)
    response = json2(app, "sale.order", method, **arguments)
    assert response.status_code == status, response.text
    assert response.json()["name"] == name
    assert text in response.json()["message"]
    assert dump_models(store_url) == before


def test_a_create_of_several_records_is_one_transaction(app, store_url):
    before = dump_models(store_url)
    response = json2(app, "sale.order", "create", vals_list=[{"partner_id": 1}, {"name": "no customer"}])
    assert response.status_code == 422
    assert dump_models(store_url) == before


# --- sale.order names ------------------------------------------------------------------------


@BOTH_BACKENDS
def test_sale_orders_created_without_a_name_are_named_by_odoos_sequence(app):
    # SUB-0010 is not a sequence name: the first is S00001.
    assert load(
        app,
        "sale.order",
        ["id", "partner_id/id"],
        [["d1", "nexacloud.customer_1"], ["d2", "nexacloud.customer_1"]],
    )["ids"] == [11, 12]
    assert json2(app, "sale.order", "create", vals_list=[{"partner_id": 5}]).json() == [13]
    assert json2(app, "sale.order", "create", vals_list=[{"partner_id": 5, "name": "S00041"}]).json() == [14]
    assert json2(app, "sale.order", "create", vals_list=[{"partner_id": 5}]).json() == [15]
    orders = read(app, "sale.order", ["name", "display_name"])
    assert [(o["id"], o["name"], o["display_name"]) for o in orders] == [
        (10, "SUB-0010", "SUB-0010"),
        (11, "S00001", "S00001"),
        (12, "S00002", "S00002"),
        (13, "S00003", "S00003"),
        (14, "S00041", "S00041"),
        (15, "S00042", "S00042"),  # after the highest, not the count
    ]


# --- who may write what -------------------------------------------------------------------------

WRITES = [
    (
        "load",
        {"fields": ["id", "name"], "data": [["nexacloud.customer_9", "Hooli"]]},
        [["id", "name"], [["x", "y"]]],
        {},
    ),
    ("create", {"vals_list": [{"name": "Hooli"}]}, [[{"name": "Hooli"}]], {}),
    ("write", {"ids": [1], "vals": {"name": "Hacked"}}, [[1], {"name": "Hacked"}], {}),
]


@pytest.mark.parametrize(("method", "named", "args", "kwargs"), WRITES)
def test_the_reconciliation_user_stays_read_only(app, store_url, method, named, args, kwargs):
    before = dump_models(store_url)
    response = json2(app, "res.partner", method, key=SANDBOX_API_KEY, **named)
    assert response.status_code == 403
    assert response.json()["name"] == "odoo.exceptions.AccessError"
    assert "read-only" in response.json()["message"]
    envelope = execute_kw(app, "res.partner", method, args, kwargs, uid=SANDBOX_UID, key=SANDBOX_API_KEY)
    assert envelope["error"]["data"]["name"] == "odoo.exceptions.AccessError"
    assert dump_models(store_url) == before


@pytest.mark.parametrize(
    ("model", "method", "arguments"),
    [
        ("account.move", "load", {"fields": ["id", "name"], "data": [["nexacloud.inv_1", "INV/2026/9"]]}),
        ("account.move", "create", {"vals_list": [{"name": "INV/2026/9"}]}),
        ("account.move.line", "create", {"vals_list": [{"name": "line"}]}),
        ("fusion.billing.usage", "load", {"fields": ["metric"], "data": [["cpu_seconds"]]}),
        ("fusion.billing.usage", "create", {"vals_list": [{"metric": "cpu_seconds"}]}),
        ("fusion.billing.usage", "write", {"ids": [1], "vals": {"quantity": 9.0}}),
        ("ir.model.data", "create", {"vals_list": [{"module": "nexacloud", "name": "x"}]}),
        ("res.partner", "unlink", {"ids": [5]}),
        ("sale.order", "unlink", {"ids": [10]}),
        ("res.partner", "copy", {"ids": [1]}),
    ],
)
def test_the_importer_writes_its_four_models_only_and_deletes_nothing(
    app, store_url, model, method, arguments
):
    before = dump_models(store_url)
    response = json2(app, model, method, **arguments)
    assert response.status_code == 403, response.text
    assert response.json()["name"] == "odoo.exceptions.AccessError"
    assert model in response.json()["message"]
    assert dump_models(store_url) == before


def test_the_jsonrpc_importer_logs_in_and_is_refused_what_json2_refuses(app):
    with odoo_client(app, "jsonrpc") as client:
        assert client.call(
            "res.partner", "load", fields=["id", "name"], data=[["nexacloud.customer_9", "Hooli"]]
        ) == {
            "ids": [6],
            "messages": [],
            "nextrow": 0,
        }
    refused = execute_kw(app, "account.move", "create", [{"name": "INV/2026/9"}])
    assert refused["error"]["data"]["name"] == "odoo.exceptions.AccessError"
    wrong_key = execute_kw(app, "res.partner", "create", [{"name": "x"}], key="guess")
    assert wrong_key["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"


@BOTH_BACKENDS
def test_a_store_opened_read_only_refuses_every_write_and_still_reads(store_url):
    app = OdooStandIn.from_store(store_url)  # read-only unless writable=True
    try:
        before = dump_models(store_url)
        response = json2(
            app, "res.partner", "load", fields=["id", "name"], data=[["nexacloud.customer_9", "Hooli"]]
        )
        assert response.status_code == 403
        assert response.json()["name"] == "odoo.exceptions.AccessError"
        assert "opened read-only" in response.json()["message"]
        assert "writable=True" in response.json()["message"]
        assert json2(app, "res.partner", "create", vals_list={"name": "x"}).status_code == 403
        assert dump_models(store_url) == before
        assert read(app, "res.partner", ["name"]) == [
            {"id": 1, "name": "Acme Cloud"},
            {"id": 5, "name": "Hand-made Ltd"},
        ]
    finally:
        app.close()


def test_an_in_memory_double_is_writable():
    app = OdooStandIn({"res.partner": [{"id": 1, "name": "Acme"}]})
    assert load(app, "res.partner", ["id", "name"], [["nexacloud.customer_2", "Globex"]])["ids"] == [2]
    assert xids(app) == {"nexacloud.customer_2": ("res.partner", 2)}


def test_writes_are_counted_like_any_call(app):
    load(app, "res.partner", ["id", "name"], [["nexacloud.customer_9", "Hooli"]])
    json2(app, "res.partner", "create", vals_list={"name": "x"})
    json2(app, "res.partner", "write", ids=[1], vals={"ref": "NC1"})
    json2(app, "account.move", "create", vals_list={"name": "refused"})
    assert {
        key: app.requests[key] for key in ("res.partner.load", "res.partner.create", "res.partner.write")
    } == {
        "res.partner.load": 1,
        "res.partner.create": 1,
        "res.partner.write": 1,
    }
    assert app.requests["account.move.create"] == 1  # counted, though refused
