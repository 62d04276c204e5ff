"""Alerts to the billing team's channel: what to say, when to say it again, how to deliver it.

Pure decisions (which period needs an alert, a resolution or nothing) are kept apart from the
delivery (an HTTP POST to a Slack incoming webhook, or to a generic JSON webhook signed with
HMAC-SHA256 over the exact bytes sent). A period is alerted once per distinct set of unexplained
differences: the set's fingerprint is remembered, and a period that becomes clean after an alert
gets one resolution message. No message carries a secret.

The webhook is reached only where the address rules allow (``webhook_address_refusal``): its host
is resolved before connecting, every address it resolves to is checked, and the connection goes to
the checked address itself (TLS still verifies the certificate against the host name), so a name
that resolves elsewhere between the check and the connection is not followed. Redirects are
never followed, nothing from the environment (proxies, ``.netrc``) joins the request, and no
log line carries the webhook URL.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
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
CHANGED_SINCE_SIGNOFF = "reconciliation.changed_since_signoff"
LIFECYCLE_DRIFT, LIFECYCLE_RESOLVED = "lifecycle.drift", "lifecycle.resolved"
SIGNATURE_HEADER, TIMESTAMP_HEADER, EVENT_ID_HEADER = (
    "X-Fusion-Signature",
    "X-Fusion-Timestamp",
    "X-Fusion-Event-Id",
)


class AlertDeliveryError(RuntimeError):
    """The receiver did not accept an alert; it will be sent again on a later tick."""


class WebhookAddressRefused(AlertDeliveryError):
    """The webhook's host is, or resolves to, an address alerts may not be sent to."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance-metadata endpoints (AWS, GCP, Azure, OpenStack; AWS over IPv6; ECS tasks; Alibaba Cloud):
# they hand out credentials to whoever asks from inside the cloud, so no setting opens them.
CLOUD_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)
# What ALERT_WEBHOOK_ALLOW_PRIVATE opens: RFC 1918, IPv6 unique-local and carrier-grade NAT space.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
LOOPBACK_NAMES = ("localhost",)


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


@dataclass(frozen=True)
class UsageGaps:
    """The period's usage delivery gaps (``billing_usage_gaps``) as an alert tells them."""

    counts_by_kind: Mapping[str, int]
    cpu_seconds: str  # at stake, all kinds
    days: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.counts_by_kind.values())

    def line(self) -> str:
        counts = ", ".join(f"{n} {kind}" for kind, n in self.counts_by_kind.items() if n)
        days = ", ".join(self.days[:5]) + (" …" if len(self.days) > 5 else "")
        return (
            f"Usage delivery: {self.total} usage record(s) not in Odoo's ledger as NexaCloud issued them "
            f"({counts}; {self.cpu_seconds} CPU-seconds at stake; local days {days}). "
            "See billing/usage_delivery; the repair job re-pushes what is missing."
        )


def period_alert(
    period: str,
    results: pd.DataFrame,
    state: PeriodAlertState,
    link: str | None,
    gaps: UsageGaps | None = None,
) -> tuple[Alert | None, PeriodAlertState]:
    """The alert a period's current results (and usage gaps) call for, if any, and the state once
    it is sent. A gap alone is news: a lost push under the quota changes no bill."""
    held_back = unexplained(results)
    gaps = gaps if gaps is not None and gaps.total else None
    if held_back.empty and gaps is None:
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
    if gaps is not None:
        news = json.dumps([current, sorted(gaps.counts_by_kind.items()), gaps.cpu_seconds])
        current = hashlib.sha256(news.encode()).hexdigest()[:32]
    if current == state.fingerprint:
        return None, state
    worst = held_back.reindex(held_back["delta_cents"].abs().sort_values(ascending=False).index)
    provisional = bool(results["provisional"].any()) if "provisional" in results else False
    title = (
        f"Billing period {period}{' (provisional)' if provisional else ''} does not reconcile: "
        f"{len(held_back)} unexplained difference(s), variance {format_cents(total_variance_cents(results))}."
        if len(held_back)
        else f"Billing period {period}{' (provisional)' if provisional else ''} reconciles, but "
        f"{gaps.total} usage record(s) did not reach Odoo's ledger as NexaCloud issued them."
    )
    alert = Alert(
        event=MISMATCH,
        title=title,
        lines=(
            _counts_line(results),
            *(
                f"• {_who(row)}: {row.status}, {format_cents(int(row.delta_cents))}. {row.cause}"
                for row in worst.head(LARGEST_SHOWN).itertuples()
            ),
            *((gaps.line(),) if gaps is not None else ()),
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
            **(
                {"usage_gaps": {"counts_by_kind": dict(gaps.counts_by_kind), "cpu_seconds": gaps.cpu_seconds}}
                if gaps is not None
                else {}
            ),
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


def signoff_change_alert(
    period: str,
    changes: pd.DataFrame,
    *,
    signed_off_by: str,
    signed_off_run_id: str,
    changed_inputs: list[str],
    changes_id: str,
    link: str | None,
) -> Alert:
    """A signed-off period whose figures moved in a re-run: who signed what, and what moved."""
    why = (
        f"Inputs changed since the signed-off run: {', '.join(changed_inputs)}."
        if changed_inputs
        else "No input changed since the signed-off run."
    )
    return Alert(
        event=CHANGED_SINCE_SIGNOFF,
        title=(
            f"Billing period {period}, signed off by {signed_off_by}, changed: "
            f"{len(changes)} row(s) differ from the signed-off run {signed_off_run_id}."
        ),
        lines=(
            why,
            *(
                f"• {_who(row)}: {row.old_status} → {row.new_status}; {row.moved}"
                for row in changes.head(LARGEST_SHOWN).itertuples()
            ),
            "The signed-off figures are kept in billing_reconciliation_history.",
        ),
        link=link,
        details={
            "period": period,
            "signed_off_by": signed_off_by,
            "signed_off_run_id": signed_off_run_id,
            "changes": changes_id,
            "changed_inputs": changed_inputs,
            "rows_changed": len(changes),
        },
    )


def lifecycle_drift_key(deployment_id: int, kind: str) -> str:
    """What identifies one drift across observations: the deployment and the kind of drift."""
    return f"{int(deployment_id)}:{kind}"


def drift_details(drift: Mapping[str, Any]) -> dict[str, Any]:
    """A drift's identity and figures as plain JSON values: what its alerts carry."""
    since = drift.get("since")
    return {
        "deployment_id": int(drift["deployment_id"]),
        "customer_id": int(drift["customer_id"]),
        "subscription_id": int(drift["subscription_id"]),
        "kind": str(drift["kind"]),
        "since": None if since is None or pd.isna(since) else pd.Timestamp(since).isoformat(),
        "amount_at_stake_cents": int(drift["amount_at_stake_cents"]),
    }


def lifecycle_drift_alert(drift: Mapping[str, Any], link: str | None) -> Alert:
    """One drift that appeared (a ``billing_lifecycle_drift`` row): what, since when, why."""
    details = drift_details(drift)
    since = f" since {details['since']}" if details["since"] else ""
    return Alert(
        event=LIFECYCLE_DRIFT,
        title=(
            f"Lifecycle drift: {details['kind']} on deployment {details['deployment_id']} "
            f"(customer {details['customer_id']}){since}."
        ),
        lines=(
            str(drift["cause"]),
            f"NexaCloud: {drift['nexacloud_state']}; Odoo: {drift['odoo_state']}; "
            f"{format_cents(details['amount_at_stake_cents'])} at stake.",
        ),
        link=link,
        details=details,
    )


def lifecycle_resolved_alert(drift: Mapping[str, Any], now_in_sync: bool, link: str | None) -> Alert:
    """A drift that cleared: the deployment is in sync again, or drifts another way (alerted apart)."""
    details = drift_details(drift)
    outcome = "is in sync again" if now_in_sync else "no longer shows it"
    return Alert(
        event=LIFECYCLE_RESOLVED,
        title=(
            f"Lifecycle drift cleared: deployment {details['deployment_id']} (customer "
            f"{details['customer_id']}) {outcome}; it was {details['kind']}."
        ),
        lines=(f"It was: {drift['cause']}",),
        link=link,
        details=details,
    )


def lifecycle_digest_alert(event: str, drifts: pd.DataFrame, link: str | None) -> Alert:
    """Many drifts that appeared (or cleared) in one observation, as one message."""
    counts = drifts["kind"].value_counts().sort_index()
    listing = ", ".join(f"{count} {kind}" for kind, count in counts.items())
    at_stake = int(drifts["amount_at_stake_cents"].sum())
    largest = drifts.sort_values("amount_at_stake_cents", ascending=False).head(LARGEST_SHOWN)
    appeared = event == LIFECYCLE_DRIFT
    return Alert(
        event=event,
        title=(
            f"Lifecycle drift: {len(drifts)} drift(s) {'appeared' if appeared else 'cleared'} "
            f"({listing}), {format_cents(at_stake)} at stake."
        ),
        lines=tuple(
            f"• deployment {int(row.deployment_id)}: {row.kind}. {row.cause}" for row in largest.itertuples()
        ),
        link=link,
        details={
            "drifts": sorted(
                lifecycle_drift_key(row.deployment_id, row.kind) + f"@{drift_details(row._asdict())['since']}"
                for row in drifts.itertuples(index=False)
            ),
            "counts_by_kind": {str(kind): int(count) for kind, count in counts.items()},
            "amount_at_stake_cents": at_stake,
        },
    )


@dataclass(frozen=True)
class AlertChannelConfig:
    url: str | None
    kind: str = "generic"
    secret: str | None = None
    timeout_seconds: float = 10.0
    # ALERT_WEBHOOK_ALLOW_PRIVATE: a receiver inside the private network is allowed.
    allow_private: bool = False


def deliver(alert: Alert, channel: AlertChannelConfig, http: httpx.Client | None = None) -> bool:
    """POST the alert; True when a receiver accepted it, False when no channel is configured.

    Without ``http``, the webhook's host is resolved and checked, and the request goes straight
    through a transport pinned to the checked address: no client stands in between, so no
    proxy, ``.netrc`` or redirect applies, and httpx's request log never holds the URL (a Slack
    webhook's path is its credential). A given ``http`` client is its caller's transport (tests).
    """
    if not channel.url:
        return False
    body, headers = encode(alert, channel, now=time.time())
    timeout = httpx.Timeout(channel.timeout_seconds).as_dict()
    try:
        if http is None:
            address = checked_webhook_address(channel.url, allow_private=channel.allow_private)
            request = httpx.Request(
                "POST", channel.url, content=body, headers=headers, extensions={"timeout": timeout}
            )
            with _PinnedTransport(address) as transport:
                response = transport.handle_request(request)
                response.read()
                response.close()
        else:
            # A redirect is answered like a refusal: the alert goes to the configured receiver or nowhere.
            request = http.build_request("POST", channel.url, content=body, headers=headers)
            response = http.send(request, follow_redirects=False)
    except WebhookAddressRefused as refusal:
        raise WebhookAddressRefused(f"alert {alert.event_id} not sent: {refusal}") from None
    except httpx.HTTPError as error:
        raise AlertDeliveryError(f"alert {alert.event_id} not delivered: {type(error).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise AlertDeliveryError(
            f"alert {alert.event_id} refused by the receiver: HTTP {response.status_code}"
        )
    return True


def webhook_address_refusal(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why alerts may not go to this address ("a private address", …), or None when they may.

    Loopback is allowed (a receiver on the same host). ``PRIVATE_NETWORKS`` need
    ``allow_private``; link-local, cloud-metadata, multicast, unspecified and other reserved
    addresses are never allowed. An IPv6 address that carries an IPv4 one (mapped,
    NAT64, 6to4) is judged by the IPv4 address it reaches.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return webhook_address_refusal(address.ipv4_mapped, allow_private=allow_private)
        if address in NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            return webhook_address_refusal(embedded, allow_private=allow_private)
        if address.sixtofour is not None:
            return webhook_address_refusal(address.sixtofour, allow_private=allow_private)
    if address in CLOUD_METADATA_ADDRESSES:
        return "a cloud instance-metadata address"
    if address.is_loopback:
        return None
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if any(address in network for network in PRIVATE_NETWORKS if network.version == address.version):
        return None if allow_private else "a private address"
    # Documentation, benchmarking, "this network", broadcast and the other special-purpose ranges.
    if address.is_reserved or not address.is_global:
        return "a reserved address"
    return None


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a literal loopback address: the only hosts plain http may reach."""
    if host.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_webhook_address(webhook_url: str, *, allow_private: bool = False) -> str:
    """The address to connect to for the webhook: every address its host resolves to is checked.

    Raises WebhookAddressRefused (naming neither the URL nor its host: a webhook URL may be a
    credential) when plain http goes elsewhere than loopback, the host does not resolve, or any
    address it resolves to is refused.
    """
    try:
        url = httpx.URL(webhook_url)
    except httpx.InvalidURL:
        raise WebhookAddressRefused("the webhook URL is malformed") from None
    if url.scheme != "https" and not (url.scheme == "http" and is_loopback_host(url.host)):
        raise WebhookAddressRefused("the webhook must be https (plain http only to a loopback address)")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        resolved = socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise WebhookAddressRefused(f"the webhook's host does not resolve ({type(error).__name__})") from None
    addresses = []
    for *_, sockaddr in resolved:
        # An IPv6 sockaddr may carry a zone (fe80::1%eth0): judge the address without it.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        refusal = webhook_address_refusal(address, allow_private=allow_private)
        if refusal is not None:
            hint = " (ALERT_WEBHOOK_ALLOW_PRIVATE=true allows it)" if _allowable(address) else ""
            raise WebhookAddressRefused(f"the webhook's host resolves to {refusal}{hint}")
        addresses.append(str(address))
    if not addresses:
        raise WebhookAddressRefused("the webhook's host resolves to no address")
    return addresses[0]


class _PinnedTransport(httpx.HTTPTransport):
    """Connects to the checked address only, still presenting and verifying the URL's host name."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self._address = address

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # The Host header is already the URL's; TLS gets the name for SNI and certificate checks.
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": request.url.host}
        request.url = request.url.copy_with(host=self._address)
        return super().handle_request(request)


def _allowable(address: IPAddress) -> bool:
    """Whether ALERT_WEBHOOK_ALLOW_PRIVATE would allow the address."""
    return webhook_address_refusal(address, allow_private=True) is None


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
