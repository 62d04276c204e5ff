"""Alerts to the billing channel: when a period is alerted, what the message says, how it is signed and sent.

Holds the contract of ``fusion_billing_assets.alerts``: one mismatch alert per distinct set of
unexplained differences, one resolution when the period comes clean, a generic webhook body signed
with HMAC-SHA256 over its exact bytes, a Slack payload, and a delivery that raises on anything but
a 2xx answer — with the signing secret and the receiver URL in no body, header or error message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import traceback

import httpx
import pandas as pd
import pytest

from fusion_billing_assets.alerts import (
    EVENT_ID_HEADER,
    MISMATCH,
    RESOLVED,
    RUN_FAILED,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Alert,
    AlertChannelConfig,
    AlertDeliveryError,
    PeriodAlertState,
    deliver,
    encode,
    period_alert,
    run_failure_alert,
)
from tests.test_reports import differing_row, typed_results
from tests.test_warehouse import result_row

PERIOD = "2026-10-01"
LINK = "http://dagster.test/assets/billing/reconciliation?partition=2026-10-01"
SECRET = "hmac-key-that-must-never-leak"
GENERIC_URL = "https://receiver.test/hooks/billing"
# A Slack incoming-webhook URL is itself the credential.
SLACK_URL = "https://hooks.slack.test/services/T000/B000/slack-token-that-must-never-leak"
SENT_AT = 1_793_520_000.75


def mismatching_october() -> pd.DataFrame:
    """Seven unexplained differences (one an unmapped Odoo partner) beside accepted rows."""
    return typed_results(
        [
            result_row(1),
            result_row(2),
            differing_row(3, "within_tolerance", 1),
            differing_row(4, "waived", 500, waiver_reason="goodwill credit", waiver_approver="cfo"),
            differing_row(5, "usage_mismatch", 1_234, cause="Odoo is missing 3 hours of CPU usage."),
            differing_row(6, "rate_mismatch", -5_000, cause="Odoo's plan fee is $50.00 lower."),
            differing_row(7, "tax_mismatch", 200, cause="Odoo taxes at 15 %, NexaCloud at 13 %."),
            differing_row(8, "amount_mismatch", 90, cause="Nothing explains 90 cents."),
            differing_row(9, "missing_in_odoo", -11_300, cause="Odoo has no invoice."),
            differing_row(
                None,
                "missing_in_nexacloud",
                7_000,
                partner_id=2001,
                customer_name=None,
                cause="NexaCloud did not bill this partner.",
            ),
            differing_row(10, "duplicate", 0, cause="Odoo has two invoices."),
        ]
    )


def clean_october() -> pd.DataFrame:
    """Only accepted statuses, some of them with a difference in cents."""
    return typed_results(
        [
            result_row(1),
            differing_row(3, "within_tolerance", 1),
            differing_row(4, "rounding_difference", -1),
            differing_row(5, "waived", 500, waiver_reason="goodwill credit", waiver_approver="cfo"),
        ]
    )


def alerted(results: pd.DataFrame) -> tuple[Alert, PeriodAlertState]:
    alert, state = period_alert(PERIOD, results, PeriodAlertState(), LINK)
    assert alert is not None and alert.event == MISMATCH
    return alert, state


def verifies(secret: str, body: bytes, signature_header: str) -> bool:
    """What a receiver does: recompute the HMAC over the bytes received, compare in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature_header)


# --- When a period is alerted ----------------------------------------------------------------


def test_a_mismatch_alert_names_the_period_counts_variance_five_largest_differences_and_link():
    alert, state = alerted(mismatching_october())

    assert PERIOD in alert.title
    assert "7 unexplained difference(s)" in alert.title
    assert "$253.25" in alert.title  # the sum of every row's absolute difference
    assert "(provisional)" not in alert.title
    assert alert.lines[0] == (
        "2 match, 1 within_tolerance, 1 usage_mismatch, 1 rate_mismatch, 1 tax_mismatch, "
        "1 amount_mismatch, 1 missing_in_odoo, 1 missing_in_nexacloud, 1 duplicate, 1 waived"
    )
    assert list(alert.lines[1:]) == [
        "• customer 9 (Customer 9): missing_in_odoo, -$113.00. Odoo has no invoice.",
        "• Odoo partner 2001: missing_in_nexacloud, $70.00. NexaCloud did not bill this partner.",
        "• customer 6 (Customer 6): rate_mismatch, -$50.00. Odoo's plan fee is $50.00 lower.",
        "• customer 5 (Customer 5): usage_mismatch, $12.34. Odoo is missing 3 hours of CPU usage.",
        "• customer 7 (Customer 7): tax_mismatch, $2.00. Odoo taxes at 15 %, NexaCloud at 13 %.",
    ]
    assert alert.link == LINK
    assert alert.text().endswith(f"\n{LINK}")
    assert alert.details["period"] == PERIOD
    assert alert.details["total_variance_cents"] == 25_325
    assert alert.details["counts_by_status"] == {
        "match": 2,
        "within_tolerance": 1,
        "usage_mismatch": 1,
        "rate_mismatch": 1,
        "tax_mismatch": 1,
        "amount_mismatch": 1,
        "missing_in_odoo": 1,
        "missing_in_nexacloud": 1,
        "duplicate": 1,
        "waived": 1,
    }
    assert [
        (row["customer_id"], row["partner_id"], row["status"], row["delta_cents"])
        for row in alert.details["largest_differences"]
    ] == [
        (9, 1009, "missing_in_odoo", -11_300),
        (None, 2001, "missing_in_nexacloud", 7_000),
        (6, 1006, "rate_mismatch", -5_000),
        (5, 1005, "usage_mismatch", 1_234),
        (7, 1007, "tax_mismatch", 200),
    ]
    assert state.alerted and state.fingerprint == alert.details["fingerprint"]


def test_a_provisional_period_says_so_in_its_alert():
    results = mismatching_october().assign(provisional=True)

    alert, _ = alerted(results)

    assert f"{PERIOD} (provisional)" in alert.title
    assert alert.details["provisional"] is True


def test_a_clean_period_that_was_never_alerted_gets_no_message():
    never_told = PeriodAlertState()

    alert, state = period_alert(PERIOD, clean_october(), never_told, LINK)

    assert alert is None
    assert state == never_told and not state.alerted


def test_the_same_differences_are_not_alerted_twice_whatever_else_changed():
    _, state = alerted(mismatching_october())
    # The same who/status/delta set, re-reconciled: rows in another order, other causes and
    # timestamps, and an accepted row whose amounts moved.
    again = (
        mismatching_october()
        .iloc[::-1]
        .reset_index(drop=True)
        .assign(cause="Re-worded cause.", reconciled_at=pd.Timestamp("2026-11-03 08:00", tz="UTC"))
    )
    again.loc[again["customer_id"] == 1, ["odoo_total_cents", "nexacloud_total_cents"]] = 20_000

    alert, same_state = period_alert(PERIOD, again, state, LINK)

    assert alert is None
    assert same_state == state


def _delta_changes(results: pd.DataFrame) -> pd.DataFrame:
    results.loc[results["customer_id"] == 5, "delta_cents"] = 1_235
    return results


def _status_changes(results: pd.DataFrame) -> pd.DataFrame:
    results.loc[results["customer_id"] == 8, "status"] = "tax_mismatch"
    return results


def _customer_added(results: pd.DataFrame) -> pd.DataFrame:
    added = typed_results([differing_row(11, "usage_mismatch", 42)])
    return pd.concat([results, added], ignore_index=True)


def _difference_explained(results: pd.DataFrame) -> pd.DataFrame:
    results.loc[results["customer_id"] == 8, "status"] = "waived"
    return results


@pytest.mark.parametrize(
    "change",
    [_delta_changes, _status_changes, _customer_added, _difference_explained],
    ids=lambda f: f.__name__,
)
def test_a_changed_set_of_differences_is_alerted_again_under_a_new_event_id(change):
    first, state = alerted(mismatching_october())

    alert, new_state = period_alert(PERIOD, change(mismatching_october()), state, LINK)

    assert alert is not None and alert.event == MISMATCH
    assert alert.event_id != first.event_id
    assert new_state.fingerprint not in (None, state.fingerprint)


def test_a_period_that_comes_clean_after_an_alert_gets_exactly_one_resolution():
    _, state = alerted(mismatching_october())

    resolution, cleared = period_alert(PERIOD, clean_october(), state, LINK)
    again, still_cleared = period_alert(PERIOD, clean_october(), cleared, LINK)

    assert resolution is not None and resolution.event == RESOLVED
    assert PERIOD in resolution.title and "reconciles" in resolution.title
    assert resolution.link == LINK
    assert not cleared.alerted
    assert again is None and not still_cleared.alerted


def test_differences_that_come_back_after_a_resolution_are_new_news_with_a_new_event_id():
    # A receiver deduplicates deliveries by event id: the recurrence must not look like a retry.
    first, state = alerted(mismatching_october())
    _, cleared = period_alert(PERIOD, clean_october(), state, LINK)
    # The differences come back with a later reconciliation of the period.
    later = mismatching_october().assign(reconciled_at=pd.Timestamp("2026-11-05 08:00", tz="UTC"))

    recurrence, _ = period_alert(PERIOD, later, cleared, LINK)
    retried, _ = period_alert(PERIOD, later, cleared, LINK)

    assert recurrence is not None and recurrence.event == MISMATCH
    assert recurrence.event_id != first.event_id
    assert retried.event_id == recurrence.event_id  # a retry of the same news keeps its id


def test_a_run_failure_alert_names_the_job_period_and_failed_steps():
    alert = run_failure_alert(
        job="reconcile_billing_period",
        run_id="run-1",
        period=PERIOD,
        failed_steps=["odoo__invoices", "billing__reconciliation"],
        error="RuntimeError: Odoo answered HTTP 503\n" + "x" * 1_000,
        link="http://dagster.test/runs/run-1",
    )
    rangeless = run_failure_alert("reconcile_billing_period", "run-2", None, [], "", "http://dagster.test")

    assert alert.event == RUN_FAILED
    assert alert.title == (
        "Run of reconcile_billing_period for billing period 2026-10-01 failed at "
        "odoo__invoices, billing__reconciliation."
    )
    assert alert.lines[0].startswith("RuntimeError: Odoo answered HTTP 503") and len(alert.lines[0]) == 500
    assert rangeless.title == "Run of reconcile_billing_period failed at the run itself."
    assert rangeless.lines == ()
    assert alert.event_id != rangeless.event_id


# --- How it is encoded ------------------------------------------------------------------------


def test_the_generic_body_is_signed_over_its_exact_bytes():
    alert, _ = alerted(mismatching_october())

    body, headers = encode(
        alert, AlertChannelConfig(url=GENERIC_URL, kind="generic", secret=SECRET), now=SENT_AT
    )

    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verifies(SECRET, body, headers[SIGNATURE_HEADER])
    tampered = body.replace(b'"total_variance_cents":25325', b'"total_variance_cents":25326')
    assert tampered != body and not verifies(SECRET, tampered, headers[SIGNATURE_HEADER])
    # The same JSON serialized differently is other bytes: the receiver must verify what it got.
    reserialized = json.dumps(json.loads(body)).encode()
    assert json.loads(reserialized) == json.loads(body)
    assert not verifies(SECRET, reserialized, headers[SIGNATURE_HEADER])
    assert not verifies("another-key", body, headers[SIGNATURE_HEADER])


def test_the_generic_body_carries_its_event_id_and_timestamp_as_the_headers_do():
    alert, _ = alerted(mismatching_october())
    channel = AlertChannelConfig(url=GENERIC_URL, kind="generic", secret=SECRET)

    body, headers = encode(alert, channel, now=SENT_AT)
    retry_body, retry_headers = encode(alert, channel, now=SENT_AT + 60)

    payload = json.loads(body)
    assert headers[EVENT_ID_HEADER] == payload["event_id"] == alert.event_id
    assert headers[TIMESTAMP_HEADER] == payload["sent_at"] == "1793520000"
    assert headers["Content-Type"] == "application/json"
    assert payload["event"] == MISMATCH and payload["period"] == PERIOD
    assert payload["title"] == alert.title and payload["lines"] == list(alert.lines)
    assert payload["link"] == LINK
    # A retry is the same news sent later: same event id, its own timestamp and signature.
    assert retry_headers[EVENT_ID_HEADER] == headers[EVENT_ID_HEADER]
    assert retry_headers[SIGNATURE_HEADER] != headers[SIGNATURE_HEADER]
    assert verifies(SECRET, retry_body, retry_headers[SIGNATURE_HEADER])


def test_the_slack_payload_has_text_and_blocks_and_no_secret():
    alert, _ = alerted(mismatching_october())

    body, headers = encode(alert, AlertChannelConfig(url=SLACK_URL, kind="slack", secret=SECRET), now=SENT_AT)

    payload = json.loads(body)
    assert set(payload) == {"text", "blocks"}
    assert payload["text"] == alert.text()
    assert payload["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": f"*{alert.title}*"}}
    assert "Odoo partner 2001" in payload["blocks"][1]["text"]["text"]
    assert payload["blocks"][-1]["elements"][0]["text"] == f"<{LINK}|Open in Dagster>"
    assert SIGNATURE_HEADER not in headers
    assert SECRET not in body.decode() and "slack-token" not in body.decode()


@pytest.mark.parametrize("kind", ["generic", "slack"])
def test_the_secret_is_in_no_body_and_no_header_but_the_signature(kind):
    url = GENERIC_URL if kind == "generic" else SLACK_URL
    alert, _ = alerted(mismatching_october())

    body, headers = encode(alert, AlertChannelConfig(url=url, kind=kind, secret=SECRET), now=SENT_AT)

    assert SECRET not in body.decode()
    assert "slack-token" not in body.decode()
    for name, value in headers.items():
        assert SECRET not in value, name
        if name != SIGNATURE_HEADER:
            assert hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest() not in value, name


# --- How it is delivered ----------------------------------------------------------------------


def _recording_client(requests: list[httpx.Request], answer) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answer(request)

    return httpx.Client(transport=httpx.MockTransport(handle))


@pytest.mark.parametrize("status", [200, 202, 204])
def test_deliver_posts_the_signed_body_and_reports_acceptance(status):
    alert, _ = alerted(mismatching_october())
    requests: list[httpx.Request] = []
    channel = AlertChannelConfig(url=GENERIC_URL, kind="generic", secret=SECRET)

    with _recording_client(requests, lambda request: httpx.Response(status)) as http:
        assert deliver(alert, channel, http=http) is True

    (request,) = requests
    assert request.method == "POST" and str(request.url) == GENERIC_URL
    assert verifies(SECRET, request.content, request.headers[SIGNATURE_HEADER])
    assert request.headers[EVENT_ID_HEADER] == json.loads(request.content)["event_id"] == alert.event_id


def _refused(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, text=f"internal error handling {request.url}")


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"connection refused by {request.url}", request=request)


def _too_slow(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout(f"no answer from {request.url}", request=request)


@pytest.mark.parametrize("kind", ["generic", "slack"])
@pytest.mark.parametrize(
    ("answer", "named"),
    [(_refused, "HTTP 500"), (_unreachable, "ConnectError"), (_too_slow, "ReadTimeout")],
    ids=["500", "connect-error", "read-timeout"],
)
def test_a_refused_or_failed_delivery_raises_without_leaking_the_secret_or_url(answer, named, kind):
    alert, _ = alerted(mismatching_october())
    url = GENERIC_URL if kind == "generic" else SLACK_URL
    requests: list[httpx.Request] = []

    with (
        _recording_client(requests, answer) as http,
        pytest.raises(AlertDeliveryError) as raised,
    ):
        deliver(alert, AlertChannelConfig(url=url, kind=kind, secret=SECRET), http=http)

    assert len(requests) == 1
    message = str(raised.value)
    assert named in message and alert.event_id in message
    shown = "".join(traceback.format_exception(raised.value))
    for leak in (SECRET, url, "slack-token"):
        assert leak not in shown


@pytest.mark.parametrize("url", [None, ""])
def test_without_a_url_deliver_sends_nothing_and_says_so(url):
    alert, _ = alerted(mismatching_october())
    requests: list[httpx.Request] = []

    with _recording_client(requests, lambda request: httpx.Response(200)) as http:
        assert deliver(alert, AlertChannelConfig(url=url, kind="generic", secret=SECRET), http=http) is False

    assert requests == []
