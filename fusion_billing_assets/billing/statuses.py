"""The reconciliation statuses of docs/design.md §6: their meaning, which are accepted, their severity."""

from __future__ import annotations

from collections.abc import Mapping

# docs/design.md §6, in the order of its table: the order of every count by status.
STATUS_MEANINGS: Mapping[str, str] = {
    "match": "NexaCloud and Odoo totals equal to the cent",
    "within_tolerance": "the totals differ by no more than the configured tolerance",
    "rounding_difference": "explained by per-line vs global tax rounding, or half-even vs half-up",
    "usage_mismatch": "Odoo's usage ledger differs from NexaCloud's metered CPU-seconds",
    "rate_mismatch": "the plan fee or overage rate on the Odoo subscription differs from the NexaCloud plan",
    "tax_mismatch": "subtotals agree, tax differs beyond rounding",
    "amount_mismatch": "the totals differ and nothing above explains it",
    "missing_in_odoo": "NexaCloud billed the customer, Odoo has no invoice for the period",
    "missing_in_nexacloud": "Odoo invoiced, NexaCloud did not bill",
    "unmapped": "no mapping between the NexaCloud customer and an Odoo partner",
    "duplicate": "one side has more than one invoice for the customer and period",
    "currency_mismatch": "the two sides bill in different currencies",
    "waived": "a difference someone accepted in the waiver file",
}
STATUSES = tuple(STATUS_MEANINGS)

# Differences that are accepted as they are and do not hold back the switch to Odoo.
ACCEPTED_STATUSES = frozenset({"match", "within_tolerance", "rounding_difference", "waived"})

# Most severe first, the order rows are listed in. Duplicates, currencies and missing mappings
# make the amounts themselves meaningless; a missing invoice is a whole invoice; an unexplained
# amount comes before the differences that carry their cause; accepted ones come last.
SEVERITY_ORDER = (
    "duplicate",
    "currency_mismatch",
    "unmapped",
    "missing_in_odoo",
    "missing_in_nexacloud",
    "amount_mismatch",
    "usage_mismatch",
    "rate_mismatch",
    "tax_mismatch",
    "rounding_difference",
    "within_tolerance",
    "waived",
    "match",
)
