"""Isolation under random breakage (issue "Reliability", point 6; docs/design.md §6.10).

Random one-period worlds of both systems (``tests/test_reconcile``'s ``worlds``: a handful of
customers, deployments and invoices with random usage, plans and provinces) get random breakages
injected into some of their records: unreadable values, a negative or keyless usage reading, a
NexaCloud invoice that does not add up or a line of a missing invoice, an Odoo line without a
product, a header that disagrees with its lines, a subscription whose partner reads false, and
links duplicated so that one Odoo record serves two NexaCloud ones. Through validate →
screen_period → account_mapping → reconcile, the results keep their invariants: one row per
customer and per orphan partner, every status one of ``STATUSES``, each leg's total the total of
that system's usable invoices, and ``source_data_error`` on exactly the customers the test broke —
all computed here from what was injected, not from the code under test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fusion_billing_assets.billing.statuses import STATUSES
from tests.test_isolation import Records, reconciled_period, source_records
from tests.test_reconcile import worlds

SOURCE_DATA_ERROR = "source_data_error"


@dataclass
class Injected:
    """What the test broke: whose records, and which invoices can no longer be used."""

    customers: set[int] = field(default_factory=set)
    nexacloud_invoices: set[int] = field(default_factory=set)
    odoo_moves: set[int] = field(default_factory=set)
    # Odoo partners linked from two customers: they get a row of their own, set aside.
    conflicting_partners: set[int] = field(default_factory=set)
    # Odoo partners whose invoice was broken: set aside on their own row too when no customer
    # links to them any more (its link was moved to another customer's partner).
    partners_of_broken_moves: set[int] = field(default_factory=set)
    # Whose each Odoo invoice and subscription is, read before anything was broken.
    customer_of_move: dict[int, int] = field(default_factory=dict)
    customer_of_subscription: dict[int, int] = field(default_factory=dict)

    @classmethod
    def before_breaking(cls, records: Records) -> Injected:
        # tests/test_reconcile's World: partner 100 + customer id.
        return cls(
            customer_of_move={row["move_id"]: row["partner_id"] - 100 for row in records["odoo/invoices"]},
            customer_of_subscription={
                row["subscription_id"]: row["partner_id"] - 100 for row in records["odoo/subscriptions"]
            },
        )


def _customer_of_deployment(records: Records) -> dict[int, int]:
    return {row["deployment_id"]: row["customer_id"] for row in records["nexacloud/deployments"]}


def _unreadable_invoice_amount(records: Records, draw, injected: Injected) -> None:
    invoice = draw(st.sampled_from(records["nexacloud/invoices"]))
    invoice["subtotal_cents"] = draw(st.sampled_from(["n/a", "12.5", False]))
    injected.customers.add(invoice["customer_id"])
    injected.nexacloud_invoices.add(invoice["invoice_id"])


def _invoice_total_off(records: Records, draw, injected: Injected) -> None:
    invoice = draw(st.sampled_from(records["nexacloud/invoices"]))
    invoice["total_cents"] += draw(st.sampled_from([-1, 1, 100]))
    injected.customers.add(invoice["customer_id"])
    injected.nexacloud_invoices.add(invoice["invoice_id"])


def _unreadable_line_amount(records: Records, draw, injected: Injected) -> None:
    invoice_ids = {row["invoice_id"] for row in records["nexacloud/invoices"]}
    # Not a line another breakage left without its invoice.
    line = draw(
        st.sampled_from(
            [row for row in records["nexacloud/invoice_lines"] if row["invoice_id"] in invoice_ids]
        )
    )
    amount_cents, line["amount_cents"] = line["amount_cents"], "forty-nine"
    (invoice,) = [row for row in records["nexacloud/invoices"] if row["invoice_id"] == line["invoice_id"]]
    injected.customers.add(invoice["customer_id"])
    if amount_cents or line["tax_cents"]:
        # Without the line, its invoice no longer adds up: it is set aside too.
        injected.nexacloud_invoices.add(invoice["invoice_id"])


def _orphan_line(records: Records, draw, injected: Injected) -> None:
    line = draw(st.sampled_from([row for row in records["nexacloud/invoice_lines"] if row["deployment_id"]]))
    records["nexacloud/invoice_lines"].append(line | {"invoice_line_id": 9_001, "invoice_id": 9_999})
    injected.customers.add(_customer_of_deployment(records)[line["deployment_id"]])


def _usage_reading(column: str) -> Callable[[Records, Any, Injected], None]:
    def inject(records: Records, draw, injected: Injected) -> None:
        total = draw(st.sampled_from(records["nexacloud/usage"]))  # one deployment's usage
        total[column] = draw(st.integers(1, 3))
        injected.customers.add(_customer_of_deployment(records)[total["deployment_id"]])

    return inject


def _odoo_line_without_product(records: Records, draw, injected: Injected) -> None:
    line = draw(st.sampled_from(records["odoo/invoice_lines"]))
    line["product_code"] = None
    injected.customers.add(injected.customer_of_move[line["move_id"]])
    injected.partners_of_broken_moves.add(100 + injected.customer_of_move[line["move_id"]])


def _odoo_header_off(records: Records, draw, injected: Injected) -> None:
    move = draw(st.sampled_from(records["odoo/invoices"]))
    cents = draw(st.sampled_from([1, 100, -250]))
    move.update(untaxed_cents=move["untaxed_cents"] + cents, total_cents=move["total_cents"] + cents)
    injected.customers.add(injected.customer_of_move[move["move_id"]])
    injected.odoo_moves.add(move["move_id"])
    injected.partners_of_broken_moves.add(move["partner_id"])


def _odoo_move_partner_unreadable(records: Records, draw, injected: Injected) -> None:
    move = draw(st.sampled_from(records["odoo/invoices"]))
    move["partner_id"] = False
    injected.odoo_moves.add(move["move_id"])
    # Its lines still name their subscription, which leads to the customer.
    injected.customers.add(injected.customer_of_move[move["move_id"]])


def _subscription_partner_false(records: Records, draw, injected: Injected) -> None:
    subscription = draw(st.sampled_from(records["odoo/subscriptions"]))
    subscription["partner_id"] = False
    injected.customers.add(injected.customer_of_subscription[subscription["subscription_id"]])


def _customer_linked_to_anothers_partner(records: Records, draw, injected: Injected) -> None:
    links = [row for row in records["odoo/account_links"] if row["link_kind"] == "customer"]
    first, second = draw(st.permutations(links))[:2]
    second["odoo_id"] = first["odoo_id"]
    injected.customers |= {first["nexacloud_id"], second["nexacloud_id"]}
    injected.conflicting_partners.add(first["odoo_id"])


def _deployment_linked_to_anothers_subscription(records: Records, draw, injected: Injected) -> None:
    links = [row for row in records["odoo/account_links"] if row["link_kind"] == "deployment"]
    first, second = draw(st.permutations(links))[:2]
    second["odoo_id"] = first["odoo_id"]
    customer_of = _customer_of_deployment(records)
    injected.customers |= {customer_of[first["nexacloud_id"]], customer_of[second["nexacloud_id"]]}


# Each breakage with what it needs to exist (source, how many records).
BREAKAGES: dict[str, tuple[Callable[[Records, Any, Injected], None], str, int]] = {
    "unreadable invoice amount": (_unreadable_invoice_amount, "nexacloud/invoices", 1),
    "invoice total off": (_invoice_total_off, "nexacloud/invoices", 1),
    "unreadable line amount": (_unreadable_line_amount, "nexacloud/invoice_lines", 1),
    "line of a missing invoice": (_orphan_line, "nexacloud/invoice_lines", 1),
    "negative usage reading": (_usage_reading("negative_records"), "nexacloud/usage", 1),
    "usage without idempotency key": (_usage_reading("keyless_records"), "nexacloud/usage", 1),
    "odoo line without product": (_odoo_line_without_product, "odoo/invoice_lines", 1),
    "odoo header disagrees with its lines": (_odoo_header_off, "odoo/invoices", 1),
    "odoo invoice partner false": (_odoo_move_partner_unreadable, "odoo/invoices", 1),
    "subscription partner false": (_subscription_partner_false, "odoo/subscriptions", 1),
    "partner linked from two customers": (_customer_linked_to_anothers_partner, "nexacloud/customers", 2),
    "subscription linked from two deployments": (
        _deployment_linked_to_anothers_subscription,
        "nexacloud/deployments",
        2,
    ),
}


@st.composite
def broken_periods(draw) -> tuple[Records, Injected, list[str]]:
    world = draw(worlds(perturbed=False))
    records = source_records(world)
    injected = Injected.before_breaking(records)
    names = draw(st.lists(st.sampled_from(sorted(BREAKAGES)), min_size=1, max_size=3, unique=True))
    applied = []
    for name in names:
        inject, source, needed = BREAKAGES[name]
        if len(records[source]) >= needed:
            inject(records, draw, injected)
            applied.append(name)
    return records, injected, applied


def _total(records: Records, source: str, key: str, left_out: set[int]) -> int:
    return sum(row["total_cents"] for row in records[source] if row[key] not in left_out)


# Each example screens and reconciles a whole period (about 0.5 s): 40 examples stay near 20 s.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_periods())
def test_random_breakages_set_aside_exactly_the_broken_customers_and_keep_every_invariant(period):
    records, injected, applied = period
    for name in applied:
        event(name)
    totals = {
        "nexacloud": _total(records, "nexacloud/invoices", "invoice_id", injected.nexacloud_invoices),
        "odoo": _total(records, "odoo/invoices", "move_id", injected.odoo_moves),
    }
    customer_ids = sorted(row["customer_id"] for row in records["nexacloud/customers"])

    results, screened = reconciled_period(records)

    customer_rows = results[results["customer_id"].notna()]
    partner_rows = results[results["customer_id"].isna()]
    assert sorted(customer_rows["customer_id"]) == customer_ids, applied
    assert not partner_rows["partner_id"].duplicated().any()
    assert results["status"].isin(STATUSES).all()
    assert all(isinstance(cause, str) and cause.strip() for cause in results["cause"])
    assert int(results["nexacloud_total_cents"].sum()) == totals["nexacloud"], applied
    assert int(results["odoo_total_cents"].sum()) == totals["odoo"], applied
    set_aside = set(customer_rows.loc[customer_rows["status"] == SOURCE_DATA_ERROR, "customer_id"])
    assert set_aside == injected.customers, (applied, results[["customer_id", "status", "cause"]])
    partners_set_aside = set(partner_rows.loc[partner_rows["status"] == SOURCE_DATA_ERROR, "partner_id"])
    assert partners_set_aside <= injected.conflicting_partners | injected.partners_of_broken_moves, applied
    assert set(partner_rows["status"]) <= {"unmapped", SOURCE_DATA_ERROR}
    # Nothing broken is silent: every breakage left at least one record set aside.
    assert screened.set_aside.empty == (not applied), applied
