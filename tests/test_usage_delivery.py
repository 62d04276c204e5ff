"""Usage delivery, record by record (docs/design.md §10), on small hand-made frames, and the
pusher's answers from Odoo's ``/usage``: every outcome recorded, none retried into a duplicate.

Deployments 10 and 11 map to subscriptions 100 and 110; deployment 12 has no subscription.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import httpx
import pandas as pd
import pytest

from fusion_billing_assets.billing.delivery import (
    cents_at_stake,
    classify,
    counts_by_kind,
    millis_at_stake,
    segments_that_disagree,
)
from fusion_billing_assets.sources.odoo import RetryPolicy
from fusion_billing_assets.sources.odoo_usage import UsagePusher

LINKS = pd.DataFrame({"deployment_id": [10, 11], "subscription_id": [100, 110]})
OCT_3, OCT_4 = date(2026, 10, 3), date(2026, 10, 4)


def _moment(hour: int, day: int = 3) -> pd.Timestamp:
    return pd.Timestamp(f"2026-10-{day:02d} {hour:02d}:00", tz="UTC")


def test_only_segments_whose_count_or_cpu_differ_are_read_again():
    nexacloud = pd.DataFrame(
        [
            (10, OCT_3, 24, 86_400_000),  # agrees
            (10, OCT_4, 24, 50_000_000),  # one record lost: 23 in Odoo
            (11, OCT_3, 24, 10_000_000),  # same count, one quantity differs
            (12, OCT_3, 24, 1_000),  # no subscription: not judged here
        ],
        columns=["deployment_id", "usage_date", "records", "cpu_milliseconds"],
    )
    ledger = pd.DataFrame(
        [
            (100, OCT_3, 24, 86_400_000),
            (100, OCT_4, 23, 48_000_000),
            (110, OCT_3, 24, 10_000_500),
            (110, OCT_4, 1, 3_000),  # NexaCloud has nothing that day
        ],
        columns=["subscription_id", "usage_date", "records", "cpu_milliseconds"],
    )
    disagree = segments_that_disagree(nexacloud, ledger, LINKS)
    assert disagree[
        ["subscription_id", "usage_date", "nexacloud_records", "odoo_records"]
    ].values.tolist() == [
        [100, OCT_4, 24, 23],
        [110, OCT_3, 24, 24],
        [110, OCT_4, 0, 1],
    ]


def test_each_record_is_missing_differs_moved_or_extra_by_its_key():
    nexacloud = pd.DataFrame(
        [
            (10, "k-delivered", _moment(1), 1_000),
            (10, "k-lost", _moment(2), 2_000),
            (10, "k-rounded", _moment(3), 3_456),
            (10, "k-moved", _moment(4), 4_000),
            (10, "k-twice", _moment(5), 5_000),
        ],
        columns=["deployment_id", "idempotency_key", "window_start", "cpu_milliseconds"],
    )
    ledger = pd.DataFrame(
        [
            (1, 100, "k-delivered", _moment(1), 1_000),
            (2, 100, "k-rounded", _moment(3), 3_000),
            (3, 110, "k-moved", _moment(4), 4_000),
            (4, 100, "k-twice", _moment(5), 5_000),
            (5, 100, "k-twice", _moment(5), 5_000),
            (6, 100, "k-twice-retry", _moment(5), 5_000),
            (7, 110, "k-of-another-period", _moment(6), 6_000),
        ],
        columns=["id", "subscription_id", "idempotency_key", "timestamp", "cpu_milliseconds"],
    )
    gaps = classify(nexacloud, ledger, LINKS, issued_elsewhere={"k-of-another-period"})
    assert gaps[
        [
            "kind",
            "deployment_id",
            "subscription_id",
            "idempotency_key",
            "nexacloud_cpu_milliseconds",
            "odoo_cpu_milliseconds",
        ]
    ].astype(object).where(gaps.notna(), None).values.tolist() == [
        ["missing", 10, 100, "k-lost", 2_000, None],
        ["quantity_differs", 10, 100, "k-rounded", 3_456, 3_000],
        ["extra", 10, 100, "k-twice", 5_000, 5_000],
        ["extra", None, 100, "k-twice-retry", None, 5_000],
        ["wrong_subscription", 10, 110, "k-moved", 4_000, 4_000],
    ]
    assert counts_by_kind(gaps) == {"missing": 1, "quantity_differs": 1, "wrong_subscription": 1, "extra": 2}
    # What each puts in doubt: the lost record, the difference, the moved record, each surplus copy.
    assert millis_at_stake(gaps).tolist() == [2_000, 456, 5_000, 5_000, 4_000]


def test_no_gap_at_all_when_every_record_is_there_once():
    nexacloud = pd.DataFrame(
        [(11, "k1", _moment(1), 10)],
        columns=["deployment_id", "idempotency_key", "window_start", "cpu_milliseconds"],
    )
    ledger = pd.DataFrame(
        [(1, 110, "k1", _moment(1), 10)],
        columns=["id", "subscription_id", "idempotency_key", "timestamp", "cpu_milliseconds"],
    )
    gaps = classify(nexacloud, ledger, LINKS)
    assert gaps.empty and counts_by_kind(gaps) == {
        "missing": 0,
        "quantity_differs": 0,
        "wrong_subscription": 0,
        "extra": 0,
    }


def test_money_at_stake_is_the_cpu_at_the_overage_rate_rounded_half_up():
    # 2 CPU-hours at $0.045 = 9 cents; 1,800 s = half an hour at $0.0375 = 1.875 → 2 cents.
    assert cents_at_stake(7_200_000, Decimal("0.045")) == 9
    assert cents_at_stake(1_800_000, Decimal("0.0375")) == 2
    assert cents_at_stake(0, Decimal("0.045")) == 0


# --- the pusher -------------------------------------------------------------------------------------

RECORDS = [
    {
        "subscription_id": 100,
        "metric": "cpu_seconds",
        "quantity": 1.5,
        "idempotency_key": f"k{n}",
        "timestamp": "2026-10-03 01:00:00",
    }
    for n in range(3)
]


def pusher(handler, **retry) -> UsagePusher:
    http = httpx.Client(base_url="http://odoo.test", transport=httpx.MockTransport(handler))
    policy = RetryPolicy(max_attempts=retry.get("attempts", 3), base_delay_seconds=0)
    return UsagePusher(
        http, database="nexa", api_key="secret-metering-key", retry=policy, sleep=lambda s: None
    )


def test_a_batch_answer_gives_each_record_its_own_outcome():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "bearer secret-metering-key"
        assert request.headers["x-odoo-database"] == "nexa"
        return httpx.Response(
            200,
            json={
                "results": [
                    {"idempotency_key": "k0", "status": "created", "id": 7, "error": None},
                    {"idempotency_key": "k1", "status": "duplicate", "id": 3, "error": None},
                    {
                        "idempotency_key": "k2",
                        "status": "conflict",
                        "id": None,
                        "error": {
                            "code": "conflict",
                            "message": "key pushed with 1.000",
                            "field": "quantity",
                        },
                    },
                ]
            },
        )

    results = pusher(handler).push(RECORDS)
    assert [(r.idempotency_key, r.outcome, r.odoo_id) for r in results] == [
        ("k0", "created", 7),
        ("k1", "duplicate", 3),
        ("k2", "conflict", None),
    ]
    assert results[2].message == "conflict: key pushed with 1.000 (field quantity)"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            401,
            {"error": {"code": "unauthorized", "message": "Invalid apikey"}},
            "HTTP 401 (the API key was refused)",
        ),
        (403, {"error": {"code": "forbidden", "message": "no"}}, "HTTP 403 (the key may not push usage)"),
        (422, {"error": {"code": "invalid", "message": "too many", "field": "records"}}, "(field records)"),
    ],
)
def test_a_refused_request_fails_every_record_at_once_without_retrying(status, body, expected):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, json=body)

    results = pusher(handler).push(RECORDS)
    assert len(calls) == 1
    assert {r.outcome for r in results} == {"failed"} and all(expected in r.message for r in results)
    assert all("secret-metering-key" not in r.message for r in results)


def test_a_server_error_or_a_timeout_is_retried_with_the_same_keys_and_odoo_dedups_them():
    ledger: dict[str, int] = {}
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        records = json.loads(request.content)["records"]
        if len(calls) == 1:
            # Odoo stored the batch, then the answer was lost.
            for record in records:
                ledger.setdefault(record["idempotency_key"], len(ledger) + 1)
            raise httpx.ReadTimeout("timed out", request=request)
        if len(calls) == 2:
            return httpx.Response(503, text="busy")
        results = []
        for record in records:
            known = record["idempotency_key"] in ledger
            ledger.setdefault(record["idempotency_key"], len(ledger) + 1)
            results.append(
                {
                    "idempotency_key": record["idempotency_key"],
                    "status": "duplicate" if known else "created",
                    "id": ledger[record["idempotency_key"]],
                    "error": None,
                }
            )
        return httpx.Response(200, json={"results": results})

    results = pusher(handler).push(RECORDS)
    assert len(calls) == 3
    assert [r.outcome for r in results] == ["duplicate"] * 3
    assert len(ledger) == 3  # each key stored once


def test_a_server_that_keeps_failing_ends_in_failed_records_saying_how_many_attempts():
    results = pusher(lambda request: httpx.Response(502, text="bad gateway"), attempts=2).push(RECORDS)
    assert {r.outcome for r in results} == {"failed"}
    assert results[0].message == "Odoo's /usage answered HTTP 502 (server error) after 2 attempt(s)"
