"""The reconciliation statuses of docs/design.md §6, in one place.

Each status carries its meaning, whether it counts against the switch to Odoo, and its severity;
the order in which the reconciliation decides between them is ``DECISION_ORDER``. Every module
that names a status, counts statuses or picks out the differences that hold back the switch
(reconciliation, reports, alerts, readiness, the sandbox's ground truth) takes it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

import pandas as pd


class Status(StrEnum):
    """One reconciliation status; a ``str``, so it is stored and compared as its value."""

    MATCH = "match"
    WITHIN_TOLERANCE = "within_tolerance"
    ROUNDING_DIFFERENCE = "rounding_difference"
    USAGE_MISMATCH = "usage_mismatch"
    RATE_MISMATCH = "rate_mismatch"
    TAX_MISMATCH = "tax_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    MISSING_IN_ODOO = "missing_in_odoo"
    MISSING_IN_NEXACLOUD = "missing_in_nexacloud"
    UNMAPPED = "unmapped"
    DUPLICATE = "duplicate"
    CURRENCY_MISMATCH = "currency_mismatch"
    WAIVED = "waived"
    SOURCE_DATA_ERROR = "source_data_error"

    @property
    def meaning(self) -> str:
        return STATUS_MEANINGS[self]

    @property
    def counts_against_switch(self) -> bool:
        """True for a difference nobody explained or accepted: it holds back the switch to Odoo."""
        return self not in ACCEPTED_STATUSES


# docs/design.md §6, in the order of its table: the order of every count by status.
STATUS_MEANINGS: Mapping[Status, str] = {
    Status.MATCH: "NexaCloud and Odoo totals equal to the cent",
    Status.WITHIN_TOLERANCE: "the totals differ by no more than the configured tolerance",
    Status.ROUNDING_DIFFERENCE: "explained by per-line vs global tax rounding, or half-even vs half-up",
    Status.USAGE_MISMATCH: "Odoo's usage ledger differs from NexaCloud's metered CPU-seconds",
    Status.RATE_MISMATCH: "the plan fee or overage rate on the Odoo subscription differs from the NexaCloud plan",
    Status.TAX_MISMATCH: "subtotals agree, tax differs beyond rounding",
    Status.AMOUNT_MISMATCH: "the totals differ and nothing above explains it",
    Status.MISSING_IN_ODOO: "NexaCloud billed the customer, Odoo has no invoice for the period",
    Status.MISSING_IN_NEXACLOUD: "Odoo invoiced, NexaCloud did not bill",
    Status.UNMAPPED: "no mapping between the NexaCloud customer and an Odoo partner",
    Status.DUPLICATE: "one side has more than one invoice for the customer and period",
    Status.CURRENCY_MISMATCH: "the two sides bill in different currencies",
    Status.WAIVED: "a difference someone accepted in the waiver file",
    Status.SOURCE_DATA_ERROR: "a record of this customer breaks its source's contract; it cannot be judged",
}
STATUSES: tuple[Status, ...] = tuple(STATUS_MEANINGS)

# Differences that are accepted as they are and do not hold back the switch to Odoo.
ACCEPTED_STATUSES = frozenset(
    {Status.MATCH, Status.WITHIN_TOLERANCE, Status.ROUNDING_DIFFERENCE, Status.WAIVED}
)

# How the reconciliation decides (billing/reconcile.py): the first that holds wins. A customer
# with a record that breaks its source's contract cannot be judged at all, so that comes first; a
# waiver is applied last, over any status but match and source_data_error.
DECISION_ORDER: tuple[Status, ...] = (
    Status.SOURCE_DATA_ERROR,
    Status.UNMAPPED,
    Status.DUPLICATE,
    Status.CURRENCY_MISMATCH,
    Status.MISSING_IN_ODOO,
    Status.MISSING_IN_NEXACLOUD,
    Status.MATCH,
    Status.ROUNDING_DIFFERENCE,
    Status.USAGE_MISMATCH,
    Status.RATE_MISMATCH,
    Status.TAX_MISMATCH,
    Status.WITHIN_TOLERANCE,
    Status.AMOUNT_MISMATCH,
    Status.WAIVED,
)

# Most severe first, the order rows are listed in. Duplicates, currencies and missing mappings
# make the amounts themselves meaningless; a missing invoice is a whole invoice; an unexplained
# amount comes before the differences that carry their cause; accepted ones come last.
SEVERITY_ORDER: tuple[Status, ...] = (
    Status.SOURCE_DATA_ERROR,
    Status.DUPLICATE,
    Status.CURRENCY_MISMATCH,
    Status.UNMAPPED,
    Status.MISSING_IN_ODOO,
    Status.MISSING_IN_NEXACLOUD,
    Status.AMOUNT_MISMATCH,
    Status.USAGE_MISMATCH,
    Status.RATE_MISMATCH,
    Status.TAX_MISMATCH,
    Status.ROUNDING_DIFFERENCE,
    Status.WITHIN_TOLERANCE,
    Status.WAIVED,
    Status.MATCH,
)


def is_unexplained(statuses: pd.Series) -> pd.Series:
    """Which rows hold a status that counts against the switch."""
    return ~statuses.isin(ACCEPTED_STATUSES)


def unexplained(results: pd.DataFrame) -> pd.DataFrame:
    """The result rows whose status counts against the switch, in their original order."""
    return results[is_unexplained(results["status"])]
