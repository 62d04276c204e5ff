"""The statuses contract (docs/design.md §6): thirteen statuses, which of them hold back the switch,
the order the reconciliation decides in and the order rows are listed in."""

import pandas as pd

from fusion_billing_assets.billing.statuses import (
    DECISION_ORDER,
    SEVERITY_ORDER,
    STATUSES,
    Status,
    is_unexplained,
    unexplained,
)

# Written out from docs/design.md §6, not derived from the module under test.
ACCEPTED_BY_DESIGN = {"match", "within_tolerance", "rounding_difference", "waived"}
ALL_BY_DESIGN = {
    "match",
    "within_tolerance",
    "rounding_difference",
    "usage_mismatch",
    "rate_mismatch",
    "tax_mismatch",
    "amount_mismatch",
    "missing_in_odoo",
    "missing_in_nexacloud",
    "unmapped",
    "duplicate",
    "currency_mismatch",
    "waived",
    "source_data_error",
}


def test_the_statuses_are_the_designed_ones_and_plain_text():
    assert set(STATUSES) == ALL_BY_DESIGN
    assert all(isinstance(status, str) and status == status.value for status in STATUSES)
    assert all(Status(status).meaning for status in ALL_BY_DESIGN)


def test_only_accepted_statuses_leave_the_switch_alone():
    against = {status for status in STATUSES if status.counts_against_switch}
    assert against == ALL_BY_DESIGN - ACCEPTED_BY_DESIGN


def test_decision_and_severity_orders_name_every_status_once():
    assert sorted(DECISION_ORDER) == sorted(ALL_BY_DESIGN)
    assert sorted(SEVERITY_ORDER) == sorted(ALL_BY_DESIGN)
    # A customer that cannot be judged, then whatever makes the amounts meaningless, is decided
    # first; a waiver is applied last.
    assert DECISION_ORDER[:4] == ("source_data_error", "unmapped", "duplicate", "currency_mismatch")
    assert DECISION_ORDER[-1] == "waived"


def test_unexplained_keeps_the_rows_that_count_against_the_switch_in_their_order():
    results = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 4, 5],
            "status": ["match", "duplicate", "waived", "usage_mismatch", "within_tolerance"],
        }
    )
    assert list(unexplained(results)["customer_id"]) == [2, 4]
    assert list(is_unexplained(results["status"])) == [False, True, False, True, False]
