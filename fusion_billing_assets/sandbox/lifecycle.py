"""The sandbox's lifecycle states (docs/design.md §11): both systems' control loop, with one case of
every drift kind and the in-sync look-alikes a classifier must not mistake for drift.

By default the two systems agree. NexaCloud runs every deployment it did not terminate and every
customer is active; the importer gave each running deployment a subscription in progress and each
terminated one a churned subscription ending on the local day of its termination; every invoice
is due 30 days after its date and paid when due before the sandbox's fixed "now", the provisional
cut-off ``world.usage_cutoff`` (``odoo_billing``). Judged at that moment, in the world's time zone
and with a grace period of ``GRACE_DAYS``, every mapped deployment is in sync.

``plan_lifecycle`` then picks one deployment per case, on a random stream of its own (so no other
draw of the world changes), among imported customers, each case on a customer of its own, and
says what must change; ``apply_lifecycle`` writes it once everything else is written: UPDATEs of
NexaCloud's ``deployments.status`` and of the Odoo store's subscriptions and invoices, with bound
parameters, on SQLite and PostgreSQL alike. The cases, as the ground truth lists them:

- ``not_suspended``: the invoice due around the 1st of the provisional month, more than the grace
  period before "now", is left unpaid while the deployment runs (with a single closed period, its
  invoice, dated that 1st and made due on receipt);
- ``suspended_but_paid``: the deployment suspended while its subscription is in progress and every
  invoice is paid or not yet due;
- ``not_deprovisioned``: the subscription churned with an end date ``CHURNED_DAYS_AGO`` days ago,
  the deployment still running;
- ``billed_after_termination``: a deployment the world terminated whose subscription was set back
  in progress, its end date cleared;
- ``paused_but_running``: the subscription paused, the deployment running;
- the look-alikes, in sync: ``in_grace`` (an unpaid invoice due ``IN_GRACE_DAYS_OVERDUE`` days ago,
  inside the grace period, the deployment running), ``suspended_and_overdue`` (the deployment
  suspended for an invoice unpaid beyond the grace period) and ``terminated_and_churned_same_day``
  (a termination whose subscription ends on its local day; an evening one preferred, whose UTC
  date is the next day).

An invoice covers all of a customer's deployments, so an invoice case is put on a customer with a
single deployment alive at "now", and every deployment the invoice bills is listed with the kind
it must read as. The expected kinds come from how each case is built, never from a classifier.

None of what changes is read by the charge math or by the usage delivery check: a deployment's or
customer's status, a subscription's state, an invoice's payment state, due date and amount due.
A subscription's end date is read, to choose the subscriptions running in a period
(``sources.odoo_frames.fetch_subscriptions``):
the churned one ends within the provisional period, which it ran in anyway; the one set back in
progress is read in the periods after its termination too, with no invoice line and no usage
there. The importer wants a churned subscription and an end date for a terminated deployment, so
its plan shows an update for the one set back in progress in every period the deployment lived.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import create_engine, select, update
from sqlalchemy.engine import make_url

from fusion_billing_assets.billing.lifecycle import DriftKind as Kind
from fusion_billing_assets.billing.money import dollars_to_cents, format_cents
from fusion_billing_assets.billing.periods import local_day, local_midnight_utc
from fusion_billing_assets.billing.statuses import Status
from fusion_billing_assets.sandbox.odoo_billing import OdooRecords, odoo_price_cents
from fusion_billing_assets.sandbox.odoo_store import TABLES, open_store
from fusion_billing_assets.sandbox.scenarios import Role
from fusion_billing_assets.sandbox.world import Deployment, World, utc_text
from fusion_billing_assets.sources import nexacloud_schema as schema

GRACE_DAYS = 7
# The churned subscription's end date, this many days before "now".
CHURNED_DAYS_AGO = 5
# The look-alike inside the grace period: its invoice was due this many days before "now".
IN_GRACE_DAYS_OVERDUE = 3

RUNNING_STATE, PAUSED_STATE, CHURNED_STATE = "3_progress", "4_paused", "6_churn"

# Cast roles whose Odoo invoices are shaped unlike a plain customer's (a draft, a cancelled copy,
# a credit note, undated lines): no invoice case goes near them.
_INVOICE_SHAPING_ROLES = frozenset(
    {Role.DRAFT_INVOICE, Role.CANCELLED_INVOICE, Role.REFUND, Role.UNDATED_LINES}
)


class Case(StrEnum):
    """A lifecycle case the sandbox injects, in the ground truth's order."""

    NOT_SUSPENDED = "not_suspended"
    SUSPENDED_BUT_PAID = "suspended_but_paid"
    NOT_DEPROVISIONED = "not_deprovisioned"
    BILLED_AFTER_TERMINATION = "billed_after_termination"
    PAUSED_BUT_RUNNING = "paused_but_running"
    IN_GRACE = "in_grace"
    SUSPENDED_AND_OVERDUE = "suspended_and_overdue"
    TERMINATED_AND_CHURNED_SAME_DAY = "terminated_and_churned_same_day"


# The kind the deployment a case is built on must read as.
KIND_OF_CASE: Mapping[Case, Kind] = {
    Case.NOT_SUSPENDED: Kind.NOT_SUSPENDED,
    Case.SUSPENDED_BUT_PAID: Kind.SUSPENDED_BUT_PAID,
    Case.NOT_DEPROVISIONED: Kind.NOT_DEPROVISIONED,
    Case.BILLED_AFTER_TERMINATION: Kind.BILLED_AFTER_TERMINATION,
    Case.PAUSED_BUT_RUNNING: Kind.PAUSED_BUT_RUNNING,
    Case.IN_GRACE: Kind.IN_SYNC,
    Case.SUSPENDED_AND_OVERDUE: Kind.IN_SYNC,
    Case.TERMINATED_AND_CHURNED_SAME_DAY: Kind.IN_SYNC,
}


class LifecycleNotBuilt(RuntimeError):
    """The world lacks what a lifecycle case needs; the message says which case and why."""


@dataclass(frozen=True)
class LifecycleEntry:
    """One deployment a case touches, with the kind it must read as and since when."""

    case: Case
    kind: Kind
    deployment_id: int
    customer_id: int
    subscription_id: int
    since: datetime | None  # None: the data does not say (a pause, a suspension)
    description: str


@dataclass(frozen=True)
class Lifecycle:
    """The cases and the writes that make them, judged at ``as_of``."""

    as_of: datetime
    today: date  # the local day of ``as_of``
    grace_days: int
    timezone: str
    entries: tuple[LifecycleEntry, ...]
    # The cases the world could not hold, with why.
    not_built: Mapping[Case, str]
    # NexaCloud deployment id → its status.
    deployment_status: Mapping[int, str]
    # Odoo record id → the values written on it (storage format), per model.
    subscription_writes: Mapping[int, Mapping[str, Any]]
    invoice_writes: Mapping[int, Mapping[str, Any]]

    def deployments(self) -> set[int]:
        return {entry.deployment_id for entry in self.entries}


@dataclass(frozen=True)
class _Invoice:
    """A posted customer invoice as the Odoo store holds it, with the subscriptions its lines bill."""

    id: int
    name: str
    invoice_date: date
    due: date
    payment_state: str
    amount_total: float  # as stored, in currency units
    subscription_ids: frozenset[int]

    @property
    def total_cents(self) -> int:
        return dollars_to_cents(self.amount_total)


@dataclass(frozen=True)
class _Subscription:
    id: int
    name: str
    state: str
    start_date: date | None
    end_date: date | None


def plan_lifecycle(world: World, odoo: OdooRecords, odoo_url: str) -> Lifecycle:
    """Pick every case's deployment and say what to write; a case the world cannot hold (too few
    terminated deployments, say) is left out and listed in ``not_built`` with why."""
    engine = open_store(odoo_url)
    try:
        with engine.connect() as connection:
            return _Planner(world, odoo, connection).plan()
    finally:
        engine.dispose()


def apply_lifecycle(lifecycle: Lifecycle, nexacloud_url: str, odoo_url: str) -> None:
    """Write the cases: NexaCloud's deployment statuses, then Odoo's subscriptions and invoices."""
    engine = create_engine(make_url(nexacloud_url))
    try:
        with engine.begin() as connection:
            table = schema.deployments
            for deployment_id, status in sorted(lifecycle.deployment_status.items()):
                _updated(connection, table, deployment_id, {"status": status})
    finally:
        engine.dispose()
    store = open_store(odoo_url)
    try:
        with store.begin() as connection:
            for model, writes in (
                ("sale.order", lifecycle.subscription_writes),
                ("account.move", lifecycle.invoice_writes),
            ):
                for record_id, values in sorted(writes.items()):
                    _updated(connection, TABLES[model], record_id, dict(values))
    finally:
        store.dispose()


def _updated(connection, table, record_id: int, values: dict[str, Any]) -> None:
    result = connection.execute(update(table).where(table.c.id == record_id).values(values))
    if result.rowcount != 1:
        raise RuntimeError(f"sandbox generator bug: {table.name} {record_id} to update is not there")


T = TypeVar("T")


class _Planner:
    def __init__(self, world: World, odoo: OdooRecords, connection):
        self.world = world
        self.odoo = odoo
        self.connection = connection
        self.rng = random.Random(f"lifecycle:{world.seed}")
        self.as_of = world.usage_cutoff
        self.today = local_day(self.as_of, world.timezone)
        self.deployment_of_subscription = {s: d for d, s in odoo.subscription_of.items()}
        self.deployment_by_id = {d.id: d for d in world.deployments}
        self.used_customers: set[int] = set()
        self.entries: list[LifecycleEntry] = []
        self.deployment_status: dict[int, str] = {}
        self.subscription_writes: dict[int, dict[str, Any]] = {}
        self.invoice_writes: dict[int, dict[str, Any]] = {}
        # Invoice cases take the last but one closed period's invoice, billed in arrears on the 1st
        # of the last closed month: due around the 1st of the provisional month. With a single
        # closed period, its invoice, dated the 1st of the provisional month and not yet due: that
        # one's due date is moved (``invoice_case``).
        self.billed_on = world.closed[-1].period if len(world.closed) > 1 else world.provisional.period

    # --- who may play --------------------------------------------------------------------------

    def tier(self, customer_id: int) -> int | None:
        """How plain a customer is, the plainest first; ``None``: never imported, so not mapped."""
        world = self.world
        if not world.imported(customer_id) or customer_id not in self.odoo.partner_of:
            return None
        casting = world.casting_of_customer.get(customer_id)
        if casting is None:
            return 0
        spec = casting.spec
        if spec.status is not Status.MATCH or casting.role in _INVOICE_SHAPING_ROLES:
            return 3
        return 2 if spec.delivery else 1

    def alive(self, customer_id: int) -> list[Deployment]:
        return [d for d in self.world.deployments_of[customer_id] if not self.terminated(d)]

    def terminated(self, deployment: Deployment) -> bool:
        return deployment.terminated_at is not None and deployment.terminated_at <= self.as_of

    def ranked(self, candidates: Iterable[T], key: Callable[[T], Any], ident: Callable[[T], int]) -> list[T]:
        """The candidates best first by ``key``, in this stage's random order among equals."""
        shuffled = sorted(candidates, key=ident)
        self.rng.shuffle(shuffled)
        return sorted(shuffled, key=key)

    def running_candidates(self, *, tiers: Sequence[int]) -> list[Deployment]:
        """Running deployments of unused customers of these tiers; a customer's only one first."""
        found = []
        for deployment in self.world.deployments:
            tier = self.tier(deployment.customer_id)
            if (
                tier not in tiers
                or deployment.customer_id in self.used_customers
                or self.terminated(deployment)
            ):
                continue
            found.append(deployment)
        return self.ranked(
            found,
            key=lambda d: (self.tier(d.customer_id), len(self.alive(d.customer_id)) > 1),
            ident=lambda d: d.id,
        )

    # --- reading the store ---------------------------------------------------------------------

    def subscription(self, deployment: Deployment) -> _Subscription:
        orders = TABLES["sale.order"]
        subscription_id = self.odoo.subscription_of[deployment.id]
        row = self.connection.execute(
            select(
                orders.c.id,
                orders.c.name,
                orders.c.subscription_state,
                orders.c.start_date,
                orders.c.end_date,
            ).where(orders.c.id == subscription_id)
        ).one()
        return _Subscription(
            row.id, row.name, row.subscription_state, _day(row.start_date), _day(row.end_date)
        )

    def posted_invoices(self, customer_id: int) -> list[_Invoice]:
        """The customer's posted customer invoices, with the subscriptions of their product lines."""
        moves, lines = TABLES["account.move"], TABLES["account.move.line"]
        rows = self.connection.execute(
            select(
                moves.c.id,
                moves.c.name,
                moves.c.invoice_date,
                moves.c.invoice_date_due,
                moves.c.payment_state,
                moves.c.amount_total,
            )
            .where(
                moves.c.partner_id == self.odoo.partner_of[customer_id],
                moves.c.move_type == "out_invoice",
                moves.c.state == "posted",
            )
            .order_by(moves.c.id)
        ).all()
        billed: dict[int, set[int]] = {row.id: set() for row in rows}
        if billed:
            for move_id, subscription_id in self.connection.execute(
                select(lines.c.move_id, lines.c.subscription_id).where(
                    lines.c.move_id.in_(list(billed)),
                    lines.c.display_type == "product",
                    lines.c.subscription_id.is_not(None),
                )
            ):
                billed[move_id].add(subscription_id)
        return [
            _Invoice(
                row.id,
                row.name,
                date.fromisoformat(row.invoice_date),
                date.fromisoformat(row.invoice_date_due),
                row.payment_state,
                row.amount_total,
                frozenset(billed[row.id]),
            )
            for row in rows
        ]

    # --- the plan ------------------------------------------------------------------------------

    def plan(self) -> Lifecycle:
        # The look-alike first, so it gets the evening termination when there is one; with a
        # single terminated deployment to go round, the drift kind takes it.
        terminated = [Case.TERMINATED_AND_CHURNED_SAME_DAY, Case.BILLED_AFTER_TERMINATION]
        if len(self.terminated_candidates()) < len(terminated):
            terminated.reverse()
        builders = [
            *((case, self.terminated_case) for case in terminated),
            *(
                (case, self.invoice_case)
                for case in (Case.NOT_SUSPENDED, Case.SUSPENDED_AND_OVERDUE, Case.IN_GRACE)
            ),
            *(
                (case, self.deployment_case)
                for case in (Case.SUSPENDED_BUT_PAID, Case.NOT_DEPROVISIONED, Case.PAUSED_BUT_RUNNING)
            ),
        ]
        # A world too small for a case still generates: the manifest says which case is missing and why.
        not_built = {}
        for case, build in builders:
            try:
                build(case)
            except LifecycleNotBuilt as missing:
                not_built[case] = str(missing)
        order = list(Case)
        entries = sorted(self.entries, key=lambda e: (order.index(e.case), e.deployment_id))
        return Lifecycle(
            as_of=self.as_of,
            today=self.today,
            grace_days=GRACE_DAYS,
            timezone=self.world.timezone,
            entries=tuple(entries),
            not_built=not_built,
            deployment_status=self.deployment_status,
            subscription_writes=self.subscription_writes,
            invoice_writes=self.invoice_writes,
        )

    def add(
        self, case: Case, kind: Kind, deployment: Deployment, since: datetime | None, description: str
    ) -> None:
        self.entries.append(
            LifecycleEntry(
                case,
                kind,
                deployment.id,
                deployment.customer_id,
                self.odoo.subscription_of[deployment.id],
                since,
                description,
            )
        )
        self.used_customers.add(deployment.customer_id)

    def terminated_candidates(self) -> list[Deployment]:
        """The deployments the world terminated before "now", of imported customers no case took."""
        return [
            d
            for d in self.world.deployments
            if self.terminated(d)
            and self.tier(d.customer_id) is not None
            and d.customer_id not in self.used_customers
        ]

    def terminated_case(self, case: Case) -> None:
        """A deployment the world terminated before "now", on a customer no other case took."""
        world = self.world
        zone = world.zone
        candidates = self.terminated_candidates()

        def evening(d: Deployment) -> bool:
            """Terminated in the local evening: its UTC date is the next day."""
            return d.terminated_at.date() != d.terminated_at.astimezone(zone).date()

        if case is Case.TERMINATED_AND_CHURNED_SAME_DAY:
            key = lambda d: (not evening(d), self.tier(d.customer_id))  # noqa: E731
        else:
            # The evening terminations are the same-day look-alike's to take.
            key = lambda d: (evening(d), self.tier(d.customer_id))  # noqa: E731
        ranked = self.ranked(candidates, key=key, ident=lambda d: d.id)
        if not ranked:
            raise LifecycleNotBuilt(
                f"lifecycle case {case.value} needs a terminated deployment of an imported customer "
                f"other than the other cases'; the world (seed {world.seed}) has "
                f"{sum(self.terminated(d) for d in world.deployments)} terminated deployment(s) in all"
            )
        deployment = ranked[0]
        subscription = self.subscription(deployment)
        ended_on = local_day(deployment.terminated_at, world.timezone)
        if subscription.state != CHURNED_STATE or subscription.end_date is None:
            raise RuntimeError(
                f"sandbox generator bug: deployment {deployment.id} was terminated but its subscription "
                f"{subscription.name} is {subscription.state} ending {subscription.end_date}"
            )
        terminated = deployment.terminated_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
        terminated_utc = f"{utc_text(deployment.terminated_at, 'seconds')} UTC"
        fee = format_cents(odoo_price_cents(world, deployment))
        if case is Case.BILLED_AFTER_TERMINATION:
            self.subscription_writes[subscription.id] = {
                "subscription_state": RUNNING_STATE,
                "end_date": None,
            }
            self.add(
                case,
                KIND_OF_CASE[case],
                deployment,
                deployment.terminated_at,
                f"NexaCloud terminated deployment {deployment.id} on {terminated} ({terminated_utc}), yet "
                f"Odoo's subscription {subscription.name} was set back to {RUNNING_STATE} with its end date "
                f"{subscription.end_date.isoformat()} cleared, so it goes on billing the {fee} monthly "
                f"{deployment.plan.name} plan fee.",
            )
            return
        if subscription.end_date != ended_on:
            # A termination at local midnight: the importer ends the subscription the day before
            # (its last day running). Odoo's date is set to the termination's day; NexaCloud's
            # moment is never moved.
            self.subscription_writes[subscription.id] = {"end_date": ended_on.isoformat()}
        self.add(
            case,
            KIND_OF_CASE[case],
            deployment,
            None,
            f"NexaCloud terminated deployment {deployment.id} on {terminated} ({terminated_utc}) and Odoo "
            f"churned its subscription {subscription.name} ({CHURNED_STATE}, {fee} a month) with end date "
            f"{ended_on.isoformat()}, the same local day: in sync.",
        )

    def invoice_case(self, case: Case) -> None:
        """An invoice left unpaid, on a customer with a single deployment alive at "now"."""
        world, odoo = self.world, self.odoo
        grace_ends = self.today - timedelta(days=GRACE_DAYS)
        candidates = [
            c.id
            for c in world.customers
            if self.tier(c.id) in (0, 1, 2) and c.id not in self.used_customers and len(self.alive(c.id)) == 1
        ]
        for customer_id in self.ranked(candidates, key=self.tier, ident=lambda c: c):
            (deployment,) = self.alive(customer_id)
            subscription_id = odoo.subscription_of[deployment.id]
            invoices = self.posted_invoices(customer_id)
            dated = [i for i in invoices if i.invoice_date == self.billed_on]
            if len(dated) != 1 or subscription_id not in dated[0].subscription_ids:
                continue
            (invoice,) = dated
            if any(i.payment_state != "paid" and i.due < self.today for i in invoices):
                continue
            subscription = self.subscription(deployment)
            if subscription.state != RUNNING_STATE or subscription.end_date is not None:
                continue
            break
        else:
            raise LifecycleNotBuilt(
                f"lifecycle case {case.value} needs an imported customer with a single deployment alive "
                f"at {utc_text(self.as_of, 'seconds')} UTC, billed on a posted invoice dated "
                f"{self.billed_on.isoformat()}, other than the other cases' customers: the world "
                f"(seed {world.seed}) has none left"
            )
        total = format_cents(invoice.total_cents)
        unpaid: dict[str, Any] = {"payment_state": "not_paid", "amount_residual": invoice.amount_total}
        due = invoice.due
        if case is Case.IN_GRACE:
            due = self.today - timedelta(days=IN_GRACE_DAYS_OVERDUE)
        elif not due < grace_ends:
            # The only closed period's invoice, not due yet on net-30 terms: due on receipt instead.
            due = invoice.invoice_date
        if not due < self.today or (due < grace_ends) is (case is Case.IN_GRACE):
            raise RuntimeError(
                f"sandbox generator bug: invoice {invoice.name} of lifecycle case {case.value} would be due "
                f"{due.isoformat()}, judged on {self.today.isoformat()} with {GRACE_DAYS} days of grace"
            )
        if due != invoice.due:
            unpaid["invoice_date_due"] = due.isoformat()
        self.invoice_writes[invoice.id] = unpaid
        late = (self.today - due).days
        terms = f"due {due.isoformat()}"
        if due != invoice.due:
            terms = f"its due date moved from {invoice.due.isoformat()} to {due.isoformat()}"
        owed = (
            f"invoice {invoice.name} of {invoice.invoice_date.isoformat()} ({total}, {terms}) "
            f"is unpaid {late} days after its due date"
        )
        since = None
        if case is Case.NOT_SUSPENDED:
            since = local_midnight_utc(due + timedelta(days=GRACE_DAYS + 1), world.zone)
            sentence = (
                f"Odoo's {owed}, beyond the {GRACE_DAYS}-day grace period since "
                f"{utc_text(since, 'seconds')} UTC, yet NexaCloud still runs deployment {deployment.id}."
            )
        elif case is Case.SUSPENDED_AND_OVERDUE:
            self.deployment_status[deployment.id] = "suspended"
            sentence = (
                f"NexaCloud suspended deployment {deployment.id} because Odoo's {owed}, beyond the "
                f"{GRACE_DAYS}-day grace period: in sync."
            )
        else:
            sentence = (
                f"Odoo's {owed}: inside the {GRACE_DAYS}-day grace period, so NexaCloud rightly keeps "
                f"deployment {deployment.id} running: in sync."
            )
        self.add(case, KIND_OF_CASE[case], deployment, since, sentence)
        # Every other deployment the invoice bills (terminated: the customer has one alive).
        for other_id in sorted(invoice.subscription_ids - {subscription_id}):
            other = self.deployment_by_id[self.deployment_of_subscription[other_id]]
            ended = other.terminated_at.astimezone(world.zone).strftime("%Y-%m-%d %H:%M %Z")
            self.add(
                case,
                Kind.IN_SYNC,
                other,
                None,
                f"Deployment {other.id}, terminated on {ended} and churned in Odoo, is billed on the same "
                f"{total} invoice {invoice.name}, which does not bill it after its termination: in sync.",
            )

    def deployment_case(self, case: Case) -> None:
        """A change to one running deployment or to its subscription only."""
        world = self.world
        end_date = self.today - timedelta(days=CHURNED_DAYS_AGO)
        for deployment in self.running_candidates(tiers=(0, 1, 2)):
            subscription = self.subscription(deployment)
            if subscription.state != RUNNING_STATE or subscription.end_date is not None:
                continue
            if case is Case.NOT_DEPROVISIONED and not (
                subscription.start_date and subscription.start_date <= end_date
            ):
                continue
            break
        else:
            raise LifecycleNotBuilt(
                f"lifecycle case {case.value} needs a running deployment of an imported customer other "
                f"than the other cases' customers: the world (seed {world.seed}) has none left"
            )
        fee = f"{format_cents(odoo_price_cents(world, deployment))} monthly {deployment.plan.name} plan"
        since = None
        if case is Case.SUSPENDED_BUT_PAID:
            self.deployment_status[deployment.id] = "suspended"
            sentence = (
                f"NexaCloud suspended deployment {deployment.id} while Odoo's subscription {subscription.name} "
                f"({fee}) is {RUNNING_STATE} and every invoice of it is paid or not yet due on "
                f"{self.today.isoformat()}."
            )
        elif case is Case.NOT_DEPROVISIONED:
            self.subscription_writes[subscription.id] = {
                "subscription_state": CHURNED_STATE,
                "end_date": end_date.isoformat(),
            }
            since = local_midnight_utc(end_date + timedelta(days=1), world.zone)
            sentence = (
                f"Odoo churned subscription {subscription.name} ({fee}) with end date {end_date.isoformat()}, "
                f"{CHURNED_DAYS_AGO} days before {self.today.isoformat()}, yet NexaCloud still runs "
                f"deployment {deployment.id}."
            )
        else:
            self.subscription_writes[subscription.id] = {"subscription_state": PAUSED_STATE}
            sentence = (
                f"Odoo paused subscription {subscription.name} ({fee}, {PAUSED_STATE}) while NexaCloud "
                f"keeps deployment {deployment.id} running."
            )
        self.add(case, KIND_OF_CASE[case], deployment, since, sentence)


def _day(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)
