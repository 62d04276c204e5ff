"""Money as integer cents, with the one rounding rule both billing systems use: half-up.

Every amount in a frame is an ``int`` of cents; rates and unrounded intermediate amounts are
``Decimal``. Rounding is half-up to the cent, away from zero for negative amounts (Odoo's
``float_round``), never Python's ``round()`` (half-even) and never a sum of floats. Values that
arrive as floats (Odoo's JSON, SQLite's NUMERIC) are converted through their shortest ``str`` so
``0.1`` becomes ``Decimal("0.1")`` rather than its binary approximation.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from numbers import Integral

CENTS_PER_DOLLAR = 100

Amount = Decimal | str | float | int


def to_decimal(value: Amount) -> Decimal:
    """An exact ``Decimal`` from a Decimal, an integer, a numeric string or a float (via ``str``)."""
    if isinstance(value, bool):
        # bool is an int subclass; True dollars is a bug upstream, not one dollar.
        raise TypeError(f"a money amount cannot be a boolean, got {value!r}")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, Integral):
        # Also NumPy's integers, which pandas hands out and Decimal() refuses.
        number = Decimal(int(value))
    elif isinstance(value, float):
        number = Decimal(str(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
    else:
        raise TypeError(f"a money amount must be a Decimal, str, float or int, got {type(value).__name__}")
    if not number.is_finite():
        raise ValueError(f"a money amount must be finite, got {value!r}")
    return number


def round_half_up(cents: Decimal) -> int:
    """Whole cents from an exact amount of cents: ``12.5 → 13``, ``12.4999 → 12``, ``-12.5 → -13``."""
    return int(to_decimal(cents).to_integral_value(rounding=ROUND_HALF_UP))


def dollars_to_cents(dollars: Amount) -> int:
    """Cents from dollars, half-up: ``"12.345" → 1235``, ``0.1 → 10``."""
    return round_half_up(to_decimal(dollars) * CENTS_PER_DOLLAR)


def cents_to_dollars(cents: int) -> Decimal:
    """The exact dollar amount of whole cents, with two decimals: ``1235 → Decimal("12.35")``."""
    return (Decimal(int(cents)) / CENTS_PER_DOLLAR).quantize(Decimal("0.01"))


def format_cents(cents: int) -> str:
    """An amount for people: ``123456 → "$1,234.56"``, ``-100 → "-$1.00"``."""
    sign = "-" if cents < 0 else ""
    dollars, remainder = divmod(abs(int(cents)), CENTS_PER_DOLLAR)
    return f"{sign}${dollars:,}.{remainder:02d}"
