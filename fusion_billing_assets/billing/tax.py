"""Sales tax on NexaCloud charges: the effective-dated rate of each Canadian province (docs/design.md §6).

The table is data, one row per rate and the dates it applied, so a rate change is one new row
(and a closing date on the old one), never a code change. ``effective_to`` is the last day a rate
applied, inclusive; ``None`` means it still applies. A date before a province's first row raises
rather than guessing a rate.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import NamedTuple


class TaxRule(NamedTuple):
    province: str
    effective_from: date
    effective_to: date | None
    rate: Decimal
    label: str


_HST_13 = (Decimal("0.13"), "HST 13%")
_HST_14 = (Decimal("0.14"), "HST 14%")
_HST_15 = (Decimal("0.15"), "HST 15%")
_GST_5 = (Decimal("0.05"), "GST 5%")
# Dates are when each rate took effect: GST at 5 % since 2008, HST in Ontario and Nova Scotia
# since July 2010, 15 % in New Brunswick and Newfoundland and Labrador since July 2016 and in
# Prince Edward Island since October 2016; Nova Scotia dropped to 14 % on 2025-04-01.
TAX_RULES: tuple[TaxRule, ...] = (
    TaxRule("ON", date(2010, 7, 1), None, *_HST_13),
    TaxRule("NB", date(2016, 7, 1), None, *_HST_15),
    TaxRule("NL", date(2016, 7, 1), None, *_HST_15),
    TaxRule("PE", date(2016, 10, 1), None, *_HST_15),
    TaxRule("NS", date(2010, 7, 1), date(2025, 3, 31), *_HST_15),
    TaxRule("NS", date(2025, 4, 1), None, *_HST_14),
    *(
        TaxRule(province, date(2008, 1, 1), None, *_GST_5)
        for province in ("AB", "BC", "MB", "NT", "NU", "QC", "SK", "YT")
    ),
)

CANADIAN_PROVINCES = frozenset({"AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT"})


def tax_rule(province: str, on_date: date, rules: tuple[TaxRule, ...] = TAX_RULES) -> TaxRule:
    """The rule that applies to a customer of ``province`` on ``on_date``."""
    code = province.strip().upper() if isinstance(province, str) else province
    if code not in CANADIAN_PROVINCES:
        raise ValueError(
            f"unknown province {province!r}: expected a Canadian province or territory code "
            f"({', '.join(sorted(CANADIAN_PROVINCES))})"
        )
    for rule in rules:
        if (
            rule.province == code
            and rule.effective_from <= on_date
            and (rule.effective_to is None or on_date <= rule.effective_to)
        ):
            return rule
    raise ValueError(f"no sales tax rate for province {code} on {on_date.isoformat()} in the tax table")


def tax_rate(province: str, on_date: date) -> Decimal:
    """The sales tax rate (``Decimal("0.13")`` for 13 %) of ``province`` on ``on_date``."""
    return tax_rule(province, on_date).rate
