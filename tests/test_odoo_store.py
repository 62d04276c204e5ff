"""The Odoo test double's SQL store: what goes in comes out, refused records are refused.

On SQLite and on PostgreSQL (``@pytest.mark.postgres``): the store's tables round-trip records in
the storage format of ``odoo_models`` (defaults and display names filled in, one2many fields left
to their inverse), ``insert_rows`` streams rows (COPY on PostgreSQL), ``check_store`` names a
broken many2one, and the SQL the double groups with buckets UTC moments by local day, across a
DST change, with exact sums.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from fusion_billing_assets.sandbox.odoo_domain import sql_like
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
    replace_records,
)
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
            "display_name": "Acme Cloud",
        },
        {
            "id": 2,
            "name": "Globex",
            "ref": "",
            "email": None,
            "commercial_partner_id": None,
            "active": False,
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


def test_sql_like_patterns():
    assert sql_like("nc-_", case_insensitive=False)("nc-1")
    assert not sql_like("nc-_", case_insensitive=False)("nc-12")
    assert sql_like("%cloud%", case_insensitive=True)("Acme Cloud Inc")
    assert not sql_like("%cloud%", case_insensitive=False)("Acme Cloud Inc")
    assert sql_like("100\\%", case_insensitive=False)("100%")
    assert not sql_like("100\\%", case_insensitive=False)("1000")
