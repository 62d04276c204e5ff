"""A test double of Odoo 19's external API, for the embedded sandbox and the test suite.

This is not Odoo. It is a small WSGI application that serves, from records held in an SQL database
(``odoo_store``: SQLite in memory for the records it is given, a SQLite file or PostgreSQL for a
store of any size), the slice of Odoo 19 Enterprise that the reconciliation reads, the importer
writes and NexaCloud's metering pushes usage to (docs/design.md §5, §9 and §10; models and fields
in ``odoo_models.MODELS``), and answers the way Odoo answers on the wire, so that the production
client runs unchanged against it, in-process through ``httpx.WSGITransport`` or over a real port
(``serve``/``serving``/``serve_store``):

- JSON-2: ``POST /json/2/<model>/<method>`` with ``Authorization: bearer <key>`` and
  ``X-Odoo-Database``; the body holds the named arguments; success is HTTP 200 and the bare
  result; an error is ``{"name", "message", "arguments", "context", "debug"}`` with 401 (bad or
  missing key), 403 (a private method, or a write the user may not make), 404 (unknown model or
  method, or a record that does not exist), 405 (not POST), 422 (bad argument or domain, a record
  without a required field), 500 (unknown field, as Odoo's ``builtins.ValueError``). A wrong
  ``X-Odoo-Database`` is a 404 with an HTML page, as Odoo answers when its database filter
  rejects the name.
- Legacy ``POST /jsonrpc`` (``common.version``/``login``/``authenticate``, ``object.execute_kw``):
  always HTTP 200, errors inside the JSON-RPC envelope with ``"code": 0``, or ``404`` for a
  ``werkzeug.exceptions.NotFound`` (as Odoo's JsonRPCDispatcher does).
- ``GET /doc-bearer/<model>.json`` (bearer key): the api_doc addon's document of one model, its
  fields (``fields_get`` with ``name`` and ``module``) and the methods served here with their
  parameters in call order and ``api`` (``"model"`` for model methods), which is how Odoo's client
  library ``odoo-client-lib`` maps positional arguments to JSON-2's named ones.
- ``POST /usage`` (bearer key): the Nexa billing module's usage endpoint, contract v1, below.
- ``GET /web/version``.

Three users, each with an API key that is also its password over ``/jsonrpc``: the
reconciliation's (``SANDBOX_LOGIN``) reads everything and writes nothing; the importer's
(``SANDBOX_IMPORTER_LOGIN``) reads everything and may ``load``, ``create`` and ``write``
``res.partner``, ``product.product``, ``sale.order`` and ``sale.order.line``
(``SANDBOX_IMPORTER_MODELS``); NexaCloud's metering (``SANDBOX_METERING_LOGIN``) is the only
user that may push to ``/usage``, and does nothing else: it logs in over ``/jsonrpc``, but every
model method, read or write, is a 403 ``AccessError`` to it. Any other write is a 403 ``odoo.exceptions.AccessError``, and ``unlink`` (like
``copy`` and the other writing methods) is refused to all. A store served from a URL is opened
read-only unless the double is built ``writable=True``; writing to it (or pushing usage) then is
a 403 saying so. An in-memory double is always writable.

Read methods: ``search_read``, ``search``, ``search_count``, ``read``, ``formatted_read_group``,
``read_group`` (legacy shape) and ``fields_get``. As Odoo does on PostgreSQL, each answers with SQL:
the domain becomes a WHERE clause (related paths, ``any`` and one2many conditions EXISTS
subqueries), groups a GROUP BY with SQL aggregates, date and datetime buckets cut in the context's
time zone; a page's many2one display names and one2many ids take one query per field. No table is
ever read into memory. Records render as Odoo renders them: many2one as ``[id, display_name]``,
empty values as ``false`` except numbers (``0``), one2many as ids. Like Odoo, searches on a model
with an ``active`` field skip archived records unless the domain mentions ``active`` or the
context sets ``active_test: false``; a record stored before its model had ``active`` (NULL) is
active, as Odoo fills a column it adds with the field's default.

Write methods, each call one transaction, committed only when the call succeeds:

- ``create(vals_list)``: a dict or a list of dicts of values as ``read`` gives them (a many2one is
  an id or ``false``); JSON-2 answers the list of new ids, ``/jsonrpc`` an id for a dict and a
  list for a list. ``write(vals)`` on the call's ids answers ``true``; an id that does not exist
  is Odoo's ``MissingError`` (404). A field outside the model is a 500 ``builtins.ValueError``
  (``Invalid field 'x' in 'res.partner'``); a required field left empty (``sale.order``'s
  ``partner_id``, ``sale.order.line``'s ``order_id``) or a many2one to no record is a 422
  ``odoo.exceptions.ValidationError``. A ``sale.order`` created without a name is named as
  Odoo's sequence names it, ``S`` and five digits after the highest such name. Neither creates
  external ids.
- ``load(fields, data)``, Odoo's import: ``fields`` are columns (``id`` the external id, a name
  without a dot taking module ``__import__`` or the context's ``module``; ``.id`` the database
  id; ``<many2one>/id``, ``<many2one>/.id`` and a bare ``<many2one>`` matched by exact display
  name), ``data`` rows of strings as in a CSV file (``""`` empty; booleans ``1/0``,
  ``true/false``, ``yes/no`` in any case; dates ``YYYY-MM-DD``). Per row: an external id that
  exists updates its record, one whose record was deleted gets a new record and is repointed,
  an unknown one creates the record and its ``ir.model.data`` row; a row without one creates a
  record. The answer is ``{"ids", "messages", "nextrow": 0}``, the messages shaped and worded as
  Odoo's (``type``, ``message``, ``record`` the row index, ``rows`` ``{"from", "to"}``, ``field``
  and, for a value that does not convert, ``field_name`` and often ``moreinfo``); one error
  message rolls the whole call back and makes ``ids`` ``false``. An unknown column is not a
  message but a 500 ``builtins.ValueError`` (``Invalid field name 'x'``); one2many columns
  (``order_line/...``) are refused (422): load the lines on their own with ``order_id/id``.

Where the double has to choose, it chooses simply and says so: results order by ``id asc``
unless told otherwise (records that tie on the order come in id order, groups in the order of
their first record), and a many2one orders (and groups) by the related id, not by the related
model's ``_order``; a missing ``X-Odoo-Database`` header is accepted, as on a one-database
server; a missing key is a 401 like a wrong one; malformed domains, orders, group-by and
aggregate specifications are 422 ``odoo.exceptions.UserError`` (Odoo itself raises a mix of
``ValueError`` and ``UserError``); week buckets are ISO weeks labelled ``W<week> <year>``. A new
record's id is one more than the highest; writes are serialized within one double.

``POST /usage`` (docs/design.md §10) stores pushed usage into ``fusion.billing.usage``. The body
is one record ``{"subscription_id", "metric", "quantity", "idempotency_key", "timestamp"}`` or a
batch ``{"records": [...]}`` of at most ``USAGE_BATCH_LIMIT`` (1000); every answer is JSON, an
error ``{"error": {"code", "message", "field"}}`` (``field`` the record's field at fault, or
``null``). A record must have an integer ``subscription_id`` (an id: from 1 to 2³¹ − 1), a
``metric`` among ``USAGE_METRICS`` (``cpu_seconds``), a number ``quantity`` ≥ 0 (finite), a
non-empty string ``idempotency_key`` and a ``timestamp`` ``"YYYY-MM-DD HH:MM:SS"`` (UTC) that is
a real moment; otherwise, and for a body that is not JSON, not an object, or a batch whose
``records`` is not an array or holds more than 1000, it is a 422 ``invalid`` naming the first bad
field in that order (``null`` for the body or a record that is not an object). Fields outside the
contract are ignored. Quantities are kept to three decimals, half-up, as CPU-seconds are stored; so are they
compared. Idempotency is scoped to (subscription, metric, key): the ledger holding a record with
the same three and the same quantity makes the push a duplicate of the first such record (200
``{"id", "status": "duplicate", "duplicate": true}``), another quantity a 409 ``conflict`` on
``quantity``, nothing stored; otherwise the record is stored with the next id (201 ``{"id",
"status": "created"}``). Only the metering user pushes: a missing or unknown key is a 401
``unauthorized``, the other users a 403 ``forbidden``; it may push to a ``sale.order`` with
``is_subscription`` whose partner has an external id in module ``nexacloud`` (an imported
customer's), any other ``sale.order`` is a 403 ``forbidden`` and an id of none a 404
``not_found``, both on ``subscription_id``. A batch answers 200 ``{"results": [{"idempotency_key",
"status", "id", "error"}, ...]}`` in request order, each record on its own (``created``,
``duplicate``, ``conflict``, or ``rejected`` with the 422/403/404's error; ``id`` null unless
created or duplicate; ``idempotency_key`` null unless a string); a record repeating an earlier
one's key in the same batch is judged against it. A request is one transaction, under the
double's write lock, its keys looked up inside it (one query, through the ledger's index on
``subscription_id``), so concurrent pushes of one key store it once; a wrong ``X-Odoo-Database``
is the 404 HTML page, a method other than POST a 405. ``requests`` counts each HTTP request to
``/usage`` as ``"usage.push"``, whatever its answer.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import re
import threading
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from functools import lru_cache, partial
from http import HTTPStatus
from math import isfinite
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
    literal,
    literal_column,
    not_,
    select,
    true,
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
    MODEL_MODULES,
    MODEL_NAMES,
    MODELS,
    SANDBOX_API_KEY,
    SANDBOX_DATABASE,
    SANDBOX_IMPORTER_API_KEY,
    SANDBOX_IMPORTER_LOGIN,
    SANDBOX_IMPORTER_MODELS,
    SANDBOX_IMPORTER_UID,
    SANDBOX_LOGIN,
    SANDBOX_METERING_API_KEY,
    SANDBOX_METERING_LOGIN,
    SANDBOX_METERING_UID,
    SANDBOX_UID,
    USAGE_BATCH_LIMIT,
    USAGE_METRICS,
    Field,
)
from fusion_billing_assets.sandbox.odoo_store import (
    GRANULARITIES,
    TABLES,
    X2MANY_TYPES,
    ExactAvg,
    ExactSum,
    date_bucket,
    delete_record,
    insert_record,
    load_models,
    moment_bucket,
    next_id,
    open_store,
    open_store_read_only,
    stored_record,
    update_record,
)

logger = logging.getLogger(__name__)

Record = dict[str, Any]
WSGIEnvironment = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_ID = Field("integer")
_DISPLAY_NAME = Field("char")

_READ_METHODS = frozenset(
    {"search_read", "search", "search_count", "read", "formatted_read_group", "read_group", "fields_get"}
)
# The writing methods served, to the users that may write the model.
_SERVED_WRITES = frozenset({"load", "create", "write"})
_MODEL_METHODS = frozenset(
    {
        "search_read",
        "search",
        "search_count",
        "formatted_read_group",
        "read_group",
        "fields_get",
        "create",
        "load",
    }
)
_RECORD_METHODS = frozenset({"read", "write"})
_WRITE_METHODS = _SERVED_WRITES | frozenset(
    {"unlink", "copy", "name_create", "toggle_active", "action_archive", "action_unarchive", "web_save"}
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


def _validation_error(message: str) -> _Fault:
    return _Fault("odoo.exceptions.ValidationError", message, HTTPStatus.UNPROCESSABLE_ENTITY)


def _value_error(message: str) -> _Fault:
    return _Fault("builtins.ValueError", message, HTTPStatus.INTERNAL_SERVER_ERROR)


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
    column = _stored(field, source.c[name])
    return value_clause(column, field.type, operator, normalize_value(field.type, operator, value))


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
        return (
            bool if field.default is None else lambda value: field.default if value is None else bool(value)
        )
    return lambda value: False if value is None else value


def _stored(field: Field, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """A stored column as conditions and groups see it: NULL is the field's default, if it has one
    (a record stored before its model had ``active`` is active)."""
    if field.default is None:
        return column
    return func.coalesce(column, true() if field.default is True else literal(field.default))


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
        column = _stored(self.field, table.c[self.name])
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
    """Odoo's methods on one model, bound to one call's record ids, context, connection and user.

    Each public method has the parameter names of its Odoo 19 counterpart, so binding a call's
    arguments to it fails exactly where Odoo's would.
    """

    def __init__(
        self,
        model: _Model,
        ids: Sequence[int],
        context: dict[str, Any],
        connection: Connection,
        uid: int,
    ) -> None:
        self._model = model
        self._ids = ids
        self._context = context
        self._connection = connection
        self._uid = uid

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
            raise _missing(self._model.name, missing, self._uid)

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
            description = _field_description(name, self._model.fields[name])
            described[name] = {k: v for k, v in description.items() if wanted is None or k in wanted}
        return described

    def create(self, vals_list: object) -> list[int]:
        records = [vals_list] if isinstance(vals_list, dict) else vals_list
        if not isinstance(records, list) or not all(isinstance(values, dict) for values in records):
            raise _unprocessable(
                f"vals_list must be an object of field values or a list of them, not {vals_list!r}"
            )
        writer = self._writer()
        return [writer.create_checked(self._given_values(values)) for values in records]

    def write(self, vals: object) -> bool:
        if not isinstance(vals, dict):
            raise _unprocessable(f"vals must be an object of field values, not {vals!r}")
        values = self._given_values(vals)
        ids = list(dict.fromkeys(self._ids))
        missing = sorted(set(ids) - self._existing(ids))
        if missing:
            raise _missing(self._model.name, missing, self._uid)
        writer = self._writer()
        for record_id in ids:
            writer.write_checked(record_id, values)
        return True

    def load(self, fields: object, data: object) -> dict[str, Any]:
        columns = _load_columns(self._model, fields)
        if not isinstance(data, list) or not all(
            isinstance(row, list) and all(isinstance(cell, str) for cell in row) for row in data
        ):
            raise _unprocessable(
                "data must be a list of rows, each a list of strings (cells as in a CSV file)"
            )
        module = self._context.get("module") or _IMPORT_MODULE
        answer = _Import(self._model, self._writer(), self._context, columns, str(module)).run(data)
        if answer["ids"] is False:
            raise _RolledBack(answer)
        return answer

    # helpers ------------------------------------------------------------------------------

    def _writer(self) -> _Writer:
        return _Writer(self._model, self._connection)

    def _existing(self, ids: Sequence[int]) -> set[int]:
        table = self._model.table
        return {
            record_id
            for chunk in _chunks(sorted(set(ids)))
            for record_id in self._connection.scalars(select(table.c.id).where(table.c.id.in_(chunk)))
        }

    def _given_values(self, vals: dict[str, Any]) -> Record:
        """``create``/``write`` values (JSON, as ``read`` renders them) in the storage format.

        ``id`` and ``display_name`` are dropped, as Odoo drops magic and computed fields; a name
        outside the model is Odoo's ``ValueError``, a value that does not fit its field too.
        """
        values = {}
        for name, value in vals.items():
            if name in ("id", "display_name"):
                continue
            field = self._model.fields.get(name)
            if field is None:
                raise _value_error(f"Invalid field {name!r} in {self._model.name!r}")
            if field.type in X2MANY_TYPES:
                raise _user_error(
                    f"The Odoo test double takes no one2many commands ({self._model.name}.{name}): "
                    f"create or write the {field.relation} records on their own, with {field.inverse}"
                )
            values[name] = _storage_value(self._model, name, value)
        return values

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
            raise _missing(model, missing, self._uid)
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


def _field_description(name: str, field: Field) -> dict[str, Any]:
    """One field as ``fields_get`` describes it."""
    description: dict[str, Any] = {
        "type": field.type,
        "string": field.label(name),
        "required": field.required,
        "store": name != "display_name",
    }
    if field.relation:
        description["relation"] = field.relation
    if field.inverse:
        description["relation_field"] = field.inverse
    return description


# --- the api_doc addon's document of a model ----------------------------------------------------

_NOT_FOUND_DESCRIPTION = (
    "The requested URL was not found on the server. If you entered the URL manually please check "
    "your spelling and try again."
)


def _model_document(model: _Model) -> dict[str, Any]:
    """What Odoo 19's api_doc addon serves at ``/doc-bearer/<model>.json``: the model, its fields
    (``fields_get`` with each field's ``name`` and ``module``) and its public methods, by name."""
    module = MODEL_MODULES[model.name]
    return {
        "model": model.name,
        "name": MODEL_NAMES[model.name],
        "doc": None,
        "fields": {
            name: {
                **_field_description(name, field),
                "name": name,
                "module": None if name in ("id", "display_name") else module,
            }
            for name, field in model.fields.items()
        },
        "methods": {name: _method_document(name) for name in sorted(_MODEL_METHODS | _RECORD_METHODS)},
    }


def _method_document(name: str) -> dict[str, Any]:
    """One method as api_doc reflects it: its parameters in call order (``self`` left out, each
    with its default when it has one), and ``api``: ``model`` for a method of the model rather than
    of records (which JSON-2 calls without ``ids``), ``readonly`` for a read."""
    parameters = list(inspect.signature(getattr(_ModelMethods, name)).parameters.values())[1:]
    described = {}
    for parameter in parameters:
        entry: dict[str, Any] = {}
        if parameter.kind is not parameter.POSITIONAL_OR_KEYWORD:
            entry["kind"] = parameter.kind.name
        if parameter.default is not parameter.empty:
            entry["default"] = parameter.default
        described[parameter.name] = entry
    signature = ", ".join(
        parameter.name if parameter.default is parameter.empty else f"{parameter.name}={parameter.default!r}"
        for parameter in parameters
    )
    document: dict[str, Any] = {"signature": f"({signature})", "parameters": described}
    api = [*(["model"] if name in _MODEL_METHODS else []), *(["readonly"] if name in _READ_METHODS else [])]
    if api:
        document["api"] = api
    return {**document, "model": "core", "module": "core"}


# --- writing: create, write and load ---------------------------------------------------------

_IMPORT_MODULE = "__import__"  # Odoo's module for an imported external id given without one
_TRUES = frozenset({"1", "true", "yes"})
_FALSES = frozenset({"", "0", "false", "no"})
_ORDER_NAME = re.compile(r"S(\d{5})")
_DATE_FORMAT = "%Y-%m-%d"
_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class _RolledBack(Exception):
    """Raised out of a write call's transaction to roll all of it back, and still answer ``answer``."""

    def __init__(self, answer: Any) -> None:
        super().__init__("rolled back")
        self.answer = answer


def _storage_value(model: _Model, name: str, value: Any) -> Any:
    """A value for a stored field, as Odoo's fields convert what ``create``/``write`` get (an empty
    number is 0, an empty boolean False), in the storage format; ``ValueError`` when it does not fit."""
    field = model.fields[name]
    if field.type == "many2one":
        if value is None or value is False:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"Wrong value for {model.name}.{name}: {value!r} (a record id or false)")
        return value or None
    if field.type == "integer":
        return int(value or 0)
    if field.type in NUMERIC_TYPES:
        return float(value or 0.0)
    if field.type == "boolean":
        return bool(value)
    if value is None or value is False:
        return None
    if field.type == "date":
        return _parsed_date(value).isoformat()
    if field.type == "datetime":
        return _parsed_datetime(value).strftime(_DATETIME_FORMAT)
    return value if isinstance(value, str) else str(value)


def _parsed_date(value: object) -> date:
    # Odoo's Date.to_date: the first ten characters of a string.
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date")
    return datetime.strptime(value[:10], _DATE_FORMAT).date()


def _parsed_datetime(value: object) -> datetime:
    # Odoo's Datetime.to_datetime: a day alone is its midnight.
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a datetime")
    if len(value) == 10:
        return datetime.strptime(value, _DATE_FORMAT)
    return datetime.strptime(value[:19], _DATETIME_FORMAT)


def _missing_required(model: _Model, values: Record, *, creating: bool) -> str | None:
    """The first required field that ``values`` would leave empty (all of them, for a new record)."""
    for name, field in model.fields.items():
        if field.required and (name in values or creating) and values.get(name) is None:
            return name
    return None


def _missing_required_message(model: _Model, name: str) -> str:
    return f"Missing required value for the field '{model.fields[name].label(name)}' ({name})"


class _Writer:
    """Creates and writes records of one model in the call's transaction, as Odoo's ORM would:
    defaults and display names filled in, a ``sale.order`` without a name named by its sequence."""

    def __init__(self, model: _Model, connection: Connection) -> None:
        self.model = model
        self.connection = connection
        self._last_order_number: int | None = None

    def create_checked(self, values: Record) -> int:
        """Create a record from ``create``'s values, refusing an empty required field or a many2one
        to no record as Odoo's database constraints do (``ValidationError``)."""
        missing = _missing_required(self.model, values, creating=True)
        if missing is not None:
            raise _validation_error(_missing_required_message(self.model, missing))
        self._check_relations(values)
        return self.create(values)

    def write_checked(self, record_id: int, values: Record) -> None:
        missing = _missing_required(self.model, values, creating=False)
        if missing is not None:
            raise _validation_error(_missing_required_message(self.model, missing))
        self._check_relations(values)
        self.write(record_id, values)

    def create(self, values: Record) -> int:
        values = dict(values)
        if self.model.name == "sale.order" and values.get("name") in (None, "", "New"):
            values["name"] = self._next_order_name()
        record_id = next_id(self.connection, self.model.name)
        insert_record(self.connection, self.model.name, {**values, "id": record_id})
        return record_id

    def write(self, record_id: int, values: Record) -> None:
        update_record(self.connection, self.model.name, record_id, values)

    def _check_relations(self, values: Record) -> None:
        for name, value in values.items():
            field = self.model.fields[name]
            if field.type != "many2one" or value is None:
                continue
            related = TABLES[field.relation]
            if self.connection.scalar(select(related.c.id).where(related.c.id == value)) is None:
                raise _validation_error(
                    f"The operation cannot be completed: {self.model.name}.{name} refers to "
                    f"{field.relation}({value},), which does not exist."
                )

    def _next_order_name(self) -> str:
        """Odoo's ``sale.order`` sequence: ``S`` and five digits, one after the highest such name."""
        if self._last_order_number is None:
            table = TABLES["sale.order"]
            names = self.connection.scalars(select(table.c.name).where(table.c.name.like("S_____")))
            numbers = [int(match[1]) for name in names if (match := _ORDER_NAME.fullmatch(name))]
            self._last_order_number = max(numbers, default=0)
        self._last_order_number += 1
        return f"S{self._last_order_number:05d}"


# --- load: Odoo's import of rows of strings -----------------------------------------------------


@dataclass(frozen=True)
class _LoadColumn:
    """One column of ``load``: a field and how its cells name a value (``subfield``): ``None`` the
    value itself (a many2one: the related record's name), ``"id"`` an external id, ``".id"`` a
    database id. The record's own external and database ids are the fields ``"id"`` and ``".id"``."""

    position: int
    name: str
    subfield: str | None


def _load_columns(model: _Model, fields: object) -> list[_LoadColumn]:
    """``load``'s columns, as Odoo's ``fix_import_export_id_paths`` splits them; an unknown field is
    Odoo's ``ValueError`` (a 500, not a message)."""
    columns = []
    for position, column in enumerate(_strings(fields, "fields")):
        # partner_id.id and partner_id:id are partner_id/.id and partner_id/id, as in Odoo.
        path = re.sub(r"([^/]):id", r"\1/id", re.sub(r"([^/])\.id", r"\1/.id", column)).split("/")
        name, rest = path[0], path[1:]
        if name in ("id", ".id") and not rest:
            columns.append(_LoadColumn(position, name, None))
            continue
        field = model.fields.get(name)
        if field is None or name == "id":
            raise _value_error(f"Invalid field name {name!r}")
        if field.type in X2MANY_TYPES:
            raise _user_error(
                f"The Odoo test double does not load one2many columns ({column!r}): load the "
                f"{field.relation} records on their own, with the column {field.inverse}/id"
            )
        if name == "display_name":
            continue  # computed: Odoo converts it and writes nothing
        subfield = rest[0] if rest and field.type == "many2one" else None
        columns.append(_LoadColumn(position, name, subfield))
    return columns


class _CellError(Exception):
    """A cell that does not convert, as Odoo's converters raise it: ``named`` errors (two arguments
    in Odoo) carry ``field_name`` and their ``info`` into the message."""

    def __init__(self, message: str, info: dict[str, Any] | None = None, *, named: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.info = info or {}
        self.named = named


class _Import:
    """One ``load`` call: its rows converted, resolved and written one by one, in row order, so
    that a row can point at a record an earlier row made; the messages Odoo would give."""

    def __init__(
        self, model: _Model, writer: _Writer, context: dict[str, Any], columns: list[_LoadColumn], module: str
    ) -> None:
        self.model = model
        self.writer = writer
        self.connection = writer.connection
        self.context = context
        self.module = module
        self.columns = columns
        self.messages: list[dict[str, Any]] = []

    def run(self, rows: list[list[str]]) -> dict[str, Any]:
        ids = [self._row(index, row) for index, row in enumerate(rows)]
        failed = any(message["type"] == "error" for message in self.messages)
        return {"ids": False if failed else ids, "messages": self.messages, "nextrow": 0}

    # one row ----------------------------------------------------------------------------

    def _row(self, index: int, row: list[str]) -> int | None:
        cells = [(column, row[column.position]) for column in self.columns if column.position < len(row)]
        xid = next((value for column, value in cells if column.name == "id"), "")
        database_id = self._database_id(index, next((value for c, value in cells if c.name == ".id"), ""))
        values: Record = {}
        relations: dict[str, list[tuple[str | None, str]]] = {}
        for column, value in cells:
            if column.name in ("id", ".id"):
                continue
            if self.model.fields[column.name].type == "many2one":
                if value:
                    relations.setdefault(column.name, []).append((column.subfield, value))
                else:
                    relations.setdefault(column.name, [])
                continue
            self._convert(index, column.name, value, values)
        for name, given in relations.items():
            self._resolve(index, name, given, values)
        return self._write(index, xid, database_id, values)

    def _database_id(self, index: int, value: str) -> int | None:
        if not value:
            return None
        try:
            record_id = int(value)
        except ValueError:
            record_id = None
        table = self.model.table
        if (
            record_id is None
            or self.connection.scalar(select(table.c.id).where(table.c.id == record_id)) is None
        ):
            self._log(index, type="error", field=".id", message=f"Unknown database identifier '{value}'")
            return None
        return record_id

    def _convert(self, index: int, name: str, value: str, values: Record) -> None:
        try:
            converted = self._cell(name, value) if value else False
            values[name] = _storage_value(self.model, name, converted)
        except _CellError as error:
            self._cell_message(index, name, error)

    def _cell(self, name: str, value: str) -> Any:
        """A non-empty cell as the value Odoo's ``ir.fields.converter`` makes of it."""
        field = self.model.fields[name]
        label = field.label(name)
        if field.type == "boolean":
            if value.lower() in _TRUES:
                return True
            if value.lower() in _FALSES:
                return False
            raise _CellError(
                f"Unknown value '{value}' for boolean field '{label}'",
                {"moreinfo": "Use '1' for yes and '0' for no"},
            )
        if field.type == "integer":
            try:
                return int(value)
            except ValueError:
                raise _CellError(f"'{value}' does not seem to be an integer for field '{label}'") from None
        if field.type in NUMERIC_TYPES:
            try:
                return float(value)
            except ValueError:
                raise _CellError(f"'{value}' does not seem to be a number for field '{label}'") from None
        if field.type == "date":
            try:
                return _parsed_date(value).isoformat()
            except ValueError:
                raise _CellError(
                    f"'{value}' does not seem to be a valid date for field '{label}'",
                    {"moreinfo": "Use the format '2012-12-31'"},
                ) from None
        if field.type == "datetime":
            return self._datetime_cell(label, value)
        return value

    def _datetime_cell(self, label: str, value: str) -> str:
        try:
            local = _parsed_datetime(value)
        except ValueError:
            raise _CellError(
                f"'{value}' does not seem to be a valid datetime for field '{label}'",
                {"moreinfo": "Use the format '2012-12-31 23:59:59'"},
            ) from None
        # Odoo reads an imported datetime in the context's time zone (UTC without one).
        moment = local.replace(tzinfo=_timezone(self.context), fold=1).astimezone(ZoneInfo("UTC"))
        return moment.strftime(_DATETIME_FORMAT)

    # relations ----------------------------------------------------------------------------

    def _resolve(self, index: int, name: str, given: list[tuple[str | None, str]], values: Record) -> None:
        try:
            if not given:
                values[name] = None
                return
            if len(given) > 1:
                label = self.model.fields[name].label(name)
                raise _CellError(
                    f"Ambiguous specification for field '{label}', only provide one of name, external "
                    "id or database id",
                    named=False,
                )
            [(subfield, value)] = given
            values[name] = self._related_id(index, name, subfield, value)
        except _CellError as error:
            self._cell_message(index, name, error)

    def _related_id(self, index: int, name: str, subfield: str | None, value: str) -> int | None:
        """The record a many2one cell names (Odoo's ``db_id_for``); ``None`` for a false value."""
        field = self.model.fields[name]
        related = _MODELS[field.relation]
        if subfield not in (None, "id", ".id"):
            raise _CellError(
                "Can not create Many-To-One records indirectly, import the field separately", named=False
            )
        if subfield is not None and value.lower() in _FALSES:
            return None
        if subfield == ".id":
            found = self._by_database_id(field, name, related, value)
            kind = "database id"
        elif subfield == "id":
            found = self._by_external_id(related, value)
            kind = "external id"
        else:
            found = self._by_name(index, name, related, value)
            kind = "name"
        if found is None:
            raise _CellError(
                f"No matching record found for {kind} '{value}' in field '{field.label(name)}'",
                {"moreinfo": _possible_values(related.name, by_reference=subfield is not None)},
            )
        return found

    def _by_database_id(self, field: Field, name: str, related: _Model, value: str) -> int | None:
        try:
            record_id = int(value)
        except ValueError:
            raise _CellError(
                f"Invalid database id '{value}' for the field '{field.label(name)}'",
                {"moreinfo": _possible_values(related.name, by_reference=True)},
            ) from None
        table = related.table
        return self.connection.scalar(select(table.c.id).where(table.c.id == record_id))

    def _by_external_id(self, related: _Model, value: str) -> int | None:
        xid = value if "." in value else f"{self.module}.{value}"
        module, _, name = xid.partition(".")
        # As Odoo's _xmlid_to_record_id: the external id counts only if its record exists.
        data, table = TABLES["ir.model.data"], related.table
        row = self.connection.execute(
            select(data.c.model, data.c.res_id)
            .join(table, table.c.id == data.c.res_id)
            .where(data.c.module == module, data.c.name == name)
            .limit(1)
        ).first()
        if row is None:
            return None
        if row.model != related.name:
            raise _CellError(
                f"Invalid external ID {xid}: expected model {related.name!r}, found {row.model!r}",
                named=False,
            )
        return row.res_id

    def _by_name(self, index: int, name: str, related: _Model, value: str) -> int | None:
        # Odoo's name_search with operator '=': exact display name, archived records left out.
        table = related.table
        query = select(table.c.id).where(table.c.display_name == value)
        if "active" in related.fields:
            query = query.where(_stored(related.fields["active"], table.c.active).is_(true()))
        ids = list(self.connection.scalars(query.order_by(table.c.id).limit(100)))
        if len(ids) > 1:
            label = self.model.fields[name].label(name)
            self._log(
                index,
                type="warning",
                field=name,
                message=f"Found multiple matches for value '{value}' in field '{label}' ({len(ids)} matches)",
            )
        return ids[0] if ids else None

    # writing ------------------------------------------------------------------------------

    def _write(self, index: int, xid: str, database_id: int | None, values: Record) -> int | None:
        if not xid:
            if database_id is not None:
                return self._update(index, database_id, values)
            return self._create(index, values)
        full = xid if "." in xid else f"{self.module}.{xid}"
        module, _, name = full.partition(".")
        data, table = TABLES["ir.model.data"], self.model.table
        found = self.connection.execute(
            select(data.c.id, data.c.model, data.c.res_id, table.c.id.label("record_id"))
            .outerjoin(table, table.c.id == data.c.res_id)
            .where(data.c.module == module, data.c.name == name)
            .limit(1)
        ).first()
        if found is not None and found.model != self.model.name:
            self._log(
                index,
                type="error",
                message=f"For external id {full} when trying to create/update a record of model "
                f"{self.model.name} found record of different model {found.model} ({found.id})",
            )
            return None
        if found is not None and found.record_id is not None:
            return self._update(index, found.res_id, values)
        if found is not None:
            # Its record was deleted: Odoo drops the external id and makes it anew on a new record.
            delete_record(self.connection, "ir.model.data", found.id)
        record_id = self._create(index, values)
        if record_id is not None:
            insert_record(
                self.connection,
                "ir.model.data",
                {
                    "id": next_id(self.connection, "ir.model.data"),
                    "module": module,
                    "name": name,
                    "model": self.model.name,
                    "res_id": record_id,
                },
            )
        return record_id

    def _create(self, index: int, values: Record) -> int | None:
        missing = _missing_required(self.model, values, creating=True)
        if missing is not None:
            self._log_missing(index, missing)
            return None
        return self.writer.create(values)

    def _update(self, index: int, record_id: int, values: Record) -> int | None:
        missing = _missing_required(self.model, values, creating=False)
        if missing is not None:
            self._log_missing(index, missing)
            return None
        self.writer.write(record_id, values)
        return record_id

    # messages -----------------------------------------------------------------------------

    def _log(self, index: int, **message: Any) -> None:
        self.messages.append({"rows": {"from": index, "to": index}, "record": index, **message})

    def _log_missing(self, index: int, name: str) -> None:
        self._log(index, type="error", message=_missing_required_message(self.model, name), field=name)

    def _cell_message(self, index: int, name: str, error: _CellError) -> None:
        extra = {**error.info, "field_name": self.model.fields[name].label(name)} if error.named else {}
        self._log(index, type="error", field=name, message=error.message, **extra)


def _possible_values(model: str, *, by_reference: bool) -> dict[str, Any]:
    """The action Odoo's import attaches to a relation that does not resolve (``moreinfo``)."""
    action: dict[str, Any] = {
        "name": "Possible Values",
        "type": "ir.actions.act_window",
        "target": "new",
        "view_mode": "list,form",
        "views": [[False, "list"], [False, "form"]],
        "context": {"create": False},
        "help": "See all possible values",
    }
    if by_reference:
        return {**action, "res_model": "ir.model.data", "domain": [["model", "=", model]]}
    return {**action, "res_model": model}


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


@dataclass(frozen=True)
class _User:
    """A user of the double: its API key (its password over /jsonrpc), the models it may write, and
    whether it may push usage to ``/usage``."""

    login: str
    api_key: str
    uid: int
    writes: frozenset[str] = frozenset()
    pushes_usage: bool = False


class OdooStandIn:
    """A WSGI test double of Odoo 19 serving the records of an Odoo store to three users.

    ``OdooStandIn(models)`` loads ``models`` (model name → records in ``odoo_models``' storage
    format) into a private in-memory SQLite store, checked as ``odoo_store.load_models`` checks
    them (ids unique, fields within the model slice, every many2one pointing at a record that
    exists), and writable; ``OdooStandIn(store=url)`` (or ``from_store``) serves an existing store,
    a SQLite file or a PostgreSQL database, opened read-only unless ``writable=True``. The
    reconciliation's user (``api_key``, ``login``, ``uid``) only reads; the importer's
    (``importer_api_key``, ``importer_login``, ``importer_uid``) also writes the models of
    ``odoo_models.SANDBOX_IMPORTER_MODELS``; NexaCloud's metering (``metering_api_key``,
    ``metering_login``, ``metering_uid``) pushes usage to ``/usage`` and calls no model method. ``requests``
    counts the calls served.
    """

    def __init__(
        self,
        models: dict[str, list[Record]] | None = None,
        *,
        store: str | None = None,
        writable: bool = False,
        database: str = SANDBOX_DATABASE,
        api_key: str = SANDBOX_API_KEY,
        login: str = SANDBOX_LOGIN,
        uid: int = SANDBOX_UID,
        importer_api_key: str = SANDBOX_IMPORTER_API_KEY,
        importer_login: str = SANDBOX_IMPORTER_LOGIN,
        importer_uid: int = SANDBOX_IMPORTER_UID,
        metering_api_key: str = SANDBOX_METERING_API_KEY,
        metering_login: str = SANDBOX_METERING_LOGIN,
        metering_uid: int = SANDBOX_METERING_UID,
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
        self.importer_api_key = importer_api_key
        self.importer_login = importer_login
        self.importer_uid = importer_uid
        self.metering_api_key = metering_api_key
        self.metering_login = metering_login
        self.metering_uid = metering_uid
        self.version = version
        self.requests = RequestCounter()
        # An in-memory store is the double's own: always writable.
        self.writable = store is None or writable
        self._users = (
            _User(login, api_key, uid),
            _User(importer_login, importer_api_key, importer_uid, SANDBOX_IMPORTER_MODELS),
            _User(metering_login, metering_api_key, metering_uid, pushes_usage=True),
        )
        if store is None:
            self._engine = load_models("sqlite://", models or {})
        else:
            self._engine = open_store(store) if writable else open_store_read_only(store)
        # An in-memory SQLite store is one connection: requests from several threads take turns.
        self._turns: AbstractContextManager[Any] = (
            threading.Lock() if isinstance(self._engine.pool, StaticPool) else nullcontext()
        )
        # One write at a time: a new record's id is the highest plus one.
        self._writes = threading.Lock()

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
    def from_store(cls, url: str, **options: Any) -> OdooStandIn:
        """Serve the store at ``url`` (``odoo_store``), with these credentials or the sandbox's;
        ``writable=True`` to let the importer's user write it."""
        return cls(store=url, **options)

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
        if path.startswith("/doc-bearer/"):
            return self._doc_bearer(environ, path)
        if path == "/usage":
            return self._usage(environ, method)
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
            user = self._authenticate_bearer(environ.get("HTTP_AUTHORIZATION"))
            arguments = _json2_arguments(_request_body(environ))
            result = _attempt(lambda: self._call_json2(user, parts[3], parts[4], arguments))
        except _Fault as fault:
            return _fault_response(fault)
        return _json_response(result)

    def _authenticate_bearer(self, authorization: str | None) -> _User:
        if authorization is None:
            raise _unauthorized("Missing API key: send 'Authorization: bearer <key>'")
        match = _BEARER.fullmatch(authorization)
        user = None if match is None else next((u for u in self._users if u.api_key == match[1]), None)
        if user is None:
            raise _unauthorized("Invalid apikey")
        return user

    def _call_json2(self, user: _User, model_name: str, method: str, arguments: dict[str, Any]) -> Any:
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
        self._check_access(model, method, user)
        if method not in _MODEL_METHODS | _RECORD_METHODS:
            raise _not_found(f"The method '{model_name}.{method}' does not exist")
        if method in _MODEL_METHODS and ids:
            raise _unprocessable(f"cannot call {model_name}.{method} with ids")

        def call(connection: Connection) -> Any:
            function = getattr(_ModelMethods(model, ids, context, connection, user.uid), method)
            try:
                inspect.signature(function).bind(**arguments)
            except TypeError as error:
                raise _unprocessable(str(error)) from error
            return function(**arguments)

        return self._run(method, call)

    # the api_doc addon ----------------------------------------------------------------------

    def _doc_bearer(self, environ: WSGIEnvironment, path: str) -> _Response:
        """``GET /doc-bearer/<model>.json``: the api_doc addon's document of one model."""
        database = environ.get("HTTP_X_ODOO_DATABASE")
        if database is not None and database != self.database:
            return _not_found_page()
        try:
            if environ.get("REQUEST_METHOD", "GET") not in ("GET", "POST"):
                raise _method_not_allowed()
            self._authenticate_bearer(environ.get("HTTP_AUTHORIZATION"))
            name = path.removeprefix("/doc-bearer/")
            model = _MODELS.get(name.removesuffix(".json")) if name.endswith(".json") else None
            if model is None:
                raise _not_found(_NOT_FOUND_DESCRIPTION)
        except _Fault as fault:
            return _fault_response(fault)
        return _json_response(_model_document(model))

    # the Nexa billing module's usage endpoint -------------------------------------------------

    def _usage(self, environ: WSGIEnvironment, method: str) -> _Response:
        """``POST /usage``: NexaCloud's metering pushes one usage record, or a batch of them, into
        ``fusion.billing.usage`` (docs/design.md §10)."""
        database = environ.get("HTTP_X_ODOO_DATABASE")
        if database is not None and database != self.database:
            return _not_found_page()
        self.requests.add("usage.push")
        try:
            if method != "POST":
                raise _UsageRefusal(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "Usage is pushed with POST /usage",
                    headers=[("Allow", "POST")],
                )
            user = self._usage_pusher(environ.get("HTTP_AUTHORIZATION"))
            body = _usage_body(_request_body(environ))
            if isinstance(body, dict) and "records" in body:
                results = self._push_usage(user, _usage_batch(body["records"]))
                return _json_response({"results": [result.entry() for result in results]})
            (result,) = self._push_usage(user, [body])
            return result.response()
        except _UsageRefusal as refusal:
            return refusal.response()
        except Exception as error:
            logger.exception("The Odoo test double failed to store pushed usage")
            return _UsageRefusal(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", f"{type(error).__name__}: {error}"
            ).response()

    def _usage_pusher(self, authorization: str | None) -> _User:
        """The user the request's key names, if it may push usage to this double (401, 403)."""
        try:
            user = self._authenticate_bearer(authorization)
        except _Fault as fault:
            raise _UsageRefusal(fault.status, "unauthorized", fault.message, headers=fault.headers) from None
        if not user.pushes_usage:
            raise _UsageRefusal(
                HTTPStatus.FORBIDDEN,
                "forbidden",
                f"The user '{user.login}' may not push usage: only NexaCloud's metering user "
                f"('{self.metering_login}') does.",
            )
        if not self.writable:
            raise _UsageRefusal(
                HTTPStatus.FORBIDDEN,
                "forbidden",
                "Usage cannot be stored: this Odoo test double was opened read-only; build it with "
                "writable=True (OdooStandIn(store=url, writable=True)) to push usage.",
            )
        return user

    def _push_usage(self, user: _User, records: Sequence[object]) -> list[_UsageResult]:
        """Each record's outcome, in order; the new ones stored in one transaction. The ledger's
        keys are read inside it, under the double's write lock, so two pushes of one key, however
        concurrent, store it once."""
        parsed = [(_echoed_key(record), _checked_usage(record)) for record in records]
        pushes = [push for _, push in parsed if isinstance(push, _UsagePush)]
        with self._turns, self._writes, self._engine.begin() as connection:
            pushable = _pushable_subscriptions(connection, {push.subscription_id for push in pushes})
            ledger = _ledger_entries(connection, pushes)
            new_id = next_id(connection, _USAGE_MODEL)
            results: list[_UsageResult] = []
            created: list[Record] = []
            for key, push in parsed:
                if isinstance(push, _UsageRefusal):
                    results.append(_UsageResult(key, "rejected", error=push))
                    continue
                allowed = pushable.get(push.subscription_id)
                if allowed is None:
                    results.append(_UsageResult(key, "rejected", error=_unknown_subscription(push)))
                    continue
                if not allowed:
                    results.append(_UsageResult(key, "rejected", error=_subscription_not_allowed(push, user)))
                    continue
                held = ledger[push.key]
                same = next(
                    (record_id for record_id, thousandths in held if thousandths == push.thousandths), None
                )
                if same is not None:
                    results.append(_UsageResult(key, "duplicate", same))
                elif held:
                    results.append(_UsageResult(key, "conflict", error=_usage_conflict(push, *held[0])))
                else:
                    held.append((new_id, push.thousandths))
                    created.append(stored_record(_USAGE_MODEL, push.record(new_id)))
                    results.append(_UsageResult(key, "created", new_id))
                    new_id += 1
            if created:
                connection.execute(TABLES[_USAGE_MODEL].insert(), created)
        return results

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
        for user in self._users:
            if db == self.database and login == user.login and password == user.api_key:
                return user.uid
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
        user = next((u for u in self._users if u.uid == uid and u.api_key == password), None)
        if db != self.database or user is None:
            raise _access_denied()
        self.requests.add(f"{model_name}.{method}")
        model = _MODELS.get(model_name)
        if model is None:
            raise _user_error(f"Object {model_name} doesn't exist")
        arguments = list(args or [])
        keywords = dict(kwargs or {})
        context = keywords.pop("context", None) or {}
        self._check_access(model, method, user)
        if method not in _MODEL_METHODS | _RECORD_METHODS:
            raise AttributeError(f"The method '{model.name}.{method}' does not exist")
        ids: list[int] = []
        if method in _RECORD_METHODS:
            if not arguments:
                raise TypeError(f"{model_name}.{method}() takes the record ids as its first argument")
            first = arguments.pop(0)
            ids = first if isinstance(first, list) else [first]

        def call(connection: Connection) -> Any:
            function = getattr(_ModelMethods(model, ids, context, connection, user.uid), method)
            inspect.signature(function).bind(*arguments, **keywords)
            return function(*arguments, **keywords)

        result = self._run(method, call)
        vals_list = arguments[0] if arguments else keywords.get("vals_list")
        if method == "create" and isinstance(vals_list, dict):
            return result[0]  # Odoo's RPC answers the record a dict made with its id alone
        return result

    # shared ---------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self._turns, self._engine.connect() as connection:
            yield connection

    def _run(self, method: str, call: Callable[[Connection], Any]) -> Any:
        """Run a call on a connection: a write in a transaction of its own, committed only when the
        call succeeds (``_RolledBack`` undoes it and still answers)."""
        if method not in _SERVED_WRITES:
            with self._connect() as connection:
                return call(connection)
        try:
            with self._turns, self._writes, self._engine.begin() as connection:
                return call(connection)
        except _RolledBack as rolled_back:
            return rolled_back.answer

    def _check_access(self, model: _Model, method: str, user: _User) -> None:
        """Refuse private methods, any method to a user that pushes usage only, and writes the user
        may not make, as Odoo would (403)."""
        if method.startswith("_"):
            raise _access_error(
                f"Private methods (such as '{model.name}.{method}') cannot be called remotely."
            )
        if user.pushes_usage:
            raise _access_error(
                f"You are not allowed to access '{model.name}' records: the user '{user.login}' of this "
                "Odoo test double pushes usage to /usage and does nothing else."
            )
        if method not in _WRITE_METHODS:
            return
        if not user.writes:
            raise _access_error(
                f"You are not allowed to modify '{model.name}' records: the user '{user.login}' "
                "of this Odoo test double is read-only."
            )
        if method not in _SERVED_WRITES:
            verb = "delete" if method == "unlink" else f"call {method} on"
            raise _access_error(
                f"You are not allowed to {verb} '{model.name}' records: the Odoo test double serves "
                "load, create and write only, and deletes nothing."
            )
        if model.name not in user.writes:
            raise _access_error(
                f"You are not allowed to modify '{model.name}' records: the user '{user.login}' of this "
                f"Odoo test double writes {', '.join(sorted(user.writes))} only."
            )
        if not self.writable:
            raise _access_error(
                f"You are not allowed to modify '{model.name}' records: this Odoo test double was opened "
                "read-only; build it with writable=True (OdooStandIn(store=url, writable=True)) to write."
            )


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


# --- /usage: pushed usage records, checked, judged against the ledger ---------------------------

_USAGE_MODEL = "fusion.billing.usage"
_USAGE_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_TIMESTAMP_SHAPE = 'a string "YYYY-MM-DD HH:MM:SS" (UTC)'
_LARGEST_ID = 2**31 - 1  # Odoo's ids are PostgreSQL integers


class _UsageRefusal(Exception):
    """A request, or one record of it, that ``/usage`` refuses: an HTTP status and the error
    object ``{"code", "message", "field"}`` (``field`` the record's field at fault, or ``None``)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = list(headers)

    def error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field}

    def response(self) -> _Response:
        return _json_response({"error": self.error()}, self.status, self.headers)


def _invalid_usage(field: str | None, message: str) -> _UsageRefusal:
    return _UsageRefusal(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid", message, field)


@dataclass(frozen=True)
class _UsagePush:
    """A well-formed usage record; its quantity in thousandths, as the ledger keeps CPU-seconds."""

    subscription_id: int
    metric: str
    thousandths: int
    idempotency_key: str
    timestamp: str

    @property
    def key(self) -> tuple[int, str, str]:
        """What idempotency is scoped to."""
        return (self.subscription_id, self.metric, self.idempotency_key)

    def record(self, record_id: int) -> Record:
        return {
            "id": record_id,
            "subscription_id": self.subscription_id,
            "metric": self.metric,
            # int / int is correctly rounded: the float nearest the exact three decimals.
            "quantity": self.thousandths / 1000,
            "idempotency_key": self.idempotency_key,
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True)
class _UsageResult:
    """What became of one pushed record: ``created``, ``duplicate``, ``conflict`` or ``rejected``."""

    idempotency_key: str | None
    status: str
    id: int | None = None
    error: _UsageRefusal | None = None

    def entry(self) -> dict[str, Any]:
        """The record's entry in a batch's ``results``."""
        return {
            "idempotency_key": self.idempotency_key,
            "status": self.status,
            "id": self.id,
            "error": None if self.error is None else self.error.error(),
        }

    def response(self) -> _Response:
        """The answer to a request of this record alone."""
        if self.status == "created":
            return _json_response({"id": self.id, "status": "created"}, HTTPStatus.CREATED)
        if self.status == "duplicate":
            return _json_response({"id": self.id, "status": "duplicate", "duplicate": True})
        assert self.error is not None
        return self.error.response()


def _usage_body(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as error:
        raise _invalid_usage(None, f"The body is not JSON: {error}") from error


def _usage_batch(records: object) -> list[object]:
    if not isinstance(records, list):
        raise _invalid_usage(
            "records", f"records must be an array of usage records, not {_json_kind(records)}"
        )
    if len(records) > USAGE_BATCH_LIMIT:
        raise _invalid_usage(
            "records", f"A batch holds at most {USAGE_BATCH_LIMIT} usage records, not {len(records)}"
        )
    return records


def _echoed_key(record: object) -> str | None:
    """The record's idempotency key as its batch result repeats it: ``None`` unless a string."""
    key = record.get("idempotency_key") if isinstance(record, dict) else None
    return key if isinstance(key, str) else None


def _checked_usage(record: object) -> _UsagePush | _UsageRefusal:
    try:
        return _usage_push(record)
    except _UsageRefusal as refusal:
        return refusal


def _usage_push(record: object) -> _UsagePush:
    """A pushed record checked field by field, in the contract's order (the first bad one named).
    Fields outside the contract are ignored."""
    if not isinstance(record, dict):
        raise _invalid_usage(None, f"A usage record is a JSON object, not {_json_kind(record)}")
    subscription_id = _usage_field(record, "subscription_id", int, "an integer (a sale.order id)")
    if not 0 < subscription_id <= _LARGEST_ID:
        raise _invalid_usage(
            "subscription_id", f"subscription_id must be a sale.order id, not {subscription_id}"
        )
    metric = _usage_field(record, "metric", str, "a string")
    if metric not in USAGE_METRICS:
        raise _invalid_usage(
            "metric",
            f"Unknown metric {metric[:100]!r}: usage is pushed for {', '.join(sorted(USAGE_METRICS))}",
        )
    quantity = _usage_field(record, "quantity", (int, float), "a number")
    try:
        quantity = float(quantity)
    except OverflowError:
        quantity = float("inf")
    if not isfinite(quantity):
        raise _invalid_usage("quantity", "quantity must be a finite number")
    if quantity < 0:
        raise _invalid_usage("quantity", f"quantity must not be negative, not {quantity!r}")
    key = _usage_field(record, "idempotency_key", str, "a string")
    if not key:
        raise _invalid_usage("idempotency_key", "idempotency_key must not be empty")
    timestamp = _usage_field(record, "timestamp", str, _TIMESTAMP_SHAPE)
    if not _USAGE_TIMESTAMP.fullmatch(timestamp) or not _is_moment(timestamp):
        raise _invalid_usage("timestamp", f"timestamp must be {_TIMESTAMP_SHAPE}, not {timestamp[:100]!r}")
    return _UsagePush(subscription_id, metric, _thousandths(quantity), key, timestamp)


def _usage_field(record: dict[str, Any], name: str, kinds: type | tuple[type, ...], expected: str) -> Any:
    value = record.get(name)
    if value is None:
        raise _invalid_usage(name, f"Missing field {name!r}: {expected}")
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _invalid_usage(name, f"{name} must be {expected}, not {_json_kind(value)}")
    return value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _is_moment(text: str) -> bool:
    try:
        datetime.strptime(text, _DATETIME_FORMAT)
    except ValueError:
        return False
    return True


def _thousandths(quantity: float) -> int:
    """A quantity in thousandths, half-up (Odoo's float_round), from the decimal it was written as."""
    with localcontext() as context:
        context.prec = 400  # every finite float's digits
        return int(Decimal(repr(quantity)).scaleb(3).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _quantity_text(thousandths: int) -> str:
    return str(Decimal(thousandths).scaleb(-3))


def _pushable_subscriptions(connection: Connection, ids: set[int]) -> dict[int, bool]:
    """Of the ``sale.order`` ids that exist, whether usage may be pushed to each: a subscription
    whose partner has an external id in module ``nexacloud`` (an imported customer's)."""
    if not ids:
        return {}
    orders, external_ids = TABLES["sale.order"], TABLES["ir.model.data"]
    imported = exists().where(
        external_ids.c.model == "res.partner",
        external_ids.c.res_id == orders.c.partner_id,
        external_ids.c.module == "nexacloud",
    )
    rows = connection.execute(
        select(orders.c.id, orders.c.is_subscription, imported.label("imported")).where(
            orders.c.id.in_(sorted(ids))
        )
    )
    return {row.id: bool(row.is_subscription) and bool(row.imported) for row in rows}


def _ledger_entries(
    connection: Connection, pushes: Sequence[_UsagePush]
) -> defaultdict[tuple[int, str, str], list[tuple[int, int]]]:
    """The ledger's records under the pushes' keys: (subscription, metric, key) → [(id, quantity in
    thousandths)] in id order. One query, through the index that the ledger's subscription_id leads."""
    held: defaultdict[tuple[int, str, str], list[tuple[int, int]]] = defaultdict(list)
    if not pushes:
        return held
    wanted = {push.key for push in pushes}
    usage = TABLES[_USAGE_MODEL]
    rows = connection.execute(
        select(usage.c.id, usage.c.subscription_id, usage.c.metric, usage.c.idempotency_key, usage.c.quantity)
        .where(
            usage.c.subscription_id.in_(sorted({push.subscription_id for push in pushes})),
            usage.c.idempotency_key.in_(sorted({push.idempotency_key for push in pushes})),
            usage.c.metric.in_(sorted({push.metric for push in pushes})),
        )
        .order_by(usage.c.id)
    )
    for row in rows:
        key = (row.subscription_id, row.metric, row.idempotency_key)
        if key in wanted:
            held[key].append((row.id, _thousandths(float(row.quantity or 0.0))))
    return held


def _unknown_subscription(push: _UsagePush) -> _UsageRefusal:
    return _UsageRefusal(
        HTTPStatus.NOT_FOUND,
        "not_found",
        f"Record does not exist or has been deleted: sale.order({push.subscription_id},)",
        "subscription_id",
    )


def _subscription_not_allowed(push: _UsagePush, user: _User) -> _UsageRefusal:
    return _UsageRefusal(
        HTTPStatus.FORBIDDEN,
        "forbidden",
        f"The user '{user.login}' may not push usage to sale.order({push.subscription_id},): it is not "
        "the subscription of a customer imported from NexaCloud",
        "subscription_id",
    )


def _usage_conflict(push: _UsagePush, record_id: int, thousandths: int) -> _UsageRefusal:
    return _UsageRefusal(
        HTTPStatus.CONFLICT,
        "conflict",
        f"The ledger already holds {push.idempotency_key[:200]!r} for sale.order({push.subscription_id},) "
        f"and {push.metric}, with quantity {_quantity_text(thousandths)} "
        f"(fusion.billing.usage({record_id},)), not {_quantity_text(push.thousandths)}: nothing stored",
        "quantity",
    )


# --- serving over a real port -------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # socketserver's backlog is 5: a sixth client connecting at the same moment is reset.
    request_queue_size = 128


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
