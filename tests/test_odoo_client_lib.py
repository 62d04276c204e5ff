"""Odoo's own client library, ``odoo-client-lib`` 2.0.1, against the Odoo test double on a real port.

Its JSON-2 connector posts to ``/json/2/<model>/<method>`` and, to turn positional arguments into
JSON-2's named ones, first reads ``GET /doc-bearer/<model>.json`` (the api_doc addon's document):
the keys of ``methods[name]["parameters"]`` in order, and ``"model"`` in ``methods[name]["api"]``
for a method called without ids. Its JSON-RPC connector logs in with ``common.login`` and calls
``object.execute_kw``; its ``search_read`` is a ``search`` then a ``read``. The importer's user
loads partners both ways and reads them back; the document itself is checked against the shape
Odoo 19's api_doc controller gives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import odoolib
import pytest
from odoolib.tools import AuthenticationError

from fusion_billing_assets.sandbox.odoo_models import (
    MODELS,
    SANDBOX_API_KEY,
    SANDBOX_DATABASE,
    SANDBOX_IMPORTER_API_KEY,
    SANDBOX_IMPORTER_LOGIN,
)
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn, serving

SEED = {
    "res.partner": [{"id": 1, "name": "Acme Cloud", "ref": "NC1"}],
    "ir.model.data": [
        {"id": 1, "module": "nexacloud", "name": "customer_1", "model": "res.partner", "res_id": 1}
    ],
}
PARTNER_COLUMNS = ["id", "name", "ref", "email", "is_company"]
ROWS = [
    ["nexacloud.customer_1", "Acme Cloud", "NC1", "billing@acme.test", "1"],
    ["nexacloud.customer_2", "Globex", "NC2", "", "0"],
]


@pytest.fixture
def odoo_url() -> Iterator[str]:
    with serving(OdooStandIn(SEED)) as url:
        yield url


def connection(url: str, protocol: str, key: str = SANDBOX_IMPORTER_API_KEY):
    address = urlsplit(url)
    if protocol == "json2":
        return odoolib.get_connection(
            hostname=address.hostname,
            port=address.port,
            protocol="json2",
            database=SANDBOX_DATABASE,
            password=key,
        )
    return odoolib.get_connection(
        hostname=address.hostname,
        port=address.port,
        protocol="jsonrpc",
        database=SANDBOX_DATABASE,
        login=SANDBOX_IMPORTER_LOGIN,
        password=key,
    )


def test_json2_loads_partners_and_reads_them_back_with_positional_arguments(odoo_url):
    odoo = connection(odoo_url, "json2")
    partners = odoo.get_model("res.partner")
    # Positional: the library names them from /doc-bearer (load's parameters are fields, data).
    assert partners.load(PARTNER_COLUMNS, ROWS) == {"ids": [1, 2], "messages": [], "nextrow": 0}
    assert partners.search_read([["ref", "=like", "NC%"]], ["name", "ref", "email", "is_company"]) == [
        {"id": 1, "name": "Acme Cloud", "ref": "NC1", "email": "billing@acme.test", "is_company": True},
        {"id": 2, "name": "Globex", "ref": "NC2", "email": False, "is_company": False},
    ]
    # read and write are record methods: their first argument is the ids.
    assert partners.write([2], {"email": "ap@globex.test"}) is True
    assert partners.read([2], ["email"]) == {"id": 2, "email": "ap@globex.test"}
    assert partners.create({"name": "Initech"}) == [3]
    links = odoo.get_model("ir.model.data").search_read([["module", "=", "nexacloud"]], ["name", "res_id"])
    assert links == [
        {"id": 1, "name": "customer_1", "res_id": 1},
        {"id": 2, "name": "customer_2", "res_id": 2},
    ]


def test_jsonrpc_logs_in_as_the_importer_loads_and_reads_back(odoo_url):
    odoo = connection(odoo_url, "jsonrpc")
    partners = odoo.get_model("res.partner")
    assert partners.load(PARTNER_COLUMNS, ROWS) == {"ids": [1, 2], "messages": [], "nextrow": 0}
    assert partners.search_read([["ref", "=like", "NC%"]], ["name", "email", "is_company"]) == [
        {"id": 1, "name": "Acme Cloud", "email": "billing@acme.test", "is_company": True},
        {"id": 2, "name": "Globex", "email": False, "is_company": False},
    ]
    assert partners.create({"name": "Initech"}) == 3  # one dict over /jsonrpc: its id
    assert partners.create([{"name": "Hooli"}]) == [4]
    assert partners.write([4], {"ref": "H"}) is True


def test_the_reconciliation_key_reads_but_cannot_load(odoo_url):
    partners = connection(odoo_url, "json2", key=SANDBOX_API_KEY).get_model("res.partner")
    assert partners.search_count([]) == 1
    with pytest.raises(ValueError, match="Unexpected status code 403"):
        partners.load(PARTNER_COLUMNS, ROWS)


def test_a_wrong_key_is_refused(odoo_url):
    with pytest.raises(AuthenticationError):
        connection(odoo_url, "json2", key="guess").get_model("res.partner").search_count(domain=[])
    with pytest.raises(AuthenticationError):
        connection(odoo_url, "jsonrpc", key="guess").get_model("res.partner").search_count([])


# --- the document the library reads ------------------------------------------------------------


def doc(url: str, model: str, key: str | None = SANDBOX_IMPORTER_API_KEY) -> httpx.Response:
    headers = {"X-Odoo-Database": SANDBOX_DATABASE}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.get(f"{url}/doc-bearer/{model}.json", headers=headers)


def test_the_doc_document_has_api_docs_shape(odoo_url):
    response = doc(odoo_url, "sale.order")
    assert response.status_code == 200
    document = response.json()
    assert (document["model"], document["name"], document["doc"]) == ("sale.order", "Sales Order", None)
    assert document["fields"]["partner_id"] == {
        "name": "partner_id",
        "type": "many2one",
        "string": "Customer",
        "required": True,
        "store": True,
        "relation": "res.partner",
        "module": "sale",
    }
    methods = document["methods"]
    assert set(methods) == {
        "create",
        "fields_get",
        "formatted_read_group",
        "load",
        "read",
        "read_group",
        "search",
        "search_count",
        "search_read",
        "write",
    }
    # Parameters in call order, self left out; defaults where Odoo's signature has them.
    assert list(methods["load"]["parameters"]) == ["fields", "data"]
    assert methods["load"]["signature"] == "(fields, data)"
    assert list(methods["create"]["parameters"]) == ["vals_list"]
    assert list(methods["write"]["parameters"]) == ["vals"]
    assert list(methods["read"]["parameters"]) == ["fields", "load"]
    assert list(methods["search_read"]["parameters"])[:5] == ["domain", "fields", "offset", "limit", "order"]
    assert methods["search"]["parameters"]["offset"] == {"default": 0}
    assert list(methods["formatted_read_group"]["parameters"])[:3] == ["domain", "groupby", "aggregates"]
    model_methods = {name for name, method in methods.items() if "model" in method.get("api", [])}
    assert model_methods == {
        "create",
        "fields_get",
        "formatted_read_group",
        "load",
        "read_group",
        "search",
        "search_count",
        "search_read",
    }
    assert "api" not in methods["write"]
    assert methods["read"]["api"] == ["readonly"]


def test_the_doc_needs_a_key_of_either_user_and_a_known_model(odoo_url):
    assert doc(odoo_url, "res.partner", key=SANDBOX_API_KEY).status_code == 200
    assert all(doc(odoo_url, model).json()["model"] == model for model in MODELS)
    missing = doc(odoo_url, "res.partner", key=None)
    assert missing.status_code == 401
    assert missing.json()["name"] == "werkzeug.exceptions.Unauthorized"
    assert doc(odoo_url, "res.partner", key="guess").status_code == 401
    unknown = doc(odoo_url, "res.users")
    assert unknown.status_code == 404
    assert unknown.json()["name"] == "werkzeug.exceptions.NotFound"
