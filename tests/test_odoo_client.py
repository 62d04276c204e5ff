"""The Odoo client (docs/design.md §5): JSON-2 and /jsonrpc calls, keyset paging, errors without secrets."""

import json

import httpx
import pytest

from fusion_billing_assets.sources.odoo import OdooAuthenticationError, OdooClient, OdooError

API_KEY = "key-that-must-never-leak"
PARTNERS = [{"id": n, "name": f"Customer {n}"} for n in range(1, 24)]


def _matches(record, domain):
    for field, operator, value in domain:
        assert (field, operator) == ("id", ">"), "the client pages with a keyset on id only"
        if not record["id"] > value:
            return False
    return True


def _json2_partner_server(requests: list[httpx.Request]):
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        body = json.loads(request.content)
        assert request.url.path == "/json/2/res.partner/search_read"
        assert body["order"] == "id asc"
        rows = [r for r in PARTNERS if _matches(r, body["domain"])][: body["limit"]]
        return httpx.Response(200, json=rows)

    return handle


def _client(handler, sleeps: list[float] | None = None, **options) -> OdooClient:
    http = httpx.Client(base_url="https://odoo.example.com", transport=httpx.MockTransport(handler))
    sleeps = [] if sleeps is None else sleeps
    return OdooClient(http, database="nexa", api_key=API_KEY, sleep=sleeps.append, **options)


def test_keyset_paging_reads_every_record_once_in_ceil_n_over_page_size_requests():
    requests: list[httpx.Request] = []
    client = _client(_json2_partner_server(requests), page_size=5)
    partners = client.search_read_all("res.partner", [], ["name"])
    assert [p["id"] for p in partners] == list(range(1, 24))
    assert len(requests) == 5 and client.stats.requests == 5 and client.stats.pages == 5
    last_domains = [json.loads(r.content)["domain"] for r in requests]
    assert (
        last_domains[0] == [] and last_domains[1] == [["id", ">", 5]] and last_domains[4] == [["id", ">", 20]]
    )


def test_json2_sends_key_database_and_an_explicit_context():
    requests: list[httpx.Request] = []
    client = _client(_json2_partner_server(requests), page_size=100)
    client.search_read_all("res.partner", [], ["name"])
    request = requests[0]
    assert request.headers["authorization"] == f"bearer {API_KEY}"
    assert request.headers["x-odoo-database"] == "nexa"
    assert json.loads(request.content)["context"] == {"lang": "en_US", "tz": "UTC", "active_test": False}


def test_an_exact_multiple_of_the_page_size_costs_one_empty_page():
    requests: list[httpx.Request] = []
    client = _client(_json2_partner_server(requests), page_size=23)
    assert len(client.search_read_all("res.partner", [], ["name"])) == 23
    assert len(requests) == 2


def test_a_rejected_key_names_server_and_database_but_not_the_key():
    def handle(request):
        return httpx.Response(
            401,
            json={
                "name": "werkzeug.exceptions.Unauthorized",
                "message": "Invalid apikey",
                "arguments": [],
                "context": {},
                "debug": "",
            },
        )

    with pytest.raises(OdooAuthenticationError) as raised:
        _client(handle).call("res.partner", "search_count", domain=[])
    message = str(raised.value)
    assert "https://odoo.example.com" in message and "'nexa'" in message and "ODOO_API_KEY" in message
    assert API_KEY not in message and API_KEY not in repr(raised.value.args)


def test_a_wrong_database_answers_html_404_and_the_message_points_at_odoo_database():
    def handle(request):
        return httpx.Response(404, html="<html><body>Not Found</body></html>")

    with pytest.raises(OdooError, match="ODOO_DATABASE") as raised:
        _client(handle).call("res.partner", "search_count", domain=[])
    assert raised.value.status == 404


def test_an_odoo_error_body_is_reported_with_model_and_method():
    def handle(request):
        return httpx.Response(
            500,
            json={
                "name": "builtins.ValueError",
                "message": "Invalid field 'plan_fee' on model 'sale.order'",
                "arguments": [],
                "context": {},
                "debug": "Traceback ...",
            },
        )

    with pytest.raises(
        OdooError,
        match=r"sale\.order\.search_read \(HTTP 500\): builtins.ValueError: Invalid field 'plan_fee'",
    ):
        _client(handle).call("sale.order", "search_read", domain=[], fields=["plan_fee"])


def test_jsonrpc_logs_in_once_and_calls_execute_kw_with_the_key_in_the_arguments():
    calls = []

    def handle(request):
        body = json.loads(request.content)
        calls.append(body["params"])
        if body["params"]["service"] == "common":
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": 7})
        return httpx.Response(
            200, json={"jsonrpc": "2.0", "id": body["id"], "result": [{"id": 1, "name": "A"}]}
        )

    client = _client(handle, protocol="jsonrpc", login="bot")
    assert client.call("res.partner", "read", ids=[1], fields=["name"]) == [{"id": 1, "name": "A"}]
    client.call("res.partner", "search_read", domain=[], fields=["name"])
    assert calls[0] == {"service": "common", "method": "login", "args": ["nexa", "bot", API_KEY]}
    assert len(calls) == 3  # one login for two calls
    db, uid, key, model, method, args, kwargs = calls[1]["args"]
    assert (db, uid, key, model, method, args) == ("nexa", 7, API_KEY, "res.partner", "read", [[1]])
    assert kwargs["fields"] == ["name"] and "context" in kwargs


def test_jsonrpc_errors_inside_http_200_raise_and_access_denied_is_an_authentication_error():
    def handle(request):
        body = json.loads(request.content)
        if body["params"]["service"] == "common":
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": 7})
        error = {
            "code": 0,
            "message": "Odoo Server Error",
            "data": {
                "name": "odoo.exceptions.AccessError",
                "message": "You are not allowed to access 'Journal Entry'",
                "arguments": [],
                "debug": "",
            },
        }
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "error": error})

    with pytest.raises(OdooAuthenticationError, match="not allowed to access") as raised:
        _client(handle, protocol="jsonrpc", login="bot").call("account.move", "search_count", domain=[])
    assert API_KEY not in str(raised.value)


def test_jsonrpc_login_refused():
    def handle(request):
        body = json.loads(request.content)
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": False})

    with pytest.raises(OdooAuthenticationError, match="rejected the login 'bot'") as raised:
        _client(handle, protocol="jsonrpc", login="bot").call("res.partner", "search_count", domain=[])
    assert API_KEY not in str(raised.value)


def _scripted(*answers):
    """A server that gives these answers in turn (an exception instance is raised instead)."""
    remaining = list(answers)
    seen: list[httpx.Request] = []

    def handle(request):
        seen.append(request)
        answer = remaining.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def test_a_503_is_retried_with_backoff_and_then_succeeds():
    handle, seen = _scripted(httpx.Response(503), httpx.Response(502), httpx.Response(200, json=42))
    sleeps: list[float] = []
    client = _client(handle, sleeps)
    assert client.call("res.partner", "search_count", domain=[]) == 42
    assert len(seen) == 3 and client.stats.requests == 3 and client.stats.retries == 2
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # full jitter, doubling


def test_a_429_waits_as_long_as_retry_after_says():
    handle, _ = _scripted(httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json=3))
    sleeps: list[float] = []
    assert _client(handle, sleeps).call("res.partner", "search_count", domain=[]) == 3
    assert sleeps == [7.0]


def test_timeouts_are_retried_a_bounded_number_of_times_then_fail_clearly():
    handle, seen = _scripted(*[httpx.ReadTimeout("timed out")] * 5)
    sleeps: list[float] = []
    with pytest.raises(
        OdooError, match=r"did not answer res\.partner\.search_count in time \(ReadTimeout, 5 attempts\)"
    ):
        _client(handle, sleeps).call("res.partner", "search_count", domain=[])
    assert len(seen) == 5 and len(sleeps) == 4


def test_a_503_that_never_ends_surfaces_after_the_last_attempt():
    handle, seen = _scripted(*[httpx.Response(503)] * 5)
    with pytest.raises(OdooError, match=r"HTTP 503"):
        _client(handle).call("res.partner", "search_count", domain=[])
    assert len(seen) == 5


def test_a_rejected_key_is_not_retried():
    handle, seen = _scripted(
        httpx.Response(401, json={"name": "werkzeug.exceptions.Unauthorized", "message": "no"})
    )
    sleeps: list[float] = []
    with pytest.raises(OdooAuthenticationError):
        _client(handle, sleeps).call("res.partner", "search_count", domain=[])
    assert len(seen) == 1 and sleeps == []
