"""The Odoo test double holds the Odoo 19 wire contract of docs/design.md §5.

JSON-2 (``POST /json/2/<model>/<method>``: bare results, errors as
``{name, message, arguments, context, debug}`` with 401/403/404/405/422/500, a wrong database as
an HTML 404), legacy ``/jsonrpc`` (errors inside HTTP 200), Odoo's rendering of records and
groups, domains, and keyset paging. Every query is made through httpx, in-process
(``httpx.WSGITransport``) and over a real HTTP port (``serving``), as the production client does,
to the double serving its records from in-memory SQLite and from a PostgreSQL store
(``@pytest.mark.postgres``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from fusion_billing_assets.sandbox.odoo_models import (
    SANDBOX_API_KEY,
    SANDBOX_DATABASE,
    SANDBOX_LOGIN,
    SANDBOX_UID,
)
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn, serving
from fusion_billing_assets.sandbox.odoo_store import load_models
from tests.conftest import throwaway_postgres_database

HEADERS = {"Authorization": f"bearer {SANDBOX_API_KEY}", "X-Odoo-Database": SANDBOX_DATABASE}
ERROR_KEYS = {"name", "message", "arguments", "context", "debug"}
TRANSPORTS = ["in-process", "http-port"]

# A small Odoo: four partners (one archived, one without ref), three subscriptions, a usage
# ledger around the end of daylight saving time in Toronto (2026-11-01 02:00 EDT → 01:00 EST),
# and two invoices, one of them with every number left empty.
RECORDS: dict[str, list[dict[str, Any]]] = {
    "res.currency": [{"id": 1, "name": "CAD"}, {"id": 2, "name": "USD"}],
    "res.partner": [
        {
            "id": 1,
            "name": "Acme Cloud",
            "ref": "nc-1",
            "email": "billing@acme.test",
            "commercial_partner_id": 1,
        },
        {"id": 2, "name": "Globex", "ref": "nc-2", "email": None, "commercial_partner_id": 2},
        {"id": 3, "name": "Initech", "ref": None, "email": "ap@initech.test", "commercial_partner_id": 3},
        {"id": 4, "name": "Umbrella", "ref": "nc-4", "email": None, "active": False},
    ],
    "ir.model.data": [
        {"id": 1, "module": "nexacloud", "name": "customer_1", "model": "res.partner", "res_id": 1},
        {"id": 2, "module": "nexacloud", "name": "deployment_7", "model": "sale.order", "res_id": 10},
    ],
    "product.product": [
        {"id": 1, "name": "Starter plan", "default_code": "NC-PLAN-starter"},
        {"id": 2, "name": "CPU overage", "default_code": "NC-CPU-OVERAGE"},
    ],
    "sale.subscription.plan": [{"id": 1, "name": "Monthly"}],
    "sale.order": [
        {
            "id": 10,
            "name": "SUB-0010",
            "partner_id": 1,
            "is_subscription": True,
            "plan_id": 1,
            "subscription_state": "3_progress",
            "start_date": "2026-01-15",
            "end_date": None,
            "currency_id": 1,
        },
        {
            "id": 11,
            "name": "SUB-0011",
            "partner_id": 2,
            "is_subscription": True,
            "plan_id": 1,
            "subscription_state": "6_churn",
            "start_date": "2026-02-01",
            "end_date": "2026-10-31",
            "currency_id": 1,
        },
        {
            "id": 12,
            "name": "SUB-0012",
            "partner_id": 3,
            "is_subscription": True,
            "plan_id": None,
            "subscription_state": "3_progress",
            "start_date": "2026-03-01",
            "currency_id": 2,
        },
    ],
    "sale.order.line": [
        {
            "id": 100,
            "name": "Starter",
            "order_id": 10,
            "product_id": 1,
            "price_unit": 49.0,
            "product_uom_qty": 1.0,
        },
        {
            "id": 101,
            "name": "CPU",
            "order_id": 10,
            "product_id": 2,
            "price_unit": 0.05,
            "product_uom_qty": 0.0,
        },
        {
            "id": 102,
            "name": "Starter",
            "order_id": 11,
            "product_id": 1,
            "price_unit": 49.0,
            "product_uom_qty": 1.0,
        },
    ],
    "fusion.billing.usage": [
        # subscription 10, across the DST change (Toronto local time in the comments)
        {
            "id": 1000,
            "subscription_id": 10,
            "quantity": 0.1,
            "timestamp": "2026-10-31 12:00:00",
        },  # Oct 31 08:00
        {
            "id": 1001,
            "subscription_id": 10,
            "quantity": 0.2,
            "timestamp": "2026-11-01 03:59:59",
        },  # Oct 31 23:59
        {
            "id": 1002,
            "subscription_id": 10,
            "quantity": 1.5,
            "timestamp": "2026-11-01 04:00:00",
        },  # Nov 1 00:00 EDT
        {
            "id": 1003,
            "subscription_id": 10,
            "quantity": 2.25,
            "timestamp": "2026-11-02 04:59:59",
        },  # Nov 1 23:59 EST
        {
            "id": 1004,
            "subscription_id": 10,
            "quantity": 3.0,
            "timestamp": "2026-11-02 05:00:00",
        },  # Nov 2 00:00 EST
        # subscription 11, across the start of October
        {"id": 1005, "subscription_id": 11, "quantity": 7.0, "timestamp": "2026-10-01 03:59:59"},  # Sep 30
        {"id": 1006, "subscription_id": 11, "quantity": 0.7, "timestamp": "2026-10-01 04:00:00"},  # Oct 1
        {"id": 1007, "subscription_id": 11, "quantity": None, "timestamp": "2026-10-15 10:00:00"},
        # a push that lost its subscription
        {"id": 1008, "subscription_id": None, "quantity": 5.0, "timestamp": "2026-10-20 00:00:00"},
    ],
    "account.move": [
        {
            "id": 500,
            "name": "INV/2026/00001",
            "move_type": "out_invoice",
            "state": "posted",
            "partner_id": 1,
            "currency_id": 1,
            "invoice_date": "2026-11-01",
            "invoice_origin": "SUB-0010",
            "amount_untaxed": 55.37,
            "amount_tax": 7.2,
            "amount_total": 62.57,
        },
        {"id": 501, "name": None, "move_type": "out_refund", "state": "draft", "partner_id": 2},
    ],
    "account.move.line": [
        {
            "id": 600,
            "move_id": 500,
            "display_type": "product",
            "product_id": 1,
            "name": "Starter plan",
            "quantity": 1.0,
            "price_unit": 49.0,
            "price_subtotal": 49.0,
            "price_total": 55.37,
            "subscription_id": 10,
            "deferred_start_date": "2026-10-01",
            "deferred_end_date": "2026-10-31",
        },
        {
            "id": 601,
            "move_id": 500,
            "display_type": "product",
            "product_id": 2,
            "name": "CPU overage",
            "quantity": 127.4,
            "price_unit": 0.05,
            "price_subtotal": 6.37,
            "price_total": 7.2,
            "subscription_id": 10,
            "deferred_start_date": "2026-11-01",
        },
        {"id": 602, "move_id": 501, "display_type": "product", "name": "Credit"},
    ],
}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@contextmanager
def standin_on(backend: str, models: dict[str, list[dict[str, Any]]]) -> Iterator[OdooStandIn]:
    """The double serving ``models``: loaded into in-memory SQLite, or into a PostgreSQL store."""
    if backend == "sqlite":
        yield OdooStandIn(models)
        return
    with throwaway_postgres_database() as url:
        load_models(url, models).dispose()
        app = OdooStandIn.from_store(url)
        try:
            yield app
        finally:
            app.close()


@pytest.fixture(scope="module")
def odoo_app(backend: str) -> Iterator[OdooStandIn]:
    with standin_on(backend, RECORDS) as app:
        yield app


@pytest.fixture
def make_standin(backend: str) -> Iterator[Callable[[dict[str, list[dict[str, Any]]]], OdooStandIn]]:
    """A double of the test's own on the module's backend."""
    with ExitStack() as stack:
        yield lambda models: stack.enter_context(standin_on(backend, models))


@pytest.fixture(scope="module")
def odoo_url(odoo_app: OdooStandIn) -> Iterator[str]:
    with serving(odoo_app) as url:
        yield url


@pytest.fixture
def in_process(odoo_app: OdooStandIn) -> Iterator[httpx.Client]:
    with _in_process_client(odoo_app) as client:
        yield client


@pytest.fixture(params=TRANSPORTS)
def odoo(request: pytest.FixtureRequest, odoo_app: OdooStandIn) -> Iterator[httpx.Client]:
    """The same Odoo reached both ways the client reaches it."""
    if request.param == "in-process":
        client = _in_process_client(odoo_app)
    else:
        client = httpx.Client(base_url=request.getfixturevalue("odoo_url"), headers=HEADERS)
    with client:
        yield client


def _in_process_client(app: OdooStandIn) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://odoo.test", headers=HEADERS)


@contextmanager
def client_for(app: OdooStandIn, transport: str) -> Iterator[httpx.Client]:
    """A client for an app of the test's own, reached in-process or over a fresh port."""
    if transport == "in-process":
        with _in_process_client(app) as client:
            yield client
    else:
        with serving(app) as url, httpx.Client(base_url=url, headers=HEADERS) as client:
            yield client


def json2(client: httpx.Client, model: str, method: str, **arguments: Any) -> Any:
    response = client.post(f"/json/2/{model}/{method}", json=arguments)
    assert response.status_code == 200, response.text
    return response.json()


def json2_error(client: httpx.Client, model: str, method: str, status: int, **arguments: Any) -> dict:
    response = client.post(f"/json/2/{model}/{method}", json=arguments)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS
    return body


def jsonrpc(client: httpx.Client, service: str, method: str, *args: Any) -> dict:
    response = client.post(
        "/jsonrpc",
        json={
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": list(args)},
            "id": 7,
        },
    )
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert envelope["jsonrpc"] == "2.0"
    assert envelope["id"] == 7
    return envelope


def execute_kw(client: httpx.Client, model: str, method: str, args: list, kwargs: dict | None = None) -> Any:
    envelope = jsonrpc(
        client,
        "object",
        "execute_kw",
        SANDBOX_DATABASE,
        SANDBOX_UID,
        SANDBOX_API_KEY,
        model,
        method,
        args,
        kwargs or {},
    )
    assert "error" not in envelope, envelope
    return envelope["result"]


def assert_json(actual: Any, expected: Any) -> None:
    """Equal as JSON text: in Python ``False == 0``, on the wire ``false`` is not ``0``."""
    assert json.dumps(actual, sort_keys=True) == json.dumps(expected, sort_keys=True)


def ids_of(client: httpx.Client, model: str, domain: list, **arguments: Any) -> list[int]:
    return json2(client, model, "search", domain=domain, order="id asc", **arguments)


# --- versions and authentication -------------------------------------------------------------


def test_web_version(odoo):
    response = odoo.get("/web/version")
    assert response.status_code == 200
    assert response.json() == {"version": "19.0", "version_info": [19, 0, 0, "final", 0, ""]}


def test_a_bad_key_is_401_with_odoo_error_body(odoo):
    odoo.headers["Authorization"] = "bearer not-the-key"
    body = json2_error(odoo, "res.partner", "search_read", 401, domain=[])
    assert body["name"] == "werkzeug.exceptions.Unauthorized"
    assert body["message"] == "Invalid apikey"
    assert body["arguments"] == ["Invalid apikey", 401]
    assert body["context"] == {}
    assert "Invalid apikey" in body["debug"]


def test_a_missing_key_is_401(in_process):
    del in_process.headers["Authorization"]
    response = in_process.post("/json/2/res.partner/search_read", json={"domain": []})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["name"] == "werkzeug.exceptions.Unauthorized"


@pytest.mark.parametrize("scheme", ["bearer", "Bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(in_process, scheme):
    in_process.headers["Authorization"] = f"{scheme} {SANDBOX_API_KEY}"
    assert json2(in_process, "res.partner", "search_count", domain=[]) == 3


def test_a_wrong_database_is_a_404_html_page(odoo):
    response = odoo.post(
        "/json/2/res.partner/search_read", json={"domain": []}, headers={"X-Odoo-Database": "production"}
    )
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<title>404 Not Found</title>" in response.text


def test_common_login_and_authenticate(odoo):
    assert (
        jsonrpc(odoo, "common", "login", SANDBOX_DATABASE, SANDBOX_LOGIN, SANDBOX_API_KEY)["result"]
        == SANDBOX_UID
    )
    assert (
        jsonrpc(odoo, "common", "login", SANDBOX_DATABASE, SANDBOX_LOGIN, "wrong password")["result"] is False
    )
    assert jsonrpc(odoo, "common", "login", "production", SANDBOX_LOGIN, SANDBOX_API_KEY)["result"] is False
    authenticated = jsonrpc(
        odoo, "common", "authenticate", SANDBOX_DATABASE, SANDBOX_LOGIN, SANDBOX_API_KEY, {}
    )
    assert authenticated["result"] == SANDBOX_UID
    version = jsonrpc(odoo, "common", "version")["result"]
    assert version["server_version"] == "19.0"
    assert version["server_version_info"] == [19, 0, 0, "final", 0, ""]


# --- JSON-2 errors ------------------------------------------------------------------------------


def test_an_unknown_model_is_404(odoo):
    body = json2_error(odoo, "res.nothing", "search_read", 404, domain=[])
    assert body["name"] == "werkzeug.exceptions.NotFound"
    assert body["message"] == "the model 'res.nothing' does not exist"
    assert body["arguments"] == ["the model 'res.nothing' does not exist", 404]


def test_an_unknown_method_is_404(in_process):
    body = json2_error(in_process, "res.partner", "frobnicate", 404)
    assert body["name"] == "werkzeug.exceptions.NotFound"
    assert body["message"] == "The method 'res.partner.frobnicate' does not exist"


@pytest.mark.parametrize(
    ("method", "arguments", "name", "message_part"),
    [
        ("search_read", {"domain": [], "limt": 5}, "werkzeug.exceptions.UnprocessableEntity", "limt"),
        ("search_count", {}, "werkzeug.exceptions.UnprocessableEntity", "domain"),
        ("search_read", {"domain": "[('id', '=', 1)]"}, "odoo.exceptions.UserError", "must be a list"),
        ("search_read", {"domain": [["id", "~", 1]]}, "odoo.exceptions.UserError", "Invalid operator"),
        ("search_read", {"domain": [["id", ">", "ten"]]}, "odoo.exceptions.UserError", "'ten'"),
        ("search_read", {"domain": [], "limit": "all"}, "odoo.exceptions.UserError", "limit"),
        ("search_read", {"domain": [], "order": "id sideways"}, "odoo.exceptions.UserError", "order"),
        ("search_read", {"domain": [], "ids": [1]}, "werkzeug.exceptions.UnprocessableEntity", "with ids"),
        (
            "formatted_read_group",
            {"domain": [], "groupby": ["name:day"], "aggregates": ["__count"]},
            "odoo.exceptions.UserError",
            "name:day",
        ),
        (
            "formatted_read_group",
            {"domain": [], "groupby": ["ref"], "aggregates": ["email:sum"]},
            "odoo.exceptions.UserError",
            "email:sum",
        ),
    ],
)
def test_a_bad_argument_is_422(in_process, method, arguments, name, message_part):
    body = json2_error(in_process, "res.partner", method, 422, **arguments)
    assert body["name"] == name
    assert message_part in body["message"]


@pytest.mark.parametrize(
    "arguments",
    [
        {"domain": [], "fields": ["name", "xyz"]},
        {"domain": [["xyz", "=", 1]]},
        {"domain": [], "order": "xyz desc"},
    ],
)
def test_an_unknown_field_is_a_500_value_error(odoo, arguments):
    body = json2_error(odoo, "res.partner", "search_read", 500, **arguments)
    assert body["name"] == "builtins.ValueError"
    assert body["message"] == "Invalid field 'xyz' on model 'res.partner'"


def test_an_unknown_group_by_field_is_a_500_value_error(in_process):
    body = json2_error(
        in_process,
        "fusion.billing.usage",
        "formatted_read_group",
        500,
        domain=[],
        groupby=["xyz"],
        aggregates=[],
    )
    assert body["message"] == "Invalid field 'xyz' on model 'fusion.billing.usage'"


@pytest.mark.parametrize(
    ("method", "arguments"),
    [
        ("write", {"ids": [1], "vals": {"name": "Hacked"}}),
        ("create", {"vals_list": [{"name": "New"}]}),
        ("unlink", {"ids": [1]}),
        ("_read", {"ids": [1]}),
    ],
)
def test_writing_and_private_methods_are_403(odoo, method, arguments):
    body = json2_error(odoo, "res.partner", method, 403, **arguments)
    assert body["name"] == "odoo.exceptions.AccessError"
    assert "res.partner" in body["message"]
    assert json2(odoo, "res.partner", "read", ids=[1], fields=["name"]) == [{"id": 1, "name": "Acme Cloud"}]


def test_only_post_reaches_json2(in_process):
    response = in_process.get("/json/2/res.partner/search_read")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json()["name"] == "werkzeug.exceptions.MethodNotAllowed"


def test_a_body_that_is_not_json_is_400(in_process):
    response = in_process.post(
        "/json/2/res.partner/search_read", content=b"domain=[]", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["name"] == "werkzeug.exceptions.BadRequest"


def test_reading_a_record_that_does_not_exist_is_404(in_process):
    body = json2_error(in_process, "res.partner", "read", 404, ids=[1, 99], fields=["name"])
    assert body["name"] == "odoo.exceptions.MissingError"
    assert "res.partner(99,)" in body["message"]


# --- rendering --------------------------------------------------------------------------------


def test_records_render_as_odoo_renders_them(odoo):
    subscriptions = json2(
        odoo,
        "sale.order",
        "search_read",
        domain=[],
        fields=["name", "partner_id", "plan_id", "end_date", "order_line", "is_subscription"],
        order="id asc",
    )
    assert_json(
        subscriptions,
        [
            {
                "id": 10,
                "name": "SUB-0010",
                "partner_id": [1, "Acme Cloud"],
                "plan_id": [1, "Monthly"],
                "end_date": False,
                "order_line": [100, 101],
                "is_subscription": True,
            },
            {
                "id": 11,
                "name": "SUB-0011",
                "partner_id": [2, "Globex"],
                "plan_id": [1, "Monthly"],
                "end_date": "2026-10-31",
                "order_line": [102],
                "is_subscription": True,
            },
            {
                "id": 12,
                "name": "SUB-0012",
                "partner_id": [3, "Initech"],
                "plan_id": False,
                "end_date": False,
                "order_line": [],
                "is_subscription": True,
            },
        ],
    )


def test_empty_numbers_read_as_zero_and_empty_text_as_false(odoo):
    [refund] = json2(
        odoo,
        "account.move",
        "read",
        ids=[501],
        fields=["name", "invoice_date", "amount_untaxed", "amount_total", "currency_id", "invoice_line_ids"],
    )
    assert_json(
        refund,
        {
            "id": 501,
            "name": False,
            "invoice_date": False,
            "amount_untaxed": 0.0,
            "amount_total": 0.0,
            "currency_id": False,
            "invoice_line_ids": [602],
        },
    )
    [line] = json2(
        odoo, "account.move.line", "read", ids=[602], fields=["quantity", "price_subtotal", "product_id"]
    )
    assert_json(line, {"id": 602, "quantity": 0.0, "price_subtotal": 0.0, "product_id": False})


def test_no_fields_reads_every_field_and_display_names(in_process):
    [mapping] = json2(in_process, "ir.model.data", "search_read", domain=[["name", "=", "deployment_7"]])
    assert mapping == {
        "id": 2,
        "module": "nexacloud",
        "name": "deployment_7",
        "model": "sale.order",
        "res_id": 10,
        "display_name": "nexacloud.deployment_7",
    }


def test_read_keeps_the_order_of_the_ids(in_process):
    rows = json2(in_process, "res.partner", "read", ids=[3, 1], fields=["ref"])
    assert_json(rows, [{"id": 3, "ref": False}, {"id": 1, "ref": "nc-1"}])


def test_load_none_reads_a_many2one_as_its_id(in_process):
    rows = json2(
        in_process,
        "sale.order",
        "search_read",
        domain=[["id", "in", [10, 12]]],
        fields=["plan_id"],
        load=None,
    )
    assert_json(rows, [{"id": 10, "plan_id": 1}, {"id": 12, "plan_id": False}])


# --- domains ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "domain", "expected"),
    [
        ("res.partner", [["ref", "=", "nc-1"]], [1]),
        ("res.partner", [["ref", "!=", "nc-1"]], [2, 3]),
        ("res.partner", [["ref", "=", False]], [3]),
        ("res.partner", [["ref", "!=", False]], [1, 2]),
        ("res.partner", [["id", ">", 1]], [2, 3]),
        ("res.partner", [["id", ">=", 2]], [2, 3]),
        ("res.partner", [["id", "<", 2]], [1]),
        ("res.partner", [["id", "<=", 2]], [1, 2]),
        ("res.partner", [["ref", "in", ["nc-1", "nc-2"]]], [1, 2]),
        ("res.partner", [["ref", "in", ["nc-1", False]]], [1, 3]),
        ("res.partner", [["ref", "not in", ["nc-1"]]], [2, 3]),
        ("res.partner", [["ref", "not in", ["nc-1", False]]], [2]),
        ("res.partner", [["name", "like", "Cloud"]], [1]),
        ("res.partner", [["name", "like", "cloud"]], []),
        ("res.partner", [["name", "ilike", "cloud"]], [1]),
        ("res.partner", [["name", "not like", "Cloud"]], [2, 3]),
        ("res.partner", [["email", "not ilike", "ACME"]], [2, 3]),
        ("res.partner", [["ref", "=like", "nc-_"]], [1, 2]),
        ("res.partner", [["name", "=like", "g%"]], []),
        ("res.partner", [["name", "=ilike", "g%"]], [2]),
        ("res.partner", ["|", ["ref", "=", "nc-1"], ["ref", "=", "nc-2"]], [1, 2]),
        ("res.partner", ["&", ["ref", "!=", False], ["email", "!=", False]], [1]),
        ("res.partner", [["ref", "!=", False], ["email", "!=", False]], [1]),
        ("res.partner", ["!", ["ref", "=", "nc-1"]], [2, 3]),
        ("res.partner", ["!", ["ref", "<", "nc-2"]], [2]),
        ("res.partner", ["|", "&", ["id", ">", 1], ["ref", "=", False], ["id", "=", 1]], [1, 3]),
        ("res.partner", [[1, "=", 1]], [1, 2, 3]),
        ("res.partner", [[0, "=", 1]], []),
        ("res.partner", [["commercial_partner_id", "=", 1]], [1]),
        ("res.partner", [["commercial_partner_id.ref", "=", "nc-2"]], [2]),
        ("res.partner", [["active", "=", False]], [4]),
        ("res.partner", [["active", "in", [True, False]]], [1, 2, 3, 4]),
        ("sale.order", [["end_date", "=", False]], [10, 12]),
        ("sale.order", [["end_date", "<", "2026-11-01"]], [11]),
        ("sale.order", [["partner_id", "in", [1, 3]]], [10, 12]),
        ("sale.order", [["partner_id.ref", "=", "nc-1"]], [10]),
        ("sale.order", [["partner_id", "ilike", "acme"]], [10]),
        ("sale.order", [["partner_id", "!=", "Acme Cloud"]], [11, 12]),
        ("sale.order", [["plan_id", "=", False]], [12]),
        ("sale.order", [["order_line.product_id", "=", 2]], [10]),
        ("sale.order", [["order_line", "=", False]], [12]),
        ("sale.order", [["order_line", "any", [["price_unit", ">", 40]]]], [10, 11]),
        ("sale.order", [["order_line", "not any", [["product_id", "=", 2]]]], [11, 12]),
        ("account.move.line", [["move_id", "in", [500]]], [600, 601]),
        ("fusion.billing.usage", [["timestamp", ">=", "2026-11-01 04:00:00"]], [1002, 1003, 1004]),
        ("fusion.billing.usage", [["timestamp", "<", "2026-10-01T04:00:00Z"]], [1005]),
        ("fusion.billing.usage", [["subscription_id", "=", False]], [1008]),
    ],
)
def test_domain_operators(in_process, model, domain, expected):
    assert ids_of(in_process, model, domain) == expected


def test_archived_records_show_when_active_test_is_off(in_process):
    assert ids_of(in_process, "res.partner", []) == [1, 2, 3]
    assert ids_of(in_process, "res.partner", [], context={"active_test": False}) == [1, 2, 3, 4]


def test_order_limit_and_offset(odoo):
    rows = json2(
        odoo, "res.partner", "search_read", domain=[], fields=["ref"], order="ref desc", limit=2, offset=0
    )
    # In SQL, and so in Odoo, empty values come first in a descending order.
    assert_json(rows, [{"id": 3, "ref": False}, {"id": 2, "ref": "nc-2"}])
    rows = json2(odoo, "res.partner", "search_read", domain=[], fields=["ref"], order="ref desc", offset=2)
    assert_json(rows, [{"id": 1, "ref": "nc-1"}])
    assert_json(json2(odoo, "res.partner", "search", domain=[], order="id desc", limit=2), [3, 2])
    assert json2(odoo, "res.partner", "search_count", domain=[], limit=2) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_keyset_paging_collects_every_record_exactly_once(make_standin, transport):
    ledger = make_standin(
        {
            "sale.order": [{"id": 1, "name": "SUB-1"}],
            "fusion.billing.usage": [
                # ids with gaps, written out of order, as a real ledger after deletions
                {"id": record_id, "subscription_id": 1, "metric": "cpu_seconds", "quantity": float(record_id)}
                for record_id in [*range(40, 3, -3), 200, 201, 999]
            ],
        }
    )
    expected_ids = sorted([*range(40, 3, -3), 200, 201, 999])
    with client_for(ledger, transport) as client:
        collected: list[int] = []
        pages = 0
        last_id = 0
        while True:
            page = json2(
                client,
                "fusion.billing.usage",
                "search_read",
                domain=[["metric", "=", "cpu_seconds"], ["id", ">", last_id]],
                fields=["quantity"],
                order="id asc",
                limit=4,
            )
            if not page:
                break
            pages += 1
            collected += [row["id"] for row in page]
            assert [row["quantity"] for row in page] == [float(row["id"]) for row in page]
            last_id = page[-1]["id"]
    assert collected == expected_ids
    assert pages == 4  # 15 records in pages of 4


# --- groups -----------------------------------------------------------------------------------


def test_formatted_read_group_by_many2one_sums_exactly(odoo):
    groups = json2(
        odoo,
        "fusion.billing.usage",
        "formatted_read_group",
        domain=[],
        groupby=["subscription_id"],
        aggregates=["quantity:sum", "__count"],
    )
    assert_json(
        [{key: group[key] for key in ("subscription_id", "quantity:sum", "__count")} for group in groups],
        [
            {"subscription_id": [10, "SUB-0010"], "quantity:sum": 7.05, "__count": 5},
            {"subscription_id": [11, "SUB-0011"], "quantity:sum": 7.7, "__count": 3},
            {"subscription_id": False, "quantity:sum": 5.0, "__count": 1},
        ],
    )
    assert_json(groups[0]["__extra_domain"], [["subscription_id", "=", 10]])


def test_formatted_read_group_by_day_across_the_end_of_dst_in_toronto(odoo):
    groups = json2(
        odoo,
        "fusion.billing.usage",
        "formatted_read_group",
        domain=[["subscription_id", "=", 10]],
        groupby=["timestamp:day"],
        aggregates=["quantity:sum", "__count"],
        context={"tz": "America/Toronto"},
    )
    assert [(group["timestamp:day"], group["quantity:sum"], group["__count"]) for group in groups] == [
        (["2026-10-31 04:00:00", "31 Oct 2026"], 0.3, 2),  # 0.1 + 0.2, not 0.30000000000000004
        (["2026-11-01 04:00:00", "01 Nov 2026"], 3.75, 2),  # a 25-hour day
        (["2026-11-02 05:00:00", "02 Nov 2026"], 3.0, 1),  # midnight EST is 05:00 UTC
    ]
    assert groups[1]["__extra_domain"] == [
        "&",
        ["timestamp", ">=", "2026-11-01 04:00:00"],
        ["timestamp", "<", "2026-11-02 05:00:00"],
    ]


def test_formatted_read_group_by_month_in_a_time_zone_and_in_utc(in_process):
    def monthly(context: dict) -> list[tuple]:
        groups = json2(
            in_process,
            "fusion.billing.usage",
            "formatted_read_group",
            domain=[["subscription_id", "=", 11]],
            groupby=["timestamp:month"],
            aggregates=["__count"],
            context=context,
        )
        return [(group["timestamp:month"], group["__count"]) for group in groups]

    assert monthly({"tz": "America/Toronto"}) == [
        (["2026-09-01 04:00:00", "September 2026"], 1),
        (["2026-10-01 04:00:00", "October 2026"], 2),
    ]
    assert monthly({}) == [(["2026-10-01 00:00:00", "October 2026"], 3)]


@pytest.mark.parametrize(
    ("granularity", "buckets"),
    [
        ("week", [(["2026-10-26 04:00:00", "W44 2026"], 4), (["2026-11-02 05:00:00", "W45 2026"], 1)]),
        ("quarter", [(["2026-10-01 04:00:00", "Q4 2026"], 5)]),
        ("year", [(["2026-01-01 05:00:00", "2026"], 5)]),  # New Year's midnight is EST
    ],
)
def test_week_quarter_and_year_buckets(in_process, granularity, buckets):
    groups = json2(
        in_process,
        "fusion.billing.usage",
        "formatted_read_group",
        domain=[["subscription_id", "=", 10]],
        groupby=[f"timestamp:{granularity}"],
        aggregates=["__count"],
        context={"tz": "America/Toronto"},
    )
    assert [(group[f"timestamp:{granularity}"], group["__count"]) for group in groups] == buckets


def test_legacy_read_group_buckets_a_bare_datetime_by_month(in_process):
    groups = execute_kw(
        in_process,
        "fusion.billing.usage",
        "read_group",
        [[["subscription_id", "=", 11]], ["quantity"], ["timestamp"]],
        {"context": {"tz": "America/Toronto"}},
    )
    assert [(group["timestamp"], group["timestamp_count"], group["quantity"]) for group in groups] == [
        ("September 2026", 1, 7.0),
        ("October 2026", 2, 0.7),
    ]


def test_fields_get_describes_the_model_slice(odoo):
    fields = json2(odoo, "sale.order", "fields_get", attributes=["type", "relation", "relation_field"])
    assert fields["partner_id"] == {"type": "many2one", "relation": "res.partner"}
    assert fields["order_line"] == {
        "type": "one2many",
        "relation": "sale.order.line",
        "relation_field": "order_id",
    }
    assert fields["end_date"] == {"type": "date"}
    assert execute_kw(odoo, "sale.order", "fields_get", [["name", "partner_id"]]) == {
        "name": {"type": "char", "string": "Name", "required": False, "store": True},
        # A sale order's customer is required, as in Odoo, and labelled as Odoo labels it.
        "partner_id": {
            "type": "many2one",
            "string": "Customer",
            "required": True,
            "store": True,
            "relation": "res.partner",
        },
    }


def test_formatted_read_group_by_a_date_field(in_process):
    groups = json2(
        in_process,
        "account.move.line",
        "formatted_read_group",
        domain=[],
        groupby=["deferred_start_date:month"],
        aggregates=["price_subtotal:sum", "quantity:max"],
    )
    assert_json(
        [
            (group["deferred_start_date:month"], group["price_subtotal:sum"], group["quantity:max"])
            for group in groups
        ],
        [
            (["2026-10-01", "October 2026"], 49.0, 1.0),
            (["2026-11-01", "November 2026"], 6.37, 127.4),
            (False, 0.0, False),
        ],
    )


def test_formatted_read_group_having_order_and_limit(in_process):
    groups = json2(
        in_process,
        "fusion.billing.usage",
        "formatted_read_group",
        domain=[],
        groupby=["subscription_id"],
        aggregates=["quantity:sum", "quantity:count", "quantity:avg"],
        having=[["__count", ">", 1]],
        order="quantity:sum desc",
        limit=1,
    )
    assert [
        (group["subscription_id"], group["quantity:sum"], group["quantity:count"], group["quantity:avg"])
        for group in groups
    ] == [([11, "SUB-0011"], 7.7, 2, 3.85)]


def test_read_group_returns_the_legacy_shape(in_process):
    groups = json2(
        in_process,
        "fusion.billing.usage",
        "read_group",
        domain=[["subscription_id", "!=", False]],
        fields=["quantity"],
        groupby=["subscription_id", "timestamp:day"],
    )
    assert_json(
        groups,
        [
            {
                "subscription_id": [10, "SUB-0010"],
                "subscription_id_count": 5,
                "quantity": 7.05,
                "__domain": [["subscription_id", "=", 10], ["subscription_id", "!=", False]],
                "__context": {"group_by": ["timestamp:day"]},
            },
            {
                "subscription_id": [11, "SUB-0011"],
                "subscription_id_count": 3,
                "quantity": 7.7,
                "__domain": [["subscription_id", "=", 11], ["subscription_id", "!=", False]],
                "__context": {"group_by": ["timestamp:day"]},
            },
        ],
    )
    [day] = json2(
        in_process,
        "fusion.billing.usage",
        "read_group",
        domain=[["id", "=", 1002]],
        fields=["total:sum(quantity)"],
        groupby=["timestamp:day"],
        lazy=False,
        context={"tz": "America/Toronto"},
    )
    assert_json(
        day,
        {
            "timestamp:day": "01 Nov 2026",
            "__count": 1,
            "total": 1.5,
            "__domain": [
                "&",
                ["timestamp", ">=", "2026-11-01 04:00:00"],
                ["timestamp", "<", "2026-11-02 05:00:00"],
                ["id", "=", 1002],
            ],
            "__range": {"timestamp:day": {"from": "2026-11-01 04:00:00", "to": "2026-11-02 05:00:00"}},
        },
    )


# --- the same answers over JSON-2 and /jsonrpc --------------------------------------------------


def test_search_read_is_the_same_over_json2_and_jsonrpc(odoo):
    domain = [["is_subscription", "=", True], ["subscription_state", "!=", "6_churn"]]
    fields = ["name", "partner_id", "currency_id", "start_date"]
    expected = [
        {
            "id": 10,
            "name": "SUB-0010",
            "partner_id": [1, "Acme Cloud"],
            "currency_id": [1, "CAD"],
            "start_date": "2026-01-15",
        },
        {
            "id": 12,
            "name": "SUB-0012",
            "partner_id": [3, "Initech"],
            "currency_id": [2, "USD"],
            "start_date": "2026-03-01",
        },
    ]
    assert_json(
        json2(odoo, "sale.order", "search_read", domain=domain, fields=fields, order="id asc"), expected
    )
    assert_json(
        execute_kw(odoo, "sale.order", "search_read", [domain], {"fields": fields, "order": "id asc"}),
        expected,
    )
    # positional, in Odoo's signature order: domain, fields, offset, limit, order
    assert_json(execute_kw(odoo, "sale.order", "search_read", [domain, fields, 0, None, "id asc"]), expected)


def test_search_count_search_and_read_are_the_same_over_json2_and_jsonrpc(odoo):
    domain = [["move_id.state", "=", "posted"]]
    assert json2(odoo, "account.move.line", "search_count", domain=domain) == 2
    assert execute_kw(odoo, "account.move.line", "search_count", [domain]) == 2
    assert_json(json2(odoo, "account.move.line", "search", domain=domain), [600, 601])
    assert_json(execute_kw(odoo, "account.move.line", "search", [domain]), [600, 601])
    fields = ["move_id", "price_subtotal", "deferred_end_date"]
    expected = [
        {"id": 601, "move_id": [500, "INV/2026/00001"], "price_subtotal": 6.37, "deferred_end_date": False},
        {
            "id": 600,
            "move_id": [500, "INV/2026/00001"],
            "price_subtotal": 49.0,
            "deferred_end_date": "2026-10-31",
        },
    ]
    assert_json(json2(odoo, "account.move.line", "read", ids=[601, 600], fields=fields), expected)
    assert_json(execute_kw(odoo, "account.move.line", "read", [[601, 600], fields]), expected)


def test_grouped_sums_are_the_same_over_json2_and_jsonrpc(odoo):
    domain = [["timestamp", ">=", "2026-10-01 04:00:00"], ["timestamp", "<", "2026-11-01 04:00:00"]]
    formatted = json2(
        odoo,
        "fusion.billing.usage",
        "formatted_read_group",
        domain=domain,
        groupby=["subscription_id"],
        aggregates=["quantity:sum", "__count"],
    )
    legacy = execute_kw(
        odoo,
        "fusion.billing.usage",
        "read_group",
        [domain, ["quantity:sum"], ["subscription_id"]],
        {"lazy": False},
    )
    expected = [([10, "SUB-0010"], 0.3, 2), ([11, "SUB-0011"], 0.7, 2), (False, 5.0, 1)]
    assert_json([(g["subscription_id"], g["quantity:sum"], g["__count"]) for g in formatted], expected)
    assert_json([(g["subscription_id"], g["quantity"], g["__count"]) for g in legacy], expected)
    also_formatted = execute_kw(
        odoo,
        "fusion.billing.usage",
        "formatted_read_group",
        [domain, ["subscription_id"], ["quantity:sum", "__count"]],
    )
    assert_json(also_formatted, formatted)


# --- legacy /jsonrpc errors -------------------------------------------------------------------


def test_jsonrpc_errors_come_inside_http_200(odoo):
    denied = jsonrpc(
        odoo,
        "object",
        "execute_kw",
        SANDBOX_DATABASE,
        SANDBOX_UID,
        "wrong key",
        "res.partner",
        "search",
        [[]],
        {},
    )
    assert denied["error"]["code"] == 0
    assert denied["error"]["message"] == "Odoo Server Error"
    assert set(denied["error"]["data"]) == ERROR_KEYS
    assert denied["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"

    wrong_database = jsonrpc(
        odoo,
        "object",
        "execute_kw",
        "production",
        SANDBOX_UID,
        SANDBOX_API_KEY,
        "res.partner",
        "search",
        [[]],
        {},
    )
    assert wrong_database["error"]["data"]["name"] == "odoo.exceptions.AccessDenied"

    args = (SANDBOX_DATABASE, SANDBOX_UID, SANDBOX_API_KEY)
    unknown_model = jsonrpc(odoo, "object", "execute_kw", *args, "res.nothing", "search", [[]], {})
    assert unknown_model["error"]["data"]["name"] == "odoo.exceptions.UserError"
    assert unknown_model["error"]["data"]["message"] == "Object res.nothing doesn't exist"

    write = jsonrpc(odoo, "object", "execute_kw", *args, "res.partner", "write", [[1], {"name": "x"}], {})
    assert write["error"]["code"] == 0
    assert write["error"]["data"]["name"] == "odoo.exceptions.AccessError"

    unknown_field = jsonrpc(
        odoo, "object", "execute_kw", *args, "res.partner", "search_read", [[]], {"fields": ["xyz"]}
    )
    assert unknown_field["error"]["data"]["name"] == "builtins.ValueError"
    assert unknown_field["error"]["data"]["message"] == "Invalid field 'xyz' on model 'res.partner'"

    unknown_service = jsonrpc(odoo, "report", "render")
    assert unknown_service["error"]["code"] == 404
    assert unknown_service["error"]["message"] == "404: Not Found"


# --- loading and serving ----------------------------------------------------------------------


def test_from_file_defaults_to_the_sandbox_credentials(tmp_path):
    path = tmp_path / "odoo.json"
    path.write_text(json.dumps({"models": {"res.partner": [{"id": 5, "name": "Hooli"}]}}))
    app = OdooStandIn.from_file(path)
    with _in_process_client(app) as client:
        assert json2(client, "res.partner", "search_read", domain=[], fields=["name"]) == [
            {"id": 5, "name": "Hooli"}
        ]

    path.write_text(json.dumps({"database": "nexa-prod-copy", "api_key": "k-123", "models": {}}))
    with httpx.Client(
        transport=httpx.WSGITransport(app=OdooStandIn.from_file(path)),
        base_url="http://odoo.test",
        headers={"Authorization": "bearer k-123", "X-Odoo-Database": "nexa-prod-copy"},
    ) as client:
        assert json2(client, "account.move", "search_count", domain=[]) == 0


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"res.users": [{"id": 1}]}, "res.users"),
        ({"sale.order": [{"id": 1, "partner_id": 9}]}, "missing res.partner [9]"),
        ({"res.partner": [{"id": 1, "vat": "CA123"}]}, "vat"),
        ({"res.partner": [{"id": 1}, {"id": 1}]}, "not unique"),
    ],
)
def test_records_outside_the_contract_are_refused_at_load(make_standin, models, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_standin(models)


def test_serving_releases_its_port_on_exit(odoo_app):
    with serving(odoo_app) as url:
        assert httpx.get(f"{url}/web/version").json()["version"] == "19.0"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/web/version")


def test_a_ledger_of_300k_rows_groups_per_subscription_and_toronto_day(make_standin):
    rows = 300_000
    # one row every 9 seconds from 2026-10-01 04:00 UTC, midnight in Toronto
    first = datetime(2026, 10, 1, 4)
    ledger = make_standin(
        {
            "sale.order": [{"id": 1, "name": "SUB-1"}, {"id": 2, "name": "SUB-2"}],
            "fusion.billing.usage": [
                {
                    "id": record_id,
                    "subscription_id": 1 + record_id % 2,
                    "metric": "cpu_seconds",
                    "quantity": 0.1,
                    "timestamp": f"{first + timedelta(seconds=9 * record_id):%Y-%m-%d %H:%M:%S}",
                }
                for record_id in range(rows)
            ],
        }
    )
    with _in_process_client(ledger) as client:
        groups = json2(
            client,
            "fusion.billing.usage",
            "formatted_read_group",
            domain=[["metric", "=", "cpu_seconds"]],
            groupby=["subscription_id", "timestamp:day"],
            aggregates=["quantity:sum", "__count"],
            context={"tz": "America/Toronto"},
        )
    # 300k rows 9 s apart span 750 hours: October's 31 local days and 6 hours of November 1st,
    # for each of the two subscriptions
    assert len(groups) == 64
    assert sum(group["__count"] for group in groups) == rows
    assert groups[0]["timestamp:day"] == ["2026-10-01 04:00:00", "01 Oct 2026"]
    assert groups[0]["__count"] == 4_800  # 9 600 rows a day, alternating subscriptions
    assert groups[0]["quantity:sum"] == 480.0
