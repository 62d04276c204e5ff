"""What every source asset does with its frame: validate it, and describe it for a person.

Kept in one place so that each asset body reads as "fetch, validate, record" and every frame's
metadata looks the same in the UI: the period judged, whether it is provisional, where the data
came from, row counts, a preview, and the frame's contract as its column schema (columns, types,
nullability and checks, converted from the pandera schema by dagster-pandera). The schema goes on
each materialization rather than on the definition because a contract depends on its period (the
period's days, its end): the UI shows the one the latest materialization was validated against.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BetaWarning,
    Failure,
    MetadataValue,
    Output,
    TableSchema,
    asset,
)
from dagster_pandera import pandera_schema_to_dagster_type

from fusion_billing_assets.billing.periods import PeriodWindow
from fusion_billing_assets.partitions import billing_periods
from fusion_billing_assets.sources.validation import DataQualityError, FrameContract, validate

OWNERS = ["team:billing-engineering"]
PREVIEW_ROWS = 10
MAX_LISTED_IDS = 50


def period_asset(group: str, name: str, *, kinds: set[str], key_prefix: str | None = None, **options):
    """An asset of one billing period: partitioned by the shared definition, owned, grouped."""
    return asset(
        key=[key_prefix or group, name],
        group_name=group,
        partitions_def=billing_periods,
        kinds=kinds,
        owners=OWNERS,
        **options,
    )


def validated_output(
    context: AssetExecutionContext,
    frame: pd.DataFrame,
    contract: FrameContract,
    window: PeriodWindow,
    *,
    source: str,
    metadata: Mapping[str, Any] | None = None,
    output_name: str = "result",
) -> Output[pd.DataFrame]:
    """Validate ``frame`` against its contract; stop the asset with a report when it breaks it."""
    try:
        frame = validate(frame, contract)
    except DataQualityError as error:
        raise data_quality_failure(error, window) from None
    context.log.info(f"{contract.name} {window.key}: {len(frame)} rows from {source}")
    return Output(
        frame,
        output_name=output_name,
        metadata={
            **period_metadata(window, source),
            **frame_metadata(frame),
            "dagster/column_schema": column_schema(contract),
            **(metadata or {}),
        },
    )


def column_schema(contract: FrameContract) -> TableSchema:
    """The contract's columns and checks as a Dagster table schema, the way dagster-pandera reads it."""
    with warnings.catch_warnings():
        # Beta in dagster-pandera 0.29; the project pins it with dagster (docs/design.md §8).
        warnings.simplefilter("ignore", BetaWarning)
        dagster_type = pandera_schema_to_dagster_type(contract.schema)
    return dagster_type.metadata["schema"].schema


def data_quality_failure(error: DataQualityError, window: PeriodWindow) -> Failure:
    """The step failure a person reads: every failing record with its field, and the period."""
    return Failure(
        description=str(error),
        metadata={
            "billing_period": window.key,
            "failing_checks": len(error.failures),
            "failures": MetadataValue.md(error.failures.to_markdown(index=False)),
        },
        allow_retries=False,
    )


def period_metadata(window: PeriodWindow, source: str) -> dict[str, Any]:
    return {
        "billing_period": window.key,
        "provisional": not window.is_closed(datetime.now(UTC)),
        "window_utc": f"[{window.start_utc.isoformat()}, {window.end_utc.isoformat()})",
        "source": source,
    }


def frame_metadata(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "dagster/row_count": len(frame),
        "preview": MetadataValue.md(
            frame.head(PREVIEW_ROWS).to_markdown(index=False) if len(frame) else "_empty_"
        ),
    }


def referential_check_result(
    check: AssetCheckSpec, window: PeriodWindow, offending_ids: pd.Series, id_name: str, what: str
) -> AssetCheckResult:
    """A blocking check's verdict: the offending ids and the billing period judged, in metadata."""
    ids = sorted(int(value) for value in offending_ids.unique())
    return AssetCheckResult(
        asset_key=check.asset_key,
        check_name=check.name,
        passed=not ids,
        severity=AssetCheckSeverity.ERROR,
        description=f"{len(ids)} {what}" if ids else f"no {what}",
        metadata={
            "billing_period": window.key,
            "offending_count": len(ids),
            f"offending_{id_name}s": MetadataValue.json(ids[:MAX_LISTED_IDS]),
        },
    )
