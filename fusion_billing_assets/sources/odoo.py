"""The Odoo client: JSON-2 (Odoo 19) and legacy ``/jsonrpc``, over one httpx client.

Both protocols answer the same ``call(model, method, **named_arguments)``, so the extractors never
know which one is configured. Reads page with a keyset (``id > last``, ``order: id asc``): every
JSON-2 call is its own transaction, and offsets would skip or repeat records that change between
pages. The API key travels in a header (JSON-2) or in the call's arguments (``/jsonrpc``); it is
never put into a message, a log line or metadata. Each request must be answered in full within a
wall-clock deadline; a failure that may not repeat (a busy or restarting server, a dropped
connection, a garbled answer) is retried within ``RetryPolicy``'s attempts and time budget, and one
that will repeat (a refused key, an unknown field) is reported at once.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

import httpx

logger = logging.getLogger(__name__)

# Sent with every call: in JSON-2 a context replaces the user's, it is not merged into it.
# ``active_test: False`` so archived partners and products still resolve during reconciliation.
DEFAULT_CONTEXT: Mapping[str, Any] = {"lang": "en_US", "tz": "UTC", "active_test": False}
DEFAULT_PAGE_SIZE = 500
# Groups are small (a key and a few sums, ~150 bytes of JSON): fetch many per request. Each page
# is one GROUP BY over its keyset range of the ledger, so fewer, larger pages cost Odoo's database
# less: 20,000 subscriptions' totals are one request.
GROUP_PAGE_SIZE = 20_000


class OdooProtocol(StrEnum):
    """How the client speaks to Odoo (docs/design.md §5)."""

    JSON2 = "json2"  # Odoo 19's JSON-2 API: POST /json/2/<model>/<method>, bearer key
    JSONRPC = "jsonrpc"  # the legacy /jsonrpc execute_kw, deprecated in Odoo 19, needs the login


# Answers worth another try: the server is busy, restarting or behind a struggling proxy. Odoo
# also answers 500 for whatever a request raises; those are retried unless the error is the
# request's own (``DETERMINISTIC_ERRORS``).
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# How long one request may take from sending to its last byte, whatever the server trickles.
DEFAULT_DEADLINE_SECONDS = 120.0

# Exceptions an Odoo request raises because of the request itself: a field, model or method that
# does not exist, a bad argument, a record that is gone, a refused access. The same request fails
# the same way again, so they are reported at once instead of retried.
DETERMINISTIC_ERRORS = frozenset(
    {
        "ValueError",
        "TypeError",
        "KeyError",
        "AttributeError",
        "NameError",
        "IndexError",
        "NotImplementedError",
        "UserError",
        "ValidationError",
        "MissingError",
        "AccessError",
        "AccessDenied",
        "RedirectWarning",
        "NotFound",
    }
)
_INVALID_FIELD = re.compile(r"Invalid field '?(?P<field>[\w.]+)'?(?: on model '?(?P<model>[\w.]+)'?)?")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter; ``Retry-After`` wins when sent.

    A call stops after ``max_attempts`` or when the next wait would end after
    ``max_elapsed_seconds`` from its first attempt, whichever comes first; each attempt's deadline
    is cut to what is left of that budget.
    """

    max_attempts: int = 5
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    max_elapsed_seconds: float = 180.0

    def delay(self, attempt: int, retry_after: float | None, jitter: random.Random) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay_seconds)
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return jitter.uniform(0, ceiling)


class OdooError(RuntimeError):
    """Odoo refused or failed a call; the message names server, database, model and method."""

    def __init__(self, message: str, *, status: int | None = None, error_name: str | None = None):
        super().__init__(message)
        self.status = status
        self.error_name = error_name


class OdooAuthenticationError(OdooError):
    """The API key or login was rejected, or the user may not read a model. Retrying cannot help."""


class _RetryableFailure(Exception):
    """One attempt failed in a way the next may not: ``what`` happened to the call, and why."""

    def __init__(
        self,
        what: str,
        detail: str,
        *,
        status: int | None = None,
        error_name: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(what)
        self.what = what
        self.detail = detail
        self.status = status
        self.error_name = error_name
        self.retry_after = retry_after


@dataclass
class OdooCallStats:
    """How much a piece of work cost the Odoo server, for the asset's metadata."""

    requests: int = 0
    pages: int = 0
    retries: int = 0
    calls_by_method: dict[str, int] = field(default_factory=dict)
    # Records (or groups) received per "model.method", to set the requests against: a read costs
    # about one request per page of what it received.
    rows_by_method: dict[str, int] = field(default_factory=dict)

    def count(self, model: str, method: str) -> None:
        self.requests += 1
        key = f"{model}.{method}"
        self.calls_by_method[key] = self.calls_by_method.get(key, 0) + 1

    def received(self, model: str, method: str, rows: int) -> None:
        key = f"{model}.{method}"
        self.rows_by_method[key] = self.rows_by_method.get(key, 0) + rows


def _group_key(value: Any) -> Any:
    """A group's value as a domain compares it: a many2one's id, a date bucket's start, or None."""
    if value is False or value is None:
        return None
    if isinstance(value, list | tuple):
        return value[0]
    return value


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(record, dict) and _is_id(record.get("id")) for record in value
    )


def _is_groups(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(group, dict) for group in value)


# What each read method answers, so a wrong-shaped answer is caught (and retried) here rather
# than failing later as a KeyError far from the call. Other methods' answers are not checked.
EXPECTED_ANSWERS: Mapping[str, tuple[str, Callable[[Any], bool]]] = {
    "search_read": ("a list of records with integer ids", _is_records),
    "read": ("a list of records with integer ids", _is_records),
    "formatted_read_group": ("a list of groups", _is_groups),
    "read_group": ("a list of groups", _is_groups),
    "search": ("a list of ids", lambda value: isinstance(value, list) and all(map(_is_id, value))),
    "search_count": ("a count", _is_id),
    "fields_get": ("an object of field descriptions", lambda value: isinstance(value, dict)),
    "login": ("a user id or false", lambda value: value is False or _is_id(value)),
}


class OdooClient:
    def __init__(
        self,
        http: httpx.Client,
        *,
        database: str,
        api_key: str,
        protocol: str = OdooProtocol.JSON2,
        login: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        context: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if protocol not in tuple(OdooProtocol):
            raise ValueError(f"unknown Odoo protocol {protocol!r}; expected one of {', '.join(OdooProtocol)}")
        if protocol == OdooProtocol.JSONRPC and not login:
            raise ValueError("the legacy /jsonrpc protocol needs the login of the API key's user")
        if page_size < 1:
            raise ValueError(f"page size must be positive, got {page_size}")
        if deadline_seconds <= 0:
            raise ValueError(f"the deadline per request must be positive, got {deadline_seconds}")
        self._http = http
        self._database = database
        self._api_key = api_key
        self._login = login
        self._uid: int | None = None
        self._request_ids = itertools.count(1)
        self.protocol = OdooProtocol(protocol)
        self.page_size = page_size
        self.context = dict(DEFAULT_CONTEXT if context is None else context)
        self.stats = OdooCallStats()
        self.retry = retry or RetryPolicy()
        self.deadline_seconds = deadline_seconds
        self._sleep = sleep
        self._clock = clock
        self._jitter = random.Random()

    @property
    def server(self) -> str:
        return str(self._http.base_url).rstrip("/")

    def describe(self) -> str:
        return f"Odoo {self.server} (database {self._database!r}, {self.protocol})"

    def call(self, model: str, method: str, **arguments: Any) -> Any:
        """Call ``model.method`` with named arguments; ``context`` defaults to the client's."""
        arguments.setdefault("context", self.context)
        if self.protocol == OdooProtocol.JSON2:
            return self._call_json2(model, method, arguments)
        return self._call_jsonrpc(model, method, arguments)

    def search_read_pages(
        self,
        model: str,
        domain: Sequence[Any],
        fields: Sequence[str],
        *,
        context: Mapping[str, Any] | None = None,
        at_most: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every record matching ``domain``, one keyset page at a time, in id order.

        ``at_most``: how many records can match at most (a domain on a list of ids), so a full
        last page needs no empty one after it to tell that nothing is left.
        """
        last_id = 0
        received = 0
        while True:
            page_domain = [*domain, ["id", ">", last_id]] if last_id else list(domain)
            page = self.call(
                model,
                "search_read",
                domain=page_domain,
                fields=list(fields),
                limit=self.page_size,
                order="id asc",
                context=dict(self.context if context is None else context),
            )
            self.stats.pages += 1
            self.stats.received(model, "search_read", len(page))
            received += len(page)
            if page:
                yield page
            if len(page) < self.page_size or (at_most is not None and received >= at_most):
                return
            last_id = page[-1]["id"]

    def search_read_all(
        self,
        model: str,
        domain: Sequence[Any],
        fields: Sequence[str],
        *,
        context: Mapping[str, Any] | None = None,
        at_most: int | None = None,
    ) -> list[dict[str, Any]]:
        return [
            record
            for page in self.search_read_pages(model, domain, fields, context=context, at_most=at_most)
            for record in page
        ]

    def search_read_in(
        self,
        model: str,
        name: str,
        values: Iterable[Any],
        fields: Sequence[str],
        *,
        domain: Sequence[Any] = (),
        context: Mapping[str, Any] | None = None,
        unique: bool = False,
    ) -> Iterator[list[dict[str, Any]]]:
        """Every record whose field ``name`` is one of ``values``, ``page_size`` values per domain.

        Never one call per value: each list of values is one ``in`` condition, its records keyset
        paged. On ``id``, or a field ``unique`` within ``domain``, a list matches at most its own
        length, so a full page ends the list.
        """
        distinct = sorted(set(values))
        for start in range(0, len(distinct), self.page_size):
            chunk = distinct[start : start + self.page_size]
            yield from self.search_read_pages(
                model,
                [*domain, [name, "in", chunk]],
                fields,
                context=context,
                at_most=len(chunk) if name == "id" or unique else None,
            )

    def read_group(
        self,
        model: str,
        domain: Sequence[Any],
        *,
        groupby: Sequence[str],
        aggregates: Sequence[str],
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Groups aggregated by Odoo, in ``formatted_read_group``'s shape over either protocol.

        Each group carries its groupby values (a many2one as ``[id, name]``, a date or datetime
        bucket as ``[start, label]``) and each aggregate under its own name (``"quantity:sum"``,
        ``"__count"``). Pages through the groups so no single answer grows without bound.
        """
        if ":" in groupby[0]:
            # A date bucket is no key to compare a field with: page by offset.
            return self._read_group_by_offset(model, domain, groupby, aggregates, context)
        groups: list[dict[str, Any]] = []
        lower = None  # the last first-groupby value whose groups are all in ``groups``
        while True:
            # Keyset on the first groupby: each page's GROUP BY covers only the rows after the last
            # page's, where an offset would have Odoo group the whole domain again for every page.
            # No order is sent, so Odoo orders groups by the group-by columns themselves (a many2one
            # by its id, not by the related model's order: _read_group_orderby), and empty values
            # sort last, inside the keyset's range until their turn.
            page_domain = list(domain)
            if lower is not None:
                page_domain += ["|", [groupby[0], "=", False], [groupby[0], ">", lower]]
            page = self._read_group_page(model, page_domain, groupby, aggregates, context, None, offset=0)
            self.stats.pages += 1
            self.stats.received(model, self._group_method, len(page))
            if len(page) < GROUP_PAGE_SIZE:
                return groups + page
            last = _group_key(page[-1][groupby[0]])
            complete = [group for group in page if _group_key(group[groupby[0]]) != last]
            if not complete or last is None:
                # One value fills a page (or the empty values are reached): page by offset from here.
                return groups + self._read_group_by_offset(model, page_domain, groupby, aggregates, context)
            groups += complete
            lower = _group_key(complete[-1][groupby[0]])

    @property
    def _group_method(self) -> str:
        return "formatted_read_group" if self.protocol == OdooProtocol.JSON2 else "read_group"

    def _read_group_by_offset(self, model, domain, groupby, aggregates, context) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = []
        order = ", ".join(groupby)
        while True:
            page = self._read_group_page(
                model, domain, groupby, aggregates, context, order, offset=len(groups)
            )
            self.stats.pages += 1
            self.stats.received(model, self._group_method, len(page))
            groups += page
            if len(page) < GROUP_PAGE_SIZE:
                return groups

    def _read_group_page(self, model, domain, groupby, aggregates, context, order, *, offset):
        context = dict(self.context if context is None else context)
        if self.protocol == OdooProtocol.JSON2:
            groups = self.call(
                model,
                "formatted_read_group",
                domain=list(domain),
                groupby=list(groupby),
                aggregates=list(aggregates),
                order=order,
                limit=GROUP_PAGE_SIZE,
                offset=offset,
                context=context,
            )
            return [{key: group.get(key) for key in (*groupby, *aggregates)} for group in groups]
        # Legacy read_group names sums after the bare field, labels date buckets and puts their
        # UTC bounds in __range: reshape to formatted_read_group's answer.
        rows = self.call(
            model,
            "read_group",
            domain=list(domain),
            fields=[aggregate for aggregate in aggregates if aggregate != "__count"],
            groupby=list(groupby),
            offset=offset,
            limit=GROUP_PAGE_SIZE,
            orderby=order,
            lazy=False,
            context=context,
        )
        return [_formatted_group(row, groupby, aggregates) for row in rows]

    def _call_json2(self, model: str, method: str, arguments: dict[str, Any]) -> Any:
        headers = {"Authorization": f"bearer {self._api_key}", "X-Odoo-Database": self._database}
        path = f"/json/2/{model}/{method}"

        def attempt(deadline: float) -> Any:
            response, content = self._send(model, method, path, arguments, headers, deadline)
            if response.status_code == 200:
                return self._expected_answer(model, method, self._decode(model, method, content))
            raise self._json2_failure(model, method, response, content)

        return self._with_retries(model, method, attempt)

    def _call_jsonrpc(self, model: str, method: str, arguments: dict[str, Any]) -> Any:
        # execute_kw passes ``args`` positionally; record methods (read) take their ids first.
        positional = [arguments.pop("ids")] if "ids" in arguments else []
        uid = self._authenticate(model, method)
        args = [self._database, uid, self._api_key, model, method, positional, arguments]
        return self._jsonrpc(model, method, "object", "execute_kw", args)

    def _authenticate(self, model: str, method: str) -> int:
        if self._uid is None:
            uid = self._jsonrpc(
                "res.users", "login", "common", "login", [self._database, self._login, self._api_key]
            )
            if not uid:
                raise self._error(
                    f"{self.describe()} rejected the login {self._login!r} with the configured API key, "
                    f"so {model}.{method} was not called; check ODOO_LOGIN and ODOO_API_KEY.",
                    kind=OdooAuthenticationError,
                )
            self._uid = uid
        return self._uid

    def _jsonrpc(self, model: str, method: str, service: str, service_method: str, args: list[Any]) -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": service_method, "args": args},
            "id": next(self._request_ids),
        }

        def attempt(deadline: float) -> Any:
            response, content = self._send(model, method, "/jsonrpc", body, {}, deadline)
            status = response.status_code
            if status != 200:
                if status in RETRYABLE_STATUSES or status == 500:
                    raise _RetryableFailure(
                        f"answered HTTP {status} to {model}.{method}",
                        response.reason_phrase,
                        status=status,
                        retry_after=_retry_after_seconds(response),
                    )
                raise self._error(
                    f"{self.describe()} answered HTTP {status} to {model}.{method}: {response.reason_phrase}.",
                    status=status,
                )
            envelope = self._decode(model, method, content)
            if not isinstance(envelope, dict) or not ({"result", "error"} & envelope.keys()):
                raise _RetryableFailure(
                    f"answered {model}.{method} with a JSON-RPC envelope holding neither 'result' nor 'error'",
                    f"got {_shape(envelope)}",
                )
            if "error" not in envelope:
                return self._expected_answer(model, method, envelope["result"])
            error = envelope["error"] if isinstance(envelope["error"], dict) else {}
            data = error.get("data") if isinstance(error.get("data"), dict) else {}
            name = str(data.get("name") or "")
            message = str(data.get("message") or error.get("message") or "no message")
            if not _is_deterministic(name, str(data.get("debug") or "")):
                raise _RetryableFailure(
                    f"failed {model}.{method}", f"{name or 'error'}: {message}", error_name=name
                )
            raise self._error(
                _with_field_hint(
                    f"{self.describe()} refused {model}.{method}: {name or 'error'}: {message}",
                    model,
                    message,
                ),
                kind=OdooAuthenticationError if _is_access_error(name) else OdooError,
                status=error.get("code"),
                error_name=name,
            )

        return self._with_retries(model, method, attempt)

    def _with_retries(self, model: str, method: str, attempt: Callable[[float], Any]) -> Any:
        """Run ``attempt`` until it answers, within the policy's attempts and time budget.

        Every call this client makes is a read (search_read, read, read_group, search_count,
        login): repeating one changes nothing in Odoo, so any attempt that may fail differently
        next time is retried. A failure that will repeat (a refused key, an unknown field) is
        raised by ``attempt`` as an OdooError and ends the call at once.
        """
        started = self._clock()
        for number in itertools.count(1):
            self.stats.count(model, method)
            budget_left = self.retry.max_elapsed_seconds - (self._clock() - started)
            deadline = self._clock() + max(0.0, min(self.deadline_seconds, budget_left))
            try:
                return attempt(deadline)
            except _RetryableFailure as failure:
                delay = self.retry.delay(number, failure.retry_after, self._jitter)
                elapsed = self._clock() - started
                if number >= self.retry.max_attempts or elapsed + delay > self.retry.max_elapsed_seconds:
                    raise self._error(
                        f"{self.describe()} {failure.what} ({failure.detail}, {number} attempts). "
                        f"Gave up after {elapsed:.1f} s; a call is tried at most "
                        f"{self.retry.max_attempts} times within {self.retry.max_elapsed_seconds:g} s.",
                        status=failure.status,
                        error_name=failure.error_name,
                    ) from None
                self.stats.retries += 1
                logger.warning(
                    "%s",
                    self._redact(
                        f"{self.describe()} {failure.what} ({failure.detail}); "
                        f"attempt {number} of {self.retry.max_attempts}, retrying in {delay:.1f} s."
                    ),
                )
                self._sleep(delay)
        raise AssertionError("unreachable: itertools.count never ends")

    def _send(
        self,
        model: str,
        method: str,
        path: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        deadline: float,
    ) -> tuple[httpx.Response, bytes]:
        """POST and read the whole answer by ``deadline``, however slowly the server sends it.

        httpx's read timeout applies to each read, so a server trickling a byte at a time never
        trips it: the body is streamed and the deadline checked between chunks, and every timeout
        of the request is cut to what is left before the deadline.
        """
        content = bytearray()
        try:
            with self._http.stream(
                "POST", path, json=body, headers=headers, timeout=self._timeout_until(deadline)
            ) as response:
                for chunk in response.iter_bytes():
                    content += chunk
                    if self._clock() > deadline:
                        raise _RetryableFailure(
                            f"did not finish answering {model}.{method} within the deadline of "
                            f"{self.deadline_seconds:g} s per request",
                            f"{len(content)} bytes received, HTTP {response.status_code}",
                            status=response.status_code,
                        )
        except httpx.TimeoutException as error:
            raise _RetryableFailure(
                f"did not answer {model}.{method} in time", type(error).__name__
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as error:
            raise _RetryableFailure(
                f"dropped the connection during {model}.{method}",
                f"{type(error).__name__}: {error}; {len(content)} bytes received",
            ) from None
        except httpx.DecodingError as error:
            raise _RetryableFailure(
                f"answered {model}.{method} with a body that cannot be decoded",
                f"{type(error).__name__}: {error}",
            ) from None
        except httpx.TransportError as error:
            raise _RetryableFailure(
                f"is unreachable for {model}.{method}", f"{type(error).__name__}: {error}"
            ) from None
        return response, bytes(content)

    def _timeout_until(self, deadline: float) -> httpx.Timeout:
        left = max(deadline - self._clock(), 0.001)
        configured = self._http.timeout

        def cut(seconds: float | None) -> float:
            return left if seconds is None else min(seconds, left)

        return httpx.Timeout(
            connect=cut(configured.connect),
            read=cut(configured.read),
            write=cut(configured.write),
            pool=cut(configured.pool),
        )

    def _decode(self, model: str, method: str, content: bytes) -> Any:
        try:
            return json.loads(content)
        except ValueError as error:  # also UnicodeDecodeError
            raise _RetryableFailure(
                f"answered {model}.{method} with a body that is not JSON",
                f"{error}; {len(content)} bytes starting {content[:60]!r}",
            ) from None

    def _expected_answer(self, model: str, method: str, answer: Any) -> Any:
        expected, fits = EXPECTED_ANSWERS.get(method, ("any answer", lambda value: True))
        if not fits(answer):
            raise _RetryableFailure(
                f"answered {model}.{method} with {_shape(answer)} where {expected} was expected",
                "wrong-shaped answer",
            )
        return answer

    def _json2_failure(
        self, model: str, method: str, response: httpx.Response, content: bytes
    ) -> OdooError | _RetryableFailure:
        status = response.status_code
        name, message, debug = _json2_error_body(response, content)
        if status == 401:
            return self._error(
                f"{self.describe()} rejected the API key for {model}.{method} (HTTP 401: "
                f"{name or 'no Odoo error'}: {message or response.reason_phrase}); check ODOO_API_KEY.",
                kind=OdooAuthenticationError,
                status=status,
                error_name=name,
            )
        if status == 403:
            return self._error(
                f"{self.describe()} denied {model}.{method} to the API key's user (HTTP 403): {message}",
                kind=OdooAuthenticationError,
                status=status,
                error_name=name,
            )
        if status == 404 and not name:
            return self._error(
                f"{self.describe()} answered {model}.{method} with HTTP 404 and no Odoo error: "
                "is the database name right (ODOO_DATABASE)?",
                status=status,
            )
        detail = f"{name}: {message}" if name else response.reason_phrase
        if status in RETRYABLE_STATUSES or (status == 500 and not _is_deterministic(name, debug)):
            return _RetryableFailure(
                f"answered HTTP {status} to {model}.{method}",
                detail,
                status=status,
                error_name=name,
                retry_after=_retry_after_seconds(response),
            )
        return self._error(
            _with_field_hint(
                f"{self.describe()} refused {model}.{method} (HTTP {status}): {detail}",
                model,
                f"{message} {debug}",
            ),
            status=status,
            error_name=name,
        )

    def _error(
        self,
        message: str,
        *,
        kind: type[OdooError] = OdooError,
        status: int | None = None,
        error_name: str | None = None,
    ) -> OdooError:
        return kind(self._redact(message), status=status, error_name=error_name)

    def _redact(self, text: str) -> str:
        # Odoo's own messages and bodies are quoted in errors: make sure none carries the key back.
        return text.replace(self._api_key, "***") if self._api_key else text


def _formatted_group(
    row: Mapping[str, Any], groupby: Sequence[str], aggregates: Sequence[str]
) -> dict[str, Any]:
    group: dict[str, Any] = {}
    for spec in groupby:
        value = row.get(spec)
        if ":" in spec and value:
            value = [row["__range"][spec]["from"], value]
        group[spec] = value
    for aggregate in aggregates:
        group[aggregate] = (
            row.get("__count") if aggregate == "__count" else row.get(aggregate.split(":")[0], 0)
        )
    return group


def _json2_error_body(response: httpx.Response, content: bytes) -> tuple[str, str, str]:
    """Odoo's ``name``, ``message`` and ``debug`` from a JSON-2 error, empty when it sent none."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return "", "", ""
    try:
        body = json.loads(content)
    except ValueError:
        return "", "", ""
    if not isinstance(body, dict):
        return "", "", ""
    return str(body.get("name") or ""), str(body.get("message") or ""), str(body.get("debug") or "")


def _is_deterministic(error_name: str, debug: str) -> bool:
    """Whether Odoo's error comes from the request itself, so the same request fails again."""
    return error_name.rsplit(".", 1)[-1] in DETERMINISTIC_ERRORS or "ValueError: Invalid field" in debug


def _with_field_hint(message: str, model: str, odoo_text: str) -> str:
    """``message``, plus which field is unknown when Odoo's text says a field is invalid."""
    found = _INVALID_FIELD.search(odoo_text)
    if not found:
        return message
    field_name = found["field"].removeprefix(f"{model}.")
    return (
        f"{message.rstrip('.')}. The field {field_name!r} does not exist on {found['model'] or model} in "
        "this database; check the field names read (docs/design.md §5.3) against the installed modules."
    )


def _shape(value: Any) -> str:
    """A short description of a JSON value, for saying what a wrong-shaped answer was."""
    if isinstance(value, dict):
        keys = ", ".join(repr(key) for key in list(value)[:5])
        return f"an object with keys [{keys}{', …' if len(value) > 5 else ''}]"
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, dict) or not _is_id(item.get("id")):
                return f"a list of {len(value)} items whose item {index} is {_shape(item)}"
        return f"a list of {len(value)} items"
    if value is None:
        return "null"
    return f"{type(value).__name__} {str(value)[:40]!r}"


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _is_access_error(error_name: str) -> bool:
    return error_name.endswith(("AccessDenied", "AccessError"))
