"""The Odoo test double's ``POST /usage``, contract v1 of the Nexa billing module (docs/design.md §10).

NexaCloud's metering pushes one usage record or a batch; the double stores them in
``fusion.billing.usage`` once per (subscription, metric, idempotency key), answers 201 / 200
duplicate / 409 / 422 / 401 / 403 / 404 as the contract says, lets the metering user push only to
the subscriptions of imported customers, and stores one record per key however many threads push
it at once. Expected answers are worked out by hand from the seed below and the contract; the
ledger is read back over JSON-2 with the reconciliation's user, as the reconciliation reads it.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fusion_billing_assets.sandbox.odoo_models import (
    SANDBOX_API_KEY,
    SANDBOX_DATABASE,
    SANDBOX_IMPORTER_API_KEY,
    SANDBOX_METERING_API_KEY,
    SANDBOX_METERING_LOGIN,
    SANDBOX_METERING_UID,
)
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn, serving
from fusion_billing_assets.sandbox.odoo_store import load_models

# Two imported customers (partners 1 and 2, nexacloud.customer_*) with a subscription each (10, 11);
# a partner made by hand in Odoo (3) with an Odoo-only order (12) and a subscription (13); a
# non-subscription order of an imported customer (14); one ledger record (id 5) on subscription 10.
SEED: dict[str, list[dict[str, Any]]] = {
    "res.partner": [
        {"id": 1, "name": "Acme Cloud", "ref": "NC1"},
        {"id": 2, "name": "Borealis Data", "ref": "NC2"},
        {"id": 3, "name": "Hand-made Ltd"},
    ],
    "sale.order": [
        {"id": 10, "name": "S00010", "partner_id": 1, "is_subscription": True},
        {"id": 11, "name": "S00011", "partner_id": 2, "is_subscription": True},
        {"id": 12, "name": "S00012", "partner_id": 3, "is_subscription": False},
        {"id": 13, "name": "S00013", "partner_id": 3, "is_subscription": True},
        {"id": 14, "name": "S00014", "partner_id": 1, "is_subscription": False},
    ],
    "ir.model.data": [
        {"id": 1, "module": "nexacloud", "name": "customer_1", "model": "res.partner", "res_id": 1},
        {"id": 2, "module": "nexacloud", "name": "customer_2", "model": "res.partner", "res_id": 2},
        {"id": 3, "module": "nexacloud", "name": "deployment_7", "model": "sale.order", "res_id": 10},
        {"id": 4, "module": "nexacloud", "name": "deployment_8", "model": "sale.order", "res_id": 11},
    ],
    "fusion.billing.usage": [
        {
            "id": 5,
            "subscription_id": 10,
            "metric": "cpu_seconds",
            "quantity": 3600.0,
            "idempotency_key": "nc-usage-1",
            "timestamp": "2026-10-01 00:00:00",
        }
    ],
}
SEEDED = {
    "id": 5,
    "subscription_id": [10, "S00010"],
    "metric": "cpu_seconds",
    "quantity": 3600.0,
    "idempotency_key": "nc-usage-1",
    "timestamp": "2026-10-01 00:00:00",
    "display_name": "fusion.billing.usage,5",
}
LEDGER_FIELDS = ["subscription_id", "metric", "quantity", "idempotency_key", "timestamp", "display_name"]
METERING = {"Authorization": f"bearer {SANDBOX_METERING_API_KEY}"}


def usage(**changes: Any) -> dict[str, Any]:
    """A well-formed record for subscription 10, not in the ledger yet."""
    return {
        "subscription_id": 10,
        "metric": "cpu_seconds",
        "quantity": 1800.5,
        "idempotency_key": "nc-usage-2",
        "timestamp": "2026-10-01 01:00:00",
        **changes,
    }


def stored(record_id: int, subscription: int = 10, **changes: Any) -> dict[str, Any]:
    """How ``search_read`` gives the record ``usage(**changes)`` stored as ``record_id``."""
    pushed = usage(**changes)
    return {
        "id": record_id,
        "subscription_id": [subscription, f"S000{subscription}"],
        "metric": pushed["metric"],
        "quantity": pushed["quantity"],
        "idempotency_key": pushed["idempotency_key"],
        "timestamp": pushed["timestamp"],
        "display_name": f"fusion.billing.usage,{record_id}",
    }


def seeded_double(request: pytest.FixtureRequest, tmp_path: Path, store: str) -> OdooStandIn:
    """A double holding the seed: in memory, in a SQLite file or in PostgreSQL (writable)."""
    if store == "in-memory":
        return OdooStandIn(copy.deepcopy(SEED))
    if store == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'odoo.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_database_url")
    load_models(url, copy.deepcopy(SEED)).dispose()
    return OdooStandIn.from_store(url, writable=True)


@pytest.fixture
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OdooStandIn]:
    standin = seeded_double(request, tmp_path, getattr(request, "param", "in-memory"))
    yield standin
    standin.close()


# The tests that run on a PostgreSQL store as well: what differs there is SQL (NUMERIC, EXISTS, ids).
ALSO_ON_POSTGRES = pytest.mark.parametrize(
    "app", ["in-memory", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture(params=["in-process", "port"])
def base_url(request: pytest.FixtureRequest, app: OdooStandIn) -> Iterator[str | None]:
    """``None`` for the in-process transport, else the URL of the double served on a real port."""
    if request.param == "in-process":
        yield None
        return
    with serving(app) as url:
        yield url


@pytest.fixture
def client(app: OdooStandIn, base_url: str | None) -> Iterator[httpx.Client]:
    """The metering user's HTTP client, in-process or over the port."""
    with http_client(app, base_url) as http:
        yield http


def http_client(
    app: OdooStandIn, base_url: str | None = None, headers: dict[str, str] = METERING
) -> httpx.Client:
    if base_url is None:
        return httpx.Client(
            base_url="http://odoo.test", transport=httpx.WSGITransport(app=app), headers=headers
        )
    return httpx.Client(base_url=base_url, headers=headers)


def ledger(app: OdooStandIn) -> list[dict[str, Any]]:
    """Every ``fusion.billing.usage`` record, read over JSON-2 by the reconciliation's user."""
    headers = {"Authorization": f"bearer {SANDBOX_API_KEY}", "X-Odoo-Database": SANDBOX_DATABASE}
    with http_client(app, headers=headers) as http:
        response = http.post(
            "/json/2/fusion.billing.usage/search_read",
            json={"domain": [], "fields": LEDGER_FIELDS, "order": "id asc"},
        )
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response: httpx.Response, status: int, code: str, field: str | None) -> str:
    """Check an error answer's status and shape; its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert (body["error"]["code"], body["error"]["field"]) == (code, field)
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]


# --- one record -------------------------------------------------------------------------------


def test_a_record_is_created_then_its_repeat_is_a_duplicate_stored_once(app, client):
    first = client.post("/usage", json=usage())
    assert (first.status_code, first.json()) == (201, {"id": 6, "status": "created"})
    again = client.post("/usage", json=usage())
    assert (again.status_code, again.json()) == (200, {"id": 6, "status": "duplicate", "duplicate": True})
    assert ledger(app) == [SEEDED, stored(6)]


def test_a_record_already_in_the_ledger_is_a_duplicate_of_it(app, client):
    response = client.post(
        "/usage", json=usage(idempotency_key="nc-usage-1", quantity=3600, timestamp="2026-10-01 00:00:00")
    )
    assert (response.status_code, response.json()) == (
        200,
        {"id": 5, "status": "duplicate", "duplicate": True},
    )
    assert ledger(app) == [SEEDED]


@ALSO_ON_POSTGRES
def test_quantities_compare_to_three_decimals(app, client):
    # 3600.0004 is 3600.000 to three decimals: the same; 3600.0005 rounds half-up to 3600.001.
    same = client.post("/usage", json=usage(idempotency_key="nc-usage-1", quantity=3600.0004))
    assert (same.status_code, same.json()["id"]) == (200, 5)
    other = client.post("/usage", json=usage(idempotency_key="nc-usage-1", quantity=3600.0005))
    error_of(other, 409, "conflict", "quantity")
    assert ledger(app) == [SEEDED]


@ALSO_ON_POSTGRES
def test_a_quantity_is_stored_to_three_decimals(app, client):
    assert client.post("/usage", json=usage(quantity=12.3456)).status_code == 201
    assert client.post("/usage", json=usage(idempotency_key="nc-usage-3", quantity=7)).status_code == 201
    assert [record["quantity"] for record in ledger(app)] == [3600.0, 12.346, 7.0]


def test_the_same_key_with_another_quantity_is_a_conflict_and_stores_nothing(app, client):
    assert client.post("/usage", json=usage()).status_code == 201
    message = error_of(client.post("/usage", json=usage(quantity=1800.25)), 409, "conflict", "quantity")
    assert "nc-usage-2" in message
    error_of(client.post("/usage", json=usage(idempotency_key="nc-usage-1")), 409, "conflict", "quantity")
    assert ledger(app) == [SEEDED, stored(6)]


def test_the_same_key_on_another_subscription_is_another_record(app, client):
    response = client.post("/usage", json=usage(subscription_id=11, idempotency_key="nc-usage-1"))
    assert (response.status_code, response.json()) == (201, {"id": 6, "status": "created"})
    assert ledger(app) == [
        SEEDED,
        stored(6, subscription=11, subscription_id=11, idempotency_key="nc-usage-1"),
    ]


_NOT_SET = object()
INVALID_RECORDS = [
    # (what changes in the record, the field named)
    ({"subscription_id": _NOT_SET}, "subscription_id"),
    ({"subscription_id": None}, "subscription_id"),
    ({"subscription_id": "10"}, "subscription_id"),
    ({"subscription_id": 10.5}, "subscription_id"),
    ({"subscription_id": True}, "subscription_id"),
    ({"subscription_id": 0}, "subscription_id"),
    ({"subscription_id": -10}, "subscription_id"),
    ({"metric": _NOT_SET}, "metric"),
    ({"metric": 7}, "metric"),
    ({"metric": "memory_bytes"}, "metric"),
    ({"metric": "CPU_SECONDS"}, "metric"),
    ({"quantity": _NOT_SET}, "quantity"),
    ({"quantity": "1800.5"}, "quantity"),
    ({"quantity": False}, "quantity"),
    ({"quantity": [1]}, "quantity"),
    ({"quantity": -0.001}, "quantity"),
    ({"quantity": -1}, "quantity"),
    ({"idempotency_key": _NOT_SET}, "idempotency_key"),
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"idempotency_key": 42}, "idempotency_key"),
    ({"timestamp": _NOT_SET}, "timestamp"),
    ({"timestamp": 1790812800}, "timestamp"),
    ({"timestamp": "2026-10-01"}, "timestamp"),
    ({"timestamp": "2026-10-01T01:00:00"}, "timestamp"),
    ({"timestamp": "2026-10-01 01:00:00Z"}, "timestamp"),
    ({"timestamp": "2026-10-01 01:00"}, "timestamp"),
    ({"timestamp": "2026-10-01 1:00:00"}, "timestamp"),
    ({"timestamp": "2026-02-30 01:00:00"}, "timestamp"),
    ({"timestamp": "2026-10-01 24:00:00"}, "timestamp"),
    ({"timestamp": "01/10/2026 01:00:00"}, "timestamp"),
]


@pytest.mark.parametrize(("changes", "field"), INVALID_RECORDS)
def test_an_invalid_record_is_a_422_naming_its_field(app, changes, field):
    record = {name: value for name, value in usage(**changes).items() if value is not _NOT_SET}
    with http_client(app) as http:
        error_of(http.post("/usage", json=record), 422, "invalid", field)
    assert ledger(app) == [SEEDED]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", None),
        (b"{not json", None),
        (b'{"subscription_id": 10,', None),
        (b"[]", None),
        (b'"a string"', None),
        (b"null", None),
        (b'{"quantity": NaN, "subscription_id": 10, "metric": "cpu_seconds"}', "quantity"),
        (b'{"quantity": Infinity, "subscription_id": 10, "metric": "cpu_seconds"}', "quantity"),
        (b'{"records": {"subscription_id": 10}}', "records"),
        (b'{"records": null}', "records"),
    ],
)
def test_a_body_that_is_not_a_record_or_a_batch_is_a_422(app, body, field):
    with http_client(app) as http:
        response = http.post("/usage", content=body, headers={"Content-Type": "application/json"})
    error_of(response, 422, "invalid", field)
    assert ledger(app) == [SEEDED]


def test_a_bad_or_missing_key_is_a_401(app, client):
    missing = client.post("/usage", json=usage(), headers={"Authorization": ""})
    error_of(missing, 401, "unauthorized", None)
    with http_client(app, headers={}) as http:
        error_of(http.post("/usage", json=usage()), 401, "unauthorized", None)
    wrong = client.post("/usage", json=usage(), headers={"Authorization": "bearer not-a-key"})
    error_of(wrong, 401, "unauthorized", None)
    # Authentication answers for the whole batch, before its records are looked at.
    batch = client.post("/usage", json={"records": [usage()] * 1001}, headers={"Authorization": "bearer x"})
    error_of(batch, 401, "unauthorized", None)
    assert ledger(app) == [SEEDED]


@pytest.mark.parametrize(
    "subscription_id",
    [
        pytest.param(12, id="an Odoo-only order"),
        pytest.param(13, id="a subscription of a partner made by hand"),
        pytest.param(14, id="an imported customer's order that is no subscription"),
    ],
)
def test_an_order_that_is_no_imported_subscription_is_a_403(app, client, subscription_id):
    response = client.post("/usage", json=usage(subscription_id=subscription_id))
    error_of(response, 403, "forbidden", "subscription_id")
    assert ledger(app) == [SEEDED]


@pytest.mark.parametrize(
    "api_key", [SANDBOX_API_KEY, SANDBOX_IMPORTER_API_KEY], ids=["reconciliation", "importer"]
)
def test_users_other_than_the_metering_user_may_not_push_usage(app, client, api_key):
    response = client.post("/usage", json=usage(), headers={"Authorization": f"bearer {api_key}"})
    error_of(response, 403, "forbidden", None)
    batch = client.post("/usage", json={"records": [usage()]}, headers={"Authorization": f"bearer {api_key}"})
    error_of(batch, 403, "forbidden", None)
    assert ledger(app) == [SEEDED]


def test_an_unknown_subscription_is_a_404(app, client):
    error_of(client.post("/usage", json=usage(subscription_id=999)), 404, "not_found", "subscription_id")
    assert ledger(app) == [SEEDED]


def test_another_database_is_odoos_404_page_and_the_right_one_is_served(app, client):
    wrong = client.post("/usage", json=usage(), headers={"X-Odoo-Database": "production"})
    assert wrong.status_code == 404
    assert wrong.headers["content-type"].startswith("text/html")
    right = client.post("/usage", json=usage(), headers={"X-Odoo-Database": SANDBOX_DATABASE})
    assert right.status_code == 201
    assert ledger(app) == [SEEDED, stored(6)]


def test_usage_is_pushed_with_post_only(app, client):
    response = client.get("/usage")
    error_of(response, 405, "method_not_allowed", None)
    assert response.headers["allow"] == "POST"


# --- batches ----------------------------------------------------------------------------------


@ALSO_ON_POSTGRES
def test_a_batch_answers_each_record_in_order_and_stores_exactly_the_created_ones(app, client):
    records = [
        usage(),  # created, 6
        usage(idempotency_key="nc-usage-1", quantity=3600.0),  # the seeded record
        usage(idempotency_key="nc-usage-1", quantity=60.0),  # conflicts with it
        usage(idempotency_key="nc-usage-bad", quantity=-5),  # invalid
        usage(idempotency_key="nc-usage-odoo", subscription_id=12),  # not allowed
        usage(idempotency_key="nc-usage-gone", subscription_id=999),  # no such subscription
        usage(),  # the first record again, same quantity
        usage(quantity=99.0),  # the first record's key, another quantity
        "not a record",
        usage(subscription_id=11, idempotency_key="nc-usage-3"),  # created, 7
    ]
    response = client.post("/usage", json={"records": records})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["idempotency_key"], r["status"], r["id"]) for r in results] == [
        ("nc-usage-2", "created", 6),
        ("nc-usage-1", "duplicate", 5),
        ("nc-usage-1", "conflict", None),
        ("nc-usage-bad", "rejected", None),
        ("nc-usage-odoo", "rejected", None),
        ("nc-usage-gone", "rejected", None),
        ("nc-usage-2", "duplicate", 6),
        ("nc-usage-2", "conflict", None),
        (None, "rejected", None),
        ("nc-usage-3", "created", 7),
    ]
    errors = [None if r["error"] is None else (r["error"]["code"], r["error"]["field"]) for r in results]
    assert errors == [
        None,
        None,
        ("conflict", "quantity"),
        ("invalid", "quantity"),
        ("forbidden", "subscription_id"),
        ("not_found", "subscription_id"),
        None,
        ("conflict", "quantity"),
        ("invalid", None),
        None,
    ]
    assert all(set(r) == {"idempotency_key", "status", "id", "error"} for r in results)
    assert all(isinstance(r["error"]["message"], str) for r in results if r["error"] is not None)
    assert ledger(app) == [
        SEEDED,
        stored(6),
        stored(7, subscription=11, subscription_id=11, idempotency_key="nc-usage-3"),
    ]


def test_a_batch_without_a_record_stored_still_answers_200(app, client):
    response = client.post("/usage", json={"records": [usage(subscription_id=12), usage(metric="gpu")]})
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["rejected", "rejected"]
    assert client.post("/usage", json={"records": []}).json() == {"results": []}
    assert ledger(app) == [SEEDED]


def test_a_batch_of_1000_is_taken_and_one_over_is_a_422(app, client):
    over = [usage(idempotency_key=f"nc-batch-{n}") for n in range(1001)]
    error_of(client.post("/usage", json={"records": over}), 422, "invalid", "records")
    assert ledger(app) == [SEEDED]
    response = client.post("/usage", json={"records": over[:1000]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["idempotency_key"], r["status"], r["id"]) for r in results] == [
        (f"nc-batch-{n}", "created", 6 + n) for n in range(1000)
    ]
    assert len(ledger(app)) == 1001


def test_each_http_request_is_counted_once(app, client):
    client.post("/usage", json=usage())
    client.post("/usage", json={"records": [usage(), usage(idempotency_key="nc-usage-3")]})
    client.post("/usage", json=usage(), headers={"Authorization": "bearer wrong"})
    client.post("/usage", content=b"{")
    assert app.requests["usage.push"] == 4


# --- writable stores, users, concurrency -------------------------------------------------------


def test_a_store_opened_read_only_refuses_pushes_saying_so(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'odoo.sqlite'}"
    load_models(url, copy.deepcopy(SEED)).dispose()
    read_only = OdooStandIn.from_store(url)
    try:
        with http_client(read_only) as http:
            message = error_of(http.post("/usage", json=usage()), 403, "forbidden", None)
            assert "writable=True" in message
            error_of(http.post("/usage", json={"records": [usage()]}), 403, "forbidden", None)
        assert ledger(read_only) == [SEEDED]
    finally:
        read_only.close()
    writable = OdooStandIn.from_store(url, writable=True)
    try:
        with http_client(writable) as http:
            assert http.post("/usage", json=usage()).json() == {"id": 6, "status": "created"}
    finally:
        writable.close()
    reopened = OdooStandIn.from_store(url)
    try:
        assert ledger(reopened) == [SEEDED, stored(6)]
    finally:
        reopened.close()


def test_the_metering_user_pushes_usage_and_does_nothing_else(app):
    assert (SANDBOX_METERING_LOGIN, SANDBOX_METERING_UID) == ("nexacloud-metering", 4)
    with http_client(app) as http:
        read = http.post("/json/2/sale.order/search", json={"domain": [["is_subscription", "=", True]]})
        assert (read.status_code, read.json()["name"]) == (403, "odoo.exceptions.AccessError")
        write = http.post("/json/2/fusion.billing.usage/create", json={"vals_list": [usage()]})
        assert (write.status_code, write.json()["name"]) == (403, "odoo.exceptions.AccessError")

        def rpc(service: str, method: str, *args: Any) -> dict[str, Any]:
            body = {
                "jsonrpc": "2.0",
                "method": "call",
                "params": {"service": service, "method": method, "args": args},
            }
            return http.post("/jsonrpc", json=body).json()

        uid = rpc("common", "login", SANDBOX_DATABASE, SANDBOX_METERING_LOGIN, SANDBOX_METERING_API_KEY)[
            "result"
        ]
        assert uid == SANDBOX_METERING_UID
        call = ["fusion.billing.usage", "search_read", [[]], {"fields": ["quantity"]}]
        refused = rpc("object", "execute_kw", SANDBOX_DATABASE, uid, SANDBOX_METERING_API_KEY, *call)
        assert refused["error"]["data"]["name"] == "odoo.exceptions.AccessError"
    assert ledger(app) == [SEEDED]


def test_a_double_built_with_other_metering_credentials_takes_those():
    standin = OdooStandIn(copy.deepcopy(SEED), metering_api_key="other-key", metering_login="meter")
    try:
        with http_client(standin) as http:
            assert http.post("/usage", json=usage()).status_code == 401
            created = http.post("/usage", json=usage(), headers={"Authorization": "bearer other-key"})
            assert created.status_code == 201
    finally:
        standin.close()


@pytest.mark.parametrize(
    "store", ["in-memory", "sqlite-file", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_twenty_threads_pushing_one_record_at_once_store_it_once(
    request: pytest.FixtureRequest, tmp_path: Path, store: str
):
    standin = seeded_double(request, tmp_path, store)
    threads = 20
    start = threading.Barrier(threads)
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()
    try:
        with serving(standin) as url:

            def push() -> None:
                try:
                    with httpx.Client(base_url=url, headers=METERING, timeout=30) as http:
                        start.wait()
                        response = http.post("/usage", json=usage())
                    answer = (response.status_code, response.json())
                except Exception as error:  # a failed request is an answer the test shows
                    answer = (0, {"status": repr(error)})
                with lock:
                    answers.append(answer)

            workers = [threading.Thread(target=push) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        assert Counter(status for status, _ in answers) == {201: 1, 200: 19}
        assert Counter(body["status"] for _, body in answers) == {"created": 1, "duplicate": 19}
        assert {body["id"] for _, body in answers} == {6}
        assert ledger(standin) == [SEEDED, stored(6)]
        assert standin.requests["usage.push"] == threads
    finally:
        standin.close()
