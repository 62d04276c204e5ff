"""Waiver file contract (docs/design.md §6 ``waived``): validated on load, naming file, line and field.

A waiver applies only to its period and customer, only to exactly the difference it accepted, and
only until it expires (inclusive). Blank and ``#`` lines are ignored; a missing file is an error
unless the caller says the file is optional.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from contextlib import closing
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusion_billing_assets.billing.waivers import (
    WAIVER_COLUMNS,
    Waiver,
    WaiverFileError,
    find_waiver,
    load_waivers,
)

HEADER = ",".join(WAIVER_COLUMNS)
GOOD_ROW = '2026-09-01,16,1575,Onboarding sold in Odoo only,"Dana Whitfield, Controller",2031-09-01'


def write(tmp_path: Path, text: str, name: str = "waivers.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def waiver(**changes) -> Waiver:
    values = {
        "period": date(2026, 9, 1),
        "customer_id": 16,
        "delta_cents": 1575,
        "reason": "Onboarding sold in Odoo only",
        "approver": "Dana Whitfield, Controller",
        "expires_on": date(2026, 12, 31),
        "line": 2,
    }
    return Waiver(**{**values, **changes})


# --- loading ------------------------------------------------------------------------------------


# Sales tax of 2026 by province, as the README's tax table gives it.
TAX_2026 = {"ON": "0.13", "NB": "0.15", "NL": "0.15", "PE": "0.15", "NS": "0.14"}


def test_the_sandbox_waiver_file_accepts_exactly_the_injected_fee_and_its_tax(small_sandbox):
    (waived,) = [row for row in small_sandbox.manifest["differences"] if row["status"] == "waived"]
    fee = re.search(r"Odoo billed a \$([\d,]+\.\d\d) onboarding fee plus tax", waived["description"])
    assert fee, waived["description"]
    fee_cents = int(Decimal(fee.group(1).replace(",", "")) * 100)
    with closing(sqlite3.connect(small_sandbox.out / "nexacloud.sqlite")) as connection:
        ((province,),) = connection.execute(
            "SELECT province FROM customers WHERE id = ?", (waived["customer_id"],)
        ).fetchall()
    tax_cents = int(
        (fee_cents * Decimal(TAX_2026.get(province, "0.05"))).to_integral_value(rounding=ROUND_HALF_UP)
    )

    (loaded,) = load_waivers(small_sandbox.out / "waivers.csv")

    assert (loaded.period.isoformat(), loaded.customer_id) == (waived["period"], waived["customer_id"])
    # Odoo − NexaCloud: the fee and its tax, e.g. $15.00 + 13 % = 1,695 cents in Ontario.
    assert loaded.delta_cents == fee_cents + tax_cents
    assert loaded.reason and loaded.approver == "Dana Whitfield, Controller"
    assert loaded.line == 2


def test_a_good_row_reads_back_with_every_field(tmp_path):
    (loaded,) = load_waivers(write(tmp_path, f"{HEADER}\n{GOOD_ROW}\n"))
    assert loaded == waiver(expires_on=date(2031, 9, 1))


def test_blank_and_comment_lines_are_ignored_and_line_numbers_stay_the_files(tmp_path):
    text = (
        "# Accepted differences, reviewed monthly by the controller.\n"
        "\n"
        f"{HEADER}\n"
        "   \n"
        "  # September\n"
        f"{GOOD_ROW}\n"
        "\n"
        '2026-10-01,17,-3,"Rounding on a #hashtag line, quoted",Sam Ortiz,\n'
    )
    first, second = load_waivers(write(tmp_path, text))
    assert (first.customer_id, first.line) == (16, 6)
    assert (second.customer_id, second.delta_cents, second.expires_on, second.line) == (17, -3, None, 8)
    assert second.reason == "Rounding on a #hashtag line, quoted"


def test_a_hash_inside_a_quoted_multi_line_reason_is_text_not_a_comment(tmp_path):
    text = f'{HEADER}\n2026-09-01,16,1575,"Two lines:\n# not a comment",Dana,\n2026-09-01,17,5,Next,Dana,\n'
    first, second = load_waivers(write(tmp_path, text))
    assert first.reason == "Two lines:\n# not a comment"
    assert (first.line, second.line) == (2, 4)


def test_columns_may_come_in_any_order_and_a_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "waivers.csv"
    path.write_text(
        "\ufeffcustomer_id,period,approver,reason,expires_on,delta_cents\n16,2026-09-01,Dana,Accepted,,1575\n",
        encoding="utf-8",
    )
    (loaded,) = load_waivers(path)
    assert (loaded.customer_id, loaded.period, loaded.delta_cents, loaded.expires_on) == (
        16,
        date(2026, 9, 1),
        1575,
        None,
    )


def test_a_header_only_file_holds_no_waivers(tmp_path):
    assert load_waivers(write(tmp_path, f"{HEADER}\n")) == ()


def test_a_missing_file_is_an_error_unless_the_caller_says_it_is_optional(tmp_path):
    path = tmp_path / "nowhere" / "waivers.csv"
    with pytest.raises(WaiverFileError, match="does not exist") as raised:
        load_waivers(path)
    assert str(path) in str(raised.value)
    assert load_waivers(path, required=False) == ()


def test_an_empty_file_is_refused_for_lacking_its_header(tmp_path):
    with pytest.raises(WaiverFileError, match="no header"):
        load_waivers(write(tmp_path, "# nothing yet\n\n"))


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("period,customer_id,delta_cents,reason,approver", "missing column(s) expires_on"),
        (f"{HEADER},ticket", "unknown column(s) ticket"),
        ("period,customer,delta_cents,reason,approver,expires_on", "unknown column(s) customer"),
        (f"{HEADER},reason", "repeated column(s) reason"),
    ],
)
def test_unknown_missing_or_repeated_columns_are_refused_on_the_header_line(tmp_path, header, problem):
    with pytest.raises(WaiverFileError) as raised:
        load_waivers(write(tmp_path, f"# comment\n{header}\n"))
    assert problem in str(raised.value)
    assert raised.value.line == 2


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        ("2026-09-15,16,1575,Why,Who,", "period", "first day of a month"),
        ("2026-13-01,16,1575,Why,Who,", "period", "not a date"),
        ("Sept 2026,16,1575,Why,Who,", "period", "YYYY-MM-DD"),
        (",16,1575,Why,Who,", "period", "YYYY-MM-DD"),
        ("2026-09-01,C-16,1575,Why,Who,", "customer_id", "whole number"),
        ("2026-09-01,0,1575,Why,Who,", "customer_id", "positive"),
        ("2026-09-01,16,15.75,Why,Who,", "delta_cents", "whole number"),
        ('2026-09-01,16,"1,575",Why,Who,', "delta_cents", "whole number"),
        ("2026-09-01,16,1_575,Why,Who,", "delta_cents", "whole number"),
        ("2026-09-01,16,,Why,Who,", "delta_cents", "whole number"),
        ("2026-09-01,16,0,Why,Who,", "delta_cents", "zero difference"),
        ("2026-09-01,16,1575,  ,Who,", "reason", "why"),
        ("2026-09-01,16,1575,Why,,", "approver", "who"),
        ("2026-09-01,16,1575,Why,Who,2031-02-30", "expires_on", "day is out of range"),
        ("2026-09-01,16,1575,Why,Who,next year", "expires_on", "YYYY-MM-DD"),
        ("2026-09-01,16,1575,Why,Who,2026-08-31", "expires_on", "before its period"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_file_the_line_and_the_field(tmp_path, row, field, problem):
    path = write(tmp_path, f"{HEADER}\n{GOOD_ROW}\n\n{row}\n")
    with pytest.raises(WaiverFileError) as raised:
        load_waivers(path)
    error = raised.value
    assert (error.path, error.line, error.field) == (path, 4, field)
    assert problem in str(error)
    assert f"{path}, line 4, field {field}" in str(error)


def test_a_row_with_the_wrong_number_of_fields_is_refused_on_its_line(tmp_path):
    with pytest.raises(WaiverFileError, match="7 fields where the header has 6") as raised:
        load_waivers(write(tmp_path, f"{HEADER}\n2026-09-01,16,1575,Dana, Controller,Dana,\n"))
    assert raised.value.line == 2


def test_two_waivers_for_one_period_and_customer_are_refused_naming_both_lines(tmp_path):
    text = f"{HEADER}\n{GOOD_ROW}\n2026-10-01,16,20,Other month,Dana,\n2026-09-01,16,99,Again,Dana,\n"
    with pytest.raises(WaiverFileError, match="the first is on line 2") as raised:
        load_waivers(write(tmp_path, text))
    assert raised.value.line == 4


def test_broken_quoting_is_refused_with_its_line(tmp_path):
    with pytest.raises(WaiverFileError, match="not valid CSV") as raised:
        load_waivers(write(tmp_path, f'{HEADER}\n{GOOD_ROW}\n2026-10-01,16,20,"Half"quoted,Dana,\n'))
    assert raised.value.line == 3


# Text a person might type in a reason or approver: commas, quotes, hashes, accents, line breaks.
FREE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from('",#\n\u2028'),
    min_size=1,
    max_size=40,
).filter(lambda text: text.strip() == text and text.strip())
WAIVERS = st.lists(
    st.builds(
        dict,
        period=st.dates(date(2020, 1, 1), date(2035, 12, 1)).map(lambda day: day.replace(day=1)),
        customer_id=st.integers(1, 10**9),
        delta_cents=st.integers(-(10**9), 10**9).filter(bool),
        reason=FREE_TEXT,
        approver=FREE_TEXT,
        expires_in_days=st.none() | st.integers(0, 4000),
    ),
    max_size=8,
    unique_by=lambda entry: (entry["period"], entry["customer_id"]),
)


@given(WAIVERS)
def test_any_waivers_written_by_a_csv_writer_load_back_unchanged_with_their_lines(tmp_path_factory, entries):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(WAIVER_COLUMNS)
    starts = []
    for entry in entries:
        starts.append(buffer.getvalue().count("\n") + 1)
        expires_on = (
            None
            if entry["expires_in_days"] is None
            else entry["period"] + timedelta(entry["expires_in_days"])
        )
        writer.writerow(
            [
                entry["period"].isoformat(),
                entry["customer_id"],
                entry["delta_cents"],
                entry["reason"],
                entry["approver"],
                expires_on.isoformat() if expires_on else "",
            ]
        )
    path = write(tmp_path_factory.mktemp("waivers"), buffer.getvalue())
    loaded = load_waivers(path)
    assert [(w.period, w.customer_id, w.delta_cents, w.reason, w.approver, w.line) for w in loaded] == [
        (e["period"], e["customer_id"], e["delta_cents"], e["reason"], e["approver"], line)
        for e, line in zip(entries, starts, strict=True)
    ]


# --- applying -----------------------------------------------------------------------------------


def test_a_waiver_applies_to_its_period_customer_and_exact_difference():
    accepted = waiver()
    assert find_waiver([accepted], date(2026, 9, 1), 16, 1575, date(2026, 10, 5)) is accepted
    assert find_waiver([accepted], "2026-09-01", 16, 1575, date(2026, 10, 5)) is accepted


@pytest.mark.parametrize(
    ("period", "customer_id", "delta_cents"),
    [
        (date(2026, 10, 1), 16, 1575),
        (date(2026, 9, 1), 17, 1575),
        # The difference moved since it was accepted: someone has to look again.
        (date(2026, 9, 1), 16, 1576),
        (date(2026, 9, 1), 16, -1575),
    ],
)
def test_a_waiver_does_not_apply_to_another_period_customer_or_difference(period, customer_id, delta_cents):
    assert find_waiver([waiver()], period, customer_id, delta_cents, date(2026, 10, 5)) is None


def test_a_waiver_applies_on_its_expiry_day_and_not_the_day_after():
    accepted = waiver(expires_on=date(2026, 12, 31))
    assert find_waiver([accepted], date(2026, 9, 1), 16, 1575, date(2026, 12, 31)) is accepted
    assert find_waiver([accepted], date(2026, 9, 1), 16, 1575, date(2027, 1, 1)) is None


def test_a_waiver_without_expiry_never_expires():
    accepted = waiver(expires_on=None)
    assert find_waiver([accepted], date(2026, 9, 1), 16, 1575, date(2099, 1, 1)) is accepted


@given(
    delta=st.integers(-5000, 5000),
    accepted=st.integers(-5000, 5000).filter(bool),
    days_after_expiry=st.integers(-400, 400),
)
def test_a_waiver_applies_exactly_when_the_difference_is_the_accepted_one_and_it_has_not_expired(
    delta, accepted, days_after_expiry
):
    expires_on = date(2026, 12, 31)
    on_date = expires_on + timedelta(days=days_after_expiry)
    candidate = waiver(delta_cents=accepted, expires_on=expires_on)
    found = find_waiver([candidate], date(2026, 9, 1), 16, delta, on_date)
    assert (found is candidate) == (delta == accepted and on_date <= expires_on)
