"""Source assets contract (issue "Source assets"; docs/design.md §2, §4, §5).

Every NexaCloud and Odoo source asset materializes a closed and the provisional billing period,
on SQLite and on PostgreSQL, over JSON-2 and legacy /jsonrpc, recording the period it judged and
whether it is provisional, with every referential check passing. Its totals are exact: they equal
sums computed independently, straight from the NexaCloud tables and from the Odoo records the
test double serves. Odoo reads cost requests per page, not per invoice. A record that breaks a
contract is set aside, named with its field, and the period goes on: what depends on it still
runs (docs/design.md §6.10). What a person reads (metadata, log messages) says what the Odoo
reads cost and never holds a secret.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pandas as pd
import pytest
from dagster import (
    AssetIn,
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    asset,
    materialize,
    serialize_value,
)
from sqlalchemy import Date, DateTime, bindparam, create_engine, text
from sqlalchemy.engine import Row, make_url

from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.periods import PeriodWindow, next_period, period_window
from fusion_billing_assets.defs import nexacloud, odoo
from fusion_billing_assets.defs.resources import NexaCloudDatabase, OdooAPI
from fusion_billing_assets.partitions import billing_periods
from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE, SANDBOX_LOGIN
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn
from fusion_billing_assets.sandbox.resources import SANDBOX_ODOO_URL, SandboxOdooAPI, sandbox_odoo
from fusion_billing_assets.sources.odoo import OdooClient
from fusion_billing_assets.sources.odoo_frames import OdooModels, fetch_invoices_and_lines
from tests.conftest import GeneratedSandbox

SOURCE_ASSETS = [*nexacloud.assets, *odoo.assets]
SOURCE_ASSET_KEYS = {key for assets_def in SOURCE_ASSETS for key in assets_def.keys}
REFERENTIAL_CHECKS = {spec.key for assets_def in SOURCE_ASSETS for spec in assets_def.check_specs}
# The Odoo assets that read Odoo, one step each; odoo/invoice_lines comes with odoo/invoices' read.
ODOO_READING_ASSETS = [
    AssetKey(["odoo", name]) for name in ("account_links", "subscriptions", "usage", "invoices", "partners")
]

USAGE = AssetKey(["nexacloud", "usage"])
DEPLOYMENTS = AssetKey(["nexacloud", "deployments"])
USAGE_STEP = "nexacloud__usage"


def odoo_api(sandbox: GeneratedSandbox, protocol: str) -> OdooAPI:
    return sandbox_odoo(sandbox.odoo_url, protocol)


def materialized(result: ExecuteInProcessResult) -> dict[AssetKey, dict]:
    """Each materialized asset's metadata, as plain values."""
    return {
        event.asset_key: {name: value.value for name, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def started_steps(result: ExecuteInProcessResult) -> set[str]:
    return {event.step_key for event in result.all_events if event.is_step_start}


def window_of(sandbox: GeneratedSandbox, period: str) -> PeriodWindow:
    return period_window(period, sandbox.manifest["timezone"])


# --- Every asset, every period, both databases, both Odoo protocols -----------------------------


@dataclass(frozen=True)
class SourceRuns:
    """One materialization of every source asset per period of the sandbox."""

    sandbox: GeneratedSandbox
    protocol: str
    by_period: dict[str, ExecuteInProcessResult]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("sqlite", "json2"), id="sqlite-json2"),
        pytest.param(("sqlite", "jsonrpc"), id="sqlite-jsonrpc"),
        pytest.param(("postgres", "json2"), id="postgres-json2", marks=pytest.mark.postgres),
        pytest.param(("postgres", "jsonrpc"), id="postgres-jsonrpc", marks=pytest.mark.postgres),
    ],
)
def source_runs(request, tmp_path_factory) -> SourceRuns:
    database, protocol = request.param
    sandbox = request.getfixturevalue(
        "small_sandbox_on_postgres" if database == "postgres" else "small_sandbox"
    )
    resources = {
        "nexacloud": NexaCloudDatabase(url=sandbox.nexacloud_url),
        "odoo": odoo_api(sandbox, protocol),
    }
    instance = DagsterInstance.ephemeral(
        tempdir=str(tmp_path_factory.mktemp(f"instance_{database}_{protocol}"))
    )
    by_period = {
        period: materialize(
            SOURCE_ASSETS, resources=resources, partition_key=period, instance=instance, raise_on_error=False
        )
        for period in [*sandbox.closed_periods, sandbox.provisional_period]
    }
    return SourceRuns(sandbox, protocol, by_period)


def test_every_source_asset_materializes_each_period_marked_provisional_or_not(source_runs):
    assert source_runs.sandbox.closed_periods, "the sandbox has closed periods to materialize"
    for period, result in source_runs.by_period.items():
        assert result.success, f"{period}: failed steps {sorted(result.get_failed_step_keys())}"
        metadata = materialized(result)
        assert set(metadata) == SOURCE_ASSET_KEYS
        assert {event.partition for event in result.get_asset_materialization_events()} == {period}
        provisional = period == source_runs.sandbox.provisional_period
        for key, values in metadata.items():
            assert values["billing_period"] == period, key
            assert values["provisional"] is provisional, key


def test_every_referential_check_passes_and_names_the_period_it_judged(source_runs):
    assert len(REFERENTIAL_CHECKS) == 5
    for period, result in source_runs.by_period.items():
        evaluations = {
            evaluation.asset_check_key: evaluation for evaluation in result.get_asset_check_evaluations()
        }
        assert set(evaluations) == REFERENTIAL_CHECKS
        for key, evaluation in evaluations.items():
            assert evaluation.passed, f"{period}: {key} failed: {evaluation.description}"
            assert evaluation.metadata["billing_period"].value == period
            assert evaluation.metadata["offending_count"].value == 0


def test_odoo_assets_record_the_requests_and_pages_their_reads_cost(source_runs):
    login = 1 if source_runs.protocol == "jsonrpc" else 0
    for result in source_runs.by_period.values():
        metadata = materialized(result)
        for key in ODOO_READING_ASSETS:
            values = metadata[key]
            assert values["odoo_pages"] >= 1, key
            # No retries against the in-process double: one request per page, plus the login.
            assert values["odoo_retries"] == 0
            assert values["odoo_requests"] == values["odoo_pages"] + login, key
            assert sum(values["odoo_calls"].values()) == values["odoo_requests"], key
            assert values["source"] == (
                f"Odoo {SANDBOX_ODOO_URL} (database {SANDBOX_DATABASE!r}, {source_runs.protocol})"
            )


# --- Totals are exact -------------------------------------------------------------------------


def query_nexacloud(sandbox: GeneratedSandbox, statement, **parameters) -> list[Row]:
    """Ask NexaCloud's database directly, without the project's queries."""
    engine = create_engine(sandbox.nexacloud_url)
    try:
        with engine.connect() as connection:
            return connection.execute(statement, parameters).all()
    finally:
        engine.dispose()


USAGE_TOTALS_SQL = text(
    """
    SELECT COUNT(*) AS records,
           COALESCE(SUM(CAST(ROUND(quantity * 1000) AS BIGINT)), 0) AS milliseconds,
           COALESCE(SUM(CASE WHEN recorded_at > :end THEN CAST(ROUND(quantity * 1000) AS BIGINT) END), 0)
               AS late_milliseconds,
           COALESCE(SUM(CASE WHEN recorded_at > :end THEN 1 ELSE 0 END), 0) AS late_records
      FROM usage_records
     WHERE metric = 'cpu_seconds' AND window_start >= :start AND window_start < :end
    """
).bindparams(
    bindparam("start", type_=DateTime(timezone=True)), bindparam("end", type_=DateTime(timezone=True))
)

USAGE_PER_DEPLOYMENT_SQL = text(
    """
    SELECT deployment_id, COALESCE(SUM(CAST(ROUND(quantity * 1000) AS BIGINT)), 0) AS milliseconds
      FROM usage_records
     WHERE metric = 'cpu_seconds' AND window_start >= :start AND window_start < :end
     GROUP BY deployment_id
    """
).bindparams(
    bindparam("start", type_=DateTime(timezone=True)), bindparam("end", type_=DateTime(timezone=True))
)

INVOICE_TOTALS_SQL = text(
    """
    SELECT id, subtotal_cents, tax_cents, total_cents
      FROM invoices
     WHERE period_start >= :period AND period_start < :next_period AND status <> 'void'
    """
).bindparams(bindparam("period", type_=Date), bindparam("next_period", type_=Date))


def test_nexacloud_usage_totals_equal_a_direct_sum_over_the_period_window(source_runs):
    late_in_closed_periods = 0
    for period, result in source_runs.by_period.items():
        window = window_of(source_runs.sandbox, period)
        (direct,) = query_nexacloud(
            source_runs.sandbox, USAGE_TOTALS_SQL, start=window.start_utc, end=window.end_utc
        )
        usage = result.asset_value(USAGE)
        assert int(usage["cpu_milliseconds"].sum()) == int(direct.milliseconds) > 0, period
        assert int(usage["records"].sum()) == direct.records, period
        assert int(usage["late_cpu_milliseconds"].sum()) == int(direct.late_milliseconds), period
        assert int(usage["late_records"].sum()) == direct.late_records, period
        # One row per deployment, its total over the period.
        per_deployment = query_nexacloud(
            source_runs.sandbox, USAGE_PER_DEPLOYMENT_SQL, start=window.start_utc, end=window.end_utc
        )
        assert dict(zip(usage["deployment_id"], usage["cpu_milliseconds"], strict=True)) == {
            row.deployment_id: int(row.milliseconds) for row in per_deployment
        }, period
        # What a person reads counts the usable totals (a keyless reading sets its deployment aside).
        kept, metadata = usage[usage["set_aside"].isna()], materialized(result)[USAGE]
        assert metadata["usage_records"] == int(kept["records"].sum())
        assert metadata["deployments_with_usage"] == len(kept)
        assert metadata["cpu_hours"] == round(int(kept["cpu_milliseconds"].sum()) / 3_600_000, 3)
        assert metadata["late_cpu_hours"] == round(int(kept["late_cpu_milliseconds"].sum()) / 3_600_000, 3)
        if period in source_runs.sandbox.closed_periods:
            late_in_closed_periods += int(direct.late_milliseconds)
    assert late_in_closed_periods > 0, "the sandbox ingests some usage after its period closed"


def test_nexacloud_invoice_totals_equal_the_period_non_void_invoices_read_directly(source_runs):
    for period, result in source_runs.by_period.items():
        first_day = window_of(source_runs.sandbox, period).period
        rows = query_nexacloud(
            source_runs.sandbox, INVOICE_TOTALS_SQL, period=first_day, next_period=next_period(first_day)
        )
        expected = {row.id: (row.subtotal_cents, row.tax_cents, row.total_cents) for row in rows}
        invoices = result.asset_value(AssetKey(["nexacloud", "invoices"]))
        billed = dict(
            zip(
                invoices["invoice_id"],
                zip(invoices["subtotal_cents"], invoices["tax_cents"], invoices["total_cents"], strict=True),
                strict=True,
            )
        )
        assert billed == expected, period
        metadata = materialized(result)[AssetKey(["nexacloud", "invoices"])]
        assert metadata["total_billed"] == format_cents(sum(total for *_, total in expected.values()))
        if period in source_runs.sandbox.closed_periods:
            assert expected, f"{period}: NexaCloud billed the closed period"


def odoo_records(sandbox: GeneratedSandbox) -> dict[str, list[dict]]:
    return sandbox.odoo_models()


def cents(amount: float) -> int:
    return int((Decimal(str(amount)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def milliseconds(quantity: float) -> int:
    return int((Decimal(str(quantity)) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def odoo_invoices_of_period(models: dict[str, list[dict]], period: str) -> dict[int, tuple[int, int, int]]:
    """(untaxed, tax, total) cents per move of the period, refunds negative, from the raw records."""
    moves = {
        move["id"]: move
        for move in models["account.move"]
        if move["move_type"] in ("out_invoice", "out_refund") and move["state"] != "cancel"
    }
    month = period[:7]
    in_period = {
        line["move_id"]
        for line in models["account.move.line"]
        if line["display_type"] == "product"
        and line["move_id"] in moves
        and (line["deferred_start_date"] or moves[line["move_id"]]["invoice_date"])[:7] == month
    }
    totals = {}
    for move_id in in_period:
        move = moves[move_id]
        sign = -1 if move["move_type"] == "out_refund" else 1
        totals[move_id] = tuple(
            sign * cents(move[field]) for field in ("amount_untaxed", "amount_tax", "amount_total")
        )
    return totals


def test_odoo_invoice_totals_equal_the_period_moves_of_the_odoo_records_refunds_negative(source_runs):
    models = odoo_records(source_runs.sandbox)
    refunds_seen = 0
    for period, result in source_runs.by_period.items():
        expected = odoo_invoices_of_period(models, period)
        invoices = result.asset_value(AssetKey(["odoo", "invoices"]))
        invoiced = dict(
            zip(
                invoices["move_id"],
                zip(invoices["untaxed_cents"], invoices["tax_cents"], invoices["total_cents"], strict=True),
                strict=True,
            )
        )
        assert invoiced == expected, period
        metadata = materialized(result)[AssetKey(["odoo", "invoices"])]
        assert metadata["total_invoiced"] == format_cents(sum(total for *_, total in expected.values()))
        refunds_seen += sum(total < 0 for *_, total in expected.values())
    assert refunds_seen >= 1, "the sandbox holds a refund in a materialized period"


def test_odoo_usage_per_subscription_equals_its_ledger_records_in_the_period_window(source_runs):
    ledger = odoo_records(source_runs.sandbox)["fusion.billing.usage"]
    for period, result in source_runs.by_period.items():
        window = window_of(source_runs.sandbox, period)
        start, end = (f"{moment:%Y-%m-%d %H:%M:%S}" for moment in (window.start_utc, window.end_utc))
        ledger_milliseconds: dict[int, int] = defaultdict(int)
        ledger_records: dict[int, int] = defaultdict(int)
        for record in ledger:
            if record["metric"] == "cpu_seconds" and start <= record["timestamp"] < end:
                ledger_milliseconds[record["subscription_id"]] += milliseconds(record["quantity"])
                ledger_records[record["subscription_id"]] += 1
        usage = result.asset_value(AssetKey(["odoo", "usage"]))
        # One group per subscription, summed by Odoo over the period.
        assert usage["subscription_id"].is_unique, period
        per_subscription = usage.set_index("subscription_id")
        assert per_subscription["cpu_milliseconds"].to_dict() == dict(ledger_milliseconds), period
        assert per_subscription["records"].to_dict() == dict(ledger_records), period
        assert ledger_milliseconds, f"{period}: the ledger holds usage"
        kept, metadata = usage[usage["set_aside"].isna()], materialized(result)[AssetKey(["odoo", "usage"])]
        assert metadata["subscriptions_with_usage"] == len(kept)
        assert metadata["ledger_records"] == int(kept["records"].sum())
        assert metadata["cpu_hours"] == round(int(kept["cpu_milliseconds"].sum()) / 3_600_000, 3)


# --- Odoo invoice reads cost requests per page -------------------------------------------------

PAGE_SIZE = 50
READ_PERIOD = "2026-10-01"
PLAN_PRODUCT_ID, OVERAGE_PRODUCT_ID = 1, 2


def odoo_with_invoices(count: int) -> OdooStandIn:
    """An Odoo holding ``count`` posted invoices of October 2026, each with a plan and an overage line."""
    moves, lines = [], []
    for move_id in range(1, count + 1):
        moves.append(
            {
                "id": move_id,
                "name": f"INV/2026/{move_id:05d}",
                "move_type": "out_invoice",
                "state": "posted",
                "partner_id": 1,
                "currency_id": 1,
                "invoice_date": "2026-11-01",
                "amount_untaxed": 110.0,
                "amount_tax": 14.3,
                "amount_total": 124.3,
            }
        )
        for product_id, subtotal, total in (
            (PLAN_PRODUCT_ID, 100.0, 113.0),
            (OVERAGE_PRODUCT_ID, 10.0, 11.3),
        ):
            lines.append(
                {
                    "id": len(lines) + 1,
                    "move_id": move_id,
                    "display_type": "product",
                    "product_id": product_id,
                    "quantity": 1.0,
                    "price_unit": subtotal,
                    "price_subtotal": subtotal,
                    "price_total": total,
                    "deferred_start_date": "2026-10-01",
                    "deferred_end_date": "2026-10-31",
                }
            )
    return OdooStandIn(
        {
            "res.currency": [{"id": 1, "name": "CAD"}],
            "res.partner": [{"id": 1, "name": "Customer 1"}],
            "product.product": [
                {"id": PLAN_PRODUCT_ID, "default_code": "NC-PLAN-STARTER"},
                {"id": OVERAGE_PRODUCT_ID, "default_code": "NC-CPU-OVERAGE"},
            ],
            "account.move": moves,
            "account.move.line": lines,
        }
    )


def keyset_pages(records: int) -> int:
    """Requests of one keyset read: every full page, then the short (maybe empty) one that ends it."""
    return records // PAGE_SIZE + 1


def expected_calls(invoices: int, protocol: str) -> dict[str, int]:
    calls = {
        "account.move.search_read": keyset_pages(invoices),
        # The lines in one keyset read of their own, whatever the number of invoices.
        "account.move.line.search_read": keyset_pages(2 * invoices),
        "product.product.search_read": keyset_pages(2),
    }
    if protocol == "jsonrpc":
        calls["res.users.login"] = 1
    return calls


@pytest.mark.parametrize("protocol", ["json2", "jsonrpc"])
@pytest.mark.parametrize("invoices", [60, 240, 600])
def test_odoo_invoice_reads_cost_requests_per_page_of_records_not_per_invoice(invoices, protocol):
    app = odoo_with_invoices(invoices)
    with httpx.Client(base_url="http://odoo.test", transport=httpx.WSGITransport(app=app)) as http:
        client = OdooClient(
            http,
            database=SANDBOX_DATABASE,
            api_key=SANDBOX_API_KEY,
            protocol=protocol,
            login=SANDBOX_LOGIN,
            page_size=PAGE_SIZE,
        )
        frame, lines = fetch_invoices_and_lines(
            client, OdooModels(), period_window(READ_PERIOD, "America/Toronto")
        )
    assert len(frame) == invoices
    assert len(lines) == 2 * invoices
    assert int(frame["total_cents"].sum()) == 12_430 * invoices
    assert int(lines["subtotal_cents"].sum()) == 11_000 * invoices
    assert client.stats.calls_by_method == expected_calls(invoices, protocol)
    assert client.stats.requests == sum(expected_calls(invoices, protocol).values())
    # One request per invoice, or per line, would be N or 2N requests.
    assert client.stats.requests < invoices / 3


# --- A period that breaks a contract fails ------------------------------------------------------


@asset(key=["billing", "metered_usage"], ins={"usage": AssetIn(key=USAGE)}, partitions_def=billing_periods)
def metered_usage(usage: pd.DataFrame) -> int:
    """Stands in for the billing assets that read NexaCloud usage: it still runs beside a broken record."""
    return int(usage["cpu_milliseconds"].sum())


METERED_USAGE_STEP = "billing__metered_usage"


def sqlite_timestamp(moment) -> str:
    """A UTC moment as SQLAlchemy stores it in SQLite, so text comparisons order it right."""
    return f"{moment:%Y-%m-%d %H:%M:%S.%f}"


def sandbox_copy(sandbox: GeneratedSandbox, tmp_path: Path) -> Path:
    copy = tmp_path / "nexacloud.sqlite"
    shutil.copyfile(make_url(sandbox.nexacloud_url).database, copy)
    return copy


@pytest.mark.parametrize(
    "quantity",
    [
        pytest.param(-1_000_000_000.0, id="outweighs-the-deployment"),
        pytest.param(-1.5, id="within-the-deployment-s-usage"),
    ],
)
def test_a_negative_usage_record_sets_its_deployment_aside_naming_the_record_key_and_field(
    small_sandbox, tmp_path, quantity
):
    period = small_sandbox.closed_periods[0]
    window = window_of(small_sandbox, period)
    database = sandbox_copy(small_sandbox, tmp_path)
    with closing(sqlite3.connect(database)) as connection, connection:
        reading_id, deployment_id = connection.execute(
            "SELECT id, deployment_id FROM usage_records WHERE window_start >= ? AND window_start < ? "
            "ORDER BY id LIMIT 1",
            (sqlite_timestamp(window.start_utc), sqlite_timestamp(window.end_utc)),
        ).fetchone()
        # A second, negative reading of a real deployment's window: summed per deployment, it must still fail.
        connection.execute(
            "INSERT INTO usage_records SELECT (SELECT MAX(id) + 1 FROM usage_records), deployment_id, "
            "metric, window_start, window_end, ?, recorded_at, 'negative-reading' FROM usage_records WHERE id = ?",
            (quantity, reading_id),
        )
    result = materialize(
        [*nexacloud.assets, metered_usage],
        resources={"nexacloud": NexaCloudDatabase(url=f"sqlite:///{database}")},
        partition_key=period,
        instance=DagsterInstance.ephemeral(tempdir=str(tmp_path)),
        raise_on_error=False,
    )

    assert result.success, "a broken record is set aside, it does not stop the period"
    usage = result.asset_value(USAGE)
    set_aside = usage[usage["set_aside"].notna()]
    assert list(set_aside["deployment_id"]) == [deployment_id]
    (problem,) = set_aside["set_aside"]
    assert problem.startswith("quantity: usage record ") and "idempotency_key=negative-reading" in problem
    assert "must be >= 0" in problem
    metadata = materialized(result)[USAGE]
    assert metadata["rows_set_aside"] == 1
    assert (
        f"deployment_id={deployment_id}" in metadata["set_aside"]
        and "negative-reading" in metadata["set_aside"]
    )
    assert metadata["billing_period"] == period
    assert METERED_USAGE_STEP in started_steps(result)


def test_a_deployment_of_an_unknown_customer_fails_its_check_and_the_period_goes_on(small_sandbox, tmp_path):
    period = small_sandbox.closed_periods[0]
    database = sandbox_copy(small_sandbox, tmp_path)
    with closing(sqlite3.connect(database)) as connection, connection:
        orphan_id = connection.execute("SELECT MAX(id) + 1 FROM deployments").fetchone()[0]
        # SQLite enforces no foreign key unless asked to: the customer can be missing, as after a bad delete.
        connection.execute(
            """
            INSERT INTO deployments
            SELECT ?, 999999, plan_id, 'orphan', region, 'running', created_at, NULL
              FROM deployments WHERE terminated_at IS NULL ORDER BY id LIMIT 1
            """,
            (orphan_id,),
        )
    result = materialize(
        nexacloud.assets,
        resources={"nexacloud": NexaCloudDatabase(url=f"sqlite:///{database}")},
        partition_key=period,
        instance=DagsterInstance.ephemeral(tempdir=str(tmp_path)),
        raise_on_error=False,
    )

    assert result.success
    (verdict,) = [
        evaluation
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.check_name == "deployments_reference_known_customers_and_plans"
    ]
    assert verdict.asset_key == DEPLOYMENTS
    assert not verdict.passed
    assert verdict.metadata["offending_deployment_ids"].value == [orphan_id]
    assert verdict.metadata["billing_period"].value == period
    assert verdict.severity.value == "WARN" and not verdict.blocking
    assert USAGE in materialized(result), "the rest of the period is read as usual"


# --- Secrets stay out of what a person reads ----------------------------------------------------

PASSWORD = "s3cret"


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["sandbox", "missing"], ids=["reachable", "missing-database"])
def test_no_password_or_api_key_reaches_metadata_or_log_messages(
    small_sandbox_on_postgres, tmp_path, database
):
    url = make_url(small_sandbox_on_postgres.nexacloud_url).set(password=PASSWORD)
    if database == "missing":
        url = url.set(database=f"{url.database}_missing")
    instance = DagsterInstance.ephemeral(tempdir=str(tmp_path))
    result = materialize(
        SOURCE_ASSETS,
        resources={
            "nexacloud": NexaCloudDatabase(url=url.render_as_string(hide_password=False)),
            "odoo": odoo_api(small_sandbox_on_postgres, "json2"),
        },
        partition_key=small_sandbox_on_postgres.closed_periods[0],
        instance=instance,
        raise_on_error=False,
    )

    nexacloud_keys = {key for assets_def in nexacloud.assets for key in assets_def.keys}
    metadata = materialized(result)
    if database == "sandbox":
        assert result.success
        for key in nexacloud_keys:
            assert metadata[key]["source"] == url.render_as_string(hide_password=True)
    else:
        assert not result.success
        assert not nexacloud_keys & set(metadata)
    logs = instance.all_logs(result.run_id)
    assert any(entry.user_message for entry in logs)
    for entry in logs:
        written = serialize_value(entry)
        assert PASSWORD not in written, entry.user_message
        assert SANDBOX_API_KEY not in written, entry.user_message


def test_a_refused_odoo_key_fails_in_the_clients_own_words_not_dagsters(small_sandbox, tmp_path):
    wrong_key = SandboxOdooAPI(
        url=SANDBOX_ODOO_URL,
        database=SANDBOX_DATABASE,
        api_key="not-the-key",
        login=SANDBOX_LOGIN,
        store_url=small_sandbox.odoo_url,
    )
    result = materialize(
        odoo.assets,
        resources={"odoo": wrong_key},
        partition_key=small_sandbox.closed_periods[0],
        instance=DagsterInstance.ephemeral(tempdir=str(tmp_path)),
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("odoo__account_links")
    assert failure.error.cls_name == "Failure"
    description = failure.user_failure_data.description
    assert description.startswith(f"Odoo {SANDBOX_ODOO_URL} ")
    assert "401" in description and "ir.model.data" in description
    assert "not-the-key" not in description
