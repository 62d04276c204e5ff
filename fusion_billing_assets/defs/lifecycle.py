"""The control loop in Dagster: do Odoo's suspend and terminate decisions reach NexaCloud?

``billing/lifecycle_drift`` (not partitioned: it judges the current state) reads every deployment's
state in NexaCloud and its subscription's state and overdue invoices in Odoo, classifies each
mapped deployment (``billing.lifecycle``) and replaces the current view ``billing_lifecycle_drift``
in one transaction, keeping every observation's drifts in ``billing_lifecycle_drift_history``.
Its check ``no_drift_beyond_grace`` fails while a drift is older than the grace period,
``every_deployment_judged`` while a deployment's state is outside the contract. The hourly schedule materializes it;
so can anyone, on demand. It only reads: nothing here writes to either system.

The alert sensor reads the observations in order: a drift that appears is alerted once, a drift
that clears gets one resolution, an unchanged drift is never repeated. Its cursor moves past an
observation only once the receiver has accepted what it called for, so a receiver that is down
loses nothing and, once up, hears each piece of news once.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    schedule,
    sensor,
)

from fusion_billing_assets.alerts import (
    LIFECYCLE_DRIFT,
    LIFECYCLE_RESOLVED,
    AlertDeliveryError,
    deliver,
    drift_details,
    lifecycle_digest_alert,
    lifecycle_drift_alert,
    lifecycle_drift_key,
    lifecycle_resolved_alert,
)
from fusion_billing_assets.billing.lifecycle import (
    DRIFT_COLUMNS,
    LifecycleRules,
    LifecycleStates,
    classify,
    counts_by_kind,
    describe,
    drifts,
    lifecycle_mapping,
    not_judged,
    older_than_grace,
    subscriptions_needing_plan_fee,
    terminations,
)
from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.periods import local_day
from fusion_billing_assets.defs.frames import OWNERS
from fusion_billing_assets.defs.jobs import REASON_TAG
from fusion_billing_assets.defs.odoo import MODELS, request_cost
from fusion_billing_assets.defs.resources import (
    AlertChannel,
    LifecycleClock,
    NexaCloudDatabase,
    OdooAPI,
    ReconciliationPolicy,
    Warehouse,
)
from fusion_billing_assets.partitions import BILLING_TIMEZONE
from fusion_billing_assets.sources import nexacloud as nexacloud_queries
from fusion_billing_assets.sources import odoo_frames as odoo_queries
from fusion_billing_assets.warehouse import (
    LifecycleObservation,
    ensure_tables,
    read_lifecycle_drift,
    read_lifecycle_history,
    replace_lifecycle_drift,
)

GROUP = "lifecycle"
LIFECYCLE_DRIFT_KEY = AssetKey(["billing", "lifecycle_drift"])
OBSERVE_JOB = "observe_lifecycle"
NO_DRIFT_BEYOND_GRACE = "no_drift_beyond_grace"
EVERY_DEPLOYMENT_JUDGED = "every_deployment_judged"
LARGEST_SHOWN = 20
MAX_LISTED = 50
# More new (or cleared) drifts than this in one observation are told in one digest, not one each.
ALERTS_PER_OBSERVATION = 20
OBSERVATIONS_PER_TICK = 20

DRIFT_CHECK = AssetCheckSpec(
    NO_DRIFT_BEYOND_GRACE,
    asset=LIFECYCLE_DRIFT_KEY,
    description="No mapped deployment has drifted from its Odoo subscription for longer than the "
    "suspension grace period (BILLING_SUSPEND_GRACE_DAYS).",
)
JUDGED_CHECK = AssetCheckSpec(
    EVERY_DEPLOYMENT_JUDGED,
    asset=LIFECYCLE_DRIFT_KEY,
    description="Every mapped deployment's states are within both systems' contracts, so each was "
    "judged (none is not_judged).",
)


def judge_lifecycle(
    nexacloud: NexaCloudDatabase,
    odoo: OdooAPI,
    rules: LifecycleRules,
    as_of: datetime,
    previous: pd.DataFrame | None,
) -> tuple[pd.DataFrame, dict]:
    """Every mapped deployment judged at ``as_of`` (``DRIFT_COLUMNS``), and what Odoo's reads cost.

    Odoo is read in pages per model, never once per deployment: the links, the mapped
    subscriptions by id, the overdue invoices and their lines, the later lines of terminated
    deployments' subscriptions, and the plan lines of the drifting subscriptions only.
    """
    with nexacloud.get_connection() as connection:
        deployments = nexacloud_queries.fetch_deployment_states(connection)
    today = local_day(as_of, rules.timezone)
    with odoo.get_client() as client:
        mapping = lifecycle_mapping(odoo_queries.fetch_account_links(client, MODELS), deployments)
        subscriptions = odoo_queries.fetch_subscription_states(client, MODELS, mapping["subscription_id"])
        overdue = odoo_queries.fetch_overdue_invoices(client, MODELS, today)
        later = odoo_queries.fetch_lines_after(client, MODELS, terminations(deployments, mapping, rules))
        states = LifecycleStates(deployments, mapping, subscriptions, overdue, later)
        classified = classify(states, rules, as_of, previous)
        fees = odoo_queries.fetch_plan_fees(client, MODELS, subscriptions_needing_plan_fee(classified))
        cost = request_cost(client)
    judged = describe(classified, rules, as_of, fees)
    cost["deployments_in_nexacloud"] = len(deployments)
    cost["links_to_missing_subscriptions"] = int(
        (~mapping["subscription_id"].isin(subscriptions["subscription_id"])).sum()
    )
    return judged, cost


@asset(
    key=LIFECYCLE_DRIFT_KEY,
    group_name=GROUP,
    kinds={"sql", "pandas"},
    owners=OWNERS,
    check_specs=[DRIFT_CHECK, JUDGED_CHECK],
)
def lifecycle_drift(
    context: AssetExecutionContext,
    nexacloud: NexaCloudDatabase,
    odoo: OdooAPI,
    warehouse: Warehouse,
    reconciliation_policy: ReconciliationPolicy,
    lifecycle_clock: LifecycleClock,
) -> MaterializeResult:
    """Whether each mapped deployment's state in NexaCloud follows its subscription in Odoo: a
    deployment running on an invoice overdue beyond the grace period, running or suspended on a
    churned or paused subscription, suspended while paid up, or terminated while Odoo still bills."""
    rules = LifecycleRules(timezone=BILLING_TIMEZONE, grace_days=reconciliation_policy.suspend_grace_days)
    as_of, observed_at = lifecycle_clock.now(), datetime.now(UTC)
    with warehouse.begin() as connection:
        ensure_tables(connection)
        previous = drifts(read_lifecycle_drift(connection))
    judged, cost = judge_lifecycle(nexacloud, odoo, rules, as_of, previous)
    stale = older_than_grace(judged, rules, as_of)
    counts = counts_by_kind(judged)
    with warehouse.begin() as connection:
        replace_lifecycle_drift(
            connection,
            LifecycleObservation(
                run_id=context.run.run_id,
                observed_at=observed_at,
                as_of=as_of,
                grace_days=rules.grace_days,
                counts_by_kind=counts,
                older_than_grace=len(stale),
            ),
            judged,
        )
    found, unjudged = drifts(judged), not_judged(judged)
    context.log.info(
        f"{len(judged):,} mapped deployment(s) judged as of {as_of:%Y-%m-%d %H:%M}Z: {len(found)} drift(s), "
        f"{len(stale)} older than the {rules.grace_days}-day grace period"
    )
    return MaterializeResult(
        metadata={
            "as_of": as_of.isoformat(timespec="seconds"),
            "observed_at": observed_at.isoformat(timespec="seconds"),
            "grace_days": rules.grace_days,
            "dagster/row_count": len(judged),
            "drifts": len(found),
            "drifts_older_than_grace": len(stale),
            "not_judged": len(unjudged),
            "counts_by_kind": MetadataValue.json(counts),
            "amount_at_stake": format_cents(int(found["amount_at_stake_cents"].sum())),
            "largest_drifts": MetadataValue.md(drifts_markdown(found)),
            **cost,
        },
        check_results=[_beyond_grace_result(stale, rules), _judged_result(unjudged)],
    )


def _judged_result(unjudged: pd.DataFrame) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=EVERY_DEPLOYMENT_JUDGED,
        passed=unjudged.empty,
        severity=AssetCheckSeverity.WARN,
        description=(
            "Every mapped deployment was judged."
            if unjudged.empty
            else f"{len(unjudged)} deployment(s) hold a state outside the contract and were not judged."
        ),
        metadata={
            "deployment_ids": MetadataValue.json(
                [int(d) for d in unjudged["deployment_id"].head(MAX_LISTED)]
            ),
            "causes": MetadataValue.md(
                "\n".join(f"- {cause}" for cause in unjudged["cause"].head(MAX_LISTED))
            ),
        },
    )


def _beyond_grace_result(stale: pd.DataFrame, rules: LifecycleRules) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=NO_DRIFT_BEYOND_GRACE,
        passed=stale.empty,
        severity=AssetCheckSeverity.ERROR,
        description=(
            f"No drift is older than the {rules.grace_days}-day grace period."
            if stale.empty
            else f"{len(stale)} drift(s) older than the {rules.grace_days}-day grace period."
        ),
        metadata={
            "grace_days": rules.grace_days,
            "deployment_ids": MetadataValue.json([int(d) for d in stale["deployment_id"].head(MAX_LISTED)]),
            "counts_by_kind": MetadataValue.json({k: v for k, v in counts_by_kind(stale).items() if v}),
        },
    )


def drifts_markdown(found: pd.DataFrame) -> str:
    if found.empty:
        return "No drift: every mapped deployment follows its subscription."
    largest = found.sort_values(["amount_at_stake_cents", "deployment_id"], ascending=[False, True])
    rows = [
        "| deployment | customer | kind | since | at stake | cause |",
        "|---|---|---|---|---|---|",
        *(
            f"| {int(row.deployment_id)} | {int(row.customer_id)} | {row.kind} | "
            f"{'' if pd.isna(row.since) else pd.Timestamp(row.since).strftime('%Y-%m-%d %H:%M')} | "
            f"{format_cents(int(row.amount_at_stake_cents))} | {row.cause} |"
            for row in largest.head(LARGEST_SHOWN).itertuples()
        ),
    ]
    if len(found) > LARGEST_SHOWN:
        rows.append(f"\n{len(found) - LARGEST_SHOWN} more in `billing_lifecycle_drift`.")
    return "\n".join(rows)


observe_lifecycle = define_asset_job(
    OBSERVE_JOB,
    selection=AssetSelection.assets(lifecycle_drift),
    description="Judge, now, whether every mapped deployment's NexaCloud state follows its Odoo subscription.",
)


@schedule(
    name="lifecycle_drift_hourly",
    cron_schedule="0 * * * *",
    execution_timezone=BILLING_TIMEZONE,
    job=observe_lifecycle,
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every hour, observe the control loop: does every deployment follow its subscription?",
)
def lifecycle_drift_hourly(context: ScheduleEvaluationContext):
    moment = context.scheduled_execution_time
    return RunRequest(
        run_key=f"lifecycle:{moment.astimezone(UTC):%Y-%m-%dT%H}",
        tags={REASON_TAG: "hourly lifecycle observation"},
    )


@dataclass
class DriftCursor:
    """The alert sensor's memory: the last observation handled, and each drift alerted, by key."""

    after_storage_id: int = 0
    # drift key -> the row that was alerted (what its resolution repeats).
    alerted: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, cursor: str | None) -> "DriftCursor":
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(after_storage_id=int(data["after_storage_id"]), alerted=dict(data["alerted"]))

    def dump(self) -> str:
        return json.dumps(
            {"after_storage_id": self.after_storage_id, "alerted": self.alerted}, sort_keys=True
        )


def news(observed: pd.DataFrame, cursor: DriftCursor) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The drifts of an observation (its rows in the history) the channel has not heard of, and the
    alerted ones it no longer shows, each marked ``now_in_sync`` when its deployment drifts no other way."""
    keys = [
        lifecycle_drift_key(d, k) for d, k in zip(observed["deployment_id"], observed["kind"], strict=True)
    ]
    appeared = observed[[key not in cursor.alerted for key in keys]]
    current = set(keys)
    cleared = pd.DataFrame(
        [row for key, row in sorted(cursor.alerted.items()) if key not in current], columns=[*DRIFT_COLUMNS]
    )
    still_drifting = set(observed["deployment_id"].astype(int))
    cleared["now_in_sync"] = [int(d) not in still_drifting for d in cleared["deployment_id"]]
    return appeared, cleared


def _remembered(row) -> dict:
    """A drift's row as the cursor keeps it (what its resolution repeats), in plain JSON values."""
    return {
        **{name: row[name] for name in DRIFT_COLUMNS},
        **drift_details(row),
        "partner_id": None if pd.isna(row["partner_id"]) else int(row["partner_id"]),
    }


@sensor(
    name="lifecycle_drift_alerts",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="One alert per lifecycle drift that appears, one resolution per drift that clears, "
    "nothing for a drift that stays.",
)
def lifecycle_drift_alerts(
    context: SensorEvaluationContext, warehouse: Warehouse, alert_channel: AlertChannel
):
    cursor = DriftCursor.load(context.cursor)
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=LIFECYCLE_DRIFT_KEY, after_storage_id=cursor.after_storage_id),
        limit=OBSERVATIONS_PER_TICK,
        ascending=True,
    ).records
    if not records:
        return SkipReason("No lifecycle observation since the last tick.")
    link = alert_channel.link("assets/billing/lifecycle_drift")
    told = {LIFECYCLE_DRIFT: 0, LIFECYCLE_RESOLVED: 0}
    for record in records:
        with warehouse.begin() as connection:
            ensure_tables(connection)
            observed = read_lifecycle_history(connection, record.run_id)
        appeared, cleared = news(observed, cursor)
        messages = _messages(appeared, cleared, link)
        for alert, keys, remember in messages:
            try:
                delivered = deliver(alert, alert_channel.config())
            except AlertDeliveryError as error:
                # Keep what was told; this observation is handled again on the next tick.
                context.update_cursor(cursor.dump())
                return SkipReason(f"{error}; the rest of this observation's news is sent on the next tick.")
            if not delivered:
                context.log.info(f"No alert channel configured; the alert would say:\n{alert.text()}")
            for key, row in zip(keys, remember, strict=True):
                if alert.event == LIFECYCLE_DRIFT:
                    cursor.alerted[key] = row
                else:
                    cursor.alerted.pop(key, None)
            told[alert.event] += len(keys)
        cursor.after_storage_id = record.storage_id
    context.update_cursor(cursor.dump())
    return SkipReason(
        f"Handled {len(records)} lifecycle observation(s): {told[LIFECYCLE_DRIFT]} new drift(s) and "
        f"{told[LIFECYCLE_RESOLVED]} cleared drift(s) told."
    )


def _messages(appeared: pd.DataFrame, cleared: pd.DataFrame, link: str | None) -> list:
    """The alerts an observation calls for, each with the drift keys it tells and what to remember."""
    messages = []
    for event, frame in ((LIFECYCLE_DRIFT, appeared), (LIFECYCLE_RESOLVED, cleared)):
        if frame.empty:
            continue
        rows = [_remembered(row) for row in frame.to_dict("records")]
        keys = [lifecycle_drift_key(row["deployment_id"], row["kind"]) for row in rows]
        if len(rows) > ALERTS_PER_OBSERVATION:
            messages.append((lifecycle_digest_alert(event, frame, link), keys, rows))
            continue
        for key, row, raw in zip(keys, rows, frame.to_dict("records"), strict=True):
            alert = (
                lifecycle_drift_alert(row, link)
                if event == LIFECYCLE_DRIFT
                else lifecycle_resolved_alert(row, bool(raw["now_in_sync"]), link)
            )
            messages.append((alert, [key], [row]))
    return messages


assets = [lifecycle_drift]
