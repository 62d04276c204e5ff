"""Odoo domain semantics held by the Odoo test double (no HTTP).

The contract: Polish notation with an implicit ``&``; ``!`` pushed into the conditions as Odoo
negates operators; ``= False`` means "is empty"; negative operators also match empty values;
``like`` wraps the value in ``%``, ``=like`` takes it as an SQL pattern. The clauses are judged
by the database, on SQLite and on PostgreSQL (``@pytest.mark.postgres``), against a store's
columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Engine, exists, select

from fusion_billing_assets.sandbox.odoo_domain import (
    Condition,
    Constant,
    DomainError,
    Junction,
    Negation,
    normalize_value,
    parse_domain,
    sql_like,
    value_clause,
    x2many_clause,
)
from fusion_billing_assets.sandbox.odoo_store import TABLES, load_models
from tests.conftest import throwaway_postgres_database

PARTNERS = TABLES["res.partner"]
ORDERS = TABLES["sale.order"]
LINES = TABLES["sale.order.line"]
TEXTS = [None, "", "x", "ab"]
ACTIVE = [None, False, True, True]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Partners whose ``ref`` holds each of ``TEXTS`` and ``active`` each of ``ACTIVE``, and
    subscriptions 10 (lines 4 and 5), 11 (no line) and 12 (line 6)."""
    models = {
        "res.partner": [
            {"id": n, "ref": ref, "active": active, "name": name}
            for n, (ref, active, name) in enumerate(
                zip(TEXTS, ACTIVE, ["Énergie Québec", "énergie", "ENERGIE", "50%_off"], strict=True), start=1
            )
        ],
        "sale.order": [{"id": 10}, {"id": 11}, {"id": 12}],
        "sale.order.line": [{"id": 4, "order_id": 10}, {"id": 5, "order_id": 10}, {"id": 6, "order_id": 12}],
    }
    if request.param == "sqlite":
        engine = load_models("sqlite://", models)
        yield engine
    else:
        with throwaway_postgres_database() as url:
            engine = load_models(url, models)
            yield engine
    engine.dispose()


def matching(store: Engine, column: ColumnElement[Any], clause: ColumnElement[bool]) -> list[Any]:
    with store.connect() as connection:
        return list(connection.scalars(select(column).where(clause).order_by(PARTNERS.c.id)))


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
    ("operator", "value", "expected"),
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
def test_empty_text_follows_odoo(store, operator, value, expected):
    ref = PARTNERS.c.ref
    assert matching(store, ref, value_clause(ref, "char", operator, value)) == expected
    # every clause is two-valued: its negation holds exactly where it does not
    assert matching(store, ref, ~value_clause(ref, "char", operator, value)) == [
        text for text in TEXTS if text not in expected
    ]


def test_an_unset_boolean_counts_as_false(store):
    active = PARTNERS.c.active
    assert matching(store, active, value_clause(active, "boolean", "=", False)) == [None, False]
    assert matching(store, active, value_clause(active, "boolean", "!=", True)) == [None, False]
    assert matching(store, active, value_clause(active, "boolean", "in", [True, False])) == ACTIVE


@pytest.mark.parametrize(
    ("operator", "pattern", "expected"),
    [
        ("ilike", "énergie", ["Énergie Québec", "énergie"]),  # Unicode letters ignore case too
        ("like", "É", ["Énergie Québec"]),
        ("=ilike", "energie", ["ENERGIE"]),
        ("=like", "50\\%\\_%", ["50%_off"]),  # escaped wildcards are literal
        ("like", "0%_", ["50%_off"]),
        ("not ilike", "québec", ["énergie", "ENERGIE", "50%_off"]),
    ],
)
def test_like_is_the_same_on_every_backend(store, operator, pattern, expected):
    name = PARTNERS.c.name
    assert matching(store, name, value_clause(name, "char", operator, pattern)) == expected


def test_text_compares_by_code_point(store):
    name = PARTNERS.c.name
    # "E" < "_" < "é" < "É"? No: code points order "5" < "E" < "É" (201) < "é" (233).
    assert matching(store, name, value_clause(name, "char", "<", "É")) == ["ENERGIE", "50%_off"]
    assert matching(store, name, value_clause(name, "char", ">", "É")) == ["Énergie Québec", "énergie"]


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


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("=", 5, [10]),
        ("in", [1, 2], []),
        ("not in", [1, 2], [10, 11, 12]),
        ("not in", [4], [11, 12]),
        ("=", False, [11]),
        ("!=", False, [10, 12]),
    ],
)
def test_one2many_conditions_look_at_the_related_ids(store, operator, value, expected):
    def lines_among(ids: list[int] | None) -> ColumnElement[bool]:
        some_line = exists().where(LINES.c.order_id == ORDERS.c.id)
        return some_line if ids is None else some_line.where(LINES.c.id.in_(ids))

    with store.connect() as connection:
        orders = connection.scalars(
            select(ORDERS.c.id).where(x2many_clause(operator, value, lines_among)).order_by(ORDERS.c.id)
        )
        assert list(orders) == expected


def test_one2many_conditions_need_record_ids():
    with pytest.raises(DomainError):
        x2many_clause("=", "line 4", lambda ids: exists())
    with pytest.raises(DomainError):
        x2many_clause("like", 4, lambda ids: exists())
