"""The production Odoo client against the Odoo test double: both protocols, both transports.

The same questions (keyset-paged reads, usage summed per subscription and Toronto day) must get the
same answers over JSON-2 and legacy /jsonrpc, in-process and over a real port, from the double's
in-memory SQLite and from a PostgreSQL store (``@pytest.mark.postgres``); the request count grows
with N / page size.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import httpx
import pytest

from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE, SANDBOX_LOGIN
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn, serving
from fusion_billing_assets.sandbox.odoo_store import load_models
from fusion_billing_assets.sources.odoo import OdooAuthenticationError, OdooClient, OdooError
from tests.conftest import throwaway_postgres_database

PARTNERS = [{"id": n, "name": f"Customer {n}", "ref": f"NC-{n}", "active": n % 7 != 0} for n in range(1, 58)]
# Hourly usage across the November 2026 DST change in Toronto, for two subscriptions.
FIRST_HOUR = datetime(2026, 10, 31, 4)
USAGE = [
    {
        "id": n,
        "subscription_id": 1 + n % 2,
        "metric": "cpu_seconds",
        "quantity": 1800.5,
        "idempotency_key": f"nc-usage-{n}",
        "timestamp": f"{FIRST_HOUR + timedelta(hours=n // 2):%Y-%m-%d %H:%M:%S}",
    }
    for n in range(200)
]
RECORDS = {
    "res.partner": PARTNERS,
    "sale.order": [{"id": 1, "name": "SUB-1", "partner_id": 1}, {"id": 2, "name": "SUB-2", "partner_id": 2}],
    "fusion.billing.usage": USAGE,
}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def odoo_app(request: pytest.FixtureRequest) -> Iterator[OdooStandIn]:
    if request.param == "sqlite":
        yield OdooStandIn(RECORDS)
        return
    with throwaway_postgres_database() as url:
        load_models(url, RECORDS).dispose()
        app = OdooStandIn.from_store(url)
        yield app
        app.close()


@contextmanager
def odoo_client(app: OdooStandIn, transport: str, protocol: str, **options) -> Iterator[OdooClient]:
    credentials = {"database": SANDBOX_DATABASE, "api_key": SANDBOX_API_KEY, "login": SANDBOX_LOGIN}
    credentials.update(options)
    if transport == "in-process":
        with httpx.Client(base_url="http://odoo.test", transport=httpx.WSGITransport(app=app)) as http:
            yield OdooClient(http, protocol=protocol, page_size=10, **credentials)
    else:
        with serving(app) as url, httpx.Client(base_url=url) as http:
            yield OdooClient(http, protocol=protocol, page_size=10, **credentials)


TRANSPORTS = ["in-process", "port"]
PROTOCOLS = ["json2", "jsonrpc"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keyset_paging_reads_archived_partners_too_in_n_over_page_size_requests(
    odoo_app, transport, protocol
):
    with odoo_client(odoo_app, transport, protocol) as client:
        partners = client.search_read_all(
            "res.partner", [["ref", "=like", "NC-%"]], ["name", "ref", "active"]
        )
        requests = client.stats.requests
    assert [p["id"] for p in partners] == list(range(1, 58))
    assert sum(not p["active"] for p in partners) == 8  # the client's context reads archived records
    login = 1 if protocol == "jsonrpc" else 0
    assert requests == 6 + login  # ceil(57 / 10) pages, plus one login over /jsonrpc


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_both_protocols_answer_the_same_reads_and_groups(odoo_app, transport):
    answers = {}
    for protocol in PROTOCOLS:
        with odoo_client(odoo_app, transport, protocol) as client:
            answers[protocol] = (
                client.search_read_all("sale.order", [], ["name", "partner_id"]),
                client.call("res.partner", "search_count", domain=[["id", "<", 20]]),
                client.read_group(
                    "fusion.billing.usage",
                    [["metric", "=", "cpu_seconds"]],
                    groupby=["subscription_id", "timestamp:day"],
                    aggregates=["quantity:sum", "__count"],
                    context={"tz": "America/Toronto", "lang": "en_US"},
                ),
            )
    assert answers["json2"] == answers["jsonrpc"]
    orders, count, groups = answers["json2"]
    assert orders == [
        {"id": 1, "name": "SUB-1", "partner_id": [1, "Customer 1"]},
        {"id": 2, "name": "SUB-2", "partner_id": [2, "Customer 2"]},
    ]
    assert count == 19
    # 100 hourly records each from 2026-10-31 00:00 EDT: Nov 1 has 25 hours (DST ends), and the
    # buckets after it start at 05:00 UTC.
    counts = {(g["subscription_id"][0], g["timestamp:day"][0]): g["__count"] for g in groups}
    assert {start: count for (sub, start), count in counts.items() if sub == 1} == {
        "2026-10-31 04:00:00": 24,
        "2026-11-01 04:00:00": 25,
        "2026-11-02 05:00:00": 24,
        "2026-11-03 05:00:00": 24,
        "2026-11-04 05:00:00": 3,
    }
    assert set(groups[0]) == {"subscription_id", "timestamp:day", "quantity:sum", "__count"}
    assert groups[0]["quantity:sum"] == 24 * 1800.5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_read_of_known_ids_filling_one_page_is_one_request(odoo_app, protocol):
    ids = list(range(11, 21))  # exactly one page of 10
    login = 1 if protocol == "jsonrpc" else 0
    with odoo_client(odoo_app, "in-process", protocol) as client:
        unbounded = client.search_read_all("res.partner", [["id", "in", ids]], ["name"])
        after_unbounded = client.stats.requests
        bounded = client.search_read_all("res.partner", [["id", "in", ids]], ["name"], at_most=len(ids))
        after_bounded = client.stats.requests
    assert [p["id"] for p in bounded] == [p["id"] for p in unbounded] == ids
    # Without the bound a full page asks once more to learn that nothing is left.
    assert after_unbounded == 2 + login
    assert after_bounded - after_unbounded == 1


# Eleven subscriptions with 1..11 records each, plus two records pushed to no subscription.
LEDGER = {
    "sale.order": [{"id": n, "name": f"SUB-{n}"} for n in range(1, 12)],
    "fusion.billing.usage": [
        {
            "id": 100 * subscription + k,
            "subscription_id": subscription,
            "metric": "cpu_seconds",
            "quantity": float(subscription),
            "idempotency_key": f"k-{subscription}-{k}",
            "timestamp": f"2026-10-{1 + k:02d} 12:00:00",
        }
        for subscription in range(1, 12)
        for k in range(subscription)
    ]
    + [
        {
            "id": 9_000 + k,
            "subscription_id": None,
            "metric": "cpu_seconds",
            "quantity": 7.0,
            "idempotency_key": f"orphan-{k}",
            "timestamp": "2026-10-05 12:00:00",
        }
        for k in range(2)
    ],
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("groupby", "groups"),
    [
        # 11 subscriptions and the group of records without one.
        (["subscription_id"], 12),
        # Subscription n has records on n days: 66 day groups, plus the empty subscription's one day.
        (["subscription_id", "timestamp:day"], 67),
    ],
)
def test_groups_are_paged_by_keyset_and_add_up_to_one_unpaged_answer(protocol, groupby, groups, monkeypatch):
    app = OdooStandIn(LEDGER)
    with odoo_client(app, "in-process", protocol) as client:
        whole = client.read_group(
            "fusion.billing.usage", [], groupby=groupby, aggregates=["quantity:sum", "__count"]
        )
    monkeypatch.setattr("fusion_billing_assets.sources.odoo.GROUP_PAGE_SIZE", 5)
    with odoo_client(app, "in-process", protocol) as client:
        paged = client.read_group(
            "fusion.billing.usage", [], groupby=groupby, aggregates=["quantity:sum", "__count"]
        )
        pages = client.stats.pages

    def key(group):
        return tuple(str(group[name]) for name in groupby)

    assert len(whole) == groups
    assert sorted(paged, key=key) == sorted(whole, key=key)
    # Every group once, the empty subscription's included; the records add up.
    assert len({key(group) for group in paged}) == groups
    assert sum(group["__count"] for group in paged) == 66 + 2
    assert sum(group["quantity:sum"] for group in paged) == sum(n * n for n in range(1, 12)) + 14
    # About one page per five groups: a full page gives back only its last subscription's groups.
    assert pages <= -(-groups // 3) + 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_wrong_key_is_refused_without_naming_it(odoo_app, protocol):
    with (
        odoo_client(odoo_app, "in-process", protocol, api_key="wrong-key-123") as client,
        pytest.raises(OdooAuthenticationError) as raised,
    ):
        client.call("res.partner", "search_count", domain=[])
    assert "wrong-key-123" not in str(raised.value)
    assert SANDBOX_DATABASE in str(raised.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_unknown_field_is_named(odoo_app, protocol):
    with odoo_client(odoo_app, "in-process", protocol) as client, pytest.raises(OdooError, match="plan_fee"):
        client.search_read_all("sale.order", [], ["plan_fee"])
