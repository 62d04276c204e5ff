"""Pushing usage records to Odoo's ``POST /usage`` (docs/design.md §10), for the usage repair.

Records go in batches (``{"records": [...]}``, at most 1,000) with their **original** idempotency
keys: Odoo stores a key once per (subscription, metric), so a batch sent again — after a timeout,
a dropped connection, a busy server, or by a second repair racing the first or the metering
itself — answers ``duplicate`` for what it already holds and can never bill twice. That is what
makes retrying safe here, and the only reason this client retries at all.

Every record ends with one recorded outcome: ``created``, ``duplicate``, ``conflict`` (its key is
in the ledger with another quantity: nothing stored, a person decides), ``rejected`` (a field
Odoo refuses, a subscription the key may not push to, an unknown one), or ``failed`` (the request
itself: a refused key, a server that kept failing, a timeout past the retries). The key is sent in
a header and never appears in a result, message or log line.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from fusion_billing_assets.sources.odoo import RETRYABLE_STATUSES, RetryPolicy

MAX_BATCH = 1_000
USAGE_PATH = "/usage"


@dataclass(frozen=True)
class PushResult:
    idempotency_key: str
    subscription_id: int
    outcome: str  # created, duplicate, conflict, rejected, failed
    http_status: int | None
    message: str | None = None
    odoo_id: int | None = None


class UsagePusher:
    """``POST /usage`` in batches, as NexaCloud's metering user (its key, its subscriptions)."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        database: str,
        api_key: str,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._http = http
        self._headers = {"Authorization": f"bearer {api_key}", "X-Odoo-Database": database}
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._jitter = random.Random()
        self.requests = 0

    def push(self, records: Sequence[Mapping[str, Any]]) -> list[PushResult]:
        """Push one batch; one result per record, in order."""
        if not records:
            return []
        if len(records) > MAX_BATCH:
            raise ValueError(f"a /usage batch holds at most {MAX_BATCH} records, got {len(records)}")
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            status, answer, problem = self._send(records)
            retryable = problem is not None and (
                status is None or status in RETRYABLE_STATUSES or status >= 500
            )
            waited = time.monotonic() - started
            if (
                not retryable
                or attempt >= self.retry.max_attempts
                or waited >= self.retry.max_elapsed_seconds
            ):
                break
            self._sleep(self.retry.delay(attempt, None, self._jitter))
        if problem is not None:
            tries = f" after {attempt} attempt(s)" if retryable else ""
            return [_failed(record, status, f"{problem}{tries}") for record in records]
        return _results(records, answer, status)

    def _send(self, records: Sequence[Mapping[str, Any]]) -> tuple[int | None, Any, str | None]:
        self.requests += 1
        try:
            response = self._http.post(USAGE_PATH, json={"records": list(records)}, headers=self._headers)
        except httpx.TimeoutException:
            return None, None, "Odoo's /usage did not answer in time"
        except httpx.TransportError as error:
            return None, None, f"Odoo's /usage could not be reached: {type(error).__name__}"
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200:
            return response.status_code, answer, _refusal(response.status_code, answer)
        if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
            return 200, answer, "Odoo's /usage answered 200 without a list of results"
        return 200, answer, None


def _results(
    records: Sequence[Mapping[str, Any]], answer: Mapping[str, Any], status: int
) -> list[PushResult]:
    results = answer["results"]
    by_key = {str(item.get("idempotency_key")): item for item in results if isinstance(item, dict)}
    out = []
    for position, record in enumerate(records):
        item = results[position] if position < len(results) and isinstance(results[position], dict) else None
        if item is None or item.get("idempotency_key") != record["idempotency_key"]:
            item = by_key.get(str(record["idempotency_key"]))
        if item is None:
            out.append(_failed(record, status, "Odoo's answer has no result for this record"))
            continue
        outcome = str(item.get("status"))
        if outcome not in ("created", "duplicate", "conflict", "rejected"):
            out.append(_failed(record, status, f"Odoo answered an unknown status {outcome!r}"))
            continue
        error = item.get("error")
        out.append(
            PushResult(
                idempotency_key=str(record["idempotency_key"]),
                subscription_id=int(record["subscription_id"]),
                outcome=outcome,
                http_status=status,
                message=_error_text(error) if error else None,
                odoo_id=item.get("id") if isinstance(item.get("id"), int) else None,
            )
        )
    return out


def _failed(record: Mapping[str, Any], status: int | None, message: str) -> PushResult:
    return PushResult(
        str(record["idempotency_key"]), int(record["subscription_id"]), "failed", status, message
    )


def _refusal(status: int, answer: Any) -> str:
    detail = _error_text(answer.get("error")) if isinstance(answer, dict) and answer.get("error") else ""
    meaning = {
        401: "the API key was refused",
        403: "the key may not push usage",
        404: "not found",
        422: "the request was refused as invalid",
    }.get(status, "server error" if status >= 500 else "unexpected answer")
    return f"Odoo's /usage answered HTTP {status} ({meaning})" + (f": {detail}" if detail else "")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        field = f" (field {error['field']})" if error.get("field") else ""
        return f"{error.get('code', 'error')}: {error.get('message', '')}{field}".strip()
    return json.dumps(error)[:300]


def batches(records: Iterable[Mapping[str, Any]], size: int = MAX_BATCH) -> Iterable[list[Mapping[str, Any]]]:
    batch: list[Mapping[str, Any]] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
