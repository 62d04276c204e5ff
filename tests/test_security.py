"""Security of money data: who the code location talks to, and what it never says.

Holds these contracts: the alert webhook is https (plain http only to loopback) and never reaches
a private, link-local, multicast, unspecified or cloud-metadata address unless
``ALERT_WEBHOOK_ALLOW_PRIVATE`` opens the private ranges — checked on the literal host at load and
on every resolved address before connecting, the connection pinned to the checked address, and
no redirect followed; a failed warehouse write names the statement, never a row's values; the
package builds SQL from bound parameters only; and a whole sandbox period reconciled, alerted and
failed with known secret values leaves none of them in the instance's files, the reports, the
warehouse, the alerts received or the logs.

Nothing here sends traffic anywhere but 127.0.0.1: addresses outside loopback are only ever
returned by a stand-in ``getaddrinfo``, and connecting is made to fail loudly around them.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import logging
import socket
import threading
import traceback
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context, instance_for_test
from dagster._utils.error import serializable_error_info_from_exc_info
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.engine import make_url

import fusion_billing_assets
from fusion_billing_assets import alerts
from fusion_billing_assets.alerts import (
    Alert,
    AlertChannelConfig,
    AlertDeliveryError,
    WebhookAddressRefused,
    deliver,
    webhook_address_refusal,
)
from fusion_billing_assets.definitions import (
    apply_import_job_name,
    billing_period_job_name,
    build_resources,
    defs,
)
from fusion_billing_assets.defs.resources import Warehouse, WarehouseError
from fusion_billing_assets.defs.sensors import reconciliation_alerts, run_failure_alerts
from fusion_billing_assets.sandbox.odoo_models import SANDBOX_DATABASE, SANDBOX_LOGIN
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn, serving
from fusion_billing_assets.settings import ConfigurationError, load_settings
from fusion_billing_assets.warehouse import ensure_tables, replace_period
from tests.conftest import GeneratedSandbox
from tests.e2e_support import WebhookReceiver
from tests.test_warehouse import OCTOBER, lines_frame, result_row, results_frame

TOKEN = "T0KEN-in-the-path-that-must-never-leak"
SOURCES = {
    "NEXACLOUD_DATABASE_URL": "postgresql+psycopg://reader:s3cret@db.example.com/nexacloud",
    "ODOO_URL": "https://odoo.example.com",
    "ODOO_DATABASE": "nexa",
    "ODOO_API_KEY": "k-123",
}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def an_alert() -> Alert:
    return Alert(
        event=alerts.MISMATCH, title="Billing period 2026-10-01 does not reconcile.", lines=(), link=None
    )


# --- The webhook's address: at load ------------------------------------------------------------


def _load_webhook(url: str, **more: str):
    return load_settings({**SOURCES, "ALERT_WEBHOOK_URL": url, **more}).alerts


@pytest.mark.parametrize(
    "url",
    [
        f"https://hooks.slack.com/services/T000/B000/{TOKEN}",
        f"https://93.184.215.14/hooks/{TOKEN}",
        f"http://127.0.0.1:8080/hooks/{TOKEN}",
        f"http://127.8.9.10/hooks/{TOKEN}",
        f"http://localhost:9000/hooks/{TOKEN}",
        f"http://[::1]:9000/hooks/{TOKEN}",
        f"https://[::1]/hooks/{TOKEN}",
    ],
)
def test_an_https_webhook_or_plain_http_to_loopback_is_accepted(url):
    assert _load_webhook(url).webhook_url_configured


@pytest.mark.parametrize(
    ("url", "allow_private", "named"),
    [
        (f"http://hooks.example.com/{TOKEN}", "false", "must be https"),
        (f"http://93.184.215.14/{TOKEN}", "true", "must be https"),
        (f"http://10.0.0.5/{TOKEN}", "true", "must be https"),
        (f"https://10.0.0.5/{TOKEN}", "false", "a private address"),
        (f"https://172.20.1.1/{TOKEN}", "false", "a private address"),
        (f"https://192.168.1.10/{TOKEN}", "false", "a private address"),
        (f"https://100.64.0.1/{TOKEN}", "false", "a private address"),
        (f"https://[fd12:3456::1]/{TOKEN}", "false", "a private address"),
        (f"https://169.254.169.254/latest/{TOKEN}", "true", "cloud instance-metadata"),
        (f"https://[::ffff:169.254.169.254]/{TOKEN}", "true", "cloud instance-metadata"),
        (f"https://169.254.10.10/{TOKEN}", "true", "a link-local address"),
        (f"https://[fe80::1]/{TOKEN}", "true", "a link-local address"),
        (f"https://224.0.0.251/{TOKEN}", "true", "a multicast address"),
        (f"https://0.0.0.0/{TOKEN}", "true", "an unspecified address"),
        (f"https://[::]/{TOKEN}", "true", "an unspecified address"),
    ],
)
def test_a_webhook_to_plain_http_or_a_forbidden_address_fails_the_load_naming_the_variable_only(
    url, allow_private, named
):
    with pytest.raises(ConfigurationError) as raised:
        _load_webhook(url, ALERT_WEBHOOK_ALLOW_PRIVATE=allow_private)

    message = str(raised.value)
    assert "ALERT_WEBHOOK_URL" in message and named in message
    assert TOKEN not in message and "://" not in message
    host = httpx.URL(url).host
    assert host not in message
    assert raised.value.__cause__ is None and (
        raised.value.__context__ is None or raised.value.__suppress_context__
    )


@pytest.mark.parametrize(
    "url", [f"https://10.0.0.5/{TOKEN}", f"https://100.100.3.4/{TOKEN}", f"https://[fd00::5]/{TOKEN}"]
)
def test_allow_private_opens_the_private_ranges_and_the_message_says_how(url):
    with pytest.raises(ConfigurationError, match="ALERT_WEBHOOK_ALLOW_PRIVATE=true"):
        _load_webhook(url)

    settings = _load_webhook(url, ALERT_WEBHOOK_ALLOW_PRIVATE="true")

    assert settings.allow_private_webhook
    channel = build_resources(
        load_settings({**SOURCES, "ALERT_WEBHOOK_URL": url, "ALERT_WEBHOOK_ALLOW_PRIVATE": "yes"})
    )["alert_channel"]
    assert channel.allow_private_addresses and channel.config().allow_private


def test_allow_private_must_be_true_or_false():
    with pytest.raises(ConfigurationError, match="ALERT_WEBHOOK_ALLOW_PRIVATE"):
        _load_webhook(f"https://hooks.example.com/{TOKEN}", ALERT_WEBHOOK_ALLOW_PRIVATE="maybe")
    assert not _load_webhook(f"https://hooks.example.com/{TOKEN}").allow_private_webhook


@pytest.mark.parametrize(
    ("address", "allowed_by_default", "allowed_with_private"),
    [
        ("93.184.215.14", True, True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True, True),
        ("127.0.0.1", True, True),
        ("::1", True, True),
        ("10.1.2.3", False, True),
        ("172.31.255.255", False, True),
        ("172.32.0.1", True, True),  # just outside 172.16/12
        ("192.168.0.1", False, True),
        ("100.64.0.1", False, True),
        ("fc00::1", False, True),
        ("169.254.169.254", False, False),
        ("169.254.170.2", False, False),
        ("fd00:ec2::254", False, False),
        ("100.100.100.200", False, False),
        ("169.254.1.1", False, False),
        ("fe80::abcd", False, False),
        ("224.0.0.1", False, False),
        ("ff02::1", False, False),
        ("0.0.0.0", False, False),
        ("::", False, False),
        ("255.255.255.255", False, False),
        ("192.0.2.10", False, False),  # documentation
        ("::ffff:10.0.0.1", False, True),  # IPv4-mapped: judged as the IPv4 address
        ("64:ff9b::a9fe:a9fe", False, False),  # NAT64 to 169.254.169.254
        ("2002:a9fe:a9fe::1", False, False),  # 6to4 from 169.254.169.254
    ],
)
def test_which_addresses_alerts_may_reach(address, allowed_by_default, allowed_with_private):
    ip = ipaddress.ip_address(address)
    assert (webhook_address_refusal(ip) is None) is allowed_by_default
    assert (webhook_address_refusal(ip, allow_private=True) is None) is allowed_with_private


# --- The webhook's address: at send time -------------------------------------------------------


@pytest.fixture
def no_connection_leaves(monkeypatch) -> list:
    """Every outbound connection attempt is recorded and refused, loopback included."""
    attempts: list = []

    def refuse(self, address):
        attempts.append(address)
        raise AssertionError(f"a connection to {address} was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def resolving(monkeypatch, answers: dict[str, list[str]]) -> list[str]:
    """A stand-in getaddrinfo: each name resolves to the given addresses; the names asked, in order."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (address, port, 0, 0) if ":" in address else (address, port),
            )
            for address in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize(
    ("addresses", "allow_private", "named"),
    [
        (["10.0.0.7"], False, "a private address (ALERT_WEBHOOK_ALLOW_PRIVATE=true allows it)"),
        (["93.184.215.14", "192.168.4.4"], False, "a private address"),
        (["93.184.215.14", "fd00::7"], False, "a private address"),
        (["169.254.169.254"], True, "a cloud instance-metadata address"),
        (["fe80::1%eth0"], True, "a link-local address"),
        (["::ffff:169.254.169.254"], True, "a cloud instance-metadata address"),
        (["0.0.0.0"], True, "an unspecified address"),
        (["239.1.1.1"], True, "a multicast address"),
    ],
)
def test_a_webhook_host_resolving_to_any_forbidden_address_is_refused_before_connecting(
    monkeypatch, no_connection_leaves, addresses, allow_private, named
):
    asked = resolving(monkeypatch, {"hooks.example.test": addresses})
    channel = AlertChannelConfig(
        url=f"https://hooks.example.test/services/{TOKEN}", kind="slack", allow_private=allow_private
    )

    with pytest.raises(WebhookAddressRefused) as raised:
        deliver(an_alert(), channel)

    assert asked == ["hooks.example.test"]
    assert no_connection_leaves == []
    message = "".join(traceback.format_exception(raised.value))
    assert named in str(raised.value) and an_alert().event_id in str(raised.value)
    assert TOKEN not in message and "hooks.example.test" not in message
    assert isinstance(raised.value, AlertDeliveryError)  # the sensors retry it on a later tick


def test_a_private_address_is_reached_only_when_allowed(monkeypatch, no_connection_leaves):
    resolving(monkeypatch, {"hooks.internal.test": ["10.0.0.7"]})
    channel = AlertChannelConfig(url=f"https://hooks.internal.test/{TOKEN}", kind="slack", allow_private=True)

    # Allowed: the connection is attempted, to the checked address, and refused here.
    with pytest.raises(AssertionError, match="was attempted"):
        deliver(an_alert(), channel)

    assert [address[0] for address in no_connection_leaves] == ["10.0.0.7"]


@pytest.mark.parametrize(
    "url", [f"http://hooks.example.test/{TOKEN}", f"ftp://hooks.example.test/{TOKEN}", "https://[::1"]
)
def test_at_send_time_too_plain_http_goes_nowhere_but_loopback(monkeypatch, no_connection_leaves, url):
    asked = resolving(monkeypatch, {"hooks.example.test": ["93.184.215.14"]})

    with pytest.raises(WebhookAddressRefused) as raised:
        deliver(an_alert(), AlertChannelConfig(url=url, kind="slack"))

    assert asked == [] and no_connection_leaves == []
    assert TOKEN not in str(raised.value) and "hooks.example.test" not in str(raised.value)


def test_a_host_that_does_not_resolve_is_refused_without_naming_it(monkeypatch, no_connection_leaves):
    def unresolvable(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)

    with pytest.raises(WebhookAddressRefused, match="does not resolve") as raised:
        deliver(an_alert(), AlertChannelConfig(url=f"https://nowhere.example.test/{TOKEN}", kind="slack"))

    assert "nowhere" not in str(raised.value) and no_connection_leaves == []


@pytest.fixture
def receiver(monkeypatch) -> Iterator[WebhookReceiver]:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    with WebhookReceiver() as receiver:
        yield receiver


def test_the_connection_goes_to_the_address_checked_not_to_a_second_answer(monkeypatch, receiver):
    # DNS rebinding: the name answers loopback when checked and a private address afterwards.
    answers = iter([["127.0.0.1"], ["10.0.0.7"]])
    asked: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host != "localhost":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port)) for a in next(answers)
        ]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = httpx.URL(receiver.url).port
    url = f"http://localhost:{port}/hooks/{TOKEN}"

    assert deliver(an_alert(), AlertChannelConfig(url=url, kind="generic", secret="k")) is True

    assert asked == ["localhost"]  # resolved once, by the check; the connection used its answer
    (request,) = receiver.requests
    assert request.header("Host") == f"localhost:{port}"


class _Redirecting(BaseHTTPRequestHandler):
    location = ""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(307)
        self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


def test_a_redirect_is_never_followed(receiver):
    assert httpx.Client().follow_redirects is False  # httpx's default, relied upon and passed explicitly
    handler = type("Redirecting", (_Redirecting,), {"location": receiver.url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hooks/{TOKEN}"
        with pytest.raises(AlertDeliveryError, match="HTTP 307"):
            deliver(an_alert(), AlertChannelConfig(url=url, kind="generic", secret="k"))
        # An injected client that would follow redirects is overruled too.
        with (
            httpx.Client(follow_redirects=True, trust_env=False) as following,
            pytest.raises(AlertDeliveryError, match="HTTP 307"),
        ):
            deliver(an_alert(), AlertChannelConfig(url=url, kind="generic", secret="k"), http=following)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    assert receiver.requests == []


# --- A failed warehouse write names no row value -----------------------------------------------

CUSTOMER_NAME = "Wanda Quillfeather Holdings"
CAUSE = "Odoo billed the onboarding session twice, at $412.77 each."


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_failed_warehouse_write_names_the_statement_and_no_row_value(backend, tmp_path, request):
    url = (
        request.getfixturevalue("postgres_database_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    )
    warehouse = Warehouse(url=url)
    # NOT NULL is the database's to enforce: PostgreSQL's refusal quotes the whole failing row.
    refused = results_frame(
        [result_row(5, customer_name=CUSTOMER_NAME, cause=CAUSE, status=None, delta_cents=41_277)]
    )

    with pytest.raises(WarehouseError) as raised, warehouse.begin() as connection:
        ensure_tables(connection)
        replace_period(connection, OCTOBER, refused, lines_frame([]))
    error = raised.value
    error_info = serializable_error_info_from_exc_info((type(error), error, error.__traceback__))

    message = str(raised.value)
    assert "billing_reconciliation" in message and "status" in message  # what failed, by name
    shown = "".join(traceback.format_exception(raised.value)) + error_info.to_string()
    for value in (CUSTOMER_NAME, CAUSE, "41277", "Quillfeather", "Failing row"):
        assert value not in shown, value
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert warehouse._engine().hide_parameters


# --- SQL only with bound parameters ------------------------------------------------------------

SQL_CALLS = {"text", "execute", "exec_driver_sql", "copy", "executescript"}
# Identifiers, not values: the sandbox generator writes its own schema's table and column names, and
# drops and re-adds the usage table's constraints by the names and definitions PostgreSQL's catalog
# gives; the Odoo test double's store COPYs into the tables of its own model slice and writes a
# granularity or time-zone name inline (checked against a strict pattern first) so that PostgreSQL
# matches a grouped SELECT expression with its GROUP BY.
BUILT_FROM_IDENTIFIERS = {
    ("sandbox/nexacloud_db.py", "copy"),
    ("sandbox/nexacloud_db.py", "exec_driver_sql"),
    ("sandbox/odoo_store.py", "copy"),
    ("sandbox/odoo_store.py", "text"),
}


def _is_built_string(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.JoinedStr)
        or (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add))
        or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
        )
    )


def test_the_package_passes_no_sql_built_from_formatted_strings():
    package = Path(fusion_billing_assets.__file__).parent
    built = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.Call) and node.args and _is_built_string(node.args[0])):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            where = (path.relative_to(package).as_posix(), name)
            if name in SQL_CALLS and where not in BUILT_FROM_IDENTIFIERS:
                built.append(f"{where[0]}:{node.lineno} {name}(…)")
    assert built == []


# --- A whole period, with known secrets, leaves no trace of them -------------------------------


def with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def scan_files(root: Path, secrets: dict[str, bytes]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            found += [
                f"{name} in {path.relative_to(root)}" for name, value in secrets.items() if value in content
            ]
    return found


def scan_database(url: str, secrets: dict[str, bytes]) -> tuple[int, list[str]]:
    """Every value of every column of every table, as text; how many rows were read, and the finds."""
    engine = create_engine(url)
    found, rows_read = [], 0
    try:
        reflected = MetaData()
        reflected.reflect(engine)
        with engine.connect() as connection:
            for table in reflected.sorted_tables:
                for row in connection.execute(select(table)):
                    rows_read += 1
                    text = "\x1f".join(str(value) for value in row).encode()
                    found += [
                        f"{name} in table {table.name}" for name, value in secrets.items() if value in text
                    ]
    finally:
        engine.dispose()
    return rows_read, found


@pytest.mark.postgres
def test_a_sandbox_period_reconciled_alerted_and_failed_leaks_no_secret(
    small_sandbox_on_postgres: GeneratedSandbox,
    postgres_database_url: str,
    tmp_path,
    monkeypatch,
    caplog,
    capfd,
    receiver,
):
    caplog.set_level(logging.DEBUG)
    random = uuid.uuid4().hex[:10]
    secrets = {
        "NexaCloud password": f"nc-Pa55-{random}",
        "warehouse password": f"wh-Pa55-{random}",
        "Odoo API key": f"odoo-key-{random}",
        "wrong Odoo API key": f"odoo-wrong-{random}",
        "Odoo importer key": f"odoo-import-{random}",
        "webhook token": f"hook-token-{random}",
        "webhook secret": f"hmac-{random}",
    }
    home, reports = tmp_path / "home", tmp_path / "reports"
    home.mkdir()
    odoo = OdooStandIn.from_store(small_sandbox_on_postgres.odoo_url, api_key=secrets["Odoo API key"])
    period = max(small_sandbox_on_postgres.closed_periods)

    with serving(odoo) as odoo_url:
        environment = {
            "DAGSTER_HOME": str(home),
            "NEXACLOUD_DATABASE_URL": with_password(
                small_sandbox_on_postgres.nexacloud_url, secrets["NexaCloud password"]
            ),
            "ODOO_URL": odoo_url,
            "ODOO_DATABASE": SANDBOX_DATABASE,
            "ODOO_API_KEY": secrets["Odoo API key"],
            "ODOO_PROTOCOL": "json2",
            "ODOO_LOGIN": SANDBOX_LOGIN,
            "ODOO_IMPORT_API_KEY": secrets["Odoo importer key"],
            "BILLING_WAREHOUSE_URL": with_password(postgres_database_url, secrets["warehouse password"]),
            "BILLING_REPORTS_DIR": str(reports),
            "BILLING_START_PERIOD": min(small_sandbox_on_postgres.closed_periods),
            "ALERT_WEBHOOK_URL": f"{receiver.url}/{secrets['webhook token']}",
            "ALERT_WEBHOOK_KIND": "generic",
            "ALERT_WEBHOOK_SECRET": secrets["webhook secret"],
        }
        for variable in PROXY_VARIABLES:
            monkeypatch.delenv(variable, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)  # EnvVar resolves secrets from the process environment
        said: list[str] = []
        with instance_for_test(temp_dir=str(home)) as instance:
            resources = build_resources(load_settings(environment))
            reconciled = defs.resolve_job_def(billing_period_job_name).execute_in_process(
                partition_key=period, instance=instance, resources=resources
            )
            assert reconciled.success
            said.append(_tick(reconciliation_alerts, instance, resources, "warehouse", "alert_channel")[0])
            watching, failures_cursor = _tick(run_failure_alerts, instance, resources, "alert_channel")

            # A revoked key: the Odoo steps fail with a 401, and the failure is alerted.
            monkeypatch.setenv("ODOO_API_KEY", secrets["wrong Odoo API key"])
            refused = defs.resolve_job_def(billing_period_job_name).execute_in_process(
                partition_key=period,
                instance=instance,
                resources=build_resources(load_settings(environment)),
                raise_on_error=False,
            )
            assert not refused.success
            errors = [str(event.event_specific_data.error) for event in refused.get_step_failure_events()]
            assert any("401" in error for error in errors), errors
            reported, _ = _tick(
                run_failure_alerts, instance, resources, "alert_channel", cursor=failures_cursor
            )
            said += [watching, reported, *errors]

            # The importer's key, refused by Odoo: the apply stops and says so, without the key.
            monkeypatch.setenv("ODOO_API_KEY", secrets["Odoo API key"])
            applied = defs.resolve_job_def(apply_import_job_name).execute_in_process(
                run_config={"ops": {"apply_period_import": {"config": {"period": period, "dry_run": False}}}},
                instance=instance,
                resources=build_resources(load_settings(environment)),
                raise_on_error=False,
            )
            assert not applied.success
            failures = [str(event.event_specific_data.error) for event in applied.get_step_failure_events()]
            assert any("did not go through" in failure and "401" in failure for failure in failures), failures
            said += failures

    as_bytes = {name: value.encode() for name, value in secrets.items()}
    events = [request.header("X-Fusion-Event-Id") for request in receiver.requests]
    bodies = [json.loads(request.body) for request in receiver.requests]
    assert {body["event"] for body in bodies} == {alerts.MISMATCH, alerts.RUN_FAILED}, said
    assert len(set(events)) == len(events) == 2
    leaks = scan_files(home, as_bytes) + scan_files(reports, as_bytes)
    assert any(reports.rglob("*.html")) and any(home.rglob("*.db"))
    rows_read, in_warehouse = scan_database(postgres_database_url, as_bytes)
    assert rows_read > 0
    leaks += in_warehouse
    for request in receiver.requests:
        received = request.body + "\n".join(f"{k}: {v}" for k, v in request.headers.items()).encode()
        leaks += [f"{name} in an alert" for name, value in as_bytes.items() if value in received]
    captured = capfd.readouterr()
    logged = "\n".join([caplog.text, captured.out, captured.err, *said]).encode()
    leaks += [f"{name} in the logs or errors" for name, value in as_bytes.items() if value in logged]
    assert leaks == []


def _tick(
    sensor, instance: DagsterInstance, resources: dict, *names: str, cursor: str | None = None
) -> tuple[str, str | None]:
    """Evaluate a sensor once: what it said, and its cursor afterwards."""
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={name: resources[name] for name in names}
    ) as context:
        outcome = sensor(context)
    assert isinstance(outcome, SkipReason)
    return outcome.skip_message, context.cursor
