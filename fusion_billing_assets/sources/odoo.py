"""The Odoo client: JSON-2 (Odoo 19) and legacy ``/jsonrpc``, over one httpx client.

Both protocols answer the same ``call(model, method, **named_arguments)``, so the extractors never
know which one is configured. Reads page with a keyset (``id > last``, ``order: id asc``): every
JSON-2 call is its own transaction, and offsets would skip or repeat records that change between
pages. The API key travels in a header (JSON-2) or in the call's arguments (``/jsonrpc``); it is
never put into a message, a log line or metadata.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

import httpx

# Sent with every call: in JSON-2 a context replaces the user's, it is not merged into it.
# ``active_test: False`` so archived partners and products still resolve during reconciliation.
DEFAULT_CONTEXT: Mapping[str, Any] = {"lang": "en_US", "tz": "UTC", "active_test": False}
DEFAULT_PAGE_SIZE = 500
# Groups are small (a key and a few sums): fetch many per request.
GROUP_PAGE_SIZE = 5000


class OdooProtocol(StrEnum):
    """How the client speaks to Odoo (docs/design.md §5)."""

    JSON2 = "json2"  # Odoo 19's JSON-2 API: POST /json/2/<model>/<method>, bearer key
    JSONRPC = "jsonrpc"  # the legacy /jsonrpc execute_kw, deprecated in Odoo 19, needs the login



# Answers worth another try: the server is busy, restarting or behind a struggling proxy.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter; ``Retry-After`` wins when sent."""

    max_attempts: int = 5
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0

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


@dataclass
class OdooCallStats:
    """How much a piece of work cost the Odoo server, for the asset's metadata."""

    requests: int = 0
    pages: int = 0
    retries: int = 0
    calls_by_method: dict[str, int] = field(default_factory=dict)

    def count(self, model: str, method: str) -> None:
        self.requests += 1
        key = f"{model}.{method}"
        self.calls_by_method[key] = self.calls_by_method.get(key, 0) + 1


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
        sleep: Callable[[float], None] = time.sleep,
    ):
        if protocol not in tuple(OdooProtocol):
            raise ValueError(
                f"unknown Odoo protocol {protocol!r}; expected one of {', '.join(OdooProtocol)}"
            )
        if protocol == OdooProtocol.JSONRPC and not login:
            raise ValueError("the legacy /jsonrpc protocol needs the login of the API key's user")
        if page_size < 1:
            raise ValueError(f"page size must be positive, got {page_size}")
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
        self._sleep = sleep
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
    ) -> Iterator[list[dict[str, Any]]]:
        """Every record matching ``domain``, one keyset page at a time, in id order."""
        last_id = 0
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
            if page:
                yield page
            if len(page) < self.page_size:
                return
            last_id = page[-1]["id"]

    def search_read_all(
        self,
        model: str,
        domain: Sequence[Any],
        fields: Sequence[str],
        *,
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        return [
            record
            for page in self.search_read_pages(model, domain, fields, context=context)
            for record in page
        ]

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
        groups: list[dict[str, Any]] = []
        order = ", ".join(groupby)
        while True:
            page = self._read_group_page(
                model, domain, groupby, aggregates, context, order, offset=len(groups)
            )
            self.stats.pages += 1
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
        response = self._post(model, method, f"/json/2/{model}/{method}", arguments, headers)
        if response.status_code == 200:
            return response.json()
        raise self._json2_error(model, method, response)

    def _call_jsonrpc(self, model: str, method: str, arguments: dict[str, Any]) -> Any:
        # execute_kw passes ``args`` positionally; record methods (read) take their ids first.
        positional = [arguments.pop("ids")] if "ids" in arguments else []
        args = [self._database, self._authenticate(), self._api_key, model, method, positional, arguments]
        return self._jsonrpc(model, method, "object", "execute_kw", args)

    def _authenticate(self) -> int:
        if self._uid is None:
            uid = self._jsonrpc(
                "res.users", "login", "common", "login", [self._database, self._login, self._api_key]
            )
            if not uid:
                raise OdooAuthenticationError(
                    f"{self.describe()} rejected the login {self._login!r} with the configured API key; "
                    "check ODOO_LOGIN and ODOO_API_KEY."
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
        response = self._post(model, method, "/jsonrpc", body, {})
        if response.status_code != 200:
            raise OdooError(
                f"{self.describe()} answered HTTP {response.status_code} to {model}.{method}.",
                status=response.status_code,
            )
        payload = response.json()
        if "error" not in payload:
            return payload.get("result")
        error = payload["error"]
        data = error.get("data") or {}
        name = data.get("name") or ""
        message = data.get("message") or error.get("message") or "no message"
        error_class = OdooAuthenticationError if _is_access_error(name) else OdooError
        raise error_class(
            f"{self.describe()} refused {model}.{method}: {name or 'error'}: {message}",
            status=error.get("code"),
            error_name=name,
        )

    def _post(
        self, model: str, method: str, path: str, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> httpx.Response:
        """POST with bounded retries; every call this client makes is a read, so a retry is safe."""
        for attempt in range(1, self.retry.max_attempts + 1):
            self.stats.count(model, method)
            last_attempt = attempt == self.retry.max_attempts
            try:
                response = self._http.post(path, json=body, headers=headers)
            except httpx.TransportError as error:
                if last_attempt:
                    raise OdooError(
                        _transport_failure(self.describe(), model, method, error, attempt)
                    ) from None
                self.stats.retries += 1
                self._sleep(self.retry.delay(attempt, None, self._jitter))
                continue
            if response.status_code not in RETRYABLE_STATUSES or last_attempt:
                return response
            self.stats.retries += 1
            self._sleep(self.retry.delay(attempt, _retry_after_seconds(response), self._jitter))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _json2_error(self, model: str, method: str, response: httpx.Response) -> OdooError:
        status = response.status_code
        name, message = "", ""
        if response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
            name, message = body.get("name") or "", body.get("message") or ""
        if status == 401:
            return OdooAuthenticationError(
                f"{self.describe()} rejected the API key (HTTP 401); check ODOO_API_KEY.",
                status=status,
                error_name=name,
            )
        if status == 403:
            return OdooAuthenticationError(
                f"{self.describe()} denied {model}.{method} to the API key's user (HTTP 403): {message}",
                status=status,
                error_name=name,
            )
        if status == 404 and not name:
            return OdooError(
                f"{self.describe()} answered 404 with no Odoo error: is the database name right (ODOO_DATABASE)?",
                status=status,
            )
        detail = f"{name}: {message}" if name else response.reason_phrase
        return OdooError(
            f"{self.describe()} refused {model}.{method} (HTTP {status}): {detail}",
            status=status,
            error_name=name,
        )


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


def _transport_failure(
    server: str, model: str, method: str, error: httpx.TransportError, attempts: int
) -> str:
    if isinstance(error, httpx.TimeoutException):
        return (
            f"{server} did not answer {model}.{method} in time ({type(error).__name__}, {attempts} attempts)."
        )
    return f"{server} is unreachable for {model}.{method} after {attempts} attempts: {type(error).__name__}: {error}."


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
