"""The usage days that differ (docs/design.md §2, §8): per local day only where the totals disagree.

``nexacloud/usage`` and ``odoo/usage`` hold one total per deployment and per subscription. The
mapped pairs whose totals disagree, and only those, are then read per local day from both systems —
NexaCloud with bound ``IN (...)`` chunks, Odoo with ``formatted_read_group`` on ``subscription_id in
[...]`` by ``timestamp:day`` in the billing time zone, paged — and the days on which the two differ
are what a ``usage_mismatch``'s cause names. When every pair agrees nothing is read at all.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import httpx
import pandas as pd
import pytest
from dagster import build_asset_context
from sqlalchemy import create_engine, event

from fusion_billing_assets.billing.periods import period_window
from fusion_billing_assets.billing.reconcile import (
    USAGE_DAY_COLUMNS,
    account_mapping,
    usage_days_that_differ,
    usage_pairs_that_differ,
)
from fusion_billing_assets.defs import reconciliation
from fusion_billing_assets.defs.resources import NexaCloudDatabase, OdooAPI
from fusion_billing_assets.sources import nexacloud, odoo_frames
from fusion_billing_assets.sources import nexacloud_schema as schema
from fusion_billing_assets.sources.frames import typed_frame
from fusion_billing_assets.sources.odoo import OdooClient
from fusion_billing_assets.sources.odoo_frames import OdooModels

TORONTO = "America/Toronto"
OCTOBER = period_window("2026-10-01", TORONTO)
# Local midnight of 2026-10-02 in Toronto (EDT, UTC-4).
OCTOBER_2_UTC = datetime(2026, 10, 2, 4, tzinfo=UTC)


def _usage(rows, set_aside=None) -> pd.DataFrame:
    """nexacloud/usage as its asset yields it: (deployment_id, cpu_milliseconds) totals."""
    frame = typed_frame(
        [(d, millis, 1, 0, 0, 0, 0) for d, millis in rows], nexacloud.USAGE_COLUMNS, lenient=True
    )
    if set_aside:
        frame.loc[frame["deployment_id"].isin(set_aside), "set_aside"] = "negative_records: quantity >= 0"
    return frame


def _ledger(rows) -> pd.DataFrame:
    """odoo/usage as its asset yields it: (subscription_id, cpu_milliseconds) totals."""
    return typed_frame([(s, millis, 1) for s, millis in rows], odoo_frames.ODOO_USAGE_COLUMNS, lenient=True)


def _mapping(links: dict[int, int | None]) -> pd.DataFrame:
    """Customer 1 with the given deployments, each linked to its subscription (None: unlinked)."""
    customers = pd.DataFrame({"customer_id": [1]})
    deployments = pd.DataFrame({"deployment_id": list(links), "customer_id": [1] * len(links)})
    link_rows = [("customer", 1, "res.partner", 101, "nexacloud.customer_1")] + [
        ("deployment", d, "sale.order", s, f"nexacloud.deployment_{d}") for d, s in links.items() if s
    ]
    account_links = typed_frame(link_rows, odoo_frames.LINK_COLUMNS)
    partners = typed_frame([(101, "Maple", None, None, 101, True)], odoo_frames.PARTNER_COLUMNS)
    invoices = pd.DataFrame({"partner_id": pd.Series(dtype="int64")})
    return account_mapping(customers, deployments, account_links, partners, invoices)


# --- Which pairs, which days ---------------------------------------------------------------------


def test_only_mapped_pairs_whose_totals_disagree_are_kept_a_missing_side_counting_zero():
    mapping = _mapping({11: 1011, 12: 1012, 13: 1013, 14: 1014, 15: None})
    nexacloud_usage = _usage([(11, 5_000), (12, 7_000), (13, 9_000), (15, 1_000)])
    odoo_usage = _ledger([(1011, 5_000), (1012, 6_999), (1014, 250)])

    pairs = usage_pairs_that_differ(nexacloud_usage, odoo_usage, mapping)

    # 11 agrees; 12 differs; 13 has no ledger at all; 14 was never metered; 15 maps to nothing.
    assert pairs.to_dict("records") == [
        {
            "deployment_id": 12,
            "subscription_id": 1012,
            "nexacloud_cpu_milliseconds": 7_000,
            "odoo_cpu_milliseconds": 6_999,
        },
        {
            "deployment_id": 13,
            "subscription_id": 1013,
            "nexacloud_cpu_milliseconds": 9_000,
            "odoo_cpu_milliseconds": 0,
        },
        {
            "deployment_id": 14,
            "subscription_id": 1014,
            "nexacloud_cpu_milliseconds": 0,
            "odoo_cpu_milliseconds": 250,
        },
    ]


def test_a_set_aside_total_is_not_compared_its_customer_cannot_be_judged_anyway():
    mapping = _mapping({11: 1011, 12: 1012})
    nexacloud_usage = _usage([(11, 5_000), (12, 7_000)], set_aside=[11])
    ledger = _ledger([(1011, 4_000), (1012, 7_000)])
    ledger.loc[ledger["subscription_id"] == 1012, "set_aside"] = "records: greater_than(0)"

    assert usage_pairs_that_differ(nexacloud_usage, ledger, mapping).empty


def test_the_days_kept_are_those_that_differ_a_day_missing_on_one_side_counting_zero():
    pairs = usage_pairs_that_differ(
        _usage([(11, 6_000), (12, 1_000)]),
        _ledger([(1011, 5_000), (1012, 1_000)]),
        _mapping({11: 1011, 12: 1012}),
    )
    day = OCTOBER.local_days()
    nexacloud_days = typed_frame(
        [(11, day[0], 1_000), (11, day[1], 2_000), (11, day[2], 3_000), (12, day[0], 1_000)],
        nexacloud.USAGE_DAY_COLUMNS,
    )
    odoo_days = typed_frame(
        [(1011, day[0], 1_000), (1011, day[2], 2_000), (1011, day[4], 2_000), (1012, day[0], 1_000)],
        odoo_frames.ODOO_USAGE_DAY_COLUMNS,
    )

    days = usage_days_that_differ(pairs, nexacloud_days, odoo_days)

    assert list(days.columns) == list(USAGE_DAY_COLUMNS)
    assert [tuple(row) for row in days.itertuples(index=False)] == [
        (11, 1011, day[1], 2_000, 0),
        (11, 1011, day[2], 3_000, 2_000),
        (11, 1011, day[4], 0, 2_000),
    ]
    assert days.dtypes.to_dict() == {
        "deployment_id": "int64",
        "subscription_id": "int64",
        "usage_date": object,
        "nexacloud_cpu_milliseconds": "int64",
        "odoo_cpu_milliseconds": "int64",
    }


def test_no_pair_that_differs_gives_an_empty_frame_of_the_same_columns():
    pairs = usage_pairs_that_differ(_usage([(11, 5_000)]), _ledger([(1011, 5_000)]), _mapping({11: 1011}))
    days = usage_days_that_differ(
        pairs,
        typed_frame([], nexacloud.USAGE_DAY_COLUMNS),
        typed_frame([], odoo_frames.ODOO_USAGE_DAY_COLUMNS),
    )
    assert days.empty and list(days.columns) == list(USAGE_DAY_COLUMNS)


# --- NexaCloud: bound IN (...) chunks, only the deployments asked for ------------------------------


def _usage_records() -> list[dict]:
    """Deployments 1–5, each with six readings of 1.5 × its id CPU-seconds: at 01:00 local on
    Oct 2, 3 and 4 and at 23:30 local the evening before."""
    records = []
    for deployment_id in range(1, 6):
        for day in range(3):
            for start in (
                OCTOBER_2_UTC + timedelta(days=day, hours=1),
                OCTOBER_2_UTC + timedelta(days=day, minutes=-30),
            ):
                records.append(
                    {
                        "id": len(records) + 1,
                        "deployment_id": deployment_id,
                        "metric": "cpu_seconds",
                        "window_start": start,
                        "window_end": start + timedelta(minutes=30),
                        "quantity": 1.5 * deployment_id,
                        "recorded_at": start + timedelta(hours=1),
                        "idempotency_key": f"key-{len(records) + 1}",
                    }
                )
    return records


def _nexacloud_holding_usage(url: str) -> str:
    """``url`` with the §4 tables created and ``_usage_records`` in them."""
    engine = create_engine(url)
    try:
        schema.metadata.create_all(engine)
        created = datetime(2026, 1, 5, tzinfo=UTC)
        with engine.begin() as connection:
            connection.execute(
                schema.customers.insert(),
                [
                    {"id": 1, "name": "Maple", "email": "ap@maple.example", "province": "ON"}
                    | {"currency": "CAD", "status": "active", "created_at": created}
                ],
            )
            connection.execute(
                schema.plans.insert(),
                [
                    {"id": 1, "code": "standard", "name": "Standard", "monthly_price_cents": 4_900}
                    | {"included_cpu_seconds": 3_600, "overage_cents_per_cpu_hour": 4.5, "currency": "CAD"}
                ],
            )
            connection.execute(
                schema.deployments.insert(),
                [
                    {"id": d, "customer_id": 1, "plan_id": 1, "name": f"app-{d}", "region": "ca-central-1"}
                    | {"status": "running", "created_at": created, "terminated_at": None}
                    for d in range(1, 6)
                ],
            )
            connection.execute(schema.usage_records.insert(), _usage_records())
    finally:
        engine.dispose()
    return url


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def nexacloud_url(request, tmp_path) -> str:
    """A NexaCloud database holding ``_usage_records``: a SQLite file (NUMERIC as floats) or PostgreSQL."""
    if request.param == "postgres":
        return _nexacloud_holding_usage(request.getfixturevalue("postgres_database_url"))
    return _nexacloud_holding_usage(f"sqlite:///{tmp_path / 'nexacloud.sqlite'}")


def test_nexacloud_days_come_only_for_the_deployments_asked_in_bound_chunks(nexacloud_url):
    engine = nexacloud.read_only_engine(nexacloud_url)
    statements: list[tuple[str, tuple]] = []
    event.listen(
        engine, "before_cursor_execute", lambda c, cur, sql, params, *_: statements.append((sql, params))
    )
    try:
        with engine.connect() as connection:
            days = nexacloud.fetch_usage_days(connection, OCTOBER, [4, 2, 5, 2], chunk_size=2)
            nothing = nexacloud.fetch_usage_days(connection, OCTOBER, [])
    finally:
        engine.dispose()

    assert sorted(set(days["deployment_id"])) == [2, 4, 5]
    # Oct 1 and Oct 4 hold one reading each, Oct 2 and 3 two: 3 CPU-seconds each for deployment 2.
    by_day = days[days["deployment_id"] == 2].set_index("usage_date")["cpu_milliseconds"].to_dict()
    assert by_day == {
        date(2026, 10, 1): 3_000,
        date(2026, 10, 2): 6_000,
        date(2026, 10, 3): 6_000,
        date(2026, 10, 4): 3_000,
    }
    assert nothing.empty and list(nothing.columns) == list(nexacloud.USAGE_DAY_COLUMNS)
    assert len(statements) == 2, "three deployments in chunks of two: two queries, none for no deployment"
    # The ids travel as bound parameters, never as text in the statement.
    for (sql, params), chunk in zip(statements, ([2, 4], [5]), strict=True):
        in_list = sql.split(" IN (")[1].split(")")[0]
        assert not any(str(deployment_id) in in_list for deployment_id in chunk), in_list
        values = params.values() if isinstance(params, dict) else params
        assert set(chunk) <= set(values)


def test_nexacloud_days_add_up_to_the_totals_of_the_same_deployments(nexacloud_url):
    engine = nexacloud.read_only_engine(nexacloud_url)
    try:
        with engine.connect() as connection:
            totals = nexacloud.fetch_usage(connection, OCTOBER)
            days = nexacloud.fetch_usage_days(connection, OCTOBER, totals["deployment_id"])
    finally:
        engine.dispose()
    assert list(totals["deployment_id"]) == [1, 2, 3, 4, 5]
    assert days.groupby("deployment_id")["cpu_milliseconds"].sum().to_dict() == dict(
        zip(totals["deployment_id"], totals["cpu_milliseconds"], strict=True)
    )
    assert list(totals["records"]) == [6] * 5


# --- Odoo: formatted_read_group on the subscriptions asked for, by local day, paged ---------------


class _Ledger:
    """A JSON-2 Odoo holding ledger groups per subscription and day, recording what it is asked."""

    def __init__(self, subscriptions: range, page_size: int | None = None):
        self.subscriptions = subscriptions
        self.requests: list[dict] = []
        self.page_size = page_size

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/json/2/fusion.billing.usage/formatted_read_group"
        body = json.loads(request.content)
        self.requests.append(body)
        conditions = [term for term in body["domain"] if isinstance(term, list)]
        (wanted,) = [value for field, operator, value in conditions if operator == "in"]
        # The client's keyset on the subscription: ["|", [..., "=", False], [..., ">", last]].
        after = max((value for field, operator, value in conditions if operator == ">"), default=0)
        groups = [
            {
                "subscription_id": [subscription, f"SUB/{subscription}"],
                # Day buckets start at local midnight, given in UTC: 04:00 in October in Toronto.
                "timestamp:day": [f"2026-10-{day:02d} 04:00:00", f"{day:02d} Oct 2026"],
                "quantity:sum": 0.5 * subscription + day,
                "__count": 2,
            }
            for subscription in self.subscriptions
            if subscription in wanted and subscription > after
            for day in (1, 2)
        ]
        limit = min(body["limit"], self.page_size or body["limit"])
        return httpx.Response(200, json=groups[body["offset"] : body["offset"] + limit])


def _odoo_client(handler) -> OdooClient:
    http = httpx.Client(base_url="https://odoo.example.com", transport=httpx.MockTransport(handler))
    return OdooClient(http, database="nexa", api_key="key", sleep=lambda seconds: None)


def test_odoo_days_come_for_the_subscriptions_asked_in_batches_by_local_day_in_the_billing_time_zone():
    ledger = _Ledger(range(1, 21))
    client = _odoo_client(ledger)

    days = odoo_frames.fetch_usage_days(client, OdooModels(), OCTOBER, [7, 3, 12, 19, 3, 8], batch_size=3)

    assert [body["domain"][-1] for body in ledger.requests] == [
        ["subscription_id", "in", [3, 7, 8]],
        ["subscription_id", "in", [12, 19]],
    ]
    for body in ledger.requests:
        assert body["domain"][:3] == [
            ["metric", "=", "cpu_seconds"],
            ["timestamp", ">=", "2026-10-01 04:00:00"],
            ["timestamp", "<", "2026-11-01 04:00:00"],
        ]
        assert body["groupby"] == ["subscription_id", "timestamp:day"]
        assert body["aggregates"] == ["quantity:sum", "__count"]
        assert body["context"]["tz"] == TORONTO
    assert list(days.columns) == list(odoo_frames.ODOO_USAGE_DAY_COLUMNS)
    assert [tuple(row) for row in days[days["subscription_id"] == 7].itertuples(index=False)] == [
        (7, date(2026, 10, 1), 4_500),
        (7, date(2026, 10, 2), 5_500),
    ]
    assert sorted(set(days["subscription_id"])) == [3, 7, 8, 12, 19]


def test_odoo_day_groups_are_paged_and_no_subscription_asked_means_no_call(monkeypatch):
    monkeypatch.setattr("fusion_billing_assets.sources.odoo.GROUP_PAGE_SIZE", 4)
    ledger = _Ledger(range(1, 6), page_size=4)
    client = _odoo_client(ledger)

    days = odoo_frames.fetch_usage_days(client, OdooModels(), OCTOBER, [1, 2, 3, 4, 5])
    assert len(days) == 10
    assert sorted(zip(days["subscription_id"], days["usage_date"], strict=True)) == [
        (subscription, date(2026, 10, day)) for subscription in range(1, 6) for day in (1, 2)
    ]
    # Keyset pages: a full page keeps only its subscriptions whose days are all in it, and the next
    # page starts after the last of them, so Odoo never groups the same rows twice.
    assert [body["offset"] for body in ledger.requests] == [0] * 5
    assert [body["domain"][-1] for body in ledger.requests[1:]] == [
        ["subscription_id", ">", last] for last in (1, 2, 3, 4)
    ]
    assert client.stats.pages == 5

    ledger.requests.clear()
    assert odoo_frames.fetch_usage_days(client, OdooModels(), OCTOBER, []).empty
    assert ledger.requests == []


# --- The asset: nothing asked when every pair agrees ----------------------------------------------


def _odoo_resource(handler) -> OdooAPI:
    """The production Odoo resource, its requests answered by ``handler``."""

    class Answered(OdooAPI):
        def transport(self) -> httpx.BaseTransport:
            return httpx.MockTransport(handler)

    return Answered(url="https://odoo.example.com", database="nexa", api_key="key")


def _materialize_days(nexacloud_url: str, odoo: OdooAPI, nexacloud_usage, odoo_usage, mapping):
    context = build_asset_context(partition_key=OCTOBER.key)
    return reconciliation.usage_days_that_differ(
        context,
        nexacloud=NexaCloudDatabase(url=nexacloud_url),
        odoo=odoo,
        nexacloud_usage=nexacloud_usage,
        odoo_usage=odoo_usage,
        mapping=mapping,
    )


def test_when_every_total_agrees_neither_system_is_asked_and_the_frame_is_empty(tmp_path):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"Odoo was asked {request.url}")

    # A NexaCloud file that does not exist: opening it would fail the asset.
    output = _materialize_days(
        f"sqlite:///{tmp_path / 'absent.sqlite'}",
        _odoo_resource(refuse),
        _usage([(11, 5_000)]),
        _ledger([(1011, 5_000)]),
        _mapping({11: 1011}),
    )

    assert output.value.empty and list(output.value.columns) == list(USAGE_DAY_COLUMNS)
    assert output.metadata["pairs_that_differ"].value == 0
    assert output.metadata["dagster/row_count"].value == 0


def test_the_asset_reads_both_systems_per_day_for_the_pairs_that_differ_only(nexacloud_url):
    ledger = _Ledger(range(1001, 1006))
    output = _materialize_days(
        nexacloud_url,
        _odoo_resource(ledger),
        _usage([(1, 9_000), (2, 18_000), (3, 1)]),
        _ledger([(1001, 9_000), (1002, 18_000), (1003, 2)]),
        _mapping({1: 1001, 2: 1002, 3: 1003}),
    )

    (body,) = ledger.requests
    assert body["domain"][-1] == ["subscription_id", "in", [1003]]
    days = output.value
    assert set(days["deployment_id"]) == {3} and set(days["subscription_id"]) == {1003}
    # NexaCloud metered 4.5 s on Oct 1, 9 s on Oct 2 and 3, 4.5 s on Oct 4; Odoo 502.5 s and 503.5 s.
    assert [tuple(row) for row in days.itertuples(index=False)] == [
        (3, 1003, date(2026, 10, 1), 4_500, 502_500),
        (3, 1003, date(2026, 10, 2), 9_000, 503_500),
        (3, 1003, date(2026, 10, 3), 9_000, 0),
        (3, 1003, date(2026, 10, 4), 4_500, 0),
    ]
    metadata = {name: value.value for name, value in output.metadata.items()}
    assert metadata["pairs_that_differ"] == 1
    assert metadata["deployments_that_differ"] == [3]
    assert metadata["odoo_requests"] == 1
    assert metadata["billing_period"] == OCTOBER.key
