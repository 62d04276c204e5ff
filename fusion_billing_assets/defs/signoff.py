"""The sign-off job: a person accepts (or revokes the acceptance of) a closed period's results.

``sign_off_billing_period`` takes the same settings as ``fusion-billing signoff``; both end in
``fusion_billing_assets.signoff``. Nothing here is scheduled: a sign-off is a person's act.
"""

from datetime import UTC, datetime

from dagster import (
    Config,
    DagsterInstance,
    DagsterRunStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    RunsFilter,
    job,
    op,
)
from pydantic import Field

from fusion_billing_assets.defs.resources import Warehouse
from fusion_billing_assets.partitions import window_of
from fusion_billing_assets.signoff import SignoffRefused, revoke, sign_off

SIGNOFF_JOB = "sign_off_billing_period"
_FAILED = {DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


class SignoffConfig(Config):
    period: str = Field(description="The closed billing period, e.g. 2026-10-01.")
    signed_by: str = Field(description="Who accepts (or revokes), by name.")
    note: str | None = Field(default=None, description="Why, or what was checked.")
    accept_unexplained: list[str] = Field(
        default_factory=list,
        description="Rows accepted although they count against the switch: customer ids, "
        "or partner:<id> for an Odoo partner without a customer.",
    )
    revoke: bool = Field(default=False, description="Revoke the period's active sign-off instead.")
    reason: str | None = Field(default=None, description="Why the sign-off is revoked (required to revoke).")


def latest_period_run_failed(instance: DagsterInstance, period: str) -> bool:
    """Whether the most recent finished run of the period (any job that ran it) failed."""
    records = instance.get_run_records(
        RunsFilter(
            tags={"dagster/partition": period},
            statuses=[DagsterRunStatus.SUCCESS, *_FAILED],
        ),
        limit=1,
    )
    return bool(records) and records[0].dagster_run.status in _FAILED


@op(description="Record who accepts the period's current results, or revoke the acceptance.")
def sign_off_period(context: OpExecutionContext, config: SignoffConfig, warehouse: Warehouse) -> None:
    window = window_of(config.period)
    now = datetime.now(UTC)
    try:
        with warehouse.begin() as connection:
            if config.revoke:
                signoff_id = revoke(
                    connection, window, revoked_by=config.signed_by, reason=config.reason or "", now=now
                )
                context.log.info(f"sign-off {signoff_id} of {window.key} revoked by {config.signed_by}")
                return
            signoff = sign_off(
                connection,
                window,
                signed_by=config.signed_by,
                note=config.note,
                accept_unexplained=config.accept_unexplained,
                latest_run_failed=latest_period_run_failed(context.instance, window.key),
                now=now,
            )
    except SignoffRefused as refused:
        raise Failure(
            description=str(refused),
            metadata={"billing_period": window.key, "refusals": MetadataValue.json(list(refused.refusals))},
            allow_retries=False,
        ) from None
    context.log.info(
        f"{window.key} signed off by {signoff.signed_by} (sign-off {signoff.signoff_id}, run {signoff.run_id}): "
        + ", ".join(f"{count} {status}" for status, count in signoff.counts_by_status.items())
    )


@job(
    name=SIGNOFF_JOB, description="Sign off a closed billing period (or revoke its sign-off): a person's act."
)
def sign_off_billing_period():
    sign_off_period()
