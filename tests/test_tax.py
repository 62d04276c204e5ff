"""Tax table contract (docs/design.md §6): rates by province and date, boundaries inclusive, unknowns refused."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusion_billing_assets.billing.tax import CANADIAN_PROVINCES, TAX_RULES, tax_rate, tax_rule


@pytest.mark.parametrize(
    ("province", "rate", "label"),
    [
        ("ON", "0.13", "HST 13%"),
        ("NB", "0.15", "HST 15%"),
        ("NL", "0.15", "HST 15%"),
        ("PE", "0.15", "HST 15%"),
        ("NS", "0.14", "HST 14%"),
        ("QC", "0.05", "GST 5%"),
        ("AB", "0.05", "GST 5%"),
        ("BC", "0.05", "GST 5%"),
        ("YT", "0.05", "GST 5%"),
    ],
)
def test_rates_in_2026(province, rate, label):
    rule = tax_rule(province, date(2026, 10, 1))
    assert rule.rate == Decimal(rate)
    assert rule.label == label


def test_nova_scotia_changes_rate_on_the_first_of_april_2025():
    assert tax_rate("NS", date(2025, 3, 31)) == Decimal("0.15")
    assert tax_rate("NS", date(2025, 4, 1)) == Decimal("0.14")


def test_province_codes_are_read_case_insensitively():
    assert tax_rate(" on ", date(2026, 1, 1)) == Decimal("0.13")


@pytest.mark.parametrize("province", ["XX", "NY", "", "Ontario"])
def test_a_province_that_is_not_canadian_is_named_in_the_error(province):
    with pytest.raises(ValueError, match=f"unknown province {province!r}"):
        tax_rate(province, date(2026, 1, 1))


def test_a_date_before_the_table_is_refused_rather_than_guessed():
    with pytest.raises(ValueError, match="no sales tax rate for province ON on 2009-12-31"):
        tax_rate("ON", date(2009, 12, 31))


@given(
    st.sampled_from(sorted(CANADIAN_PROVINCES)),
    st.dates(min_value=date(2016, 10, 1), max_value=date(2040, 12, 31)),
)
def test_every_canadian_province_has_exactly_one_rate_on_every_day(province, on_date):
    matching = [
        rule
        for rule in TAX_RULES
        if rule.province == province
        and rule.effective_from <= on_date
        and (rule.effective_to is None or on_date <= rule.effective_to)
    ]
    assert len(matching) == 1
    assert tax_rate(province, on_date) == matching[0].rate


def test_closed_rows_are_followed_by_the_next_rate_the_day_after():
    for rule in TAX_RULES:
        if rule.effective_to is not None:
            following = tax_rule(rule.province, rule.effective_to + timedelta(days=1))
            assert following.effective_from == rule.effective_to + timedelta(days=1)
