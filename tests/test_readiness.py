"""Flip readiness contract (docs/design.md §6): may Nexa switch billing over to Odoo?

Ready when each of the last N consecutive closed periods was reconciled after it closed and holds
no unexplained difference; match, within_tolerance, rounding_difference and waived never block.
Otherwise not ready, with a reason naming each period that blocks and what it holds. A period
reconciled only while it was still provisional counts as not reconciled; periods outside the last
N (older ones, or the running month) do not count at all. When the control loop is judged, it
must have been observed within a day, and each lifecycle drift older than the grace period is
named as a reason (docs/design.md §11).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusion_billing_assets.billing.readiness import NOT_READY, READY, LifecycleStanding, flip_readiness
from fusion_billing_assets.billing.statuses import STATUSES
from fusion_billing_assets.warehouse import RESULT_COLUMNS

AUGUST, SEPTEMBER, OCTOBER, NOVEMBER = (date(2026, month, 1) for month in (8, 9, 10, 11))
CLOSED = [AUGUST, SEPTEMBER, OCTOBER]  # November is the running month
# docs/design.md §6 and the README: the statuses that count against the switch, written out here
# rather than taken from billing.statuses, so a status moved to the accepted side is caught.
UNEXPLAINED_STATUSES = [
    "unmapped",
    "duplicate",
    "currency_mismatch",
    "missing_in_odoo",
    "missing_in_nexacloud",
    "usage_mismatch",
    "rate_mismatch",
    "tax_mismatch",
    "amount_mismatch",
    "source_data_error",
]


def period_rows(period: date, *statuses_and_deltas: tuple[str, int], provisional: bool = False) -> list[dict]:
    """A period's ``billing_reconciliation`` rows, one per customer, as (status, delta_cents)."""
    return [
        {
            "billing_period": period,
            "customer_id": customer_id,
            "status": status,
            "cause": f"{status} for the test",
            "delta_cents": delta_cents,
            "provisional": provisional,
        }
        for customer_id, (status, delta_cents) in enumerate(statuses_and_deltas, start=1)
    ]


def results(*periods: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([row for rows in periods for row in rows]).reindex(columns=RESULT_COLUMNS)
    frame["provisional"] = frame["provisional"].astype(bool)
    return frame


CLEAN = (("match", 0), ("within_tolerance", 2), ("rounding_difference", -1), ("waived", 1_575))


def test_the_statuses_are_the_accepted_and_the_unexplained_of_the_design():
    assert sorted(STATUSES) == sorted([status for status, _ in CLEAN] + UNEXPLAINED_STATUSES)


def test_ready_when_the_last_closed_period_is_clean():
    readiness = flip_readiness(results(period_rows(OCTOBER, *CLEAN)), CLOSED, 1)
    assert readiness.verdict == READY and readiness.ready
    assert readiness.periods_judged == (OCTOBER,)
    assert readiness.reasons == ()
    assert readiness.unexplained_by_period == {"2026-10-01": 0}


def test_not_ready_names_the_period_its_counts_by_status_and_its_variance():
    october = period_rows(
        OCTOBER, ("match", 0), ("usage_mismatch", 100), ("usage_mismatch", -250), ("missing_in_odoo", -5_553)
    )
    readiness = flip_readiness(results(october), CLOSED, 1)
    assert readiness.verdict == NOT_READY and not readiness.ready
    assert readiness.reasons == (
        "2026-10 has 3 unexplained difference(s) (1 missing_in_odoo, 2 usage_mismatch), $59.03 of variance",
    )
    assert readiness.unexplained_by_period == {"2026-10-01": 3}


@pytest.mark.parametrize("status", UNEXPLAINED_STATUSES)
def test_every_unexplained_status_blocks(status):
    readiness = flip_readiness(results(period_rows(OCTOBER, ("match", 0), (status, 1))), CLOSED, 1)
    assert readiness.verdict == NOT_READY
    assert f"1 {status}" in readiness.reasons[0]


@given(st.lists(st.sampled_from(CLEAN), min_size=1, max_size=8))
def test_accepted_statuses_never_block(rows):
    readiness = flip_readiness(results(period_rows(OCTOBER, *rows)), CLOSED, 1)
    assert readiness.verdict == READY, readiness.reasons


def test_a_period_reconciled_only_while_provisional_counts_as_not_reconciled():
    readiness = flip_readiness(results(period_rows(OCTOBER, *CLEAN, provisional=True)), CLOSED, 1)
    assert readiness.verdict == NOT_READY
    assert readiness.reasons == (
        "2026-10 has not been reconciled since it closed (only a provisional run exists)",
    )
    assert readiness.unexplained_by_period == {}


def test_a_period_never_reconciled_is_not_ready():
    readiness = flip_readiness(results(period_rows(SEPTEMBER, *CLEAN)), CLOSED, 1)
    assert readiness.verdict == NOT_READY
    assert readiness.reasons == ("2026-10 has not been reconciled since it closed",)


def test_nothing_reconciled_at_all_is_not_ready():
    readiness = flip_readiness(results(), CLOSED, 2)
    assert readiness.verdict == NOT_READY
    assert readiness.periods_judged == (SEPTEMBER, OCTOBER)
    assert readiness.reasons == (
        "2026-09 has not been reconciled since it closed",
        "2026-10 has not been reconciled since it closed",
    )


def test_fewer_closed_periods_than_required_is_not_ready():
    readiness = flip_readiness(results(period_rows(OCTOBER, *CLEAN)), [OCTOBER], 3)
    assert readiness.verdict == NOT_READY
    assert readiness.periods_judged == (OCTOBER,)
    assert readiness.reasons == ("only 1 closed period(s) exist; 3 consecutive clean ones are required",)


def test_no_closed_period_at_all_is_not_ready():
    readiness = flip_readiness(results(period_rows(NOVEMBER, *CLEAN, provisional=True)), [], 1)
    assert readiness.verdict == NOT_READY
    assert readiness.periods_judged == ()
    assert readiness.reasons == ("only 0 closed period(s) exist; 1 consecutive clean ones are required",)


def test_more_than_one_period_judges_the_last_n_only():
    history = results(
        period_rows(AUGUST, ("amount_mismatch", 900)),
        period_rows(SEPTEMBER, *CLEAN),
        period_rows(OCTOBER, *CLEAN),
    )
    two = flip_readiness(history, [OCTOBER, AUGUST, SEPTEMBER], 2)  # in any order
    assert two.verdict == READY
    assert two.periods_judged == (SEPTEMBER, OCTOBER)
    three = flip_readiness(history, CLOSED, 3)
    assert three.verdict == NOT_READY
    assert three.reasons == (
        "2026-08 has 1 unexplained difference(s) (1 amount_mismatch), $9.00 of variance",
    )
    assert three.unexplained_by_period == {"2026-08-01": 1, "2026-09-01": 0, "2026-10-01": 0}


def test_every_blocking_period_among_the_last_n_is_named():
    history = results(
        period_rows(AUGUST, *CLEAN),
        period_rows(SEPTEMBER, ("duplicate", 5_553)),
        period_rows(OCTOBER, ("tax_mismatch", -393), ("unmapped", 0)),
    )
    readiness = flip_readiness(history, CLOSED, 3)
    assert readiness.verdict == NOT_READY
    assert [reason[:7] for reason in readiness.reasons] == ["2026-09", "2026-10"]
    assert "(1 tax_mismatch, 1 unmapped), $3.93 of variance" in readiness.reasons[1]


def test_the_running_month_does_not_count():
    history = results(
        period_rows(OCTOBER, *CLEAN),
        period_rows(NOVEMBER, ("usage_mismatch", 40), provisional=True),
    )
    assert flip_readiness(history, CLOSED, 1).verdict == READY


def test_at_least_one_period_is_required():
    with pytest.raises(ValueError, match="at least one period"):
        flip_readiness(results(), CLOSED, 0)


# --- The control loop (docs/design.md §11) ------------------------------------------------------

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def drift(deployment_id: int, kind: str, since: str, amount: int = 4_900) -> dict:
    return {
        "customer_id": 100 + deployment_id,
        "deployment_id": deployment_id,
        "kind": kind,
        "since": pd.Timestamp(since, tz="UTC"),
        "amount_at_stake_cents": amount,
        "cause": f"the cause of {deployment_id}",
    }


def test_a_clean_period_is_not_ready_while_the_control_loop_was_never_observed():
    readiness = flip_readiness(
        results(period_rows(OCTOBER, *CLEAN)),
        CLOSED,
        1,
        lifecycle=LifecycleStanding(observed_at=None, grace_days=7),
        now=NOW,
    )
    assert readiness.verdict == NOT_READY
    assert readiness.reasons == (
        "the control loop has never been observed: materialize billing/lifecycle_drift (its hourly schedule does)",
    )


def test_each_drift_older_than_the_grace_period_is_named_and_holds_the_flip_back():
    beyond = pd.DataFrame(
        [
            drift(7, "paused_but_running", "2026-11-10 05:00"),
            drift(3, "not_suspended", "2026-11-02 05:00", 2_825),
        ]
    )
    readiness = flip_readiness(
        results(period_rows(OCTOBER, *CLEAN)),
        CLOSED,
        1,
        lifecycle=LifecycleStanding(
            observed_at=NOW - timedelta(minutes=5), grace_days=7, beyond_grace=beyond
        ),
        now=NOW,
    )
    assert readiness.verdict == NOT_READY
    assert readiness.lifecycle_drifts_held_back == (7, 3)
    # Oldest first.
    assert readiness.reasons == (
        "deployment 3 (customer 103) has drifted from its Odoo subscription for more than the 7-day grace "
        "period: not_suspended since 2026-11-02 05:00Z, $28.25 at stake. the cause of 3",
        "deployment 7 (customer 107) has drifted from its Odoo subscription for more than the 7-day grace "
        "period: paused_but_running since 2026-11-10 05:00Z, $49.00 at stake. the cause of 7",
    )


def test_a_fresh_observation_without_old_drifts_leaves_a_clean_period_ready():
    readiness = flip_readiness(
        results(period_rows(OCTOBER, *CLEAN)),
        CLOSED,
        1,
        lifecycle=LifecycleStanding(observed_at=NOW - timedelta(hours=23), grace_days=7),
        now=NOW,
    )
    assert readiness.verdict == READY, readiness.reasons


def test_an_observation_older_than_a_day_does_not_count():
    readiness = flip_readiness(
        results(period_rows(OCTOBER, *CLEAN)),
        CLOSED,
        1,
        lifecycle=LifecycleStanding(observed_at=NOW - timedelta(hours=25), grace_days=7),
        now=NOW,
    )
    assert readiness.reasons == (
        "the control loop was last observed at 2026-11-19 11:00Z, more than a day ago: materialize "
        "billing/lifecycle_drift",
    )


def test_deployments_that_could_not_be_judged_hold_the_flip_back():
    readiness = flip_readiness(
        results(period_rows(OCTOBER, *CLEAN)),
        CLOSED,
        1,
        lifecycle=LifecycleStanding(observed_at=NOW, grace_days=7, not_judged=2),
        now=NOW,
    )
    assert readiness.reasons == (
        "2 deployment(s) could not be judged, their states outside the contract: see "
        "billing_lifecycle_drift (kind not_judged)",
    )
