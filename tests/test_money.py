"""Money contract (docs/design.md §6): integer cents, half-up rounding, exact float conversion, display."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusion_billing_assets.billing.money import (
    cents_to_dollars,
    dollars_to_cents,
    format_cents,
    round_half_up,
    to_decimal,
)


@given(st.integers(min_value=0, max_value=10**12))
def test_every_half_cent_rounds_away_from_zero(whole):
    half = Decimal(whole) + Decimal("0.5")
    assert round_half_up(half) == whole + 1
    assert round_half_up(-half) == -(whole + 1)


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=9999),
    st.sampled_from([1, -1]),
)
def test_below_a_half_rounds_toward_zero_and_from_a_half_away(whole, ten_thousandths, sign):
    fraction = Decimal(ten_thousandths) / 10000
    magnitude = whole + 1 if fraction >= Decimal("0.5") else whole
    assert round_half_up(sign * (Decimal(whole) + fraction)) == sign * magnitude


def test_half_up_is_not_bankers_rounding():
    # Banker's rounding (Python's round()) would give 0, 2, 2, -2 and 12: every one differs.
    halves = ["0.5", "1.5", "2.5", "-2.5", "12.5"]
    assert [round_half_up(Decimal(half)) for half in halves] == [1, 2, 3, -3, 13]


@given(st.integers(min_value=-(10**13), max_value=10**13))
def test_cents_survive_a_round_trip_through_dollars_and_floats(cents):
    assert dollars_to_cents(cents_to_dollars(cents)) == cents
    assert dollars_to_cents(str(cents_to_dollars(cents))) == cents
    assert dollars_to_cents(float(cents_to_dollars(cents))) == cents


@pytest.mark.parametrize(
    ("dollars", "cents"),
    [
        (0.1, 10),
        (0.29, 29),  # 0.29 * 100 == 28.999999999999996 in float arithmetic
        (1.005, 101),  # float 1.005 is 1.00499999999999989…, its str is "1.005"
        ("12.345", 1235),
        ("-12.345", -1235),
        (Decimal("0.004999"), 0),
        (7, 700),
    ],
)
def test_dollars_to_cents_is_exact_and_half_up(dollars, cents):
    assert dollars_to_cents(dollars) == cents


def test_cents_to_dollars_keeps_two_decimals():
    assert cents_to_dollars(1235) == Decimal("12.35")
    assert str(cents_to_dollars(100)) == "1.00"
    assert str(cents_to_dollars(-5)) == "-0.05"


@pytest.mark.parametrize(
    ("cents", "text"),
    [(123456, "$1,234.56"), (-100, "-$1.00"), (0, "$0.00"), (5, "$0.05"), (-123456789, "-$1,234,567.89")],
)
def test_format_cents_for_people(cents, text):
    assert format_cents(cents) == text


@pytest.mark.parametrize("bad", ["twelve", "", "nan", float("inf")])
def test_not_a_finite_number_is_refused(bad):
    with pytest.raises(ValueError):
        to_decimal(bad)


def test_booleans_are_not_money():
    with pytest.raises(TypeError):
        dollars_to_cents(True)
