"""Schedules: reconcile a period once it has closed, and the current month every day.

Both are stopped by default: production turns them on once the sources are trusted (see
docs/operations.md). Times are in the billing time zone.
"""

from datetime import timedelta

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from fusion_billing_assets.billing.periods import local_day
from fusion_billing_assets.defs.jobs import REASON_TAG, reconcile_billing_period
from fusion_billing_assets.partitions import BILLING_TIMEZONE


def previous_period(moment) -> str:
    """The period before the one containing ``moment``, in the billing time zone."""
    first_of_month = local_day(moment, BILLING_TIMEZONE).replace(day=1)
    return (first_of_month - timedelta(days=1)).replace(day=1).isoformat()


def current_period(moment) -> str:
    return local_day(moment, BILLING_TIMEZONE).replace(day=1).isoformat()


def period_close_schedule(close_day: int):
    @schedule(
        name="period_close_schedule",
        cron_schedule=f"0 6 {close_day} * *",
        execution_timezone=BILLING_TIMEZONE,
        job=reconcile_billing_period,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"On day {close_day} of each month at 06:00, reconcile the period that just closed.",
    )
    def _period_close(context: ScheduleEvaluationContext):
        period = previous_period(context.scheduled_execution_time)
        return RunRequest(
            run_key=f"period-close:{period}",
            partition_key=period,
            tags={REASON_TAG: f"period close (day {close_day})"},
        )

    return _period_close


@schedule(
    name="provisional_daily_schedule",
    cron_schedule="0 7 * * *",
    execution_timezone=BILLING_TIMEZONE,
    job=reconcile_billing_period,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every day at 07:00, reconcile the current month so far (provisional results).",
)
def provisional_daily_schedule(context: ScheduleEvaluationContext):
    moment = context.scheduled_execution_time
    return RunRequest(
        run_key=f"provisional:{local_day(moment, BILLING_TIMEZONE).isoformat()}",
        partition_key=current_period(moment),
        tags={REASON_TAG: "daily provisional reconciliation"},
    )
