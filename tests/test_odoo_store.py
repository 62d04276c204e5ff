"""The Odoo test double's SQL store: what goes in comes out, refused records are refused.

On SQLite and on PostgreSQL (``@pytest.mark.postgres``): the store's tables round-trip records in
the storage format of ``odoo_models`` (defaults and display names filled in, one2many fields left
to their inverse), ``insert_rows`` streams rows (COPY on PostgreSQL), ``check_store`` names a
broken many2one, and the SQL the double groups with buckets UTC moments by local day, across a
DST change, with exact sums. The double serves a store of its own: a 100k-row ledger read by the
production client's keyset paging and grouped per subscription and local day, and concurrent
requests on a real port.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE, SANDBOX_LOGIN
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn, serving
from fusion_billing_assets.sandbox.odoo_store import (
    STORED_FIELDS,
    TABLES,
    ExactAvg,
    ExactSum,
    check_store,
    create_store,
    dump_models,
    insert_rows,
    load_models,
    moment_bucket,
    open_store,
    open_store_read_only,
    replace_records,
)
from fusion_billing_assets.sources.odoo import OdooClient
from tests.conftest import throwaway_postgres_database

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

RECORDS = {
    "res.currency": [{"id": 1, "name": "CAD"}],
    "res.partner": [
        {"id": 1, "name": "Acme Cloud", "ref": "nc-1", "commercial_partner_id": 1},
        {"id": 2, "name": "Globex", "ref": "", "active": False},
    ],
    "ir.model.data": [
        {"id": 7, "module": "nexacloud", "name": "customer_1", "model": "res.partner", "res_id": 1}
    ],
    "sale.order": [
        {"id": 10, "name": "SUB-0010", "partner_id": 1, "currency_id": 1, "start_date": "2026-01-15"},
    ],
    "fusion.billing.usage": [
        {"id": 1, "subscription_id": 10, "quantity": 0.30000000000000004, "timestamp": "2026-10-31 12:00:00"},
        {"id": 2, "subscription_id": None, "quantity": 1e-05, "timestamp": None},
    ],
}


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'odoo.sqlite'}"
    else:
        with throwaway_postgres_database() as url:
            yield url


def test_records_round_trip_in_the_storage_format(store_url):
    engine = load_models(store_url, RECORDS)
    try:
        models = dump_models(engine)
    finally:
        engine.dispose()
    assert set(models) == set(TABLES)
    assert models["res.partner"] == [
        {
            "id": 1,
            "name": "Acme Cloud",
            "ref": "nc-1",
            "email": None,
            "commercial_partner_id": 1,
            "active": True,  # Odoo's default
            "is_company": None,  # never set: NULL, which reads as false
            "state_id": None,
            "display_name": "Acme Cloud",
        },
        {
            "id": 2,
            "name": "Globex",
            "ref": "",
            "email": None,
            "commercial_partner_id": None,
            "active": False,
            "is_company": None,
            "state_id": None,
            "display_name": "Globex",
        },
    ]
    assert models["ir.model.data"][0]["display_name"] == "nexacloud.customer_1"
    [order] = models["sale.order"]
    assert "order_line" not in order  # a one2many is its inverse's business
    assert order["start_date"] == "2026-01-15" and order["end_date"] is None
    assert models["fusion.billing.usage"] == [
        {
            "id": 1,
            "name": None,
            "subscription_id": 10,
            "metric": None,
            "quantity": 0.30000000000000004,  # every digit of the float survives
            "idempotency_key": None,
            "timestamp": "2026-10-31 12:00:00",
            "display_name": "fusion.billing.usage,1",
        },
        {
            "id": 2,
            "name": None,
            "subscription_id": None,
            "metric": None,
            "quantity": 1e-05,
            "idempotency_key": None,
            "timestamp": None,
            "display_name": "fusion.billing.usage,2",
        },
    ]
    assert list(models["res.partner"][0]) == STORED_FIELDS["res.partner"]
    # and back again: a dump loads as it was dumped
    again = load_models(store_url, models)
    try:
        assert dump_models(again) == models
    finally:
        again.dispose()


def test_create_store_starts_over(store_url):
    load_models(store_url, RECORDS).dispose()
    create_store(store_url).dispose()
    assert all(records == [] for records in dump_models(store_url).values())


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            {"res.users": [{"id": 1}]},
            "Models outside the Odoo model slice (odoo_models.MODELS): ['res.users']",
        ),
        (
            {"sale.order": [{"id": 1, "partner_id": 9}]},
            "sale.order 1: partner_id refers to missing res.partner [9]",
        ),
        (
            {"res.partner": [{"id": 1, "vat": "CA123"}]},
            "res.partner record 1 has fields outside the model slice: ['vat']",
        ),
        ({"res.partner": [{"id": 1}, {"id": 1}]}, "res.partner: record ids are not unique"),
        ({"res.partner": [{"id": "1"}]}, "res.partner record without an integer id"),
        ({"sale.order": [{"id": 1, "order_line": [5]}]}, "sale.order record 1: ['order_line'] are derived"),
    ],
)
def test_records_outside_the_contract_are_refused(tmp_path, models, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_models(f"sqlite:///{tmp_path / 'odoo.sqlite'}", models)


def test_check_store_names_the_first_broken_many2one(store_url):
    engine = load_models(store_url, RECORDS)
    try:
        replace_records(engine, "sale.order", [{"id": 10, "name": "SUB-0010", "partner_id": 42}, {"id": 11}])
        replace_records(engine, "fusion.billing.usage", [{"id": 2, "subscription_id": 12}])
        with pytest.raises(
            ValueError, match=re.escape("sale.order 10: partner_id refers to missing res.partner [42]")
        ):
            check_store(engine)
        replace_records(engine, "sale.order", [{"id": 10, "name": "SUB-0010", "partner_id": 1}])
        with pytest.raises(
            ValueError,
            match=re.escape("fusion.billing.usage 2: subscription_id refers to missing sale.order [12]"),
        ):
            check_store(engine)
        orders = dump_models(engine)["sale.order"]
    finally:
        engine.dispose()
    assert [(order["id"], order["partner_id"], order["display_name"]) for order in orders] == [
        (10, 1, "SUB-0010"),
        (11, None, "sale.order,11"),
    ]


def test_open_store_refuses_a_database_without_the_tables(tmp_path):
    with pytest.raises(ValueError, match=r"No Odoo store at sqlite:///.*missing\.sqlite"):
        open_store(f"sqlite:///{tmp_path / 'missing.sqlite'}")
    assert not (tmp_path / "missing.sqlite").exists()  # looking did not create it


def test_a_store_made_before_a_field_gains_its_column_when_opened_writable(store_url):
    """As Odoo adds a column on a module update: NULL in the records already there. Opened
    read-only, such a store is refused with the fields it lacks named."""
    load_models(store_url, RECORDS).dispose()
    engine = open_store(store_url)
    try:
        with engine.begin() as connection:
            for table, column in (("res_partner", "is_company"), ("product_product", "list_price")):
                connection.execute(text(f'ALTER TABLE "{table}" DROP COLUMN "{column}"'))
    finally:
        engine.dispose()
    with pytest.raises(
        ValueError, match=re.escape("['res_partner.is_company', 'product_product.list_price']")
    ):
        open_store_read_only(store_url)
    open_store(store_url).dispose()
    engine = open_store_read_only(store_url)
    try:
        partners = dump_models(engine)["res.partner"]
    finally:
        engine.dispose()
    assert [(p["id"], p["is_company"], p["active"]) for p in partners] == [(1, None, True), (2, None, False)]


@pytest.mark.postgres
def test_open_store_names_the_url_without_its_password():
    with throwaway_postgres_database() as url:
        with_password = make_url(url).set(password="s3cret-pw").render_as_string(hide_password=False)
        with pytest.raises(ValueError, match="No Odoo store at") as raised:
            open_store(with_password)
    assert "s3cret-pw" not in str(raised.value)
    assert "***" in str(raised.value)


def test_insert_rows_fills_display_names_and_defaults_and_checks_its_columns(store_url):
    engine = create_store(store_url)
    try:
        with engine.begin() as connection:
            count = insert_rows(connection, "res.partner", ["id", "name"], iter([(1, "Acme"), (2, None)]))
        assert count == 2
        assert [(p["display_name"], p["active"]) for p in dump_models(engine)["res.partner"]] == [
            ("Acme", True),
            ("res.partner,2", True),
        ]
        with engine.begin() as connection:
            with pytest.raises(ValueError, match="stored fields"):
                insert_rows(connection, "res.partner", ["name"], [("no id",)])
            with pytest.raises(ValueError, match="stored fields"):
                insert_rows(connection, "sale.order", ["id", "order_line"], [(1, [])])
            with pytest.raises(ValueError, match="has 1 values for 2 columns"):
                insert_rows(connection, "res.partner", ["id", "name"], [(3,)])
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_insert_rows_streams_a_few_thousand_rows_through_copy():
    rows = 5_000
    consumed = 0

    def ledger() -> Iterator[tuple]:
        nonlocal consumed
        first = datetime(2026, 10, 1, 4)
        for n in range(1, rows + 1):
            consumed += 1
            yield (
                n,
                n % 3 + 1,
                "cpu_seconds",
                0.1,
                f"key\t{n}\\",
                f"{first + timedelta(minutes=n):%Y-%m-%d %H:%M:%S}",
            )

    with throwaway_postgres_database() as url:
        engine = load_models(url, {"sale.order": [{"id": 1}, {"id": 2}, {"id": 3}]})
        try:
            columns = ["id", "subscription_id", "metric", "quantity", "idempotency_key", "timestamp"]
            with engine.connect() as connection:
                assert insert_rows(connection, "fusion.billing.usage", columns, ledger()) == rows
                connection.commit()
            check_store(engine)
            usage = TABLES["fusion.billing.usage"]
            with engine.connect() as connection:
                total, keys = connection.execute(
                    select(ExactSum(usage.c.quantity), func.count(usage.c.idempotency_key.distinct()))
                ).one()
                last = connection.execute(select(usage).where(usage.c.id == rows)).one()
        finally:
            engine.dispose()
    assert consumed == rows
    assert total == 500.0  # 5 000 × 0.1, exactly
    assert keys == rows
    assert last.idempotency_key == f"key\t{rows}\\"  # COPY's escapes survive
    assert last.timestamp == "2026-10-04 15:20:00" and last.display_name == f"fusion.billing.usage,{rows}"


def test_local_day_buckets_across_the_end_of_dst_with_exact_sums(store_url):
    # Toronto leaves daylight saving time on 2026-11-01 at 02:00 EDT (06:00 UTC): that day lasts
    # 25 hours, from 04:00 UTC to 05:00 UTC the next day.
    moments = [
        ("2026-10-31 03:59:59", 0.1),  # Oct 30, 23:59 EDT
        ("2026-10-31 04:00:00", 0.1),  # Oct 31, 00:00 EDT
        ("2026-11-01 03:59:59", 0.2),  # Oct 31, 23:59 EDT
        ("2026-11-01 04:00:00", 0.7),  # Nov 1, 00:00 EDT
        ("2026-11-01 06:30:00", 0.1),  # Nov 1, 01:30 EST, after the clocks went back
        ("2026-11-02 04:59:59", 0.2),  # Nov 1, 23:59 EST
        ("2026-11-02 05:00:00", 1.0),  # Nov 2, 00:00 EST
    ]
    engine = load_models(
        store_url,
        {
            "sale.order": [{"id": 1}],
            "fusion.billing.usage": [
                {"id": n, "subscription_id": 1, "quantity": quantity, "timestamp": moment}
                for n, (moment, quantity) in enumerate(moments, start=1)
            ],
        },
    )
    usage = TABLES["fusion.billing.usage"]
    day = moment_bucket(usage.c.timestamp, "day", "America/Toronto").label("day")
    try:
        with engine.connect() as connection:
            days = connection.execute(
                select(day, ExactSum(usage.c.quantity), ExactAvg(usage.c.quantity), func.count())
                .group_by(day)
                .order_by(day)
            ).all()
            week = moment_bucket(usage.c.timestamp, "week", "America/Toronto").label("week")
            weeks = connection.execute(
                select(week, func.count()).where(usage.c.id > 1).group_by(week).order_by(week)
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in days] == [
        ("2026-10-30", 0.1, 0.1, 1),
        ("2026-10-31", 0.3, 0.15, 2),  # 0.1 + 0.2, not 0.30000000000000004
        ("2026-11-01", 1.0, 1 / 3, 3),  # 0.7 + 0.1 + 0.2 over a 25-hour day
        ("2026-11-02", 1.0, 1.0, 1),
    ]
    # ISO weeks start on Monday: October 26, then November 2
    assert [tuple(row) for row in weeks] == [("2026-10-26", 5), ("2026-11-02", 1)]


LEDGER_ROWS = 100_000
# One row a minute from 2026-10-31 00:00 EDT (04:00 UTC), alternating two subscriptions; ids with gaps.
LEDGER_START = datetime(2026, 10, 31, 4)


def ledger_rows() -> Iterator[tuple]:
    for n in range(LEDGER_ROWS):
        moment = LEDGER_START + timedelta(minutes=n)
        yield (3 * n + 1, 1 + n % 2, "cpu_seconds", 0.1, f"{moment:%Y-%m-%d %H:%M:%S}")


def test_a_store_of_100k_usage_rows_pages_once_each_and_groups_by_toronto_day(store_url):
    engine = create_store(store_url)
    try:
        with engine.begin() as connection:
            insert_rows(connection, "sale.order", ["id", "name"], [(1, "SUB-1"), (2, "SUB-2")])
            columns = ["id", "subscription_id", "metric", "quantity", "timestamp"]
            insert_rows(connection, "fusion.billing.usage", columns, ledger_rows())
        check_store(engine)
    finally:
        engine.dispose()
    app = OdooStandIn.from_store(store_url)
    credentials = {"database": SANDBOX_DATABASE, "api_key": SANDBOX_API_KEY, "login": SANDBOX_LOGIN}
    try:
        with httpx.Client(base_url="http://odoo.test", transport=httpx.WSGITransport(app=app)) as http:
            client = OdooClient(http, protocol="json2", page_size=5_000, **credentials)
            ids = [
                row["id"]
                for page in client.search_read_pages(
                    "fusion.billing.usage", [["metric", "=", "cpu_seconds"]], ["subscription_id", "quantity"]
                )
                for row in page
            ]
            groups = client.read_group(
                "fusion.billing.usage",
                [["metric", "=", "cpu_seconds"]],
                groupby=["subscription_id", "timestamp:day"],
                aggregates=["quantity:sum", "__count"],
                context={"tz": "America/Toronto"},
            )
    finally:
        app.close()
    assert ids == [3 * n + 1 for n in range(LEDGER_ROWS)]  # every row once, in id order
    assert app.requests["fusion.billing.usage.search_read"] == LEDGER_ROWS // 5_000 + 1
    assert sum(group["__count"] for group in groups) == LEDGER_ROWS
    # Hand-worked: 1 440 minutes on October 31, 1 500 on November 1 (25 hours: DST ends), then
    # 1 440 a day from midnight EST (05:00 UTC); each subscription has every other minute.
    first_days = [
        (group["timestamp:day"][0], group["__count"], group["quantity:sum"])
        for group in groups
        if group["subscription_id"] == [1, "SUB-1"]
    ][:3]
    assert first_days == [
        ("2026-10-31 04:00:00", 720, 72.0),
        ("2026-11-01 04:00:00", 750, 75.0),  # 750 × 0.1, summed exactly
        ("2026-11-02 05:00:00", 720, 72.0),
    ]
    # 100 000 minutes are 69 days and 10 hours: 70 local days for each subscription
    assert len(groups) == 2 * 70


def test_concurrent_requests_on_a_real_port_each_get_their_answer(store_url):
    load_models(
        store_url,
        {"res.partner": [{"id": n, "name": f"Customer {n}", "ref": f"NC-{n}"} for n in range(1, 201)]},
    ).dispose()
    app = OdooStandIn.from_store(store_url)
    headers = {"Authorization": f"bearer {SANDBOX_API_KEY}"}
    try:
        with serving(app) as url, httpx.Client(base_url=url, headers=headers) as client:

            def page(first: int) -> list[int]:
                response = client.post(
                    "/json/2/res.partner/search_read",
                    json={"domain": [["id", ">", first]], "fields": ["ref"], "limit": 10, "order": "id asc"},
                )
                return [row["id"] for row in response.json() if row["ref"] == f"NC-{row['id']}"]

            with ThreadPoolExecutor(max_workers=8) as pool:
                pages = list(pool.map(page, range(0, 200, 5)))
    finally:
        app.close()
    assert pages == [list(range(first + 1, first + 11))[: 200 - first] for first in range(0, 200, 5)]
    assert app.requests == {"res.partner.search_read": 40}


def test_serving_a_store_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(ValueError, match="No Odoo store at"):
        OdooStandIn.from_store(f"sqlite:///{tmp_path / 'nothing.sqlite'}")
