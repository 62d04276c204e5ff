"""A test double of Odoo 19's external API, for the embedded sandbox and the test suite.

This is not Odoo. It is a small WSGI application that serves, from records held in memory, the
slice of Odoo 19 Enterprise that the reconciliation reads (docs/design.md §5; models and fields in
``odoo_models.MODELS``), and answers the way Odoo answers on the wire, so that the production
client runs unchanged against it, in-process through ``httpx.WSGITransport`` or over a real port
(``serve``/``serving``):

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
``read_group`` (legacy shape) and ``fields_get``. Records render as Odoo renders them: many2one
as ``[id, display_name]``, empty values as ``false`` except numbers (``0``), one2many as ids.
Like Odoo, searches on a model with an ``active`` field skip archived records unless the domain
mentions ``active`` or the context sets ``active_test: false``.

Where the double has to choose, it chooses simply and says so: results order by ``id asc``
unless told otherwise, and a many2one orders (and groups) by the related id, not by the related
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
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from functools import partial
from http import HTTPStatus
from itertools import islice
from operator import itemgetter
from os import PathLike
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fusion_billing_assets.billing.periods import local_midnight_utc
from fusion_billing_assets.sandbox.odoo_domain import (
    NEGATIVE_OPERATORS,
    NUMERIC_TYPES,
    SUBDOMAIN_OPERATORS,
    Condition,
    DomainError,
    Junction,
    Predicate,
    Term,
    compile_term,
    conditions,
    conjuncts,
    negative,
    normalize_value,
    parse_domain,
    value_predicate,
    x2many_predicate,
)
from fusion_billing_assets.sandbox.odoo_models import (
    MODELS,
    SANDBOX_API_KEY,
    SANDBOX_DATABASE,
    SANDBOX_LOGIN,
    SANDBOX_UID,
    Field,
)

logger = logging.getLogger(__name__)

Record = dict[str, Any]
WSGIEnvironment = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_ID = Field("integer")
_DISPLAY_NAME = Field("char")
_X2MANY_TYPES = frozenset({"one2many", "many2many"})

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
_GRANULARITIES = frozenset({"day", "week", "month", "quarter", "year"})
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


# --- the records ----------------------------------------------------------------------------


class _Table:
    """One model's records in id order, with the lookups that searches and rendering need."""

    def __init__(self, name: str, fields: dict[str, Field], records: list[Record]) -> None:
        self.name = name
        self.fields = {"id": _ID, **fields, "display_name": _DISPLAY_NAME}
        self.records = sorted(records, key=itemgetter("id"))
        self.ids = [record["id"] for record in self.records]
        self.by_id = dict(zip(self.ids, self.records, strict=True))
        if len(self.by_id) != len(self.ids):
            raise ValueError(f"{name}: record ids are not unique")
        self.renderers: dict[str, Callable[[Any], Any]] = {}

    def field(self, name: str) -> Field:
        try:
            return self.fields[name]
        except KeyError:
            raise _invalid_field(self.name, name) from None


def _load_tables(models: dict[str, list[Record]]) -> dict[str, _Table]:
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"Models outside the Odoo model slice (odoo_models.MODELS): {unknown}")
    tables = {
        name: _Table(name, fields, [_stored_record(name, fields, record) for record in models.get(name, [])])
        for name, fields in MODELS.items()
    }
    for table in tables.values():
        _fill_x2many(table, tables)
    for table in tables.values():
        _check_references(table, tables)
        table.renderers = {name: _renderer(field, tables) for name, field in table.fields.items()}
    return tables


def _stored_record(model: str, fields: dict[str, Field], record: Record) -> Record:
    unknown = sorted(record.keys() - fields.keys() - {"id", "display_name"})
    if unknown:
        raise ValueError(f"{model} record {record.get('id')!r} has fields outside the model slice: {unknown}")
    if isinstance(record.get("id"), bool) or not isinstance(record.get("id"), int):
        raise ValueError(f"{model} record without an integer id: {record!r}")
    stored = dict.fromkeys(fields)
    if "active" in fields:
        stored["active"] = True  # Odoo's default for a record that never set it
    stored.update(record)
    if not stored.get("display_name"):
        stored["display_name"] = _display_name(model, stored)
    return stored


def _display_name(model: str, record: Record) -> str:
    if model == "ir.model.data":
        return f"{record['module']}.{record['name']}"
    return record.get("name") or f"{model},{record['id']}"


def _fill_x2many(table: _Table, tables: dict[str, _Table]) -> None:
    """Derive each absent one2many from its inverse many2one, once, in the related id order."""
    for name, field in table.fields.items():
        if field.type not in _X2MANY_TYPES:
            continue
        children: dict[int, list[int]] = {}
        if field.inverse:
            for child in tables[field.relation].records:
                if child[field.inverse] is not None:
                    children.setdefault(child[field.inverse], []).append(child["id"])
        for record in table.records:
            if record[name] is None:
                record[name] = children.get(record["id"], [])


def _check_references(table: _Table, tables: dict[str, _Table]) -> None:
    for name, field in table.fields.items():
        if field.type != "many2one" and field.type not in _X2MANY_TYPES:
            continue
        related = tables[field.relation].by_id
        for record in table.records:
            value = record[name]
            referenced = value if field.type in _X2MANY_TYPES else ([] if value is None else [value])
            missing = [related_id for related_id in referenced if related_id not in related]
            if missing:
                raise ValueError(
                    f"{table.name} {record['id']}: {name} refers to missing {field.relation} {missing}"
                )


def _renderer(field: Field, tables: dict[str, _Table]) -> Callable[[Any], Any]:
    """How Odoo's ``read`` renders a stored value of this field."""
    if field.type == "many2one":
        related = tables[field.relation].by_id
        return lambda value: False if value is None else [value, related[value]["display_name"]]
    if field.type in _X2MANY_TYPES:
        return list
    if field.type == "integer":
        return lambda value: 0 if value is None else value
    if field.type in NUMERIC_TYPES:
        return lambda value: 0.0 if value is None else float(value)
    if field.type == "boolean":
        return bool
    return lambda value: False if value is None else value


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


def _sort(rows: list[Any], keys: Sequence[tuple[Callable[[Any], Any], _OrderTerm]]) -> list[Any]:
    """Sort by several keys; empty values go last ascending and first descending, as in SQL."""
    for key, term in reversed(keys):
        nulls_high = term.nulls_first is None or term.nulls_first == term.descending
        null_rank = 1 if nulls_high else -1

        def sort_key(row: Any, key: Callable[[Any], Any] = key, null_rank: int = null_rank) -> tuple:
            value = key(row)
            return (null_rank, 0) if value is None else (0, value)

        rows.sort(key=sort_key, reverse=term.descending)
    return rows


# --- grouping -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bucket:
    """A date or datetime group: its start and end as Odoo writes them, and its label."""

    start: str
    end: str
    label: str


@dataclass
class _GroupBy:
    spec: str
    name: str
    field: Field
    granularity: str | None
    timezone: tzinfo
    key: Callable[[Record], Hashable] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if self.granularity is None and self.field.type == "boolean":
            name = self.name
            self.key = lambda record: bool(record[name])  # an unset boolean groups with False
        elif self.granularity is None:
            self.key = itemgetter(self.name)
        else:
            self.key = self._bucket_key()

    def _bucket_key(self) -> Callable[[Record], Hashable]:
        # Bucket starts repeat across a ledger (hourly usage: ~720 distinct minutes a month), so
        # each distinct date, or UTC minute, is converted once.
        starts: dict[str, date] = {}
        name, granularity, timezone = self.name, self.granularity, self.timezone
        is_datetime = self.field.type == "datetime"

        def key(record: Record) -> date | None:
            stored = record[name]
            if stored is None:
                return None
            prefix = stored[:16] if is_datetime else stored
            start = starts.get(prefix)
            if start is None:
                if is_datetime:
                    moment = datetime.fromisoformat(prefix).replace(tzinfo=UTC)
                    local_day = moment.astimezone(timezone).date()
                else:
                    local_day = date.fromisoformat(prefix)
                start = starts[prefix] = _truncate(local_day, granularity)
            return start

        return key

    def bucket(self, start: date) -> _Bucket:
        end = _next_bucket(start, self.granularity)
        if self.field.type == "datetime":
            return _Bucket(
                _utc_start(start, self.timezone),
                _utc_start(end, self.timezone),
                _label(start, self.granularity),
            )
        return _Bucket(start.isoformat(), end.isoformat(), _label(start, self.granularity))

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


@dataclass
class _Group:
    key: tuple[Any, ...]
    values: dict[str, Any]


def _truncate(day: date, granularity: str | None) -> date:
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    if granularity == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    if granularity == "year":
        return date(day.year, 1, 1)
    return day


def _next_bucket(start: date, granularity: str | None) -> date:
    if granularity == "day":
        return start + timedelta(days=1)
    if granularity == "week":
        return start + timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[granularity]
    month_index = start.year * 12 + start.month - 1 + months
    return date(month_index // 12, month_index % 12 + 1, 1)


def _utc_start(local_day: date, timezone: tzinfo) -> str:
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


def _aggregate(aggregate: _Aggregate, records: list[Record]) -> Any:
    """One aggregate over a group's records; ``None`` when there is nothing to take a min of."""
    if aggregate.name is None:
        return len(records)
    values = [record[aggregate.name] for record in records if record[aggregate.name] is not None]
    if aggregate.function == "count":
        return len(values)
    if aggregate.function == "count_distinct":
        return len(set(values))
    if aggregate.function == "sum":
        if aggregate.field_type == "integer":
            return sum(values)
        return float(_exact_sum(values))
    if not values:
        return None
    if aggregate.function == "avg":
        return float(_exact_sum(values) / len(values))
    return min(values) if aggregate.function == "min" else max(values)


def _exact_sum(values: Iterable[float]) -> Decimal:
    # Summing the decimal the float was written from: 0.1 + 0.2 is 0.3, as in Odoo's NUMERIC sums.
    return sum((Decimal(repr(value)) for value in values), Decimal(0))


def _timezone(context: dict[str, Any]) -> tzinfo:
    try:
        return ZoneInfo(context["tz"])
    except (KeyError, TypeError, ValueError, ZoneInfoNotFoundError):
        # Odoo ignores a missing or unknown context tz and buckets in UTC.
        return UTC


# --- the methods of a model -----------------------------------------------------------------


class _ModelMethods:
    """Odoo's read methods on one model, bound to one call's record ids and context.

    Each public method has the parameter names of its Odoo 19 counterpart, so binding a call's
    arguments to it fails exactly where Odoo's would.
    """

    def __init__(
        self, standin: OdooStandIn, table: _Table, ids: Sequence[int], context: dict[str, Any]
    ) -> None:
        self._standin = standin
        self._table = table
        self._ids = ids
        self._context = context

    def search_read(
        self,
        domain: object = None,
        fields: object = None,
        offset: object = 0,
        limit: object = None,
        order: object = None,
        load: object = "_classic_read",
    ) -> list[dict[str, Any]]:
        return self._render(self._search(domain or [], offset, limit, order), fields, load)

    def search(
        self, domain: object, offset: object = 0, limit: object = None, order: object = None
    ) -> list[int]:
        return [record["id"] for record in self._search(domain, offset, limit, order)]

    def search_count(self, domain: object, limit: object = None) -> int:
        return len(self._search(domain, 0, limit, None))

    def read(self, fields: object = None, load: object = "_classic_read") -> list[dict[str, Any]]:
        missing = [record_id for record_id in self._ids if record_id not in self._table.by_id]
        if missing:
            raise _Fault(
                "odoo.exceptions.MissingError",
                "Record does not exist or has been deleted.\n"
                f"(Record: {self._table.name}({', '.join(map(str, missing))},), User: {self._standin.uid})",
                HTTPStatus.NOT_FOUND,
            )
        return self._render([self._table.by_id[record_id] for record_id in self._ids], fields, load)

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
        groups = self._groups(domain, groupbys, [self._aggregate(spec) for spec in specs])
        keep = compile_term(having_term, _having_condition)
        groups = [group for group in groups if keep(group.values)]
        names = {groupby.spec: index for index, groupby in enumerate(groupbys)}
        page = self._sorted_page(groups, order, names, {spec: spec for spec in specs}, offset, limit)
        return [self._formatted_group(group, groupbys, requested) for group in page]

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
        groups = self._groups(
            domain, groupbys, [self._aggregate(spec) for spec in set(result_names.values())]
        )
        names = {groupby.spec: index for index, groupby in enumerate(groupbys)}
        page = self._sorted_page(groups, orderby, names, result_names, offset, limit)
        rows = []
        for group in page:
            row = self._legacy_group(group, groupbys, result_names, domain)
            if lazy and specs[1:]:
                row["__context"] = {"group_by": specs[1:]}
            rows.append(row)
        return rows

    def fields_get(self, allfields: object = None, attributes: object = None) -> dict[str, dict[str, Any]]:
        wanted = set(_strings(attributes, "attributes")) if attributes else None
        described = {}
        for name in self._field_names(allfields):
            field = self._table.fields[name]
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
        table = self._table
        if (
            "active" in table.fields
            and self._context.get("active_test", True)
            and not any(condition.path == "active" for condition in conditions(term))
        ):
            term = Junction("&", (Condition("active", "=", True), term))
        return term

    def _search(self, domain: object, offset: object, limit: object, order: object) -> list[Record]:
        first, count = _offset(offset), _limit(limit)
        term = self._term(domain)
        matches = self._standin._matcher(self._table, term)
        candidates = self._standin._candidates(self._table, term)
        order_terms = _parse_order(order) or [_OrderTerm("id", False, None)]
        stop = None if count is None else first + count
        if [order_term.name for order_term in order_terms] == ["id"]:
            # Records are held in id order: page without sorting and stop at the limit, which is
            # what keeps keyset paging through a large ledger linear.
            ordered = reversed(candidates) if order_terms[0].descending else candidates
            return list(islice((record for record in ordered if matches(record)), first, stop))
        keys = [(self._record_sort_key(order_term.name), order_term) for order_term in order_terms]
        return _sort([record for record in candidates if matches(record)], keys)[first:stop]

    def _record_sort_key(self, name: str) -> Callable[[Record], Any]:
        if "." in name:
            raise _user_error(
                f"Ordering by a related path ({name!r}) is not supported by the Odoo test double"
            )
        if self._table.field(name).type in _X2MANY_TYPES:
            raise _user_error(f"Cannot order {self._table.name} by the one2many field {name!r}")
        return itemgetter(name)

    def _field_names(self, fields: object) -> list[str]:
        if not fields:
            return list(self._table.fields)
        names = _strings(fields, "fields")
        for name in names:
            self._table.field(name)
        return names

    def _render(self, records: list[Record], fields: object, load: object) -> list[dict[str, Any]]:
        if load not in ("_classic_read", None, False):
            raise _user_error(f"Invalid load {load!r}: expected '_classic_read' or null")
        names = ["id", *(name for name in self._field_names(fields) if name != "id")]
        renderers = self._table.renderers
        if not load:
            # load=None reads a many2one as its bare id, without the display name.
            renderers = {
                name: (lambda value: value or False)
                if self._table.fields[name].type == "many2one"
                else render
                for name, render in renderers.items()
            }
        columns = [(name, renderers[name]) for name in names]
        return [{name: render(record[name]) for name, render in columns} for record in records]

    def _groupby(self, spec: str, *, default_granularity: str | None) -> _GroupBy:
        name, _, granularity = spec.partition(":")
        field = self._table.field(name)
        if field.type in _X2MANY_TYPES:
            raise _user_error(f"Cannot group {self._table.name} by the one2many field {name!r}")
        if field.type in ("date", "datetime"):
            granularity = granularity or default_granularity or ""
            if granularity not in _GRANULARITIES:
                raise _user_error(
                    f"Invalid granularity {granularity!r} in groupby {spec!r}: "
                    f"expected one of {sorted(_GRANULARITIES)}"
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
        field = self._table.field(name)
        if function not in _AGGREGATE_FUNCTIONS:
            raise _user_error(
                f"Invalid aggregate {spec!r}: expected 'field:function' with a function among "
                f"{sorted(_AGGREGATE_FUNCTIONS)}, or '__count'"
            )
        if field.type in _X2MANY_TYPES or (function in ("sum", "avg") and field.type not in NUMERIC_TYPES):
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
            elif self._table.field(name).type in NUMERIC_TYPES and name != "id" and field_spec not in groupby:
                aggregates[name] = f"{name}:sum"
        return aggregates

    def _groups(self, domain: object, groupbys: list[_GroupBy], aggregates: list[_Aggregate]) -> list[_Group]:
        records = self._search(domain, 0, None, None)
        keys = [groupby.key for groupby in groupbys]
        members: dict[tuple[Any, ...], list[Record]] = {}
        for record in records:
            key = tuple([key(record) for key in keys])
            bucket = members.get(key)
            if bucket is None:
                members[key] = [record]
            else:
                bucket.append(record)
        if not groupbys and not members:
            members[()] = []  # like SQL, aggregates without GROUP BY give one row even over nothing
        return [
            _Group(key, {aggregate.spec: _aggregate(aggregate, rows) for aggregate in aggregates})
            for key, rows in members.items()
        ]

    def _sorted_page(
        self,
        groups: list[_Group],
        order: object,
        groupby_positions: dict[str, int],
        aggregate_specs: dict[str, str],
        offset: object,
        limit: object,
    ) -> list[_Group]:
        """Order groups by group-by keys (default) or aggregates, then cut the page."""
        order_terms = _parse_order(order) or [_OrderTerm(spec, False, None) for spec in groupby_positions]
        keys: list[tuple[Callable[[_Group], Any], _OrderTerm]] = []
        for term in order_terms:
            if term.name in groupby_positions:
                position = groupby_positions[term.name]
                keys.append((lambda group, position=position: group.key[position], term))
            elif term.name in aggregate_specs:
                spec = aggregate_specs[term.name]
                keys.append((lambda group, spec=spec: group.values[spec], term))
            else:
                raise _user_error(
                    f"Invalid order term {term.name!r}: groups order by their group-by keys or aggregates"
                )
        first, count = _offset(offset), _limit(limit)
        return _sort(groups, keys)[first : None if count is None else first + count]

    def _formatted_group(
        self, group: _Group, groupbys: list[_GroupBy], aggregates: list[str]
    ) -> dict[str, Any]:
        row: dict[str, Any] = {}
        extra_domain: list[Any] = []
        for groupby, key in zip(groupbys, group.key, strict=True):
            row[groupby.spec] = groupby.value(key, self._table.renderers[groupby.name])
            extra_domain += groupby.domain(key)
        for spec in aggregates:
            row[spec] = self._aggregate_value(spec, group.values[spec])
        row["__extra_domain"] = extra_domain
        return row

    def _legacy_group(
        self, group: _Group, groupbys: list[_GroupBy], result_names: dict[str, str], domain: object
    ) -> dict[str, Any]:
        row: dict[str, Any] = {}
        group_domain: list[Any] = []
        ranges: dict[str, Any] = {}
        for groupby, key in zip(groupbys, group.key, strict=True):
            row[groupby.spec] = groupby.legacy_value(key, self._table.renderers[groupby.name])
            group_domain += groupby.domain(key)
            if groupby.granularity is not None and key is None:
                ranges[groupby.spec] = False
            elif groupby.granularity is not None:
                bucket = groupby.bucket(key)
                ranges[groupby.spec] = {"from": bucket.start, "to": bucket.end}
        for result_name, spec in result_names.items():
            row[result_name] = self._aggregate_value(spec, group.values[spec])
        row["__domain"] = [*group_domain, *domain]
        if ranges:
            row["__range"] = ranges
        return row

    def _aggregate_value(self, spec: str, value: Any) -> Any:
        if value is None:
            return False
        name, _, function = spec.partition(":")
        if function in ("min", "max"):
            return self._table.renderers[name](value)
        return value


def _having_condition(condition: Condition) -> Predicate:
    value = normalize_value("float", condition.operator, condition.value)
    matches = value_predicate(condition.operator, value)
    spec = condition.path
    return lambda values: matches(values[spec])


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


class OdooStandIn:
    """A WSGI test double of Odoo 19 serving ``models`` (model name → records) read-only.

    Records follow ``odoo_models``' storage format; they are checked and indexed once here (ids
    unique, fields within the model slice, every many2one and one2many pointing at a record that
    exists), and absent one2many fields are derived from their inverse many2one.
    """

    def __init__(
        self,
        models: dict[str, list[Record]],
        *,
        database: str = SANDBOX_DATABASE,
        api_key: str = SANDBOX_API_KEY,
        login: str = SANDBOX_LOGIN,
        uid: int = SANDBOX_UID,
        version: str = "19.0",
    ) -> None:
        self.database = database
        self.api_key = api_key
        self.login = login
        self.uid = uid
        self.version = version
        self._tables = _load_tables(models)

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

    def _call_json2(self, model: str, method: str, arguments: dict[str, Any]) -> Any:
        table = self._tables.get(model)
        if table is None:
            raise _not_found(f"the model {model!r} does not exist")
        ids = arguments.pop("ids", [])
        context = arguments.pop("context", {})
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise _unprocessable(f"ids must be a list of record ids, not {ids!r}")
        if not isinstance(context, dict):
            raise _unprocessable(f"context must be an object, not {context!r}")
        try:
            function = self._method(table, method, ids, context)
        except AttributeError as error:
            raise _not_found(str(error)) from error
        if method in _MODEL_METHODS and ids:
            raise _unprocessable(f"cannot call {model}.{method} with ids")
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
        model: str,
        method: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        if db != self.database or uid != self.uid or password != self.api_key:
            raise _access_denied()
        table = self._tables.get(model)
        if table is None:
            raise _user_error(f"Object {model} doesn't exist")
        arguments = list(args or [])
        keywords = dict(kwargs or {})
        context = keywords.pop("context", None) or {}
        ids: list[int] = []
        if method in _RECORD_METHODS:
            if not arguments:
                raise TypeError(f"{model}.{method}() takes the record ids as its first argument")
            first = arguments.pop(0)
            ids = first if isinstance(first, list) else [first]
        function = self._method(table, method, ids, context)
        inspect.signature(function).bind(*arguments, **keywords)
        return function(*arguments, **keywords)

    # shared ---------------------------------------------------------------------------------

    def _method(
        self, table: _Table, method: str, ids: Sequence[int], context: dict[str, Any]
    ) -> Callable[..., Any]:
        """The model method a call names, refusing private and writing ones as Odoo would."""
        if method.startswith("_"):
            raise _access_error(
                f"Private methods (such as '{table.name}.{method}') cannot be called remotely."
            )
        if method in _WRITE_METHODS:
            raise _access_error(
                f"You are not allowed to modify '{table.name}' records: the user '{self.login}' "
                "of this Odoo test double is read-only."
            )
        if method not in _MODEL_METHODS | _RECORD_METHODS:
            raise AttributeError(f"The method '{table.name}.{method}' does not exist")
        return getattr(_ModelMethods(self, table, ids, context), method)

    def _matcher(self, table: _Table, term: Term) -> Predicate:
        return compile_term(term, partial(self._condition, table))

    def _condition(self, table: _Table, condition: Condition) -> Predicate:
        """A predicate on ``table``'s records for one condition, following related paths."""
        name, _, rest = condition.path.partition(".")
        field = table.field(name)
        operator, value = condition.operator, condition.value
        if rest or operator in SUBDOMAIN_OPERATORS:
            if field.relation is None:
                raise DomainError(f"{table.name}.{name} is not a relational field: {condition.path!r}")
            related_table = self._tables[field.relation]
            related = self._related(table, name)
            if rest:
                inner = self._condition(related_table, Condition(rest, operator, value))
                return lambda record: any(inner(other) for other in related(record))
            inner = self._matcher(related_table, value)

            def has_match(record: Record) -> bool:
                return any(inner(other) for other in related(record))

            return has_match if operator == "any" else negative(has_match)
        if field.type in _X2MANY_TYPES:
            matches = x2many_predicate(operator, value)
            return lambda record: matches(record[name])
        if field.type == "many2one" and _names_records(value):
            return self._name_condition(table, name, operator, value)
        matches = value_predicate(operator, normalize_value(field.type, operator, value))
        return lambda record: matches(record[name])

    def _name_condition(self, table: _Table, name: str, operator: str, value: object) -> Predicate:
        """A many2one compared with text matches on the related record's display name."""
        is_negative = operator in NEGATIVE_OPERATORS
        related_table = self._tables[table.fields[name].relation]
        positive = {"!=": "=", "not in": "in", "not like": "like", "not ilike": "ilike"}.get(
            operator, operator
        )
        on_name = self._condition(related_table, Condition("display_name", positive, value))
        related = related_table.by_id

        def names_match(record: Record) -> bool:
            related_id = record[name]
            return related_id is not None and on_name(related[related_id])

        return negative(names_match) if is_negative else names_match

    def _related(self, table: _Table, name: str) -> Callable[[Record], Sequence[Record]]:
        field = table.fields[name]
        related = self._tables[field.relation].by_id
        if field.type == "many2one":
            return lambda record: () if record[name] is None else (related[record[name]],)
        return lambda record: [related[related_id] for related_id in record[name]]

    def _candidates(self, table: _Table, term: Term) -> list[Record] | _Slice:
        """The records, in id order, that the domain's top-level conditions on ``id`` allow.

        Every candidate still goes through the whole domain; this only skips records that cannot
        match, so that a keyset page (``["id", ">", last_id]``) starts where the last one ended.
        """
        low, high = 0, len(table.ids)
        for condition in conjuncts(term):
            if condition.path != "id":
                continue
            operator, value = condition.operator, condition.value
            if operator in ("=", "in"):
                wanted = value if isinstance(value, list) else [value]
                if all(_is_id(item) for item in wanted):
                    return [table.by_id[i] for i in sorted(set(wanted)) if i in table.by_id]
            elif operator in (">", ">=", "<", "<=") and _is_number(value):
                if operator == ">":
                    low = max(low, bisect_right(table.ids, value))
                elif operator == ">=":
                    low = max(low, bisect_left(table.ids, value))
                elif operator == "<":
                    high = min(high, bisect_left(table.ids, value))
                else:
                    high = min(high, bisect_right(table.ids, value))
        return _Slice(table.records, low, max(low, high))


class _Slice:
    """A window on a table's records, without copying a few hundred thousand references."""

    def __init__(self, records: list[Record], start: int, stop: int) -> None:
        self._records, self._start, self._stop = records, start, stop

    def __iter__(self) -> Iterator[Record]:
        return islice(self._records, self._start, self._stop)

    def __reversed__(self) -> Iterator[Record]:
        records = self._records
        return (records[index] for index in range(self._stop - 1, self._start - 1, -1))


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


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- serving over a real port -------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietRequestHandler(WSGIRequestHandler):
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
