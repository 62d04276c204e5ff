"""The lifecycle drift contract (docs/design.md §11): each kind from hand-built states of both
systems, its ``since`` and amount worked out by hand, dates judged in the billing time zone
across a DST change, and the look-alikes that must stay in sync."""

from datetime import UTC, date, datetime

import pandas as pd
import pytest

from fusion_billing_assets.billing.lifecycle import (
    DEPLOYMENT_STATE_COLUMNS,
    LATER_LINE_COLUMNS,
    MAPPING_COLUMNS,
    OVERDUE_COLUMNS,
    SUBSCRIPTION_STATE_COLUMNS,
    DriftKind,
    LifecycleRules,
    LifecycleStates,
    classify,
    counts_by_kind,
    describe,
    older_than_grace,
    subscriptions_needing_plan_fee,
)

TORONTO = "America/Toronto"
RULES = LifecycleRules(timezone=TORONTO, grace_days=7)


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def states(deployments, subscriptions, overdue=(), later=()) -> LifecycleStates:
    """One customer per deployment; deployment d maps to subscription 100 + d, partner 500 + d."""
    deployment_rows = [
        {
            "deployment_id": d,
            "customer_id": 10 + d,
            "status": status,
            "terminated_at": ended,
            "customer_status": customer,
        }
        for d, status, ended, customer in deployments
    ]
    return LifecycleStates(
        deployments=pd.DataFrame(deployment_rows, columns=DEPLOYMENT_STATE_COLUMNS),
        mapping=pd.DataFrame(
            [
                {"deployment_id": d, "subscription_id": 100 + d, "partner_id": 500 + d}
                for d, *_ in deployments
            ],
            columns=MAPPING_COLUMNS,
        ),
        subscriptions=pd.DataFrame(
            [
                {
                    "subscription_id": 100 + d,
                    "name": f"S{100 + d:05d}",
                    "subscription_state": state,
                    "end_date": end,
                }
                for d, state, end in subscriptions
            ],
            columns=SUBSCRIPTION_STATE_COLUMNS,
        ),
        overdue_invoices=pd.DataFrame(list(overdue), columns=OVERDUE_COLUMNS),
        later_lines=pd.DataFrame(list(later), columns=LATER_LINE_COLUMNS),
    )


def invoice(move_id, deployment, due, total, residual, share) -> dict:
    return {
        "move_id": move_id,
        "invoice_name": f"INV/2026/{move_id:05d}",
        "subscription_id": 100 + deployment,
        "invoice_date_due": due,
        "amount_total_cents": total,
        "amount_residual_cents": residual,
        "subscription_total_cents": share,
    }


def judged(world: LifecycleStates, as_of: datetime, previous=None, fees=None) -> pd.DataFrame:
    classified = classify(world, RULES, as_of, previous)
    fees = fees if fees is not None else {s: 4_900 for s in subscriptions_needing_plan_fee(classified)}
    return describe(classified, RULES, as_of, fees).set_index("deployment_id")


AS_OF = utc(2026, 11, 15, 5, 0)  # 00:00 on 15 November in Toronto (EST)


def test_every_kind_from_both_systems_states():
    world = states(
        deployments=[
            (1, "running", None, "active"),  # overdue 14 days: not suspended
            (2, "running", None, "active"),  # churned on the 10th
            (3, "suspended", None, "active"),  # nothing overdue
            (4, "terminated", utc(2026, 11, 3, 17, 0), "active"),  # still in progress in Odoo
            (5, "running", None, "active"),  # paused
            (6, "running", None, "active"),  # plain
        ],
        subscriptions=[
            (1, "3_progress", None),
            (2, "6_churn", date(2026, 11, 10)),
            (3, "3_progress", None),
            (4, "3_progress", None),
            (5, "4_paused", None),
            (6, "3_progress", None),
        ],
        # Invoice 7 holds two subscriptions; 1's lines are $56.50 of its $113.00, half paid.
        overdue=[invoice(7, 1, date(2026, 11, 1), 11_300, 5_650, 5_650)],
    )
    found = judged(world, AS_OF)
    assert found["kind"].to_dict() == {
        1: "not_suspended",
        2: "not_deprovisioned",
        3: "suspended_but_paid",
        4: "billed_after_termination",
        5: "paused_but_running",
        6: "in_sync",
    }
    # Due 1 Nov + 7 days of grace: a drift from the start of 9 Nov in Toronto (05:00 UTC, EST).
    assert found.at[1, "since"] == pd.Timestamp("2026-11-09 05:00", tz="UTC")
    # Half of the $113.00 is open, and half of the invoice is subscription 101's: $28.25.
    assert found.at[1, "amount_at_stake_cents"] == 2_825
    assert "INV/2026/00007" in found.at[1, "cause"] and "$28.25" in found.at[1, "cause"]
    assert "14 days overdue" in found.at[1, "cause"]
    # Ended on the 10th: running for free from the start of the 11th.
    assert found.at[2, "since"] == pd.Timestamp("2026-11-11 05:00", tz="UTC")
    assert found.at[4, "since"] == pd.Timestamp("2026-11-03 17:00", tz="UTC")
    # Neither system dates a suspension or a pause: first observed now.
    assert found.at[3, "since"] == found.at[5, "since"] == pd.Timestamp(AS_OF)
    assert found.loc[[2, 3, 4, 5], "amount_at_stake_cents"].tolist() == [4_900] * 4
    assert found.at[6, "cause"] == "" and found.at[6, "amount_at_stake_cents"] == 0
    assert found.at[6, "nexacloud_state"] == "running" and found.at[6, "odoo_state"] == "3_progress"
    assert counts_by_kind(found.reset_index())["in_sync"] == 1


def test_look_alikes_stay_in_sync():
    world = states(
        deployments=[
            (1, "running", None, "active"),  # overdue 3 days, inside the grace period
            (2, "suspended", None, "active"),  # suspended and overdue beyond grace
            (3, "terminated", utc(2026, 11, 6, 2, 30), "active"),  # 21:30 on the 5th in Toronto
            (4, "running", None, "active"),  # churn ends today: may run until midnight
            (5, "suspended", None, "active"),  # paused and suspended
            (6, "running", None, "active"),  # overdue exactly seven days: the last day of grace
        ],
        subscriptions=[
            (1, "3_progress", None),
            (2, "3_progress", None),
            (3, "6_churn", date(2026, 11, 5)),
            (4, "6_churn", date(2026, 11, 15)),
            (5, "4_paused", None),
            (6, "3_progress", None),
        ],
        overdue=[
            invoice(1, 1, date(2026, 11, 12), 5_650, 5_650, 5_650),
            invoice(2, 2, date(2026, 10, 20), 5_650, 5_650, 5_650),
            invoice(6, 6, date(2026, 11, 8), 5_650, 5_650, 5_650),
        ],
        # The termination month's own line (service from 1 Nov) is not a later one.
        later=[
            {
                "subscription_id": 103,
                "invoice_name": "INV/2026/00003",
                "service_start": date(2026, 11, 5),
                "total_cents": 1,
            }
        ],
    )
    found = judged(world, AS_OF)
    assert set(found["kind"]) == {"in_sync"}
    assert "within the 7-day grace period until 2026-11-19" in found.at[1, "cause"]
    assert found.at[2, "cause"].startswith("Suspended for invoice INV/2026/00002")
    assert found.at[3, "cause"] == (
        "Terminated in NexaCloud on 2026-11-05 21:30 EST and churned in Odoo with end date 2026-11-05."
    )
    assert found.at[1, "odoo_state"] == "3_progress; 1 invoice(s) overdue, oldest due 2026-11-12 (3 days)"


def test_billing_after_termination_through_a_later_invoice_line():
    world = states(
        deployments=[(1, "terminated", utc(2026, 10, 20, 16, 0), "active")],
        subscriptions=[(1, "6_churn", date(2026, 10, 20))],
        later=[
            {
                "subscription_id": 101,
                "invoice_name": "INV/2026/00042",
                "service_start": date(2026, 11, 1),
                "total_cents": 5_537,
            },
            {
                "subscription_id": 101,
                "invoice_name": "INV/2026/00040",
                "service_start": date(2026, 10, 1),
                "total_cents": 9_999,
            },
        ],
    )
    found = judged(world, AS_OF, fees={})
    assert found.at[1, "kind"] == "billed_after_termination"
    # Only November's line bills after the termination on 20 October.
    assert found.at[1, "amount_at_stake_cents"] == 5_537
    assert "INV/2026/00042" in found.at[1, "cause"] and "INV/2026/00040" not in found.at[1, "cause"]


def test_customer_status_overrides_the_deployment():
    world = states(
        deployments=[(1, "running", None, "suspended"), (2, "running", None, "closed")],
        subscriptions=[(1, "3_progress", None), (2, "3_progress", None)],
    )
    found = judged(world, AS_OF)
    assert found["kind"].to_dict() == {1: "suspended_but_paid", 2: "billed_after_termination"}
    assert "its customer is suspended" in found.at[1, "cause"]


@pytest.mark.parametrize(
    ("as_of", "kind"),
    [
        # 23:30 on 2 November in Toronto (EST since 1 November): the last day of grace.
        (utc(2026, 11, 3, 4, 30), "in_sync"),
        # 00:00 on 3 November in Toronto: past the grace period.
        (utc(2026, 11, 3, 5, 0), "not_suspended"),
    ],
)
def test_grace_is_judged_in_the_billing_time_zone_across_the_dst_change(as_of, kind):
    # Due 26 October (EDT); seven days of grace end with 2 November (EST), after the change.
    world = states(
        deployments=[(1, "running", None, "active")],
        subscriptions=[(1, "3_progress", None)],
        overdue=[invoice(1, 1, date(2026, 10, 26), 5_650, 5_650, 5_650)],
    )
    found = judged(world, as_of)
    assert found.at[1, "kind"] == kind
    if kind == "not_suspended":
        # A UTC day would have started it five hours early, a fixed EDT offset one hour early.
        assert found.at[1, "since"] == pd.Timestamp("2026-11-03 05:00", tz="UTC")


def test_an_undated_drift_keeps_its_first_observation():
    world = states(deployments=[(1, "running", None, "active")], subscriptions=[(1, "4_paused", None)])
    first = judged(world, utc(2026, 11, 1, 12, 0))
    previous = first.reset_index()[["deployment_id", "kind", "since"]]
    later = judged(world, utc(2026, 11, 12, 12, 0), previous=previous)
    assert later.at[1, "since"] == pd.Timestamp("2026-11-01 12:00", tz="UTC")
    # Eleven days old, past the seven-day grace: it holds the flip back; a fresh one would not.
    assert older_than_grace(later.reset_index(), RULES, utc(2026, 11, 12, 12, 0))[
        "deployment_id"
    ].tolist() == [1]
    assert older_than_grace(first.reset_index(), RULES, utc(2026, 11, 1, 12, 0)).empty


def test_a_previous_drift_of_another_kind_is_not_carried():
    world = states(deployments=[(1, "suspended", None, "active")], subscriptions=[(1, "3_progress", None)])
    previous = pd.DataFrame(
        [{"deployment_id": 1, "kind": "paused_but_running", "since": pd.Timestamp("2026-10-01", tz="UTC")}]
    )
    found = judged(world, AS_OF, previous=previous)
    assert found.at[1, "kind"] == "suspended_but_paid" and found.at[1, "since"] == pd.Timestamp(AS_OF)


def test_unmapped_or_missing_subscriptions_are_not_judged():
    world = states(
        deployments=[(1, "running", None, "active"), (2, "running", None, "active")],
        subscriptions=[(1, "3_progress", None)],
    )
    assert judged(world, AS_OF).index.tolist() == [1]


def test_a_negative_grace_period_is_refused():
    with pytest.raises(ValueError, match="grace period cannot be negative"):
        LifecycleRules(timezone=TORONTO, grace_days=-1)


def test_kinds_are_the_contracts():
    assert [kind.value for kind in DriftKind] == [
        "in_sync",
        "not_suspended",
        "not_deprovisioned",
        "suspended_but_paid",
        "billed_after_termination",
        "paused_but_running",
        "not_judged",
    ]


@pytest.mark.parametrize(
    ("deployment", "subscription_state", "named"),
    [
        ((1, "deleted", None, "active"), "3_progress", "deployments.status 'deleted'"),
        ((1, "running", None, "frozen"), "3_progress", "customers.status 'frozen'"),
        ((1, "running", None, "active"), None, "sale.order.subscription_state None"),
        ((1, "running", None, "active"), "8_closed", "sale.order.subscription_state '8_closed'"),
    ],
)
def test_a_state_outside_the_contract_is_named_not_guessed(deployment, subscription_state, named):
    world = states(deployments=[deployment], subscriptions=[(1, subscription_state, None)])
    found = judged(world, AS_OF)
    assert found.at[1, "kind"] == "not_judged"
    assert named in found.at[1, "cause"] and "deployment 1 (subscription S00101)" in found.at[1, "cause"]
    assert pd.isna(found.at[1, "since"]) and found.at[1, "amount_at_stake_cents"] == 0


def test_records_their_source_could_not_read_leave_their_deployments_not_judged():
    world = states(
        deployments=[
            (1, "running", None, "active"),
            (2, "running", None, "active"),
            (3, "running", None, None),
        ],
        subscriptions=[(1, "3_progress", None), (2, "3_progress", None), (3, "3_progress", None)],
        overdue=[invoice(7, 2, None, 5_650, 5_650, 5_650)],
    )
    marked = {
        "deployments": world.deployments.assign(
            set_aside=[None, None, "customer_status: missing (got None)"]
        ),
        "subscriptions": world.subscriptions.assign(
            set_aside=["end_date: not a date (got 'soon')", None, None]
        ),
        "overdue_invoices": world.overdue_invoices.assign(
            set_aside=["invoice_date_due: missing (got False)"]
        ),
    }
    found = judged(LifecycleStates(**{**world.__dict__, **marked}), AS_OF)
    assert found["kind"].to_dict() == {1: "not_judged", 2: "not_judged", 3: "not_judged"}
    assert "Odoo subscription end_date: not a date (got 'soon')" in found.at[1, "cause"]
    assert "Odoo invoice invoice_date_due: missing (got False)" in found.at[2, "cause"]
    assert "NexaCloud deployment customer_status: missing (got None)" in found.at[3, "cause"]
