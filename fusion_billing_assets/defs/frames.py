"""What every source asset does with its frame: validate it, and describe it for a person.

Kept in one place so that each asset body reads as "fetch, validate, record" and every frame's
metadata looks the same in the UI: the period judged, whether it is provisional, where the data
came from, row counts, a preview, and the frame's contract as its column schema (columns, types,
nullability and checks, converted from the pandera schema by dagster-pandera). The schema goes on
each materialization rather than on the definition because a contract depends on its period (the
period's days, its end): the UI shows the one the latest materialization was validated against.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BetaWarning,
    DagsterError,
    Failure,
    MetadataValue,
    Output,
    TableSchema,
    asset,
)
from dagster_pandera import pandera_schema_to_dagster_type

from fusion_billing_assets.billing.isolation import referential_set_aside
from fusion_billing_assets.billing.periods import PeriodWindow
from fusion_billing_assets.partitions import billing_periods
from fusion_billing_assets.sources.screening import set_aside_markdown
from fusion_billing_assets.sources.validation import (
    DataQualityError,
    FrameContract,
    set_aside_records,
    usable,
    validate,
)

OWNERS = ["team:billing-engineering"]
PREVIEW_ROWS = 10
MAX_LISTED_IDS = 50


def period_asset(group: str, name: str, *, kinds: set[str], key_prefix: str | None = None, **options):
    """An asset of one billing period: partitioned by the shared definition, owned, grouped, and
    failing in its own words."""
    decorate = asset(
        key=[key_prefix or group, name],
        group_name=group,
        partitions_def=billing_periods,
        kinds=kinds,
        owners=OWNERS,
        **options,
    )
    return lambda compute: decorate(in_its_own_words(compute))


def in_its_own_words(compute):
    """The asset's errors leave it as a ``Failure`` whose description is the error's own sentence.

    Dagster would show "Error occurred while executing op …" first and the sentence that names the
    source, record and field only inside the traceback; the UI and the command line show a
    Failure's description as the error. The original stays chained as its cause.
    """

    def failure(error: Exception) -> Failure:
        return Failure(description=str(error).strip() or type(error).__name__, allow_retries=False)

    if inspect.isgeneratorfunction(compute):

        @functools.wraps(compute)
        def produce(*args, **kwargs):
            try:
                yield from compute(*args, **kwargs)
            except (Failure, DagsterError):
                raise
            except Exception as error:
                raise failure(error) from error

        return produce

    @functools.wraps(compute)
    def compute_in_its_own_words(*args, **kwargs):
        try:
            return compute(*args, **kwargs)
        except (Failure, DagsterError):
            raise
        except Exception as error:
            raise failure(error) from error

    return compute_in_its_own_words


def validated_output(
    context: AssetExecutionContext,
    frame: pd.DataFrame,
    contract: FrameContract,
    window: PeriodWindow,
    *,
    source: str,
    metadata: Callable[[pd.DataFrame], Mapping[str, Any]] | Mapping[str, Any] | None = None,
    output_name: str = "result",
) -> Output[pd.DataFrame]:
    """Validate ``frame`` against its contract, marking every record that breaks it (set aside
    downstream); stop the asset only when the frame as a whole breaks it."""
    try:
        frame = validate(frame, contract)
    except DataQualityError as error:
        raise data_quality_failure(error, window) from None
    broken = set_aside_records(frame, contract)
    # Figures of the frame are taken once it is known to have its columns, over its usable records.
    described = metadata(usable(frame, contract)) if callable(metadata) else metadata
    context.log.info(
        f"{contract.name} {window.key}: {len(frame)} rows from {source}"
        + (f", {len(broken)} breaking the contract (set aside)" if len(broken) else "")
    )
    if len(broken):
        context.log.warning(
            f"{contract.name} {window.key}: set aside "
            + "; ".join(f"{row.record}: {row.problem}" for row in broken.head(10).itertuples(index=False))
        )
    return Output(
        frame,
        output_name=output_name,
        metadata={
            **period_metadata(window, source),
            **frame_metadata(frame),
            "rows_set_aside": len(broken),
            "set_aside": MetadataValue.md(set_aside_markdown(broken)),
            "dagster/column_schema": column_schema(contract),
            **(described or {}),
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
    check: AssetCheckSpec,
    window: PeriodWindow,
    frames: Mapping[str, tuple[pd.DataFrame, FrameContract]],
    source: str | tuple[str, ...],
    id_name: str,
    what: str,
) -> AssetCheckResult:
    """A referential check's verdict over the period's usable records (``billing.isolation``'s
    rules): the offending ids and the period judged. Not blocking: the offending records are set
    aside in the reconciliation and their customers get ``source_data_error``."""
    usable_frames = {name: usable(frame, contract) for name, (frame, contract) in frames.items()}
    offending = referential_set_aside(usable_frames)
    offending = offending[offending["source"].isin((source,) if isinstance(source, str) else source)]
    ids = sorted({int(value) for value in offending[id_name].dropna()})
    return AssetCheckResult(
        asset_key=check.asset_key,
        check_name=check.name,
        passed=not ids,
        severity=AssetCheckSeverity.WARN,
        description=f"{len(ids)} {what} (set aside in the reconciliation)" if ids else f"no {what}",
        metadata={
            "billing_period": window.key,
            "offending_count": len(ids),
            f"offending_{id_name}s": MetadataValue.json(ids[:MAX_LISTED_IDS]),
        },
    )
