"""Usage delivery: whether each NexaCloud usage record reached Odoo's ledger (docs/design.md §10).

A record is **delivered** when the ledger holds exactly one record with the deployment's mapped
subscription, its idempotency key and its quantity. Otherwise it is a gap: ``missing`` (no ledger
record carries its key), ``quantity_differs`` (its key, another quantity), ``wrong_subscription``
(its key under another subscription). A ledger record whose key NexaCloud never issued is
``extra``, as is every copy of a key beyond the first under one subscription.

The comparison never holds a period's records: both systems count and sum their records per
(subscription, local day) — the **segments** — and only the segments that disagree are read
record by record (``segments_that_disagree``, then ``classify``). A segment whose count and sum
agree is taken as delivered; a loss and an addition of the same count and the same CPU within one
subscription's day would hide each other there, and nowhere else.

Quantities are integer CPU milliseconds, as everywhere in the reconciliation.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

import pandas as pd

SEGMENT_KEY = ["subscription_id", "usage_date"]
GAP_COLUMNS = [
    "deployment_id",
    "subscription_id",
    "idempotency_key",
    "kind",
    "window_start",
    "nexacloud_cpu_milliseconds",
    "odoo_cpu_milliseconds",
]


class GapKind(StrEnum):
    MISSING = "missing"
    QUANTITY_DIFFERS = "quantity_differs"
    WRONG_SUBSCRIPTION = "wrong_subscription"
    EXTRA = "extra"


def deployment_links(mapping: pd.DataFrame) -> pd.DataFrame:
    """The mapped (deployment, subscription) pairs of ``billing/account_mapping``."""
    links = mapping[
        (mapping["link_kind"] == "deployment") & mapping["nexacloud_id"].notna() & mapping["odoo_id"].notna()
    ]
    return pd.DataFrame(
        {
            "deployment_id": links["nexacloud_id"].astype("int64").to_numpy(),
            "subscription_id": links["odoo_id"].astype("int64").to_numpy(),
        }
    ).drop_duplicates("deployment_id")


def segments_that_disagree(
    nexacloud_segments: pd.DataFrame, ledger_segments: pd.DataFrame, links: pd.DataFrame
) -> pd.DataFrame:
    """The (subscription, local day) segments whose record count or CPU differ between the systems.

    ``nexacloud_segments``: ``deployment_id``, ``usage_date``, ``records``, ``cpu_milliseconds``
    (keyed records only); ``ledger_segments``: the same per ``subscription_id``. NexaCloud's side
    is put under each deployment's mapped subscription; a deployment without one is not judged
    here (the reconciliation reports it ``unmapped``). A segment one side lacks counts zero.
    Columns: the segment, ``deployment_ids`` (NexaCloud's deployments in it), both sides' counts
    and milliseconds; sorted.
    """
    nexacloud = nexacloud_segments.merge(links, on="deployment_id", how="inner")
    by_segment = nexacloud.groupby(SEGMENT_KEY, as_index=False).agg(
        nexacloud_records=("records", "sum"),
        nexacloud_cpu_milliseconds=("cpu_milliseconds", "sum"),
    )
    ledger = ledger_segments.rename(
        columns={"records": "odoo_records", "cpu_milliseconds": "odoo_cpu_milliseconds"}
    )[[*SEGMENT_KEY, "odoo_records", "odoo_cpu_milliseconds"]]
    both = by_segment.merge(ledger, on=SEGMENT_KEY, how="outer")
    counts = ["nexacloud_records", "nexacloud_cpu_milliseconds", "odoo_records", "odoo_cpu_milliseconds"]
    both[counts] = both[counts].fillna(0).astype("int64")
    differ = (both["nexacloud_records"] != both["odoo_records"]) | (
        both["nexacloud_cpu_milliseconds"] != both["odoo_cpu_milliseconds"]
    )
    return both[differ].sort_values(SEGMENT_KEY, ignore_index=True)


def classify(
    nexacloud_records: pd.DataFrame,
    ledger_records: pd.DataFrame,
    links: pd.DataFrame,
    issued_elsewhere: set[str] | frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """Every gap among the records of the segments that disagree.

    ``nexacloud_records``: ``deployment_id``, ``idempotency_key``, ``window_start``,
    ``cpu_milliseconds`` — NexaCloud's records of those segments; ``ledger_records``: ``id``,
    ``subscription_id``, ``idempotency_key``, ``timestamp``, ``cpu_milliseconds`` — the ledger's
    records of those segments and those carrying any of NexaCloud's keys. ``issued_elsewhere``:
    keys of ledger records that NexaCloud issued for a record outside these segments (read by key),
    which are therefore not ``extra``. Columns ``GAP_COLUMNS``.
    """
    subscription_of = dict(zip(links["deployment_id"], links["subscription_id"], strict=True))
    ledger = ledger_records.sort_values("id")
    by_key: dict[str, list[tuple[int, int, object]]] = {}
    for row in ledger.itertuples(index=False):
        by_key.setdefault(row.idempotency_key, []).append(
            (int(row.subscription_id), int(row.cpu_milliseconds), row.timestamp)
        )
    gaps: list[tuple] = []
    issued = set(issued_elsewhere)
    for record in nexacloud_records.itertuples(index=False):
        key = record.idempotency_key
        issued.add(key)
        mapped = subscription_of.get(int(record.deployment_id))
        if mapped is None:
            continue
        gaps += _judge(record, mapped, by_key.get(key, []))
    for key, copies in by_key.items():
        if key not in issued:
            gaps += [(None, sub, key, GapKind.EXTRA, moment, None, ms) for sub, ms, moment in copies]
    frame = pd.DataFrame(gaps, columns=GAP_COLUMNS)
    frame["deployment_id"] = frame["deployment_id"].astype("Int64")
    frame["subscription_id"] = frame["subscription_id"].astype("int64")
    for name in ("nexacloud_cpu_milliseconds", "odoo_cpu_milliseconds"):
        frame[name] = frame[name].astype("Int64")
    frame["kind"] = frame["kind"].astype(str)
    return frame.sort_values(["subscription_id", "window_start", "idempotency_key"], ignore_index=True)


def _judge(record, mapped: int, copies: list[tuple[int, int, object]]) -> list[tuple]:
    """The gaps of one NexaCloud record, given every ledger copy of its key."""
    deployment, key, moment, millis = (
        int(record.deployment_id),
        record.idempotency_key,
        record.window_start,
        int(record.cpu_milliseconds),
    )
    if not copies:
        return [(deployment, mapped, key, GapKind.MISSING, moment, millis, None)]
    gaps = []
    own = [copy for copy in copies if copy[0] == mapped]
    for subscription, ledger_millis, _ in (copy for copy in copies if copy[0] != mapped):
        gaps.append(
            (deployment, subscription, key, GapKind.WRONG_SUBSCRIPTION, moment, millis, ledger_millis)
        )
    if own:
        (_, first_millis, _), *more = own
        if first_millis != millis:
            gaps.append((deployment, mapped, key, GapKind.QUANTITY_DIFFERS, moment, millis, first_millis))
        gaps += [(deployment, mapped, key, GapKind.EXTRA, moment, millis, copy[1]) for copy in more]
    return gaps


def millis_at_stake(gaps: pd.DataFrame) -> pd.Series:
    """The CPU milliseconds each gap puts in doubt: what is missing, moved, added, or the difference."""
    nexacloud = gaps["nexacloud_cpu_milliseconds"].fillna(0).astype("int64")
    odoo = gaps["odoo_cpu_milliseconds"].fillna(0).astype("int64")
    at_stake = nexacloud.where(gaps["kind"] != GapKind.EXTRA, odoo)
    return at_stake.where(gaps["kind"] != GapKind.QUANTITY_DIFFERS, (nexacloud - odoo).abs())


def cents_at_stake(millis: int, overage_dollars_per_cpu_hour: Decimal) -> int:
    """What ``millis`` of CPU cost at an overage rate, in cents, half up: the money a gap can move."""
    cents = Decimal(millis) / Decimal(3_600_000) * overage_dollars_per_cpu_hour * 100
    return int(cents.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def counts_by_kind(gaps: pd.DataFrame) -> dict[str, int]:
    counts = gaps["kind"].value_counts().to_dict() if len(gaps) else {}
    return {str(kind): int(counts.get(str(kind), 0)) for kind in GapKind}
