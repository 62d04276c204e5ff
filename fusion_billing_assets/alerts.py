"""Alerts to the billing team's channel: what to say, when to say it again, how to deliver it.

Pure decisions (which period needs an alert, a resolution or nothing) are kept apart from the
delivery (an HTTP POST to a Slack incoming webhook, or to a generic JSON webhook signed with
HMAC-SHA256 over the exact bytes sent). A period is alerted once per distinct set of unexplained
differences: the set's fingerprint is remembered, and a period that becomes clean after an alert
gets one resolution message. No message carries a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd

from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.statuses import unexplained
from fusion_billing_assets.reports import status_counts, total_variance_cents

LARGEST_SHOWN = 5
MISMATCH, RESOLVED, RUN_FAILED = "reconciliation.mismatch", "reconciliation.resolved", "run.failed"
SIGNATURE_HEADER, TIMESTAMP_HEADER, EVENT_ID_HEADER = (
    "X-Fusion-Signature",
    "X-Fusion-Timestamp",
    "X-Fusion-Event-Id",
)


class AlertDeliveryError(RuntimeError):
    """The receiver did not accept an alert; it will be sent again on a later tick."""


@dataclass(frozen=True)
class Alert:
    """One message for the channel, with an id that stays the same for the same news."""

    event: str
    title: str
    lines: tuple[str, ...]
    link: str | None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def event_id(self) -> str:
        news = json.dumps({"event": self.event, **self.details}, sort_keys=True, default=str)
        return hashlib.sha256(news.encode()).hexdigest()[:32]

    def text(self) -> str:
        link = f"\n{self.link}" if self.link else ""
        return "\n".join((self.title, *self.lines)) + link


@dataclass
class PeriodAlertState:
    """What the channel was last told about a period: the fingerprint of its differences."""

    fingerprint: str | None = None

    @property
    def alerted(self) -> bool:
        return self.fingerprint is not None


def fingerprint(differences: pd.DataFrame) -> str:
    """The identity of a set of differences: who, which status, how much."""
    keys = sorted(
        (
            -1 if pd.isna(row.customer_id) else int(row.customer_id),
            -1 if pd.isna(row.partner_id) else int(row.partner_id),
            str(row.status),
            int(row.delta_cents),
        )
        for row in differences.itertuples()
    )
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:32]


def period_alert(
    period: str, results: pd.DataFrame, state: PeriodAlertState, link: str | None
) -> tuple[Alert | None, PeriodAlertState]:
    """The alert a period's current results call for, if any, and the state once it is sent."""
    held_back = unexplained(results)
    if held_back.empty:
        if not state.alerted:
            return None, state
        alert = Alert(
            event=RESOLVED,
            title=f"Billing period {period} now reconciles: no unexplained difference left.",
            lines=(_counts_line(results),),
            link=link,
            details={
                "period": period,
                "resolved": state.fingerprint,
                "reconciled_at": _reconciled_at(results),
            },
        )
        return alert, PeriodAlertState()
    current = fingerprint(held_back)
    if current == state.fingerprint:
        return None, state
    worst = held_back.reindex(held_back["delta_cents"].abs().sort_values(ascending=False).index)
    provisional = bool(results["provisional"].any()) if "provisional" in results else False
    alert = Alert(
        event=MISMATCH,
        title=(
            f"Billing period {period}{' (provisional)' if provisional else ''} does not reconcile: "
            f"{len(held_back)} unexplained difference(s), variance {format_cents(total_variance_cents(results))}."
        ),
        lines=(
            _counts_line(results),
            *(
                f"• {_who(row)}: {row.status}, {format_cents(int(row.delta_cents))}. {row.cause}"
                for row in worst.head(LARGEST_SHOWN).itertuples()
            ),
        ),
        link=link,
        details={
            "period": period,
            "fingerprint": current,
            # The same differences coming back after a resolution are news again: a new event id.
            "reconciled_at": _reconciled_at(results),
            "provisional": provisional,
            "counts_by_status": {k: v for k, v in status_counts(results).items() if v},
            "total_variance_cents": total_variance_cents(results),
            "largest_differences": [
                {
                    "customer_id": None if pd.isna(row.customer_id) else int(row.customer_id),
                    "partner_id": None if pd.isna(row.partner_id) else int(row.partner_id),
                    "status": row.status,
                    "delta_cents": int(row.delta_cents),
                    "cause": row.cause,
                }
                for row in worst.head(LARGEST_SHOWN).itertuples()
            ],
        },
    )
    return alert, PeriodAlertState(fingerprint=current)


def run_failure_alert(
    job: str, run_id: str, period: str | None, failed_steps: list[str], error: str, link: str
) -> Alert:
    where = f" for billing period {period}" if period else ""
    steps = ", ".join(failed_steps) or "the run itself"
    return Alert(
        event=RUN_FAILED,
        title=f"Run of {job}{where} failed at {steps}.",
        lines=(error.strip()[:500],) if error else (),
        link=link,
        details={"run_id": run_id, "job": job, "period": period, "failed_steps": failed_steps},
    )


@dataclass(frozen=True)
class AlertChannelConfig:
    url: str | None
    kind: str = "generic"
    secret: str | None = None
    timeout_seconds: float = 10.0


def deliver(alert: Alert, channel: AlertChannelConfig, http: httpx.Client | None = None) -> bool:
    """POST the alert; True when a receiver accepted it, False when no channel is configured."""
    if not channel.url:
        return False
    body, headers = encode(alert, channel, now=time.time())
    client = http or httpx.Client(timeout=channel.timeout_seconds)
    try:
        response = client.post(channel.url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise AlertDeliveryError(f"alert {alert.event_id} not delivered: {type(error).__name__}") from None
    finally:
        if http is None:
            client.close()
    if not 200 <= response.status_code < 300:
        raise AlertDeliveryError(
            f"alert {alert.event_id} refused by the receiver: HTTP {response.status_code}"
        )
    return True


def encode(alert: Alert, channel: AlertChannelConfig, *, now: float) -> tuple[bytes, dict[str, str]]:
    """The exact bytes to send and their headers, for the channel's kind."""
    if channel.kind == "slack":
        payload = {"text": alert.text(), "blocks": _slack_blocks(alert)}
        return _json_bytes(payload), {"Content-Type": "application/json"}
    timestamp = str(int(now))
    payload = {
        "event_id": alert.event_id,
        "event": alert.event,
        "sent_at": timestamp,
        "title": alert.title,
        "lines": list(alert.lines),
        "link": alert.link,
        **dict(alert.details),
    }
    body = _json_bytes(payload)
    headers = {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: alert.event_id,
        TIMESTAMP_HEADER: timestamp,
    }
    if channel.secret:
        headers[SIGNATURE_HEADER] = signature(channel.secret, body)
    return body, headers


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _json_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def _slack_blocks(alert: Alert) -> list[dict]:
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{alert.title}*"}}]
    if alert.lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(alert.lines)[:2900]}})
    if alert.link:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{alert.link}|Open in Dagster>"}]}
        )
    return blocks


def _reconciled_at(results: pd.DataFrame) -> str | None:
    if "reconciled_at" not in results or results.empty:
        return None
    return pd.Timestamp(results["reconciled_at"].max()).isoformat()


def _counts_line(results: pd.DataFrame) -> str:
    return ", ".join(f"{count} {status}" for status, count in status_counts(results).items() if count)


def _who(row) -> str:
    if pd.isna(row.customer_id):
        return f"Odoo partner {int(row.partner_id)}"
    name = f" ({row.customer_name})" if getattr(row, "customer_name", None) else ""
    return f"customer {int(row.customer_id)}{name}"
