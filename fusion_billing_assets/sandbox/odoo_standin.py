"""A test double of Odoo 19's external API, for the embedded sandbox and the test suite.

This is not Odoo. It is a small WSGI application that serves, from records held in an SQL database
(``odoo_store``: SQLite in memory for the records it is given, a SQLite file or PostgreSQL for a
store of any size), the slice of Odoo 19 Enterprise that the reconciliation reads
(docs/design.md §5; models and fields in ``odoo_models.MODELS``), and answers the way Odoo answers
on the wire, so that the production client runs unchanged against it, in-process through
``httpx.WSGITransport`` or over a real port (``serve``/``serving``/``serve_store``):

- JSON-2: ``POST /json/2/<model>/<method>`` with ``Authorization: bearer <key>`` and
  ``X-Odoo-Database``; the body holds the named arguments; success is HTTP 200 and the bare
  result; an error is ``{"name", "message", "arguments", "context", "debug"}`` with 401 (bad or
  missing key), 403 (a private or writing method: the sandbox user is read-only), 404 (unknown
  model or method, or a record that does not exist), 405 (not POST), 422 (bad argument or domain),
  500 (unknown field, as Odoo's ``builtins.ValueError``). A wrong ``X-Odoo-Database`` is a 404
  with an HTML page, as Odoo answers when its database filter rejects the name.
- Legacy ``POST /jsonrpc`` (``common.version``/``login``/``authenticate``, ``object.execute_kw``):
  always HTTP 200, errors inside the JSON-RPC envelope with ``"code": 0``, or ``404`` for a
  ``werkzeug.exceptions.NotFound`` (as Odoo's JsonRPCDispatcher does).
- ``GET /web/version``.

Read methods: ``search_read``, ``search``, ``search_count``, ``read``, ``formatted_read_group``,
``read_group`` (legacy shape) and ``fields_get``. As Odoo does on PostgreSQL, each answers with SQL:
the domain becomes a WHERE clause (related paths, ``any`` and one2many conditions EXISTS
subqueries), groups a GROUP BY with SQL aggregates, date and datetime buckets cut in the context's
time zone; a page's many2one display names and one2many ids take one query per field. No table is
ever read into memory. Records render as Odoo renders them: many2one as ``[id, display_name]``,
empty values as ``false`` except numbers (``0``), one2many as ids. Like Odoo, searches on a model
with an ``active`` field skip archived records unless the domain mentions ``active`` or the
context sets ``active_test: false``.

Where the double has to choose, it chooses simply and says so: results order by ``id asc``
unless told otherwise (records that tie on the order come in id order, groups in the order of
their first record), and a many2one orders (and groups) by the related id, not by the related
model's ``_order``; a missing ``X-Odoo-Database`` header is accepted, as on a one-database
server; a missing key is a 401 like a wrong one; malformed domains, orders, group-by and
aggregate specifications are 422 ``odoo.exceptions.UserError`` (Odoo itself raises a mix of
``ValueError`` and ``UserError``); week buckets are ISO weeks labelled ``W<week> <year>``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import re
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache, partial
from http import HTTPStatus
from os import PathLike
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Integer,
    Select,
    Table,
    cast,
    distinct,
    exists,
    false,
    func,
    literal_column,
    not_,
    select,
)
from sqlalchemy.pool import StaticPool

from fusion_billing_assets.billing.periods import local_midnight_utc
from fusion_billing_assets.sandbox.odoo_domain import (
    NEGATIVE_OPERATORS,
    NUMERIC_TYPES,
    SUBDOMAIN_OPERATORS,
    Condition,
    Constant,
    DomainError,
    Junction,
    Term,
    compile_term,
    conditions,
    normalize_value,
    parse_domain,
    value_clause,
    x2many_clause,
)
from fusion_billing_assets.sandbox.odoo_models import (
    MODELS,
    SANDBOX_API_KEY,
    SANDBOX_DATABASE,
    SANDBOX_LOGIN,
    SANDBOX_UID,
    Field,
)
from fusion_billing_assets.sandbox.odoo_store import (
    GRANULARITIES,
    TABLES,
    X2MANY_TYPES,
    ExactAvg,
    ExactSum,
    date_bucket,
    load_models,
    moment_bucket,
    open_store_read_only,
)

logger = logging.getLogger(__name__)

Record = dict[str, Any]
WSGIEnvironment = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_ID = Field("integer")
_DISPLAY_NAME = Field("char")

_MODEL_METHODS = frozenset(
    {"search_read", "search", "search_count", "formatted_read_group", "read_group", "fields_get"}
)
_RECORD_METHODS = frozenset({"read"})
_WRITE_METHODS = frozenset(
    {
        "create",
        "write",
        "unlink",
        "copy",
        "name_create",
        "toggle_active",
        "action_archive",
        "action_unarchive",
        "web_save",
    }
)
_AGGREGATE_FUNCTIONS = frozenset({"sum", "min", "max", "avg", "count", "count_distinct"})
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
# Ids per ``IN (...)`` list: within SQLite's and PostgreSQL's limits on bound parameters.
_IDS_PER_QUERY = 10_000

_BEARER = re.compile(r"bearer\s+(\S+)\s*", re.IGNORECASE)
_ORDER_TERM = re.compile(
    r"\s*(?P<name>[\w.:]+)(?:\s+(?P<direction>asc|desc))?(?:\s+nulls\s+(?P<nulls>first|last))?\s*",
    re.IGNORECASE,
)
_LEGACY_FIELD_SPEC = re.compile(r"(\w+)(?::(\w+)(?:\((\w+)\))?)?")
_NOT_FOUND_PAGE = (
    "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
    "<p>The requested URL was not found on the server. If you entered the URL manually please "
    "check your spelling and try again.</p>\n"
)


# --- errors, serialized as Odoo's serialize_exception ------------------------------------------


class _Fault(Exception):
    """An error as Odoo sends it: the exception's Python path, its message, an HTTP status."""

    def __init__(
        self,
        name: str,
        message: str,
        status: int,
        *,
        headers: Sequence[tuple[str, str]] = (),
        debug: str | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.status = status
        self.headers = list(headers)
        self.debug = debug or f"{name}: {message}"

    @classmethod
    def from_exception(cls, error: Exception) -> _Fault:
        kind = type(error)
        return cls(
            f"{kind.__module__}.{kind.__qualname__}",
            str(error),
            HTTPStatus.INTERNAL_SERVER_ERROR,
            debug="".join(traceback.format_exception(error)),
        )

    def body(self) -> dict[str, Any]:
        # werkzeug's HTTP exceptions carry (description, code); Odoo's and Python's their message.
        arguments = [self.message, self.status] if self.name.startswith("werkzeug.") else [self.message]
        return {
            "name": self.name,
            "message": self.message,
            "arguments": arguments,
            "context": {},
            "debug": self.debug,
        }

    def jsonrpc_error(self) -> dict[str, Any]:
        if self.name == "werkzeug.exceptions.NotFound":
            return {"code": 404, "message": "404: Not Found", "data": self.body()}
        return {"code": 0, "message": "Odoo Server Error", "data": self.body()}


def _not_found(message: str) -> _Fault:
    return _Fault("werkzeug.exceptions.NotFound", message, HTTPStatus.NOT_FOUND)


def _unauthorized(message: str) -> _Fault:
    return _Fault(
        "werkzeug.exceptions.Unauthorized",
        message,
        HTTPStatus.UNAUTHORIZED,
        headers=[("WWW-Authenticate", "Bearer")],
    )


def _unprocessable(message: str) -> _Fault:
    return _Fault("werkzeug.exceptions.UnprocessableEntity", message, HTTPStatus.UNPROCESSABLE_ENTITY)


def _bad_request(message: str) -> _Fault:
    return _Fault("werkzeug.exceptions.BadRequest", message, HTTPStatus.BAD_REQUEST)


def _user_error(message: str) -> _Fault:
    return _Fault("odoo.exceptions.UserError", message, HTTPStatus.UNPROCESSABLE_ENTITY)


def _access_error(message: str) -> _Fault:
    return _Fault("odoo.exceptions.AccessError", message, HTTPStatus.FORBIDDEN)


def _access_denied() -> _Fault:
    return _Fault("odoo.exceptions.AccessDenied", "Access Denied", HTTPStatus.FORBIDDEN)


def _invalid_field(model: str, name: str) -> _Fault:
    return _Fault(
        "builtins.ValueError", f"Invalid field {name!r} on model {model!r}", HTTPStatus.INTERNAL_SERVER_ERROR
    )


def _attempt(call: Callable[[], Any]) -> Any:
    """Run one RPC call, turning whatever it raises into the fault Odoo would send."""
    try:
        return call()
    except _Fault:
        raise
    except DomainError as error:
        raise _user_error(str(error)) from error
    except Exception as error:
        raise _Fault.from_exception(error) from error


def _missing(model: str, ids: Iterable[int], uid: int) -> _Fault:
    return _Fault(
        "odoo.exceptions.MissingError",
        "Record does not exist or has been deleted.\n"
        f"(Record: {model}({', '.join(map(str, ids))},), User: {uid})",
        HTTPStatus.NOT_FOUND,
    )


# --- the model slice, and domains as SQL ------------------------------------------------------


@dataclass(frozen=True)
class _Model:
    """One model of the slice: its fields (``id`` and ``display_name`` included) and its table."""

    name: str
    fields: dict[str, Field]
    table: Table

    def field(self, name: str) -> Field:
        try:
            return self.fields[name]
        except KeyError:
            raise _invalid_field(self.name, name) from None


_MODELS = {
    name: _Model(name, {"id": _ID, **fields, "display_name": _DISPLAY_NAME}, TABLES[name])
    for name, fields in MODELS.items()
}


def _where(model: _Model, source: FromClause, term: Term) -> ColumnElement[bool]:
    """The WHERE clause of a parsed domain on ``source``: the model's table, or an alias of it."""
    return compile_term(term, partial(_condition, model, source))


def _condition(model: _Model, source: FromClause, condition: Condition) -> ColumnElement[bool]:
    """One condition, following related paths and one2many fields through EXISTS subqueries."""
    name, _, rest = condition.path.partition(".")
    field = model.field(name)
    operator, value = condition.operator, condition.value
    if rest or operator in SUBDOMAIN_OPERATORS:
        if field.relation is None:
            raise DomainError(f"{model.name}.{name} is not a relational field: {condition.path!r}")
        related = _MODELS[field.relation]
        if rest:
            inner = Condition(rest, operator, value)
            return _exists_related(model, source, name, lambda alias: _condition(related, alias, inner))
        matches = _exists_related(model, source, name, lambda alias: _where(related, alias, value))
        return matches if operator == "any" else not_(matches)
    if field.type in X2MANY_TYPES:

        def related_among(ids: list[int] | None) -> ColumnElement[bool]:
            among = None if ids is None else (lambda alias: alias.c.id.in_(ids))
            return _exists_related(model, source, name, among)

        return x2many_clause(operator, value, related_among)
    if field.type == "many2one" and _names_records(value):
        return _name_condition(model, source, name, operator, value)
    return value_clause(source.c[name], field.type, operator, normalize_value(field.type, operator, value))


def _name_condition(
    model: _Model, source: FromClause, name: str, operator: str, value: object
) -> ColumnElement[bool]:
    """A many2one compared with text matches on the related record's display name."""
    related = _MODELS[model.fields[name].relation]
    positive = {"!=": "=", "not in": "in", "not like": "like", "not ilike": "ilike"}.get(operator, operator)
    on_name = Condition("display_name", positive, value)
    matches = _exists_related(model, source, name, lambda alias: _condition(related, alias, on_name))
    return not_(matches) if operator in NEGATIVE_OPERATORS else matches


def _exists_related(
    model: _Model,
    source: FromClause,
    name: str,
    inner: Callable[[FromClause], ColumnElement[bool]] | None,
) -> ColumnElement[bool]:
    """EXISTS a record that field ``name`` of the ``source`` row leads to (and that ``inner`` holds for)."""
    field = model.fields[name]
    alias = TABLES[field.relation].alias()
    link = alias.c.id == source.c[name] if field.type == "many2one" else alias.c[field.inverse] == source.c.id
    query = exists().where(link)
    return query if inner is None else query.where(inner(alias))


def _value_renderer(field: Field, display_names: dict[int, str] | None) -> Callable[[Any], Any]:
    """How Odoo's ``read`` renders a stored value; a many2one without display names as its id."""
    if field.type == "many2one":
        if display_names is None:
            return lambda value: value or False
        return lambda value: False if value is None else [value, display_names[value]]
    if field.type == "integer":
        return lambda value: 0 if value is None else value
    if field.type in NUMERIC_TYPES:
        return lambda value: 0.0 if value is None else float(value)
    if field.type == "boolean":
        return bool
    return lambda value: False if value is None else value


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _IDS_PER_QUERY):
        yield ids[start : start + _IDS_PER_QUERY]


# --- ordering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OrderTerm:
    name: str
    descending: bool
    nulls_first: bool | None


def _parse_order(order: object) -> list[_OrderTerm]:
    if order in (None, False, ""):
        return []
    if not isinstance(order, str):
        raise _user_error(f"Invalid order {order!r}: expected a string like 'id asc'")
    terms = []
    for part in order.split(","):
        match = _ORDER_TERM.fullmatch(part)
        if match is None:
            raise _user_error(f'Invalid "order" specified ({order!r}): expected "field [asc|desc], ..."')
        nulls = match["nulls"]
        terms.append(
            _OrderTerm(
                match["name"],
                (match["direction"] or "asc").lower() == "desc",
                None if nulls is None else nulls.lower() == "first",
            )
        )
    return terms


def _ordered(expression: ColumnElement[Any], term: _OrderTerm, *, nullable: bool = True) -> Any:
    """The ORDER BY item: empty values last ascending and first descending, as in PostgreSQL."""
    ordered = expression.desc() if term.descending else expression.asc()
    if not nullable:
        return ordered
    nulls_first = term.descending if term.nulls_first is None else term.nulls_first
    return ordered.nulls_first() if nulls_first else ordered.nulls_last()


# --- grouping -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bucket:
    """A date or datetime group: its start and end as Odoo writes them, and its label."""

    start: str
    end: str
    label: str


@dataclass(frozen=True)
class _GroupBy:
    spec: str
    name: str
    field: Field
    granularity: str | None
    timezone: ZoneInfo

    def expression(self, table: Table) -> ColumnElement[Any]:
        column = table.c[self.name]
        if self.granularity is None:
            # An unset boolean groups with False.
            return func.coalesce(column, false()) if self.field.type == "boolean" else column
        if self.field.type == "datetime":
            return moment_bucket(column, self.granularity, self.timezone.key)
        return date_bucket(column, self.granularity)

    def key(self, value: Any) -> Any:
        """The group's key from the value the query gives: a bucket's first (local) day as a date."""
        if value is None:
            return None
        if self.granularity is not None:
            return date.fromisoformat(value)
        return bool(value) if self.field.type == "boolean" else value

    def bucket(self, start: date) -> _Bucket:
        return _bucket(start, self.granularity, self.timezone if self.field.type == "datetime" else None)

    def value(self, key: Any, render: Callable[[Any], Any]) -> Any:
        """The group's value in ``formatted_read_group``: ``[start, label]`` for a date bucket."""
        if key is None:
            return False
        if self.granularity is not None:
            bucket = self.bucket(key)
            return [bucket.start, bucket.label]
        return render(key)

    def legacy_value(self, key: Any, render: Callable[[Any], Any]) -> Any:
        """The group's value in legacy ``read_group``: the label alone for a date bucket."""
        if key is None:
            return False
        if self.granularity is not None:
            return self.bucket(key).label
        return render(key)

    def domain(self, key: Any) -> list[Any]:
        if key is None:
            return [[self.name, "=", False]]
        if self.granularity is not None:
            bucket = self.bucket(key)
            return ["&", [self.name, ">=", bucket.start], [self.name, "<", bucket.end]]
        return [[self.name, "=", key]]


@dataclass(frozen=True)
class _Aggregate:
    spec: str
    name: str | None  # None for "__count"
    function: str
    field_type: str

    def expression(self, table: Table) -> ColumnElement[Any]:
        if self.name is None:
            return func.count()
        column = table.c[self.name]
        if self.function == "count":
            return func.count(column)
        if self.function == "count_distinct":
            return func.count(distinct(column))
        if self.function == "sum":
            total = func.sum(column) if self.field_type == "integer" else ExactSum(column)
            return func.coalesce(total, literal_column("0"))  # Odoo sums nothing to 0
        if self.function == "avg":
            return ExactAvg(column)
        if self.field_type == "boolean":
            column = cast(column, Integer)  # PostgreSQL has no min or max of booleans
        return func.min(column) if self.function == "min" else func.max(column)


@dataclass
class _Group:
    key: tuple[Any, ...]
    values: dict[str, Any]


@lru_cache(maxsize=4096)
def _bucket(start: date, granularity: str, timezone: ZoneInfo | None) -> _Bucket:
    """A bucket of dates, or of UTC datetimes cut in ``timezone``. Groups share their few dozen
    buckets (one a day for every subscription), so each is worked out once."""
    end = _next_bucket(start, granularity)
    if timezone is None:
        return _Bucket(start.isoformat(), end.isoformat(), _label(start, granularity))
    return _Bucket(_utc_start(start, timezone), _utc_start(end, timezone), _label(start, granularity))


def _next_bucket(start: date, granularity: str | None) -> date:
    if granularity == "day":
        return start + timedelta(days=1)
    if granularity == "week":
        return start + timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[granularity]
    month_index = start.year * 12 + start.month - 1 + months
    return date(month_index // 12, month_index % 12 + 1, 1)


def _utc_start(local_day: date, timezone: ZoneInfo) -> str:
    return local_midnight_utc(local_day, timezone).strftime("%Y-%m-%d %H:%M:%S")


def _label(start: date, granularity: str | None) -> str:
    # Odoo's READ_GROUP_DISPLAY_FORMAT in English, without depending on the process locale.
    if granularity == "day":
        return f"{start.day:02d} {_MONTHS[start.month - 1][:3]} {start.year}"
    if granularity == "week":
        iso = start.isocalendar()
        return f"W{iso.week} {iso.year}"
    if granularity == "month":
        return f"{_MONTHS[start.month - 1]} {start.year}"
    if granularity == "quarter":
        return f"Q{(start.month - 1) // 3 + 1} {start.year}"
    return str(start.year)


def _timezone(context: dict[str, Any]) -> ZoneInfo:
    try:
        return ZoneInfo(context["tz"])
    except (KeyError, TypeError, ValueError, ZoneInfoNotFoundError):
        # Odoo ignores a missing or unknown context tz and buckets in UTC.
        return ZoneInfo("UTC")


def _having_clause(expressions: dict[str, ColumnElement[Any]], condition: Condition) -> ColumnElement[bool]:
    value = normalize_value("float", condition.operator, condition.value)
    return value_clause(expressions[condition.path], "float", condition.operator, value)


# --- the methods of a model -----------------------------------------------------------------


class _ModelMethods:
    """Odoo's read methods on one model, bound to one call's record ids, context and connection.

    Each public method has the parameter names of its Odoo 19 counterpart, so binding a call's
    arguments to it fails exactly where Odoo's would.
    """

    def __init__(
        self,
        standin: OdooStandIn,
        model: _Model,
        ids: Sequence[int],
        context: dict[str, Any],
        connection: Connection,
    ) -> None:
        self._standin = standin
        self._model = model
        self._ids = ids
        self._context = context
        self._connection = connection

    def search_read(
        self,
        domain: object = None,
        fields: object = None,
        offset: object = 0,
        limit: object = None,
        order: object = None,
        load: object = "_classic_read",
    ) -> list[dict[str, Any]]:
        query = self._search(domain or [], offset, limit, order)
        return self._render(
            fields, load, lambda columns: self._connection.execute(query.with_only_columns(*columns)).all()
        )

    def search(
        self, domain: object, offset: object = 0, limit: object = None, order: object = None
    ) -> list[int]:
        return list(self._connection.scalars(self._search(domain, offset, limit, order)))

    def search_count(self, domain: object, limit: object = None) -> int:
        matching = self._search(domain, 0, limit, None).order_by(None).subquery()
        return self._connection.scalar(select(func.count()).select_from(matching))

    def read(self, fields: object = None, load: object = "_classic_read") -> list[dict[str, Any]]:
        table = self._model.table
        wanted = sorted(set(self._ids))
        found = {
            record_id
            for chunk in _chunks(wanted)
            for record_id in self._connection.scalars(select(table.c.id).where(table.c.id.in_(chunk)))
        }
        missing = [record_id for record_id in self._ids if record_id not in found]
        if missing:
            raise _missing(self._model.name, missing, self._standin.uid)

        def fetch(columns: list[Any]) -> list[Any]:
            rows = {}
            for chunk in _chunks(wanted):
                rows.update(
                    (row[0], row)
                    for row in self._connection.execute(select(*columns).where(table.c.id.in_(chunk)))
                )
            return [rows[record_id] for record_id in self._ids]

        return self._render(fields, load, fetch)

    def formatted_read_group(
        self,
        domain: object,
        groupby: object = (),
        aggregates: object = (),
        having: object = (),
        offset: object = 0,
        limit: object = None,
        order: object = None,
    ) -> list[dict[str, Any]]:
        groupbys = [self._groupby(spec, default_granularity=None) for spec in _strings(groupby, "groupby")]
        requested = _strings(aggregates, "aggregates")
        having_term = parse_domain(having)
        specs = dict.fromkeys([*requested, *(condition.path for condition in conditions(having_term))])
        groups = self._groups(
            domain,
            groupbys,
            [self._aggregate(spec) for spec in specs],
            having_term,
            order,
            {spec: spec for spec in specs},
            offset,
            limit,
        )
        renderers = self._group_renderers(groups, groupbys, requested)
        return [self._formatted_group(group, groupbys, requested, renderers) for group in groups]

    def read_group(
        self,
        domain: object,
        fields: object,
        groupby: object,
        offset: object = 0,
        limit: object = None,
        orderby: object = False,
        lazy: object = True,
    ) -> list[dict[str, Any]]:
        specs = [groupby] if isinstance(groupby, str) else _strings(groupby, "groupby")
        used = specs[:1] if lazy else specs
        groupbys = [self._groupby(spec, default_granularity="month") for spec in used]
        count_name = f"{used[0].split(':')[0]}_count" if lazy and len(used) == 1 else "__count"
        result_names = {count_name: "__count", **self._legacy_aggregates(_strings(fields, "fields"), used)}
        aggregates = [self._aggregate(spec) for spec in dict.fromkeys(result_names.values())]
        groups = self._groups(
            domain, groupbys, aggregates, Constant(True), orderby, result_names, offset, limit
        )
        renderers = self._group_renderers(groups, groupbys, result_names.values())
        rows = []
        for group in groups:
            row = self._legacy_group(group, groupbys, result_names, domain, renderers)
            if lazy and specs[1:]:
                row["__context"] = {"group_by": specs[1:]}
            rows.append(row)
        return rows

    def fields_get(self, allfields: object = None, attributes: object = None) -> dict[str, dict[str, Any]]:
        wanted = set(_strings(attributes, "attributes")) if attributes else None
        described = {}
        for name in self._field_names(allfields):
            field = self._model.fields[name]
            description: dict[str, Any] = {
                "type": field.type,
                "string": name.removesuffix("_ids").removesuffix("_id").replace("_", " ").title(),
                "store": name != "display_name",
            }
            if field.relation:
                description["relation"] = field.relation
            if field.inverse:
                description["relation_field"] = field.inverse
            described[name] = {k: v for k, v in description.items() if wanted is None or k in wanted}
        return described

    # helpers ------------------------------------------------------------------------------

    def _term(self, domain: object) -> Term:
        term = parse_domain(domain)
        if (
            "active" in self._model.fields
            and self._context.get("active_test", True)
            and not any(condition.path == "active" for condition in conditions(term))
        ):
            term = Junction("&", (Condition("active", "=", True), term))
        return term

    def _search(self, domain: object, offset: object, limit: object, order: object) -> Select:
        """The SELECT of the matching ids, ordered and paged: a keyset page walks the primary key."""
        first, count = _offset(offset), _limit(limit)
        table = self._model.table
        where = _where(self._model, table, self._term(domain))
        return (
            select(table.c.id)
            .where(where)
            .order_by(*self._order_by(order))
            .offset(first or None)
            .limit(count)
        )

    def _order_by(self, order: object) -> list[Any]:
        terms = _parse_order(order) or [_OrderTerm("id", False, None)]
        table = self._model.table
        clauses = []
        for term in terms:
            if "." in term.name:
                raise _user_error(
                    f"Ordering by a related path ({term.name!r}) is not supported by the Odoo test double"
                )
            if self._model.field(term.name).type in X2MANY_TYPES:
                raise _user_error(f"Cannot order {self._model.name} by the one2many field {term.name!r}")
            clauses.append(_ordered(table.c[term.name], term, nullable=term.name != "id"))
        if all(term.name != "id" for term in terms):
            clauses.append(table.c.id.asc())  # records that tie keep their id order
        return clauses

    def _field_names(self, fields: object) -> list[str]:
        if not fields:
            return list(self._model.fields)
        names = _strings(fields, "fields")
        for name in names:
            self._model.field(name)
        return names

    def _render(
        self, fields: object, load: object, fetch: Callable[[list[Any]], list[Any]]
    ) -> list[dict[str, Any]]:
        """Fetch the page's rows (``fetch`` of the stored columns) and render them as Odoo does."""
        if load not in ("_classic_read", None, False):
            raise _user_error(f"Invalid load {load!r}: expected '_classic_read' or null")
        names = ["id", *(name for name in self._field_names(fields) if name != "id")]
        fields_of = self._model.fields
        stored = [name for name in names if fields_of[name].type not in X2MANY_TYPES]
        rows = fetch([self._model.table.c[name] for name in stored])
        position = {name: index for index, name in enumerate(stored)}
        ids = [row[0] for row in rows]
        columns: list[list[Any]] = []
        for name in names:
            field = fields_of[name]
            if field.type in X2MANY_TYPES:
                children = self._children(field, ids)
                columns.append([children.get(record_id, []) for record_id in ids])
                continue
            values = [row[position[name]] for row in rows]
            if field.type == "many2one" and load:
                render = self._renderer(name, values)
            else:
                render = _value_renderer(field, None)
            columns.append([render(value) for value in values])
        return [dict(zip(names, record, strict=True)) for record in zip(*columns, strict=True)]

    def _renderer(self, name: str, values: Iterable[Any]) -> Callable[[Any], Any]:
        """The renderer of field ``name`` for these values: a many2one's display names fetched once."""
        field = self._model.fields[name]
        if field.type != "many2one":
            return _value_renderer(field, None)
        return _value_renderer(field, self._display_names(field.relation, values))

    def _display_names(self, model: str, values: Iterable[Any]) -> dict[int, str]:
        ids = sorted({value for value in values if value is not None})
        table = TABLES[model]
        names: dict[int, str] = {}
        for chunk in _chunks(ids):
            query = select(table.c.id, table.c.display_name).where(table.c.id.in_(chunk))
            names.update((record_id, name) for record_id, name in self._connection.execute(query))
        missing = [record_id for record_id in ids if record_id not in names]
        if missing:
            # A many2one of a store broken on purpose (odoo_store.replace_records).
            raise _missing(model, missing, self._standin.uid)
        return names

    def _children(self, field: Field, parent_ids: list[int]) -> dict[int, list[int]]:
        """A one2many's related ids per record, in id order, from the inverse many2one."""
        related = TABLES[field.relation]
        inverse = related.c[field.inverse]
        children: dict[int, list[int]] = {}
        for chunk in _chunks(sorted(set(parent_ids))):
            query = select(inverse, related.c.id).where(inverse.in_(chunk)).order_by(related.c.id)
            for parent, child in self._connection.execute(query):
                children.setdefault(parent, []).append(child)
        return children

    def _groupby(self, spec: str, *, default_granularity: str | None) -> _GroupBy:
        name, _, granularity = spec.partition(":")
        field = self._model.field(name)
        if field.type in X2MANY_TYPES:
            raise _user_error(f"Cannot group {self._model.name} by the one2many field {name!r}")
        if field.type in ("date", "datetime"):
            granularity = granularity or default_granularity or ""
            if granularity not in GRANULARITIES:
                raise _user_error(
                    f"Invalid granularity {granularity!r} in groupby {spec!r}: "
                    f"expected one of {sorted(GRANULARITIES)}"
                )
        elif granularity:
            raise _user_error(
                f"Granularity {granularity!r} in groupby {spec!r} needs a date or datetime field"
            )
        return _GroupBy(spec, name, field, granularity or None, _timezone(self._context))

    def _aggregate(self, spec: str) -> _Aggregate:
        if spec == "__count":
            return _Aggregate(spec, None, "count", "integer")
        name, _, function = spec.partition(":")
        field = self._model.field(name)
        if function not in _AGGREGATE_FUNCTIONS:
            raise _user_error(
                f"Invalid aggregate {spec!r}: expected 'field:function' with a function among "
                f"{sorted(_AGGREGATE_FUNCTIONS)}, or '__count'"
            )
        if field.type in X2MANY_TYPES or (function in ("sum", "avg") and field.type not in NUMERIC_TYPES):
            raise _user_error(f"Aggregate {spec!r} does not apply to a {field.type} field")
        return _Aggregate(spec, name, function, field.type)

    def _legacy_aggregates(self, fields: list[str], groupby: list[str]) -> dict[str, str]:
        """Result name → aggregate spec for legacy ``read_group`` field specifications."""
        aggregates = {}
        for field_spec in fields:
            if field_spec == "__count":
                continue
            match = _LEGACY_FIELD_SPEC.fullmatch(field_spec)
            if match is None:
                raise _user_error(f"Invalid field specification {field_spec!r}")
            name, function, source = match.groups()
            if source:
                aggregates[name] = f"{source}:{function}"
            elif function:
                aggregates[name] = f"{name}:{function}"
            elif self._model.field(name).type in NUMERIC_TYPES and name != "id" and field_spec not in groupby:
                aggregates[name] = f"{name}:sum"
        return aggregates

    def _groups(
        self,
        domain: object,
        groupbys: list[_GroupBy],
        aggregates: list[_Aggregate],
        having: Term,
        order: object,
        aggregate_specs: dict[str, str],
        offset: object,
        limit: object,
    ) -> list[_Group]:
        """One page of groups: GROUP BY, aggregates, HAVING, ORDER BY group-by keys (default) or
        aggregates, OFFSET and LIMIT, all in one query."""
        table = self._model.table
        where = _where(self._model, table, self._term(domain))
        keys = [groupby.expression(table).label(f"group_{n}") for n, groupby in enumerate(groupbys)]
        expressions = {aggregate.spec: aggregate.expression(table) for aggregate in aggregates}
        values = {
            spec: expression.label(f"aggregate_{n}")
            for n, (spec, expression) in enumerate(expressions.items())
        }
        query = select(*keys, *values.values()).where(where).group_by(*keys)
        if having != Constant(True):
            query = query.having(compile_term(having, partial(_having_clause, expressions)))
        positions = {groupby.spec: key for groupby, key in zip(groupbys, keys, strict=True)}
        order_by = []
        for term in _parse_order(order) or [_OrderTerm(spec, False, None) for spec in positions]:
            if term.name in positions:
                order_by.append(_ordered(positions[term.name], term))
            elif term.name in aggregate_specs:
                order_by.append(_ordered(values[aggregate_specs[term.name]], term))
            else:
                raise _user_error(
                    f"Invalid order term {term.name!r}: groups order by their group-by keys or aggregates"
                )
        # Groups that tie come in the order of their first record, as they appear in id order.
        order_by.append(func.min(table.c.id))
        first, count = _offset(offset), _limit(limit)
        query = query.order_by(*order_by).offset(first or None).limit(count)
        return [
            _Group(
                tuple(groupby.key(value) for groupby, value in zip(groupbys, row[: len(keys)], strict=True)),
                dict(zip(values, row[len(keys) :], strict=True)),
            )
            for row in self._connection.execute(query).all()
        ]

    def _group_renderers(
        self, groups: list[_Group], groupbys: list[_GroupBy], specs: Iterable[str]
    ) -> dict[str, Callable[[Any], Any]]:
        """The renderers of the fields a page of groups shows, each with the display names it needs."""
        values: dict[str, list[Any]] = {}
        for position, groupby in enumerate(groupbys):
            values.setdefault(groupby.name, []).extend(group.key[position] for group in groups)
        for spec in specs:
            name, _, function = spec.partition(":")
            if function in ("min", "max"):
                values.setdefault(name, []).extend(group.values[spec] for group in groups)
        return {name: self._renderer(name, shown) for name, shown in values.items()}

    def _formatted_group(
        self,
        group: _Group,
        groupbys: list[_GroupBy],
        aggregates: list[str],
        renderers: dict[str, Callable[[Any], Any]],
    ) -> dict[str, Any]:
        row: dict[str, Any] = {}
        extra_domain: list[Any] = []
        for groupby, key in zip(groupbys, group.key, strict=True):
            row[groupby.spec] = groupby.value(key, renderers[groupby.name])
            extra_domain += groupby.domain(key)
        for spec in aggregates:
            row[spec] = self._aggregate_value(spec, group.values[spec], renderers)
        row["__extra_domain"] = extra_domain
        return row

    def _legacy_group(
        self,
        group: _Group,
        groupbys: list[_GroupBy],
        result_names: dict[str, str],
        domain: object,
        renderers: dict[str, Callable[[Any], Any]],
    ) -> dict[str, Any]:
        row: dict[str, Any] = {}
        group_domain: list[Any] = []
        ranges: dict[str, Any] = {}
        for groupby, key in zip(groupbys, group.key, strict=True):
            row[groupby.spec] = groupby.legacy_value(key, renderers[groupby.name])
            group_domain += groupby.domain(key)
            if groupby.granularity is not None and key is None:
                ranges[groupby.spec] = False
            elif groupby.granularity is not None:
                bucket = groupby.bucket(key)
                ranges[groupby.spec] = {"from": bucket.start, "to": bucket.end}
        for result_name, spec in result_names.items():
            row[result_name] = self._aggregate_value(spec, group.values[spec], renderers)
        row["__domain"] = [*group_domain, *domain]
        if ranges:
            row["__range"] = ranges
        return row

    def _aggregate_value(self, spec: str, value: Any, renderers: dict[str, Callable[[Any], Any]]) -> Any:
        if value is None:
            return False
        name, _, function = spec.partition(":")
        if function in ("min", "max"):
            return renderers[name](value)
        if function in ("sum", "avg") and self._model.fields[name].type != "integer":
            return float(value)
        return value


def _strings(value: object, argument: str) -> list[str]:
    if value in (None, False):
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise _user_error(f"Invalid {argument}: expected a list of strings, got {value!r}")
    return list(value)


def _offset(offset: object) -> int:
    if offset in (None, False):
        return 0
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise _user_error(f"Invalid offset {offset!r}: expected a non-negative integer")
    return offset


def _limit(limit: object) -> int | None:
    # Odoo treats every false limit (None, False, 0) as "no limit".
    if not limit:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise _user_error(f"Invalid limit {limit!r}: expected a non-negative integer")
    return limit


# --- the WSGI application ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _json_response(
    payload: Any, status: int = HTTPStatus.OK, headers: Sequence[tuple[str, str]] = ()
) -> _Response:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return _Response(status, body, "application/json; charset=utf-8", list(headers))


def _fault_response(fault: _Fault) -> _Response:
    return _json_response(fault.body(), fault.status, fault.headers)


def _not_found_page() -> _Response:
    return _Response(HTTPStatus.NOT_FOUND, _NOT_FOUND_PAGE.encode(), "text/html; charset=utf-8")


def _request_body(environ: WSGIEnvironment) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length > 0 else b""


class RequestCounter(Counter[str]):
    """Calls served, per ``"<model>.<method>"``, counted from every thread of the server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def add(self, key: str) -> None:
        with self._lock:
            self[key] += 1

    def copy(self) -> Counter[str]:
        with self._lock:
            return Counter(self)


class OdooStandIn:
    """A WSGI test double of Odoo 19 serving the records of an Odoo store, read-only.

    ``OdooStandIn(models)`` loads ``models`` (model name → records in ``odoo_models``' storage
    format) into a private in-memory SQLite store, checked as ``odoo_store.load_models`` checks
    them (ids unique, fields within the model slice, every many2one pointing at a record that
    exists); ``OdooStandIn(store=url)`` (or ``from_store``) serves an existing store, a SQLite
    file opened read-only or a PostgreSQL database. ``requests`` counts the calls served.
    """

    def __init__(
        self,
        models: dict[str, list[Record]] | None = None,
        *,
        store: str | None = None,
        database: str = SANDBOX_DATABASE,
        api_key: str = SANDBOX_API_KEY,
        login: str = SANDBOX_LOGIN,
        uid: int = SANDBOX_UID,
        version: str = "19.0",
    ) -> None:
        if models is not None and store is not None:
            raise ValueError(
                "The Odoo test double serves either the records it is given or a store, not both"
            )
        self.database = database
        self.api_key = api_key
        self.login = login
        self.uid = uid
        self.version = version
        self.requests = RequestCounter()
        self._engine = (
            open_store_read_only(store) if store is not None else load_models("sqlite://", models or {})
        )
        # An in-memory SQLite store is one connection: requests from several threads take turns.
        self._turns: AbstractContextManager[Any] = (
            threading.Lock() if isinstance(self._engine.pool, StaticPool) else nullcontext()
        )

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> OdooStandIn:
        """Load ``{"database"?, "api_key"?, "login"?, "models": {model: [records]}}`` (JSON)."""
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            document["models"],
            database=document.get("database", SANDBOX_DATABASE),
            api_key=document.get("api_key", SANDBOX_API_KEY),
            login=document.get("login", SANDBOX_LOGIN),
        )

    @classmethod
    def from_store(cls, url: str, **credentials: Any) -> OdooStandIn:
        """Serve the store at ``url`` (``odoo_store``), with these credentials or the sandbox's."""
        return cls(store=url, **credentials)

    def close(self) -> None:
        """Close the store's connections."""
        self._engine.dispose()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        response = self._respond(environ)
        status = HTTPStatus(response.status)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *response.headers,
        ]
        start_response(f"{status.value} {status.phrase}", headers)
        return [response.body]

    # routing --------------------------------------------------------------------------------

    def _respond(self, environ: WSGIEnvironment) -> _Response:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path in ("/web/version", "/json/version"):
            return _json_response({"version": self.version, "version_info": self._version_info()})
        if path == "/jsonrpc":
            if method != "POST":
                return _fault_response(_method_not_allowed())
            return self._jsonrpc(_request_body(environ))
        if path == "/json/2" or path.startswith("/json/2/"):
            return self._json2(environ, method, path)
        return _not_found_page()

    def _version_info(self) -> list[Any]:
        major, _, minor = self.version.partition(".")
        return [int(major), int(minor or 0), 0, "final", 0, ""]

    # JSON-2 ---------------------------------------------------------------------------------

    def _json2(self, environ: WSGIEnvironment, method: str, path: str) -> _Response:
        database = environ.get("HTTP_X_ODOO_DATABASE")
        if database is not None and database != self.database:
            return _not_found_page()
        try:
            if method != "POST":
                raise _method_not_allowed()
            parts = path.split("/")
            if len(parts) != 5 or not parts[3] or not parts[4]:
                raise _not_found("Did you mean POST /json/2/<model>/<method>?")
            self._authenticate_bearer(environ.get("HTTP_AUTHORIZATION"))
            arguments = _json2_arguments(_request_body(environ))
            result = _attempt(lambda: self._call_json2(parts[3], parts[4], arguments))
        except _Fault as fault:
            return _fault_response(fault)
        return _json_response(result)

    def _authenticate_bearer(self, authorization: str | None) -> None:
        if authorization is None:
            raise _unauthorized("Missing API key: send 'Authorization: bearer <key>'")
        match = _BEARER.fullmatch(authorization)
        if match is None or match[1] != self.api_key:
            raise _unauthorized("Invalid apikey")

    def _call_json2(self, model_name: str, method: str, arguments: dict[str, Any]) -> Any:
        self.requests.add(f"{model_name}.{method}")
        model = _MODELS.get(model_name)
        if model is None:
            raise _not_found(f"the model {model_name!r} does not exist")
        ids = arguments.pop("ids", [])
        context = arguments.pop("context", {})
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise _unprocessable(f"ids must be a list of record ids, not {ids!r}")
        if not isinstance(context, dict):
            raise _unprocessable(f"context must be an object, not {context!r}")
        with self._connect() as connection:
            try:
                function = self._method(model, method, ids, context, connection)
            except AttributeError as error:
                raise _not_found(str(error)) from error
            if method in _MODEL_METHODS and ids:
                raise _unprocessable(f"cannot call {model_name}.{method} with ids")
            try:
                inspect.signature(function).bind(**arguments)
            except TypeError as error:
                raise _unprocessable(str(error)) from error
            return function(**arguments)

    # legacy /jsonrpc --------------------------------------------------------------------------

    def _jsonrpc(self, body: bytes) -> _Response:
        try:
            request = json.loads(body)
        except ValueError:
            return _Response(HTTPStatus.BAD_REQUEST, b"Invalid JSON data", "text/plain; charset=utf-8")
        if not isinstance(request, dict) or not isinstance(request.get("params", {}), dict):
            return _Response(HTTPStatus.BAD_REQUEST, b"Invalid JSON-RPC data", "text/plain; charset=utf-8")
        envelope = {"jsonrpc": "2.0", "id": request.get("id")}
        try:
            result = _attempt(lambda: self._dispatch_rpc(request.get("params", {})))
        except _Fault as fault:
            return _json_response({**envelope, "error": fault.jsonrpc_error()})
        return _json_response({**envelope, "result": result})

    def _dispatch_rpc(self, params: dict[str, Any]) -> Any:
        service, method, args = params.get("service"), params.get("method"), params.get("args", [])
        if not isinstance(args, list):
            raise TypeError(f"args must be a list, not {type(args).__name__}")
        if service == "common":
            handlers = {
                "version": self._common_version,
                "login": self._common_login,
                "authenticate": self._common_authenticate,
            }
            if method not in handlers:
                raise _Fault(
                    "builtins.Exception", f"Method not found: {method}", HTTPStatus.INTERNAL_SERVER_ERROR
                )
            return handlers[method](*args)
        if service == "object":
            if method != "execute_kw":
                raise _Fault(
                    "builtins.NameError", f"Method not available {method}", HTTPStatus.INTERNAL_SERVER_ERROR
                )
            return self._execute_kw(*args)
        raise _not_found(f"The Odoo test double has no RPC service {service!r}")

    def _common_version(self) -> dict[str, Any]:
        return {
            "server_version": self.version,
            "server_version_info": self._version_info(),
            "server_serie": self.version,
            "protocol_version": 1,
        }

    def _common_login(self, db: str, login: str, password: str) -> int | bool:
        return self._common_authenticate(db, login, password, {})

    def _common_authenticate(
        self, db: str, login: str, password: str, user_agent_env: dict[str, Any]
    ) -> int | bool:
        if db == self.database and login == self.login and password == self.api_key:
            return self.uid
        return False

    def _execute_kw(
        self,
        db: str,
        uid: int,
        password: str,
        model_name: str,
        method: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if db != self.database or uid != self.uid or password != self.api_key:
            raise _access_denied()
        self.requests.add(f"{model_name}.{method}")
        model = _MODELS.get(model_name)
        if model is None:
            raise _user_error(f"Object {model_name} doesn't exist")
        arguments = list(args or [])
        keywords = dict(kwargs or {})
        context = keywords.pop("context", None) or {}
        ids: list[int] = []
        if method in _RECORD_METHODS:
            if not arguments:
                raise TypeError(f"{model_name}.{method}() takes the record ids as its first argument")
            first = arguments.pop(0)
            ids = first if isinstance(first, list) else [first]
        with self._connect() as connection:
            function = self._method(model, method, ids, context, connection)
            inspect.signature(function).bind(*arguments, **keywords)
            return function(*arguments, **keywords)

    # shared ---------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self._turns, self._engine.connect() as connection:
            yield connection

    def _method(
        self, model: _Model, method: str, ids: Sequence[int], context: dict[str, Any], connection: Connection
    ) -> Callable[..., Any]:
        """The model method a call names, refusing private and writing ones as Odoo would."""
        if method.startswith("_"):
            raise _access_error(
                f"Private methods (such as '{model.name}.{method}') cannot be called remotely."
            )
        if method in _WRITE_METHODS:
            raise _access_error(
                f"You are not allowed to modify '{model.name}' records: the user '{self.login}' "
                "of this Odoo test double is read-only."
            )
        if method not in _MODEL_METHODS | _RECORD_METHODS:
            raise AttributeError(f"The method '{model.name}.{method}' does not exist")
        return getattr(_ModelMethods(self, model, ids, context, connection), method)


def _method_not_allowed() -> _Fault:
    return _Fault(
        "werkzeug.exceptions.MethodNotAllowed",
        "The method is not allowed for the requested URL.",
        HTTPStatus.METHOD_NOT_ALLOWED,
        headers=[("Allow", "POST")],
    )


def _json2_arguments(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        arguments = json.loads(body)
    except ValueError as error:
        raise _bad_request(f"could not parse the body as json: {error}") from error
    if not isinstance(arguments, dict):
        raise _bad_request("the body must be a JSON object of named arguments")
    return arguments


def _names_records(value: object) -> bool:
    items = value if isinstance(value, list | tuple) else [value]
    return any(isinstance(item, str) for item in items)


# --- serving over a real port -------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietRequestHandler(WSGIRequestHandler):
    # A response leaves in two writes, headers then body: with Nagle's algorithm the second waits
    # for the client's delayed ACK, some 40 ms a request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing per request: a keyset read of the ledger is hundreds of requests."""


def make_odoo_server(app: OdooStandIn, host: str = "127.0.0.1", port: int = 8069) -> WSGIServer:
    """A threaded HTTP server for the app, bound (port 0 picks a free port) but not yet serving."""
    return make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietRequestHandler)


def serve(app: OdooStandIn, host: str = "127.0.0.1", port: int = 8069) -> None:
    """Serve the app on ``host:port`` until interrupted."""
    with make_odoo_server(app, host, port) as server:
        logger.info("Odoo test double listening on http://%s:%s", host, server.server_port)
        server.serve_forever()


def serve_store(url: str, host: str = "127.0.0.1", port: int = 8069, **credentials: Any) -> None:
    """Serve the store at ``url`` until interrupted: in a process of its own, the double's SQL and
    JSON do not compete with the client for one interpreter."""
    serve(OdooStandIn.from_store(url, **credentials), host, port)


@contextmanager
def serving(app: OdooStandIn, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the app from a background thread; yield its base URL; stop and close on exit."""
    server = make_odoo_server(app, host, port)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="odoo-test-double", daemon=True
    )
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
