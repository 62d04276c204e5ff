"""Lifecycle drift: whether Odoo's billing decisions reached NexaCloud, and the reverse (docs/design.md §11).

Odoo drives NexaCloud once it bills: an invoice unpaid beyond the grace period suspends the
subscription's deployment, a churned subscription deprovisions it. Every mapped deployment is
judged at one moment (``as_of``), its NexaCloud state against its subscription's state and its
overdue invoices, and classified as ``in_sync`` or one drift kind:

- ``billed_after_termination``: terminated in NexaCloud, while the subscription is still in
  progress or an invoice line bills it for a time after the termination's local day;
- ``not_deprovisioned``: the subscription churned (its end date passed), the deployment still
  running or suspended;
- ``paused_but_running``: the subscription paused, the deployment running;
- ``not_suspended``: an open invoice of the subscription is past due by more than the grace
  period, the deployment still running;
- ``suspended_but_paid``: the deployment (or its customer) suspended while the subscription is in
  progress and none of its invoices is overdue at all.

The kinds exclude each other: each needs its own pair of NexaCloud and Odoo states. A deployment
whose status, customer status or subscription state is outside the contract is ``not_judged``,
naming the field and its value, rather than guessed into a kind. Dates are judged
in the billing time zone: an invoice due on day D is overdue from the local midnight after D, and
past the grace period G from the local midnight after D + G. ``since`` is when the drift became
true, from the dates both sides hold (a due date, an end date, a termination); where neither
holds one (a pause, a suspension), it is when this drift was first observed, carried from one
observation to the next. Amounts are integer cents: what the drift puts at stake, said in
``cause``.

``classify`` judges from the states; ``describe`` adds the amounts and the cause sentences once
the plan fees of the drifting subscriptions are known, so that only those are read from Odoo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import pandas as pd

from fusion_billing_assets.billing.isolation import SET_ASIDE
from fusion_billing_assets.billing.money import format_cents, round_half_up
from fusion_billing_assets.billing.periods import local_day, local_midnight_utc

DEFAULT_GRACE_DAYS = 7


class DriftKind(StrEnum):
    IN_SYNC = "in_sync"
    NOT_SUSPENDED = "not_suspended"
    NOT_DEPROVISIONED = "not_deprovisioned"
    SUSPENDED_BUT_PAID = "suspended_but_paid"
    BILLED_AFTER_TERMINATION = "billed_after_termination"
    PAUSED_BUT_RUNNING = "paused_but_running"
    # A state outside either system's contract: named, never guessed at.
    NOT_JUDGED = "not_judged"


DRIFT_KINDS = tuple(kind for kind in DriftKind if kind not in (DriftKind.IN_SYNC, DriftKind.NOT_JUDGED))

RUNNING, SUSPENDED, TERMINATED = "running", "suspended", "terminated"
# Odoo 19's subscription states (sale.order.subscription_state) that bill.
BILLING_STATES = frozenset({"3_progress", "7_upsell"})
PAUSED_STATE, CHURNED_STATE = "4_paused", "6_churn"
# The values each system's contract allows (docs/design.md §4, §11).
DEPLOYMENT_STATUSES = frozenset({RUNNING, SUSPENDED, TERMINATED})
CUSTOMER_STATUSES = frozenset({"active", SUSPENDED, "closed"})
SUBSCRIPTION_STATES = frozenset(
    {"1_draft", "2_renewal", "3_progress", "4_paused", "5_renewed", "6_churn", "7_upsell"}
)

# NexaCloud's deployments with their customer's status.
DEPLOYMENT_STATE_COLUMNS = ["deployment_id", "customer_id", "status", "terminated_at", "customer_status"]
# The mapping: each deployment's subscription, and its customer's partner.
MAPPING_COLUMNS = ["deployment_id", "subscription_id", "partner_id"]
SUBSCRIPTION_STATE_COLUMNS = ["subscription_id", "name", "subscription_state", "end_date"]
# Open customer invoices due before the judged day, one row per (invoice, subscription it bills):
# ``subscription_total_cents`` is the sum of that subscription's lines on the invoice, taxes included.
OVERDUE_COLUMNS = [
    "move_id",
    "invoice_name",
    "subscription_id",
    "invoice_date_due",
    "amount_total_cents",
    "amount_residual_cents",
    "subscription_total_cents",
]
# Invoice lines of terminated deployments' subscriptions that start after the termination.
LATER_LINE_COLUMNS = ["subscription_id", "invoice_name", "service_start", "total_cents"]

DRIFT_COLUMNS = [
    "customer_id",
    "deployment_id",
    "partner_id",
    "subscription_id",
    "kind",
    "nexacloud_state",
    "odoo_state",
    "since",
    "amount_at_stake_cents",
    "cause",
]


@dataclass(frozen=True)
class LifecycleRules:
    """How the control loop is judged: the grace period and the billing time zone."""

    timezone: str
    grace_days: int = DEFAULT_GRACE_DAYS

    def __post_init__(self) -> None:
        if self.grace_days < 0:
            raise ValueError(f"the suspension grace period cannot be negative, got {self.grace_days} days")

    def midnight_after(self, day: date) -> datetime:
        """The UTC moment the local day after ``day`` begins."""
        return local_midnight_utc(day + timedelta(days=1), self.timezone)


@dataclass(frozen=True)
class LifecycleStates:
    """What both systems hold at the judged moment (frames with the ``*_COLUMNS`` above)."""

    deployments: pd.DataFrame
    mapping: pd.DataFrame
    subscriptions: pd.DataFrame
    overdue_invoices: pd.DataFrame
    later_lines: pd.DataFrame


def nexacloud_state(status: str, customer_status: str | None, terminated_at) -> str:
    """A deployment's effective state: a closed customer's deployments are terminated, a suspended
    customer's suspended, whatever their own status says."""
    if status == TERMINATED or not _missing(terminated_at) or customer_status == "closed":
        return TERMINATED
    if status == SUSPENDED or customer_status == SUSPENDED:
        return SUSPENDED
    return RUNNING


def lifecycle_mapping(links: pd.DataFrame, deployments: pd.DataFrame) -> pd.DataFrame:
    """Each mapped deployment's subscription, and its customer's partner when the customer is mapped."""
    subscriptions = links.loc[
        links["link_kind"] == "deployment", ["nexacloud_id", "odoo_id"]
    ].drop_duplicates("nexacloud_id")
    partners = links.loc[links["link_kind"] == "customer", ["nexacloud_id", "odoo_id"]].drop_duplicates(
        "nexacloud_id"
    )
    mapped = deployments[["deployment_id", "customer_id"]].merge(
        subscriptions.rename(columns={"nexacloud_id": "deployment_id", "odoo_id": "subscription_id"}),
        on="deployment_id",
    )
    mapped = mapped.merge(
        partners.rename(columns={"nexacloud_id": "customer_id", "odoo_id": "partner_id"}),
        on="customer_id",
        how="left",
    )
    mapped["partner_id"] = mapped["partner_id"].astype("Int64")
    return mapped[["deployment_id", "subscription_id", "partner_id"]]


def terminations(deployments: pd.DataFrame, mapping: pd.DataFrame, rules: LifecycleRules) -> dict:
    """The subscription of every terminated, mapped deployment, with its termination's local day."""
    ended = deployments[
        [
            nexacloud_state(status, customer, at) == TERMINATED and not pd.isna(at)
            for status, customer, at in zip(
                deployments["status"],
                deployments["customer_status"],
                deployments["terminated_at"],
                strict=True,
            )
        ]
    ].merge(mapping, on="deployment_id")
    return {
        int(subscription): local_day(at, rules.timezone)
        for subscription, at in zip(ended["subscription_id"], ended["terminated_at"], strict=True)
    }


def classify(
    states: LifecycleStates,
    rules: LifecycleRules,
    as_of: datetime,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every mapped deployment whose subscription Odoo holds, with its kind and ``since``.

    ``previous`` holds the drifts of the last observation (``deployment_id``, ``kind``,
    ``since``): a drift neither system dates keeps the ``since`` it had then; one seen for the
    first time starts at ``as_of``. Returns ``DRIFT_COLUMNS`` with ``amount_at_stake_cents`` and
    ``cause`` still empty, plus the evidence ``describe`` words them from.
    """
    today = local_day(as_of, rules.timezone)
    grace = timedelta(days=rules.grace_days)
    # A record its source marked unreadable (``set_aside``) leaves its deployment not_judged.
    # Deployments and subscriptions are kept, to be named; an unreadable invoice or line cannot be.
    deployments, nexacloud_problems = _unmarked(
        states.deployments, "deployment_id", "NexaCloud deployment", keep=True
    )
    subscriptions, odoo_problems = _unmarked(
        states.subscriptions, "subscription_id", "Odoo subscription", keep=True
    )
    overdue, invoice_problems = _unmarked(states.overdue_invoices, "subscription_id", "Odoo invoice")
    later, line_problems = _unmarked(states.later_lines, "subscription_id", "Odoo invoice line")
    for problems in (invoice_problems, line_problems):
        for subscription, problem in problems.items():
            odoo_problems[subscription] = _joined(odoo_problems.get(subscription), problem)
    joined = states.mapping.merge(deployments, on="deployment_id", how="inner").merge(
        subscriptions, on="subscription_id", how="inner"
    )
    overdue_by_subscription = _records_by_subscription(overdue[overdue["invoice_date_due"] < today])
    later_by_subscription = _records_by_subscription(later)
    carried = _carried_since(previous)
    rows = []
    for row in joined.sort_values("deployment_id").itertuples(index=False):
        state = nexacloud_state(row.status, row.customer_status, row.terminated_at)
        overdue = overdue_by_subscription.get(row.subscription_id, ())
        kind, since, later = DriftKind.IN_SYNC, None, ()
        unreadable = _joined(
            nexacloud_problems.get(int(row.deployment_id)), odoo_problems.get(int(row.subscription_id))
        )
        if unreadable or _outside_contract(row):
            kind = DriftKind.NOT_JUDGED
        elif state == TERMINATED:
            if not _missing(row.terminated_at):
                ended = local_day(row.terminated_at, rules.timezone)
                later = tuple(
                    line
                    for line in later_by_subscription.get(row.subscription_id, ())
                    if line["service_start"] > ended
                )
            if row.subscription_state in BILLING_STATES or later:
                kind = DriftKind.BILLED_AFTER_TERMINATION
                since = None if _missing(row.terminated_at) else pd.Timestamp(row.terminated_at)
        elif row.subscription_state == CHURNED_STATE:
            if _missing(row.end_date):
                kind = DriftKind.NOT_DEPROVISIONED
            elif as_of >= rules.midnight_after(row.end_date):
                kind, since = DriftKind.NOT_DEPROVISIONED, pd.Timestamp(rules.midnight_after(row.end_date))
        elif row.subscription_state == PAUSED_STATE:
            if state == RUNNING:
                kind = DriftKind.PAUSED_BUT_RUNNING
        elif row.subscription_state in BILLING_STATES:
            beyond_grace = [invoice for invoice in overdue if invoice["invoice_date_due"] + grace < today]
            if state == RUNNING and beyond_grace:
                kind = DriftKind.NOT_SUSPENDED
                oldest_due = min(invoice["invoice_date_due"] for invoice in beyond_grace)
                since = pd.Timestamp(rules.midnight_after(oldest_due + grace))
            elif state == SUSPENDED and not overdue:
                kind = DriftKind.SUSPENDED_BUT_PAID
        if kind in DRIFT_KINDS and since is None:
            since = carried.get((int(row.deployment_id), str(kind)), pd.Timestamp(as_of))
        rows.append(
            (
                int(row.customer_id),
                int(row.deployment_id),
                None if _missing(row.partner_id) else int(row.partner_id),
                int(row.subscription_id),
                str(kind),
                state,
                _odoo_state(row.subscription_state, overdue, today),
                since,
                None,
                None,
                row.name,
                row.subscription_state,
                row.end_date,
                row.terminated_at,
                row.customer_status,
                row.status,
                unreadable,
                overdue,
                later,
            )
        )
    classified = pd.DataFrame(rows, columns=[*DRIFT_COLUMNS, *_EVIDENCE_COLUMNS])
    classified["since"] = pd.to_datetime(classified["since"], utc=True)
    return classified


# What ``describe`` words a cause from: the subscription, the dates, the invoices and lines involved.
_EVIDENCE_COLUMNS = [
    "subscription_name",
    "subscription_state",
    "end_date",
    "terminated_at",
    "customer_status",
    "status",
    "unreadable",
    "overdue",
    "later_lines",
]


def subscriptions_needing_plan_fee(classified: pd.DataFrame) -> list[int]:
    """The subscriptions whose drift is priced by their monthly plan fee."""
    priced_by_fee = classified["kind"].isin(
        [
            DriftKind.NOT_DEPROVISIONED,
            DriftKind.SUSPENDED_BUT_PAID,
            DriftKind.PAUSED_BUT_RUNNING,
            DriftKind.BILLED_AFTER_TERMINATION,
        ]
    )
    return sorted(int(s) for s in classified.loc[priced_by_fee, "subscription_id"].unique())


def describe(
    classified: pd.DataFrame, rules: LifecycleRules, as_of: datetime, plan_fees: Mapping[int, int]
) -> pd.DataFrame:
    """``classify``'s rows with the amount at stake and a one-sentence cause: ``DRIFT_COLUMNS``.

    ``plan_fees``: the monthly plan fee in cents of (at least) ``subscriptions_needing_plan_fee``.
    """
    today = local_day(as_of, rules.timezone)
    amounts, causes = [], []
    for row in classified.itertuples(index=False):
        amount, cause = _explained(row, rules, today, plan_fees.get(int(row.subscription_id)))
        amounts.append(amount)
        causes.append(cause)
    described = classified[DRIFT_COLUMNS].copy()
    described["amount_at_stake_cents"] = pd.array(amounts, dtype="int64")
    described["cause"] = causes
    return described.reset_index(drop=True)


def drifts(described: pd.DataFrame) -> pd.DataFrame:
    """The rows that drift (neither in sync nor left unjudged)."""
    return described[described["kind"].isin([str(kind) for kind in DRIFT_KINDS])]


def not_judged(described: pd.DataFrame) -> pd.DataFrame:
    """The rows whose states break a contract, so no kind could be told."""
    return described[described["kind"] == DriftKind.NOT_JUDGED]


def older_than_grace(described: pd.DataFrame, rules: LifecycleRules, as_of: datetime) -> pd.DataFrame:
    """The drifts that began more than the grace period before ``as_of``."""
    found = drifts(described)
    limit = pd.Timestamp(as_of) - pd.Timedelta(days=rules.grace_days)
    return found[pd.to_datetime(found["since"], utc=True) < limit]


def counts_by_kind(described: pd.DataFrame) -> dict[str, int]:
    counts = described["kind"].value_counts()
    return {str(kind): int(counts.get(str(kind), 0)) for kind in DriftKind}


def _explained(row, rules: LifecycleRules, today: date, plan_fee: int | None) -> tuple[int, str]:
    kind = DriftKind(row.kind)
    who = f"deployment {row.deployment_id} (subscription {row.subscription_name})"
    fee = f"{format_cents(plan_fee)} a month" if plan_fee is not None else "its plan fee"
    since = "" if _missing(row.since) else _local(row.since, rules)
    if kind is DriftKind.NOT_SUSPENDED:
        grace = timedelta(days=rules.grace_days)
        beyond = [invoice for invoice in row.overdue if invoice["invoice_date_due"] + grace < today]
        at_stake = sum(_open_share(invoice) for invoice in beyond)
        oldest_due = min(invoice["invoice_date_due"] for invoice in beyond)
        return at_stake, (
            f"{_capitalized(_invoices_text(beyond))} unpaid ({format_cents(at_stake)} open for this subscription), due "
            f"{oldest_due}: {(today - oldest_due).days} days overdue, past the {rules.grace_days}-day grace "
            f"period since {since}, yet {who} is still running."
        )
    if kind is DriftKind.NOT_DEPROVISIONED:
        ended = "with no end date" if _missing(row.end_date) else f"ending {row.end_date}"
        return plan_fee or 0, (
            f"Odoo churned subscription {row.subscription_name} ({ended}), yet NexaCloud's deployment "
            f"{row.deployment_id} is still {row.nexacloud_state}: {fee} of service no longer billed."
        )
    if kind is DriftKind.PAUSED_BUT_RUNNING:
        return plan_fee or 0, (
            f"Odoo paused subscription {row.subscription_name}, yet NexaCloud's deployment {row.deployment_id} "
            f"keeps running (observed since {since}): {fee} of service goes unbilled."
        )
    if kind is DriftKind.SUSPENDED_BUT_PAID:
        by = "its customer is suspended" if row.customer_status == SUSPENDED else "it is suspended"
        return plan_fee or 0, (
            f"NexaCloud's deployment {row.deployment_id}: {by} (observed since {since}) while subscription "
            f"{row.subscription_name} is {row.subscription_state} and no invoice is overdue: a paying "
            f"customer ({fee}) is cut off."
        )
    if kind is DriftKind.BILLED_AFTER_TERMINATION:
        ended = "" if _missing(row.terminated_at) else f" on {_local(row.terminated_at, rules)}"
        if row.later_lines:
            at_stake = sum(int(line["total_cents"]) for line in row.later_lines)
            first_start = min(line["service_start"] for line in row.later_lines)
            return at_stake, (
                f"NexaCloud terminated {who}{ended}, yet {_invoices_text(row.later_lines)} bill it for "
                f"service from {first_start} ({format_cents(at_stake)})."
            )
        return plan_fee or 0, (
            f"NexaCloud terminated {who}{ended}, yet Odoo keeps the subscription {row.subscription_state}: "
            f"it goes on billing {fee}."
        )
    if kind is DriftKind.NOT_JUDGED:
        if row.unreadable:
            return 0, (
                f"Not judged: deployment {row.deployment_id} (subscription {row.subscription_name}) rests on "
                f"records that cannot be read: {row.unreadable}."
            )
        return 0, (
            f"Not judged: deployment {row.deployment_id} (subscription {row.subscription_name}) has "
            f"{_outside_contract(row)}, which is not a state of the contract (docs/design.md §11)."
        )
    return 0, _in_sync_note(row, rules, today)


def _outside_contract(row) -> str | None:
    """Which state of the row no contract allows, as ``field 'value'``; None when all are known."""
    for field, value, allowed in (
        ("deployments.status", row.status, DEPLOYMENT_STATUSES),
        ("customers.status", row.customer_status, CUSTOMER_STATUSES),
        ("sale.order.subscription_state", row.subscription_state, SUBSCRIPTION_STATES),
    ):
        if value not in allowed:
            return f"{field} {value!r}"
    return None


def _in_sync_note(row, rules: LifecycleRules, today: date) -> str:
    """Why a look-alike is in sync: overdue within the grace period, suspended for an overdue
    invoice, terminated and churned; empty for the plain case."""
    if row.nexacloud_state == TERMINATED and row.subscription_state == CHURNED_STATE:
        ended = "" if _missing(row.terminated_at) else f" on {_local(row.terminated_at, rules)}"
        until = "" if _missing(row.end_date) else f" with end date {row.end_date}"
        return f"Terminated in NexaCloud{ended} and churned in Odoo{until}."
    if not row.overdue:
        return ""
    oldest_due = min(invoice["invoice_date_due"] for invoice in row.overdue)
    days = (today - oldest_due).days
    if row.nexacloud_state == SUSPENDED:
        return f"Suspended for {_invoices_text(row.overdue)}, {days} days overdue (due {oldest_due})."
    if row.nexacloud_state == RUNNING:
        last_day = oldest_due + timedelta(days=rules.grace_days)
        return (
            f"{_capitalized(_invoices_text(row.overdue))} {days} days overdue (due {oldest_due}), within the "
            f"{rules.grace_days}-day grace period until {last_day}."
        )
    return ""


def _open_share(invoice: Mapping) -> int:
    """The part of an invoice's open amount owed for one subscription: its lines' share of the total."""
    total = int(invoice["amount_total_cents"])
    if not total:
        return 0
    share = Decimal(int(invoice["subscription_total_cents"])) * int(invoice["amount_residual_cents"])
    return round_half_up(share / total)


def _invoices_text(records) -> str:
    names = sorted(dict.fromkeys(str(record["invoice_name"]) for record in records))
    return ("invoice " if len(names) == 1 else "invoices ") + ", ".join(names)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _odoo_state(subscription_state: str, overdue: tuple[dict, ...], today: date) -> str:
    if not overdue:
        return str(subscription_state)
    oldest = min(invoice["invoice_date_due"] for invoice in overdue)
    return f"{subscription_state}; {len(overdue)} invoice(s) overdue, oldest due {oldest} ({(today - oldest).days} days)"


def _carried_since(previous: pd.DataFrame | None) -> dict[tuple[int, str], pd.Timestamp]:
    if previous is None or previous.empty:
        return {}
    return {
        (int(row.deployment_id), str(row.kind)): pd.Timestamp(row.since)
        for row in previous.itertuples(index=False)
        if not _missing(row.since)
    }


def _unmarked(
    frame: pd.DataFrame, key: str, source: str, *, keep: bool = False
) -> tuple[pd.DataFrame, dict[int, str]]:
    """The frame without its ``set_aside`` marks (and, unless ``keep``, without the rows marked), and
    what its source found unreadable, by ``key``."""
    if SET_ASIDE not in frame:
        return frame, {}
    marked = frame[SET_ASIDE].notna()
    problems: dict[int, str] = {}
    for value, problem in zip(frame.loc[marked, key], frame.loc[marked, SET_ASIDE], strict=True):
        if not _missing(value):
            problems[int(value)] = _joined(problems.get(int(value)), f"{source} {problem}")
    return (frame if keep else frame.loc[~marked]).drop(columns=SET_ASIDE), problems


def _joined(first: str | None, second: str | None) -> str | None:
    return "; ".join(text for text in (first, second) if text) or None


def _records_by_subscription(frame: pd.DataFrame) -> dict[int, tuple[dict, ...]]:
    grouped: dict[int, list[dict]] = {}
    for record in frame.to_dict("records"):
        grouped.setdefault(int(record["subscription_id"]), []).append(record)
    return {key: tuple(records) for key, records in grouped.items()}


def _local(moment, rules: LifecycleRules) -> str:
    return pd.Timestamp(moment).tz_convert(rules.timezone).strftime("%Y-%m-%d %H:%M %Z")


def _missing(value) -> bool:
    return value is None or bool(pd.isna(value))
