"""The Odoo client under faults (docs/design.md §5.1): what is retried, what fails at once, how long.

Reads are retried when the next attempt may answer differently (a transient 500, 429/502/503/504, a
connection dropped mid-answer, a body that is not JSON or not the expected shape), within a bound
on attempts and on total time; a request's own error (an unknown field, a refused key) fails at
once. A server that trickles its answer cannot hold a call past the deadline per request. Every
error starts by naming Odoo, the model and the method, and no error or log line carries the key.
HTTP faults go through ``httpx.MockTransport``; the trickle and the dropped connection through a
real socket server on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from fusion_billing_assets.sources.odoo import OdooAuthenticationError, OdooClient, OdooError, RetryPolicy

API_KEY = "fault-test-key-that-must-never-leak"
SERVER = "https://odoo.example.com"
PARTNERS = [{"id": n, "name": f"Customer {n}"} for n in range(1, 8)]
FAST = RetryPolicy(max_attempts=5, base_delay_seconds=0.01, max_delay_seconds=0.05, max_elapsed_seconds=10)


def _client(handler, sleeps: list[float] | None = None, **options) -> OdooClient:
    http = httpx.Client(base_url=SERVER, transport=httpx.MockTransport(handler))
    options.setdefault("login", "bot" if options.get("protocol") == "jsonrpc" else None)
    return OdooClient(
        http,
        database="nexa",
        api_key=API_KEY,
        sleep=(sleeps if sleeps is not None else []).append,
        **options,
    )


def _scripted(*answers):
    """A server giving these answers in turn; the last one repeats. An exception is raised."""
    remaining = list(answers)
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def _jsonrpc_scripted(*answers):
    """A /jsonrpc server: logins succeed (uid 7); execute_kw calls get these answers in turn."""
    script, seen = _scripted(*answers)

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["params"]["service"] == "common":
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": 7})
        return script(request)

    return handle, seen


def _odoo_error(status: int, name: str, message: str, debug: str = "") -> httpx.Response:
    body = {"name": name, "message": message, "arguments": [message], "context": {}, "debug": debug}
    return httpx.Response(status, json=body)


def _assert_names_the_call(error: OdooError, model: str, method: str) -> None:
    message = str(error)
    assert message.startswith(f"Odoo {SERVER} (database 'nexa', ")
    assert f"{model}.{method}" in message.split(". ")[0]
    assert API_KEY not in message


# --- 500s: transient ones are retried, a request's own error is not -------------------------------


def test_a_transient_500_is_retried_then_succeeds():
    handle, seen = _scripted(
        _odoo_error(500, "psycopg2.OperationalError", "server closed the connection unexpectedly"),
        httpx.Response(500, html="<html><body>Internal Server Error</body></html>"),
        httpx.Response(200, json=PARTNERS),
    )
    sleeps: list[float] = []
    client = _client(handle, sleeps)
    assert client.search_read_all("res.partner", [], ["name"]) == PARTNERS
    assert len(seen) == 3 and client.stats.requests == 3 and client.stats.retries == 2
    assert len(sleeps) == 2


def test_a_500_that_keeps_coming_fails_after_the_last_attempt_quoting_odoo():
    handle, seen = _scripted(_odoo_error(500, "psycopg2.OperationalError", "the database is in recovery"))
    with pytest.raises(OdooError) as raised:
        _client(handle).call("res.partner", "search_count", domain=[])
    assert len(seen) == 5
    _assert_names_the_call(raised.value, "res.partner", "search_count")
    assert "HTTP 500" in str(raised.value) and "the database is in recovery, 5 attempts" in str(raised.value)
    assert raised.value.status == 500 and raised.value.error_name == "psycopg2.OperationalError"


@pytest.mark.parametrize(
    "name, debug",
    [
        ("builtins.ValueError", ""),
        ("builtins.Exception", "Traceback (most recent call last):\nValueError: Invalid field 'plan_fee'"),
    ],
    ids=["by-name", "by-debug"],
)
def test_an_unknown_field_fails_at_once_naming_the_field_and_the_model(name, debug):
    handle, seen = _scripted(_odoo_error(500, name, "Invalid field 'plan_fee' on model 'sale.order'", debug))
    sleeps: list[float] = []
    with pytest.raises(OdooError) as raised:
        _client(handle, sleeps).search_read_all("sale.order", [], ["name", "plan_fee"])
    assert len(seen) == 1 and sleeps == []
    _assert_names_the_call(raised.value, "sale.order", "search_read")
    assert "(HTTP 500)" in str(raised.value)
    assert "The field 'plan_fee' does not exist on sale.order" in str(raised.value)


def test_an_unknown_field_over_jsonrpc_fails_at_once_naming_the_field():
    error = {
        "code": 200,
        "message": "Odoo Server Error",
        "data": {"name": "builtins.ValueError", "message": "Invalid field 'plan_fee' on model 'sale.order'"},
    }
    handle, seen = _jsonrpc_scripted(httpx.Response(200, json={"jsonrpc": "2.0", "id": 2, "error": error}))
    with pytest.raises(OdooError, match=r"The field 'plan_fee' does not exist on sale\.order") as raised:
        _client(handle, protocol="jsonrpc").search_read_all("sale.order", [], ["plan_fee"])
    assert len(seen) == 1
    _assert_names_the_call(raised.value, "sale.order", "search_read")


def test_a_transient_error_over_jsonrpc_is_retried():
    error = {"code": 200, "message": "Odoo Server Error", "data": {"name": "psycopg2.OperationalError"}}
    handle, seen = _jsonrpc_scripted(
        httpx.Response(200, json={"jsonrpc": "2.0", "id": 2, "error": error}),
        httpx.Response(200, json={"jsonrpc": "2.0", "id": 3, "result": 4}),
    )
    assert _client(handle, protocol="jsonrpc").call("res.partner", "search_count", domain=[]) == 4
    assert len(seen) == 2


@pytest.mark.parametrize(
    "answer, kind",
    [
        (_odoo_error(401, "werkzeug.exceptions.Unauthorized", "Invalid apikey"), OdooAuthenticationError),
        (_odoo_error(403, "odoo.exceptions.AccessError", "not allowed"), OdooAuthenticationError),
        (_odoo_error(422, "odoo.exceptions.UserError", "Invalid domain"), OdooError),
        (_odoo_error(500, "odoo.exceptions.MissingError", "Record does not exist"), OdooError),
    ],
    ids=["401", "403", "422", "500-missing-record"],
)
def test_refusals_that_would_repeat_fail_at_once(answer, kind):
    handle, seen = _scripted(answer)
    sleeps: list[float] = []
    with pytest.raises(kind) as raised:
        _client(handle, sleeps).call("res.partner", "search_count", domain=[])
    assert len(seen) == 1 and sleeps == []
    _assert_names_the_call(raised.value, "res.partner", "search_count")
    assert f"HTTP {answer.status_code}" in str(raised.value)


# --- 429 and gateway errors, bounded by attempts and by time --------------------------------------


def test_a_429_waits_as_long_as_retry_after_says_capped_at_the_longest_backoff():
    handle, seen = _scripted(
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(429, headers={"Retry-After": "3600"}),
        httpx.Response(200, json=3),
    )
    sleeps: list[float] = []
    assert _client(handle, sleeps).call("res.partner", "search_count", domain=[]) == 3
    assert sleeps == [7.0, 30.0] and len(seen) == 3


def test_a_retry_after_beyond_the_time_budget_gives_up_at_once():
    handle, seen = _scripted(httpx.Response(429, headers={"Retry-After": "25"}))
    sleeps: list[float] = []
    retry = RetryPolicy(max_elapsed_seconds=20)
    with pytest.raises(OdooError, match="HTTP 429") as raised:
        _client(handle, sleeps, retry=retry).call("res.partner", "search_count", domain=[])
    assert len(seen) == 1 and sleeps == []
    assert "Gave up after" in str(raised.value)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_then_succeed(status):
    handle, seen = _scripted(
        httpx.Response(status), httpx.Response(status), httpx.Response(200, json=PARTNERS)
    )
    sleeps: list[float] = []
    client = _client(handle, sleeps)
    assert client.search_read_all("res.partner", [], ["name"]) == PARTNERS
    assert len(seen) == 3 and client.stats.retries == 2
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # full jitter under a doubling ceiling


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_that_never_end_fail_naming_the_status(status):
    handle, seen = _scripted(httpx.Response(status))
    with pytest.raises(OdooError, match=f"answered HTTP {status} to res.partner.search_read") as raised:
        _client(handle, retry=FAST).search_read_all("res.partner", [], ["name"])
    assert len(seen) == 5 and raised.value.status == status


class _FakeTime:
    """A clock that only the client's sleeps move forward."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retries_stop_when_the_time_budget_is_spent_even_with_attempts_left():
    handle, seen = _scripted(httpx.Response(503))
    fake = _FakeTime()
    retry = RetryPolicy(max_attempts=100, base_delay_seconds=2, max_delay_seconds=8, max_elapsed_seconds=30)
    http = httpx.Client(base_url=SERVER, transport=httpx.MockTransport(handle))
    client = OdooClient(
        http, database="nexa", api_key=API_KEY, retry=retry, sleep=fake.sleep, clock=fake.clock
    )
    with pytest.raises(OdooError, match="HTTP 503") as raised:
        client.call("res.partner", "search_count", domain=[])
    assert 1 < len(seen) < 100 and len(fake.sleeps) == len(seen) - 1
    assert sum(fake.sleeps) <= 30
    assert "Gave up after" in str(raised.value) and "within 30 s" in str(raised.value)


# --- malformed and wrong-shaped answers, on both protocols ----------------------------------------

MALFORMED_BODIES = {
    "html": b"<html><body>Bad Gateway</body></html>",
    "truncated": b'[{"id": 1, "name": "Cust',
    "empty": b"",
    "not-utf8": b"\xff\xfe[",
}


@pytest.mark.parametrize("body", MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys())
def test_json2_a_body_that_is_not_json_is_retried_then_succeeds(body):
    handle, seen = _scripted(httpx.Response(200, content=body), httpx.Response(200, json=PARTNERS))
    assert _client(handle).search_read_all("res.partner", [], ["name"]) == PARTNERS
    assert len(seen) == 2


@pytest.mark.parametrize("protocol", ["json2", "jsonrpc"])
def test_a_body_that_is_never_json_fails_naming_model_method_and_what_was_wrong(protocol):
    answer = httpx.Response(200, content=MALFORMED_BODIES["truncated"])
    handle, seen = (_scripted if protocol == "json2" else _jsonrpc_scripted)(answer)
    with pytest.raises(OdooError) as raised:
        _client(handle, retry=FAST, protocol=protocol).search_read_all("res.partner", [], ["name"])
    assert len(seen) == 5
    _assert_names_the_call(raised.value, "res.partner", "search_read")
    assert "with a body that is not JSON" in str(raised.value) and "Cust" in str(raised.value)


WRONG_SHAPES = {
    "object": {"records": [], "length": 0},
    "ids": [1, 2, 3],
    "records-without-id": [{"name": "Customer 1"}],
    "null": None,
}


@pytest.mark.parametrize("answer", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
@pytest.mark.parametrize("protocol", ["json2", "jsonrpc"])
def test_a_wrong_shaped_answer_is_retried_then_fails_saying_what_was_expected(protocol, answer):
    if protocol == "json2":
        handle, seen = _scripted(httpx.Response(200, content=json.dumps(answer).encode()))
    else:
        handle, seen = _jsonrpc_scripted(
            httpx.Response(200, json={"jsonrpc": "2.0", "id": 2, "result": answer})
        )
    with pytest.raises(OdooError) as raised:
        _client(handle, retry=FAST, protocol=protocol).search_read_all("res.partner", [], ["name"])
    assert len(seen) == 5
    _assert_names_the_call(raised.value, "res.partner", "search_read")
    assert "where a list of records with integer ids was expected" in str(raised.value)


def test_a_wrong_shaped_answer_once_is_retried_then_succeeds():
    handle, seen = _scripted(httpx.Response(200, json={"error": "busy"}), httpx.Response(200, json=7))
    assert _client(handle).call("res.partner", "search_count", domain=[]) == 7
    assert len(seen) == 2


@pytest.mark.parametrize(
    "envelope",
    [{"jsonrpc": "2.0", "id": 2}, [{"result": 3}], "result"],
    ids=["no-result-or-error", "a-list", "a-string"],
)
def test_jsonrpc_an_envelope_without_result_or_error_is_retried_then_fails(envelope):
    handle, seen = _jsonrpc_scripted(httpx.Response(200, json=envelope))
    with pytest.raises(OdooError, match="neither 'result' nor 'error'") as raised:
        _client(handle, retry=FAST, protocol="jsonrpc").call("res.partner", "search_count", domain=[])
    assert len(seen) == 5
    _assert_names_the_call(raised.value, "res.partner", "search_count")


def test_jsonrpc_a_malformed_envelope_once_is_retried_then_succeeds():
    handle, seen = _jsonrpc_scripted(
        httpx.Response(200, content=b'{"jsonrpc": "2.0", "id": 2, "res'),
        httpx.Response(200, json={"jsonrpc": "2.0", "id": 3, "result": PARTNERS}),
    )
    assert _client(handle, protocol="jsonrpc").search_read_all("res.partner", [], ["name"]) == PARTNERS
    assert len(seen) == 2


# --- a real server on 127.0.0.1: trickled answers, silence, connections dropped mid-page ----------

Behaviour = Callable[[socket.socket, threading.Event], None]


def _read_request(connection: socket.socket) -> None:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            return
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return
        body += chunk


@contextmanager
def local_server(*behaviours: Behaviour) -> Iterator[tuple[str, list[int]]]:
    """Serve one connection per behaviour, in turn; the thread ends after the last or within ~20 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    served: list[int] = []

    def run() -> None:
        remaining = list(behaviours)
        for _ in range(400):
            if not remaining or stop.is_set():
                return
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                connection.settimeout(5)
                try:
                    _read_request(connection)
                    served.append(len(served) + 1)
                    remaining.pop(0)(connection, stop)
                except OSError:
                    pass  # the client hung up first, as it does when it gives up

    thread = threading.Thread(target=run, name="odoo-fault-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", served
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _head(length: int) -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def answer(body: bytes) -> Behaviour:
    def behave(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(_head(len(body)) + body)

    return behave


def half_then_close(body: bytes) -> Behaviour:
    def behave(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(_head(len(body)) + body[: len(body) // 2])

    return behave


def trickle(connection: socket.socket, stop: threading.Event) -> None:
    """Promise a large body, then send one byte every 50 ms: each read succeeds, none completes."""
    connection.sendall(_head(100_000) + b"[")
    for _ in range(400):
        if stop.wait(0.05):
            return
        connection.sendall(b" ")


def silent(connection: socket.socket, stop: threading.Event) -> None:
    stop.wait(10)


def _real_client(url: str, **options) -> OdooClient:
    # A read timeout far above the deadline: the deadline, not httpx's per-read timeout, must end it.
    http = httpx.Client(base_url=url, timeout=httpx.Timeout(30.0, connect=5.0))
    return OdooClient(http, database="nexa", api_key=API_KEY, **options)


def test_a_trickling_server_cannot_hold_a_call_past_the_deadline():
    with local_server(trickle) as (url, served):
        client = _real_client(url, deadline_seconds=1.0, retry=RetryPolicy(max_attempts=1))
        started = time.monotonic()
        with pytest.raises(OdooError) as raised:
            client.search_read_all("res.partner", [], ["name"])
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"took {elapsed:.1f} s with a 1 s deadline"
    assert served == [1]
    message = str(raised.value)
    assert message.startswith(
        f"Odoo {url} (database 'nexa', json2) did not finish answering res.partner.search_read"
    )
    assert "within the deadline of 1 s per request" in message


def test_a_silent_server_is_cut_at_the_deadline_not_at_the_read_timeout():
    with local_server(silent) as (url, _):
        client = _real_client(url, deadline_seconds=1.0, retry=RetryPolicy(max_attempts=1))
        started = time.monotonic()
        with pytest.raises(
            OdooError, match=r"did not answer res\.partner\.search_read in time \(ReadTimeout"
        ):
            client.search_read_all("res.partner", [], ["name"])
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"took {elapsed:.1f} s with a 1 s deadline and a 30 s read timeout"


def test_retries_of_a_trickling_server_stay_within_the_total_time_budget():
    retry = RetryPolicy(
        max_attempts=10, base_delay_seconds=0.05, max_delay_seconds=0.1, max_elapsed_seconds=1.5
    )
    with local_server(*[trickle] * 10) as (url, served):
        client = _real_client(url, deadline_seconds=0.5, retry=retry)
        started = time.monotonic()
        with pytest.raises(OdooError, match="Gave up after") as raised:
            client.search_read_all("res.partner", [], ["name"])
        elapsed = time.monotonic() - started
    assert elapsed < 4.5, f"took {elapsed:.1f} s with a 1.5 s budget"
    assert 2 <= len(served) < 10 and client.stats.retries == len(served) - 1
    assert "within 1.5 s" in str(raised.value)


def test_a_connection_dropped_mid_page_is_retried_and_the_page_read_whole():
    page = json.dumps(PARTNERS).encode()
    with local_server(half_then_close(page), answer(page)) as (url, served):
        client = _real_client(url, retry=FAST)
        partners = client.search_read_all("res.partner", [], ["name"])
    assert partners == PARTNERS
    assert served == [1, 2] and client.stats.requests == 2 and client.stats.retries == 1


def test_a_connection_that_always_drops_mid_page_fails_naming_the_call():
    page = json.dumps(PARTNERS).encode()
    retry = RetryPolicy(max_attempts=2, base_delay_seconds=0.01, max_delay_seconds=0.01)
    with (
        local_server(half_then_close(page), half_then_close(page)) as (url, served),
        pytest.raises(OdooError) as raised,
    ):
        _real_client(url, retry=retry).search_read_all("res.partner", [], ["name"])
    assert served == [1, 2]
    message = str(raised.value)
    assert message.startswith(
        f"Odoo {url} (database 'nexa', json2) dropped the connection during res.partner.search_read"
    )
    assert "RemoteProtocolError" in message and "2 attempts" in message


def test_jsonrpc_a_connection_dropped_mid_answer_is_retried():
    login = json.dumps({"jsonrpc": "2.0", "id": 1, "result": 7}).encode()
    result = json.dumps({"jsonrpc": "2.0", "id": 2, "result": PARTNERS}).encode()
    with local_server(answer(login), half_then_close(result), answer(result)) as (url, served):
        client = _real_client(url, retry=FAST, protocol="jsonrpc", login="bot")
        assert client.search_read_all("res.partner", [], ["name"]) == PARTNERS
    assert served == [1, 2, 3] and client.stats.retries == 1


# --- the key never leaks ---------------------------------------------------------------------------

LEAKY_ANSWERS = {
    "401": _odoo_error(401, "werkzeug.exceptions.Unauthorized", f"Invalid apikey {API_KEY}"),
    "500-echo": _odoo_error(500, "builtins.ValueError", f"bad value {API_KEY!r}"),
    "transient-500-echo": _odoo_error(500, "psycopg2.OperationalError", f"lost {API_KEY}"),
    "not-json": httpx.Response(200, content=f"<html>Authorization: bearer {API_KEY}".encode()),
    "wrong-shape": httpx.Response(200, json={"key": API_KEY}),
    "timeout": httpx.ReadTimeout("timed out"),
    "dropped": httpx.RemoteProtocolError("peer closed connection"),
}


@pytest.mark.parametrize("protocol", ["json2", "jsonrpc"])
@pytest.mark.parametrize("answer", LEAKY_ANSWERS.values(), ids=LEAKY_ANSWERS.keys())
def test_no_error_text_or_log_line_contains_the_api_key(protocol, answer, caplog):
    caplog.set_level(logging.DEBUG)
    if protocol == "json2":
        handle, _ = _scripted(answer)
    else:
        handle, _ = _jsonrpc_scripted(answer)
    with pytest.raises(OdooError) as raised:
        _client(handle, retry=FAST, protocol=protocol).search_read_all("res.partner", [], ["name"])
    _assert_names_the_call(raised.value, "res.partner", "search_read")
    assert API_KEY not in repr(raised.value.args)
    assert caplog.records, "the retries and requests are logged"
    assert API_KEY not in caplog.text
    assert all(API_KEY not in record.getMessage() for record in caplog.records)
