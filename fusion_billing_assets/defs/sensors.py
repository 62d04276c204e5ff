"""Sensors: mismatch alerts, run-failure alerts and re-runs of periods that received late usage.

The mismatch alert reads reconciliation results, not run status: a failing non-blocking check does
not fail its run (docs/design.md §8). Its cursor moves past a materialization only once the receiver has
accepted the alert it called for, so an alert is never lost when the receiver is down, and the
fingerprint of each period's differences keeps an unchanged period from being alerted twice.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

import pandas as pd
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterRun,
    DefaultSensorStatus,
    RunRequest,
    RunStatusChangeRecordsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from fusion_billing_assets.alerts import (
    AlertDeliveryError,
    PeriodAlertState,
    UsageGaps,
    deliver,
    period_alert,
    run_failure_alert,
    signoff_change_alert,
)
from fusion_billing_assets.billing.audit import changed_inputs, changes_fingerprint, changes_since_signoff
from fusion_billing_assets.billing.delivery import counts_by_kind, millis_at_stake
from fusion_billing_assets.billing.periods import local_day
from fusion_billing_assets.defs.jobs import REASON_TAG, reconcile_billing_period
from fusion_billing_assets.defs.resources import AlertChannel, NexaCloudDatabase, Warehouse
from fusion_billing_assets.partitions import billing_periods, window_of
from fusion_billing_assets.sources.nexacloud import latest_usage_recorded_at
from fusion_billing_assets.warehouse import (
    active_signoff,
    ensure_tables,
    read_period,
    read_results,
    read_run_results,
    read_runs,
    read_usage_gaps,
)

RECONCILIATION = AssetKey(["billing", "reconciliation"])
MATERIALIZATIONS_PER_TICK = 50
LATE_USAGE_PERIODS_WATCHED = 3
PARTITION_TAG = "dagster/partition"


@dataclass
class AlertCursor:
    """The sensor's memory: the last materialization handled, and what each period was told."""

    after_storage_id: int = 0
    fingerprints: dict[str, str] = field(default_factory=dict)
    # Period -> the changes since its sign-off the channel was last told about.
    signoff_changes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, cursor: str | None) -> "AlertCursor":
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(
            after_storage_id=int(data["after_storage_id"]),
            fingerprints=dict(data["fingerprints"]),
            signoff_changes=dict(data.get("signoff_changes", {})),
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "after_storage_id": self.after_storage_id,
                "fingerprints": self.fingerprints,
                "signoff_changes": self.signoff_changes,
            },
            sort_keys=True,
        )

    def state(self, period: str) -> PeriodAlertState:
        return PeriodAlertState(fingerprint=self.fingerprints.get(period))

    def remember(self, period: str, state: PeriodAlertState) -> None:
        if state.fingerprint is None:
            self.fingerprints.pop(period, None)
        else:
            self.fingerprints[period] = state.fingerprint


@sensor(
    name="reconciliation_alerts",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="One alert per billing period with unexplained differences, again when they change, "
    "a resolution message when the period reconciles, and one message when a signed-off period's "
    "figures change.",
)
def reconciliation_alerts(
    context: SensorEvaluationContext, warehouse: Warehouse, alert_channel: AlertChannel
):
    cursor = AlertCursor.load(context.cursor)
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=RECONCILIATION, after_storage_id=cursor.after_storage_id),
        limit=MATERIALIZATIONS_PER_TICK,
        ascending=True,
    ).records
    if not records:
        return SkipReason("No reconciliation was materialized since the last tick.")
    sent, logged, quiet = [], [], 0
    for record in records:
        period = record.partition_key
        if period is None:
            cursor.after_storage_id = record.storage_id
            continue
        with warehouse.begin() as connection:
            ensure_tables(connection)
            results, _ = read_period(connection, date.fromisoformat(period))
            gaps = usage_gaps(read_usage_gaps(connection, date.fromisoformat(period)), period)
            signoff_alert = _signoff_change_alert(connection, period, cursor, alert_channel)
        provisional = bool(results["provisional"].any()) if len(results) else False
        if provisional and not alert_channel.include_provisional:
            quiet += 1
            cursor.after_storage_id = record.storage_id
            continue
        link = alert_channel.link(f"assets/billing/reconciliation?partition={period}")
        alert, state = period_alert(period, results, cursor.state(period), link, gaps)
        news = [item for item in (alert, signoff_alert) if item is not None]
        if not news:
            quiet += 1
        for item in news:
            try:
                delivered = deliver(item, alert_channel.config())
            except AlertDeliveryError as error:
                # Keep what was done; this materialization is handled again on the next tick.
                context.update_cursor(cursor.dump())
                return SkipReason(f"{error}; the {period} alert will be sent again on the next tick.")
            (sent if delivered else logged).append(f"{period} ({item.event})")
            if not delivered:
                context.log.info(f"No alert channel configured; the alert would say:\n{item.text()}")
            # Remember each piece of news as soon as it is delivered, so a later refusal resends only the rest.
            if item is signoff_alert:
                cursor.signoff_changes[period] = item.details["changes"]
            else:
                cursor.remember(period, state)
        cursor.after_storage_id = record.storage_id
    context.update_cursor(cursor.dump())
    parts = []
    if sent:
        parts.append(f"sent {', '.join(sent)}")
    if logged:
        parts.append(f"logged {', '.join(logged)} (no channel configured)")
    parts.append(f"{quiet} materialization(s) needed no new alert")
    return SkipReason(f"Handled {len(records)} reconciliation materialization(s): " + "; ".join(parts) + ".")


def usage_gaps(gaps: pd.DataFrame, period: str) -> UsageGaps:
    """What the alert says of the period's rows in ``billing_usage_gaps``."""
    if gaps.empty:
        return UsageGaps(counts_by_kind(gaps), "0", ())

    def millis(quantities: pd.Series) -> pd.Series:
        return quantities.map(lambda q: None if q is None or pd.isna(q) else int(Decimal(q) * 1000)).astype(
            "Int64"
        )

    in_millis = gaps.assign(
        nexacloud_cpu_milliseconds=millis(gaps["nexacloud_quantity"]),
        odoo_cpu_milliseconds=millis(gaps["odoo_quantity"]),
    )
    timezone = window_of(period).timezone
    days = sorted({str(local_day(moment, timezone)) for moment in gaps["window_start"].dropna()})
    at_stake = Decimal(int(millis_at_stake(in_millis).sum())) / 1000
    return UsageGaps(counts_by_kind(gaps), str(at_stake), tuple(days))


def _signoff_change_alert(connection, period: str, cursor: AlertCursor, alert_channel: AlertChannel):
    """The alert a signed-off period whose figures moved calls for, once per set of changes."""
    window = window_of(period)
    signoff = active_signoff(connection, window.period)
    if signoff is None:
        cursor.signoff_changes.pop(period, None)
        return None
    stored = read_results(connection, [window.period])
    changes = changes_since_signoff(read_run_results(connection, signoff["run_id"]), stored)
    if changes.empty:
        cursor.signoff_changes.pop(period, None)
        return None
    changes_id = f"{signoff['signoff_id']}:{changes_fingerprint(changes)}"
    if cursor.signoff_changes.get(period) == changes_id:
        return None
    runs = read_runs(connection, window.period).set_index("run_id")
    why = (
        changed_inputs(runs.at[signoff["run_id"], "input_fingerprints"], runs.iloc[-1]["input_fingerprints"])
        if signoff["run_id"] in runs.index
        else []
    )
    return signoff_change_alert(
        period,
        changes,
        signed_off_by=signoff["signed_by"],
        signed_off_run_id=signoff["run_id"],
        changed_inputs=why,
        changes_id=changes_id,
        link=alert_channel.link(f"assets/billing/reconciliation?partition={period}"),
    )


@sensor(
    name="run_failure_alerts",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="An alert naming the job, the billing period and the failed step of every failed run.",
)
def run_failure_alerts(context: SensorEvaluationContext, alert_channel: AlertChannel):
    # Its own cursor over run failures (not a run_failure_sensor, whose cursor moves on even when
    # the delivery failed): a refused alert is sent again on the next tick.
    if context.cursor is None:
        latest = context.instance.fetch_run_status_changes(
            RunStatusChangeRecordsFilter(event_type=DagsterEventType.RUN_FAILURE), limit=1
        ).records
        context.update_cursor(str(latest[0].storage_id if latest else 0))
        return SkipReason("Watching run failures from now on.")
    records = context.instance.fetch_run_status_changes(
        RunStatusChangeRecordsFilter(
            event_type=DagsterEventType.RUN_FAILURE, after_storage_id=int(context.cursor)
        ),
        limit=MATERIALIZATIONS_PER_TICK,
        ascending=True,
    ).records
    if not records:
        return SkipReason("No run failed since the last tick.")
    reported = 0
    for record in records:
        run = context.instance.get_run_by_id(record.run_id)
        if run is None or not _launched_here(context, run):
            # Another code location's run, on a shared instance: not ours to report.
            context.update_cursor(str(record.storage_id))
            continue
        alert = _run_failure_alert(context, run, alert_channel)
        try:
            delivered = deliver(alert, alert_channel.config())
        except AlertDeliveryError as error:
            return SkipReason(
                f"{error}; the failure of run {record.run_id} will be reported again on the next tick."
            )
        if not delivered:
            context.log.info(f"No alert channel configured; the alert would say:\n{alert.text()}")
        context.update_cursor(str(record.storage_id))
        reported += 1
    return SkipReason(f"Reported {reported} failed run(s).")


def _launched_here(context: SensorEvaluationContext, run: DagsterRun) -> bool:
    """Whether the run is this code location's, whatever its job (ad-hoc UI materializations too)."""
    origin = run.remote_job_origin
    if origin is None:
        # Executed in a process of its own (the command line): ours when it ran one of our jobs.
        return context.repository_def is None or context.repository_def.has_job(run.job_name)
    # Launched through a code location: the same comparison Dagster's run-status sensors make.
    location = context.code_location_origin.location_name if context.code_location_origin else None
    return (
        origin.repository_origin.code_location_origin.location_name,
        origin.repository_origin.repository_name,
    ) == (location, context.repository_name)


def _run_failure_alert(context: SensorEvaluationContext, run, alert_channel: AlertChannel):
    run_id = run.run_id
    failures = [
        entry.dagster_event
        for entry in context.instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)
        if entry.dagster_event is not None
    ]
    return run_failure_alert(
        job=run.job_name,
        run_id=run_id,
        period=run.tags.get(PARTITION_TAG),
        failed_steps=[event.step_key for event in failures],
        error=_root_error(failures[0].event_specific_data.error) if failures else "",
        link=alert_channel.link(f"runs/{run_id}"),
    )


def _root_error(error) -> str:
    """The step's own error, not Dagster's "error occurred while executing" wrapper around it."""
    while error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
        error = error.cause
    return error.message


@sensor(
    name="late_usage_reruns",
    job=reconcile_billing_period,
    minimum_interval_seconds=600,
    default_status=DefaultSensorStatus.STOPPED,
    description="Re-runs a closed billing period when NexaCloud ingested usage for it after its last "
    "reconciliation.",
)
def late_usage_reruns(context: SensorEvaluationContext, nexacloud: NexaCloudDatabase):
    now = datetime.now(UTC)
    closed = [key for key in billing_periods.get_partition_keys() if window_of(key).is_closed(now)]
    requests = []
    with nexacloud.get_connection() as connection:
        for period in closed[-LATE_USAGE_PERIODS_WATCHED:]:
            reconciled = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=RECONCILIATION, asset_partitions=[period]), limit=1
            ).records
            if not reconciled:
                continue
            reconciled_at = datetime.fromtimestamp(reconciled[0].timestamp, UTC)
            latest = latest_usage_recorded_at(connection, window_of(period))
            if latest is not None and latest > reconciled_at:
                requests.append(
                    RunRequest(
                        run_key=f"late-usage:{period}:{latest.isoformat()}",
                        partition_key=period,
                        tags={
                            REASON_TAG: f"late usage recorded at {latest:%Y-%m-%d %H:%M}Z, after the "
                            f"reconciliation of {reconciled_at:%Y-%m-%d %H:%M}Z",
                        },
                    )
                )
    if not requests:
        return SkipReason(
            f"No usage arrived after the last reconciliation of {', '.join(closed[-LATE_USAGE_PERIODS_WATCHED:]) or 'any closed period'}."
        )
    return requests


sensors = [reconciliation_alerts, run_failure_alerts, late_usage_reruns]
