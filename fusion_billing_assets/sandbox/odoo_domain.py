"""Odoo search domains for the Odoo test double: parsing, and compilation to an SQL WHERE clause.

A domain is Odoo's list in Polish notation: conditions ``[path, operator, value]`` joined by the
prefix operators ``'&'``, ``'|'`` and ``'!'``, with an implicit ``'&'`` between consecutive terms.
``parse_domain`` turns one into a small tree, pushing every ``'!'`` down into the conditions the
way Odoo does (``!(x < 5)`` is ``x >= 5``, which excludes empty values, while ``!(x = 5)`` is
``x != 5``, which includes them). The other functions here turn one condition on one column into
SQLAlchemy Core with Odoo's treatment of empty values: ``= False`` means "is empty" (NULL, and
``''`` for text, ``false`` for a boolean), and the negative operators (``!=``, ``not in``,
``not like``, ``not ilike``) also match empty values, as Odoo adds ``OR x IS NULL`` to them. Every
clause built here is two-valued (never SQL NULL), so that ``NOT`` of it is the Python ``not`` of
it. ``like`` and ``ilike`` follow PostgreSQL on every backend (on SQLite through the function
``sqlite_like`` that the store registers). Which table a path leads to is the caller's business
(``fusion_billing_assets.sandbox.odoo_standin``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from operator import ge, gt, le, lt
from typing import Any, Literal

from sqlalchemy import Boolean, ColumnElement, String, TypeDecorator, and_, cast, false, not_, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

COMPARISON_OPERATORS = frozenset({"=", "!=", "<", "<=", ">", ">="})
LIKE_OPERATORS = frozenset({"like", "not like", "ilike", "not ilike", "=like", "=ilike"})
MEMBERSHIP_OPERATORS = frozenset({"in", "not in"})
SUBDOMAIN_OPERATORS = frozenset({"any", "not any"})
OPERATORS = COMPARISON_OPERATORS | LIKE_OPERATORS | MEMBERSHIP_OPERATORS | SUBDOMAIN_OPERATORS

# Odoo's TERM_OPERATORS_NEGATION; '=like' and '=ilike' have no spelled-out negation here and are
# negated as a whole instead.
_NEGATED_OPERATOR = {
    "=": "!=",
    "!=": "=",
    "<": ">=",
    ">=": "<",
    ">": "<=",
    "<=": ">",
    "in": "not in",
    "not in": "in",
    "like": "not like",
    "not like": "like",
    "ilike": "not ilike",
    "not ilike": "ilike",
    "any": "not any",
    "not any": "any",
}
NEGATIVE_OPERATORS = frozenset({"!=", "not in", "not like", "not ilike", "not any"})

NUMERIC_TYPES = frozenset({"integer", "float", "monetary"})
STRING_TYPES = frozenset({"char", "text", "selection"})


class DomainError(ValueError):
    """A domain, or a value in it, that Odoo would refuse: malformed, or an unknown operator."""


@dataclass(frozen=True)
class Condition:
    """One leaf ``[path, operator, value]``; for ``any``/``not any`` the value is a parsed term."""

    path: str
    operator: str
    value: Any


@dataclass(frozen=True)
class Junction:
    operator: Literal["&", "|"]
    terms: tuple[Term, ...]


@dataclass(frozen=True)
class Negation:
    """A condition negated as a whole: a related path (``not any``) or an ``=like`` pattern."""

    term: Condition


@dataclass(frozen=True)
class Constant:
    """Odoo's TRUE_LEAF ``(1, '=', 1)`` and FALSE_LEAF ``(0, '=', 1)``, and the empty domain."""

    value: bool


Term = Condition | Junction | Negation | Constant
Predicate = Callable[[Any], bool]


def parse_domain(domain: object) -> Term:
    """Parse a JSON domain (a list) into a term tree; raise ``DomainError`` when it is malformed."""
    if not isinstance(domain, list | tuple):
        raise DomainError(f"A domain must be a list, not {type(domain).__name__}: {domain!r}")
    stack: list[Term] = []
    # Polish notation reads most naturally backwards: each operator takes the terms after it.
    for item in reversed(domain):
        if item == "!":
            stack.append(negate(_pop(stack, domain)))
        elif item in ("&", "|"):
            first = _pop(stack, domain)
            second = _pop(stack, domain)
            stack.append(_junction(item, (first, second)))
        else:
            stack.append(_parse_leaf(item))
    if not stack:
        return Constant(True)
    return _junction("&", tuple(reversed(stack)))


def negate(term: Term) -> Term:
    """The term's negation, pushed into the conditions with Odoo's operator negations."""
    match term:
        case Constant(value):
            return Constant(not value)
        case Junction(operator, terms):
            return _junction("|" if operator == "&" else "&", tuple(negate(t) for t in terms))
        case Negation(inner):
            return inner
        case Condition(path, operator, value):
            if "." in path or operator not in _NEGATED_OPERATOR:
                return Negation(term)
            return Condition(path, _NEGATED_OPERATOR[operator], value)
    raise AssertionError(term)


def compile_term(
    term: Term, compile_condition: Callable[[Condition], ColumnElement[bool]]
) -> ColumnElement[bool]:
    """The WHERE clause of the term; ``compile_condition`` builds the clause of each leaf."""
    match term:
        case Constant(value):
            return true() if value else false()
        case Condition():
            return compile_condition(term)
        case Negation(inner):
            return not_(compile_condition(inner))
        case Junction("&", terms):
            return and_(*(compile_term(t, compile_condition) for t in terms))
        case Junction("|", terms):
            return or_(*(compile_term(t, compile_condition) for t in terms))
    raise AssertionError(term)


def conditions(term: Term) -> list[Condition]:
    """Every condition of the term, outside ``any`` sub-domains."""
    match term:
        case Condition():
            return [term]
        case Negation(inner):
            return [inner]
        case Junction(_, terms):
            return [condition for t in terms for condition in conditions(t)]
    return []


def empty_clause(column: ColumnElement[Any], field_type: str) -> ColumnElement[bool]:
    """Whether a stored value is what Odoo calls empty: NULL, ``''`` for text, ``false``."""
    if field_type in STRING_TYPES:
        return or_(column.is_(None), column == "")
    if field_type == "boolean":
        return or_(column.is_(None), column == false())
    return column.is_(None)


def normalize_value(field_type: str, operator: str, value: object) -> Any:
    """The condition's value in the stored representation of ``field_type``.

    ``False`` stays ``False`` (it means "empty"); datetimes given as a date or in ISO form become
    ``"YYYY-MM-DD HH:MM:SS"`` UTC, the storage format of their column.
    """
    if operator in MEMBERSHIP_OPERATORS:
        items = value if isinstance(value, list | tuple) else [value]
        return [_normalize_scalar(field_type, item) for item in items]
    if operator in LIKE_OPERATORS:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise DomainError(f"Operator {operator!r} needs a string, not {value!r}")
        return str(value)
    normalized = _normalize_scalar(field_type, value)
    if normalized is False and operator not in ("=", "!=") and field_type != "boolean":
        raise DomainError(f"Operator {operator!r} cannot compare with False (empty)")
    return normalized


def value_clause(
    column: ColumnElement[Any], field_type: str, operator: str, value: Any
) -> ColumnElement[bool]:
    """The clause of one condition on a stored scalar (many2one ids included), value normalized."""
    if operator in ("=", "!="):
        clause = empty_clause(column, field_type) if value is False else _present(column, column == value)
        return clause if operator == "=" else not_(clause)
    if operator in MEMBERSHIP_OPERATORS:
        # An empty value (``''`` included) is a member only when False is listed.
        wanted = [item for item in value if item is not False and not _is_empty_text(field_type, item)]
        clause = _present(column, column.in_(wanted)) if wanted else false()
        if any(item is False for item in value):
            clause = or_(empty_clause(column, field_type), clause)
        return clause if operator == "in" else not_(clause)
    if operator in COMPARISON_OPERATORS:
        # SQL semantics: an empty value is neither smaller nor greater than anything.
        return _present(column, _COMPARATORS[operator](column, value))
    if operator in LIKE_OPERATORS:
        pattern = value if operator.startswith("=") else f"%{value}%"
        like = (ILike if "ilike" in operator else Like)(column, pattern)
        clause = _present(column, like)
        return not_(clause) if operator.startswith("not ") else clause
    raise DomainError(f"Operator {operator!r} does not apply to a stored value")


def x2many_clause(
    operator: str, value: object, related: Callable[[list[int] | None], ColumnElement[bool]]
) -> ColumnElement[bool]:
    """The clause of a one2many condition (``=``/``!=``/``in``/``not in`` record ids, or False).

    ``related(ids)`` is the clause "some related record exists" (with an id among ``ids``, unless
    ``None``).
    """
    if operator not in ("=", "!=", "in", "not in"):
        raise DomainError(f"Operator {operator!r} is not supported on a one2many/many2many field")
    if value is False:
        has_any = related(None)
        return has_any if operator in ("!=", "not in") else not_(has_any)
    items = value if isinstance(value, list | tuple) else [value]
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        raise DomainError(f"A one2many/many2many condition needs record ids, not {value!r}")
    overlaps = related(list(items))
    return overlaps if operator in ("=", "in") else not_(overlaps)


# --- LIKE as PostgreSQL has it, on every backend ------------------------------------------------

LIKE_FUNCTION = "odoo_like"


class Like(FunctionElement[bool]):
    """``value LIKE pattern``: ``%`` any run, ``_`` one character, ``\\`` escapes, case-sensitive."""

    type = Boolean()
    name = LIKE_FUNCTION
    inherit_cache = True
    case_insensitive = False


class ILike(Like):
    """``value ILIKE pattern``: LIKE ignoring case, Unicode letters included."""

    inherit_cache = True
    case_insensitive = True


@compiles(Like)
def _like_as_a_function(element: Like, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's own LIKE ignores ASCII case only and has no escape character by default: the
    # store registers ``sqlite_like`` under this name instead.
    arguments = compiler.process(element.clauses, **kw)
    return f"{LIKE_FUNCTION}({arguments}, {int(element.case_insensitive)})"


@compiles(Like, "postgresql")
def _like_on_postgresql(element: Like, compiler: SQLCompiler, **kw: Any) -> str:
    value, pattern = element.clauses.clauses
    column_type = value.type
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.load_dialect_impl(compiler.dialect)
    if not isinstance(column_type, String):
        value = cast(value, String)
    text, pattern_text = compiler.process(value, **kw), compiler.process(pattern, **kw)
    if element.case_insensitive:
        # Text columns are in the "C" collation, whose ILIKE folds ASCII letters only.
        return f'({text} COLLATE "und-x-icu" ILIKE {pattern_text})'
    return f"({text} LIKE {pattern_text})"


def sqlite_like(value: object, pattern: str | None, case_insensitive: int) -> int | None:
    """SQLite's implementation of ``Like``/``ILike``: 1 or 0, NULL for a NULL value or pattern."""
    if value is None or pattern is None:
        return None
    return int(sql_like(pattern, case_insensitive=bool(case_insensitive))(str(value)))


@lru_cache(maxsize=256)
def sql_like(pattern: str, *, case_insensitive: bool) -> Callable[[str], bool]:
    """A matcher for an SQL LIKE pattern: ``%`` any run, ``_`` one character, ``\\`` escapes."""
    parts: list[str] = []
    characters = iter(pattern)
    for character in characters:
        if character == "\\":
            parts.append(re.escape(next(characters, "\\")))
        elif character == "%":
            parts.append(".*")
        elif character == "_":
            parts.append(".")
        else:
            parts.append(re.escape(character))
    flags = re.DOTALL | (re.IGNORECASE if case_insensitive else 0)
    regex = re.compile("".join(parts), flags)
    return lambda text: regex.fullmatch(text) is not None


def _pop(stack: list[Term], domain: Sequence[object]) -> Term:
    if not stack:
        raise DomainError(f"Domain is malformed, an operator lacks its operands: {domain!r}")
    return stack.pop()


def _junction(operator: Literal["&", "|"], terms: tuple[Term, ...]) -> Term:
    flattened: list[Term] = []
    for term in terms:
        if isinstance(term, Junction) and term.operator == operator:
            flattened.extend(term.terms)
        else:
            flattened.append(term)
    return flattened[0] if len(flattened) == 1 else Junction(operator, tuple(flattened))


def _parse_leaf(item: object) -> Term:
    if not isinstance(item, list | tuple) or len(item) != 3:
        raise DomainError(f"Invalid domain term {item!r}: expected [field, operator, value]")
    path, operator, value = item
    if path in (0, 1) and operator == "=" and value == 1 and not isinstance(path, bool):
        return Constant(path == 1)
    if not isinstance(path, str) or not path:
        raise DomainError(f"Invalid field name in domain term {item!r}")
    if not isinstance(operator, str) or operator.lower() not in OPERATORS:
        raise DomainError(f"Invalid operator {operator!r} in domain term {item!r}")
    operator = operator.lower()
    if operator in SUBDOMAIN_OPERATORS:
        value = parse_domain(value)
    return Condition(path, operator, value)


def _normalize_scalar(field_type: str, value: object) -> Any:
    if value is False:
        return False
    if field_type == "boolean":
        if value not in (True, 1):
            raise DomainError(f"Invalid value {value!r} for a boolean field")
        return True
    if field_type in NUMERIC_TYPES or field_type == "many2one":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DomainError(f"Invalid value {value!r} for a {field_type} field")
        return value
    if field_type == "date":
        if not isinstance(value, str):
            raise DomainError(f"Invalid value {value!r} for a date field")
        return _parse(date.fromisoformat, value[:10], field_type).isoformat()
    if field_type == "datetime":
        if not isinstance(value, str):
            raise DomainError(f"Invalid value {value!r} for a datetime field")
        moment = _parse(datetime.fromisoformat, value, field_type)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if field_type in STRING_TYPES and not isinstance(value, str):
        raise DomainError(f"Invalid value {value!r} for a {field_type} field")
    return value


def _parse(parser: Callable[[str], Any], text: str, field_type: str) -> Any:
    try:
        return parser(text)
    except ValueError as error:
        raise DomainError(f"Invalid value {text!r} for a {field_type} field") from error


_COMPARATORS = {"<": lt, "<=": le, ">": gt, ">=": ge}


def _present(column: ColumnElement[Any], clause: ColumnElement[bool]) -> ColumnElement[bool]:
    # ``x IS NOT NULL AND ...`` is false, not NULL, on an empty value: the clause stays two-valued.
    return and_(column.is_not(None), clause)


def _is_empty_text(field_type: str, value: object) -> bool:
    return field_type in STRING_TYPES and value == ""
