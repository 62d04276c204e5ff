"""Odoo domain semantics held by the Odoo test double (pure functions, no HTTP).

The contract: Polish notation with an implicit ``&``; ``!`` pushed into the conditions as Odoo
negates operators; ``= False`` means "is empty"; negative operators also match empty values;
``like`` wraps the value in ``%``, ``=like`` takes it as an SQL pattern.
"""

from __future__ import annotations

import pytest

from fusion_billing_assets.sandbox.odoo_domain import (
    Condition,
    Constant,
    DomainError,
    Junction,
    Negation,
    normalize_value,
    parse_domain,
    sql_like,
    value_predicate,
    x2many_predicate,
)


def test_consecutive_terms_are_joined_by_an_implicit_and():
    assert parse_domain([["a", "=", 1], "|", ["b", "=", 2], ["c", "=", 3]]) == Junction(
        "&",
        (
            Condition("a", "=", 1),
            Junction("|", (Condition("b", "=", 2), Condition("c", "=", 3))),
        ),
    )


def test_not_is_pushed_into_the_conditions_with_odoo_operator_negations():
    assert parse_domain(["!", "&", ["a", "<", 5], ["b", "in", [1]]]) == Junction(
        "|", (Condition("a", ">=", 5), Condition("b", "not in", [1]))
    )


def test_a_negated_related_path_stays_negated_as_a_whole():
    assert parse_domain(["!", ["partner_id.ref", "=", "x"]]) == Negation(
        Condition("partner_id.ref", "=", "x")
    )


def test_true_and_false_leaves_and_the_empty_domain():
    assert parse_domain([[1, "=", 1]]) == Constant(True)
    assert parse_domain([[0, "=", 1]]) == Constant(False)
    assert parse_domain([]) == Constant(True)


def test_operators_are_case_insensitive():
    assert parse_domain([["name", "ILIKE", "x"]]) == Condition("name", "ilike", "x")


@pytest.mark.parametrize(
    "domain",
    [
        "[('a', '=', 1)]",
        [["a", "=="]],
        [["a", "~", 1]],
        [["a", "child_of", 1]],
        ["&", ["a", "=", 1]],
        ["!"],
    ],
)
def test_malformed_domains_are_refused(domain):
    with pytest.raises(DomainError):
        parse_domain(domain)


@pytest.mark.parametrize(
    ("operator", "value", "matching"),
    [
        ("=", False, [None, ""]),
        ("!=", False, ["x", "ab"]),
        ("=", "x", ["x"]),
        ("!=", "x", [None, "", "ab"]),
        ("in", ["x", False], [None, "", "x"]),
        ("not in", ["x"], [None, "", "ab"]),
        ("not in", ["x", False], ["ab"]),
        ("<", "b", ["", "ab"]),
        (">=", "b", ["x"]),
        ("like", "b", ["ab"]),
        ("not like", "b", [None, "", "x"]),
    ],
)
def test_empty_text_follows_odoo(operator, value, matching):
    stored_values = [None, "", "x", "ab"]
    matches = value_predicate(operator, value)
    assert [stored for stored in stored_values if matches(stored)] == matching


def test_an_unset_boolean_counts_as_false():
    assert [stored for stored in (None, False, True) if value_predicate("=", False)(stored)] == [None, False]
    assert [stored for stored in (None, False, True) if value_predicate("!=", True)(stored)] == [None, False]


def test_sql_like_patterns():
    assert sql_like("nc-_", case_insensitive=False)("nc-1")
    assert not sql_like("nc-_", case_insensitive=False)("nc-12")
    assert sql_like("%cloud%", case_insensitive=True)("Acme Cloud Inc")
    assert not sql_like("%cloud%", case_insensitive=False)("Acme Cloud Inc")
    assert sql_like("100\\%", case_insensitive=False)("100%")
    assert not sql_like("100\\%", case_insensitive=False)("1000")


def test_datetime_values_are_normalized_to_stored_utc_strings():
    assert normalize_value("datetime", ">=", "2026-10-01") == "2026-10-01 00:00:00"
    assert normalize_value("datetime", "<", "2026-10-01T04:00:00-04:00") == "2026-10-01 08:00:00"
    assert normalize_value("date", "in", ["2026-10-01", False]) == ["2026-10-01", False]


@pytest.mark.parametrize(
    ("field_type", "operator", "value"),
    [
        ("float", ">", "ten"),
        ("date", "=", "yesterday"),
        ("char", "=", 5),
        ("boolean", "=", "yes"),
        ("integer", "<", False),
        ("char", "ilike", None),
    ],
)
def test_values_of_the_wrong_type_are_refused(field_type, operator, value):
    with pytest.raises(DomainError):
        normalize_value(field_type, operator, value)


def test_one2many_conditions_look_at_the_related_ids():
    assert x2many_predicate("=", 5)([4, 5])
    assert not x2many_predicate("in", [1, 2])([4, 5])
    assert x2many_predicate("not in", [1, 2])([4, 5])
    assert x2many_predicate("=", False)([])
    assert x2many_predicate("!=", False)([4])
