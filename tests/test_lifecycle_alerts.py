"""The lifecycle drift alerts (docs/design.md §11): one alert per drift that appears, one
resolution per drift that clears, nothing for a drift that stays, and exactly once when the
receiver refuses or cannot be reached.

Observations are written to a SQLite warehouse as the asset writes them and announced by
materialization events of ``billing/lifecycle_drift`` on a real ephemeral instance, each under
the run that wrote it; alerts go over HTTP to a receiver on 127.0.0.1 that checks their signature.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetMaterialization,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    SkipReason,
    build_sensor_context,
)
from dagster._core.events import StepMaterializationData

from fusion_billing_assets.alerts import LIFECYCLE_DRIFT, LIFECYCLE_RESOLVED
from fusion_billing_assets.billing.lifecycle import DRIFT_COLUMNS
from fusion_billing_assets.defs.lifecycle import (
    ALERTS_PER_OBSERVATION,
    LIFECYCLE_DRIFT_KEY,
    lifecycle_drift_alerts,
)
from fusion_billing_assets.defs.resources import AlertChannel, Warehouse
from fusion_billing_assets.warehouse import LifecycleObservation, ensure_tables, replace_lifecycle_drift
from tests import test_sensors
from tests.test_sensors import SECRET, WEBSERVER, Receiver

# The webhook receiver on 127.0.0.1, the ephemeral instance and the SQLite warehouse the
# reconciliation alerts are tested against.
receiver, instance, warehouse = test_sensors.receiver, test_sensors.instance, test_sensors.warehouse

AS_OF = datetime(2026, 11, 15, 5, 0, tzinfo=UTC)


def row(deployment_id: int, kind: str = "not_suspended", amount: int = 5_650) -> dict:
    return {
        "customer_id": deployment_id + 1_000,
        "deployment_id": deployment_id,
        "partner_id": deployment_id + 2_000,
        "subscription_id": deployment_id + 3_000,
        "kind": kind,
        "nexacloud_state": "running",
        "odoo_state": "3_progress",
        "since": pd.Timestamp("2026-11-09 05:00", tz="UTC") if kind != "in_sync" else pd.NaT,
        "amount_at_stake_cents": amount if kind != "in_sync" else 0,
        "cause": f"deployment {deployment_id} is {kind}" if kind != "in_sync" else "",
    }


def observe(instance: DagsterInstance, warehouse: Warehouse, run_id: str, rows: list[dict]) -> None:
    """Write an observation as the asset does, and announce it as that run's materialization."""
    judged = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    with warehouse.begin() as connection:
        ensure_tables(connection)
        replace_lifecycle_drift(connection, LifecycleObservation(run_id, AS_OF, AS_OF, 7, {}, 0), judged)
    instance.report_dagster_event(
        DagsterEvent(
            event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
            job_name="observe_lifecycle",
            event_specific_data=StepMaterializationData(AssetMaterialization(asset_key=LIFECYCLE_DRIFT_KEY)),
        ),
        run_id=run_id,
    )


def channel(receiver: Receiver) -> AlertChannel:
    return AlertChannel(webhook_url=receiver.url, kind="generic", secret=SECRET, webserver_url=WEBSERVER)


def tick(instance, warehouse, alert_channel, cursor) -> tuple[str, str | None]:
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={"warehouse": warehouse, "alert_channel": alert_channel}
    ) as context:
        outcome = lifecycle_drift_alerts(context)
    assert isinstance(outcome, SkipReason)
    return outcome.skip_message, context.cursor


def told(receiver: Receiver) -> list[tuple[str, int, str]]:
    return [(alert["event"], alert["deployment_id"], alert["kind"]) for alert in receiver.accepted()]


def test_each_new_drift_is_alerted_once_with_its_cause_and_a_link(instance, warehouse, receiver):
    observe(instance, warehouse, "first", [row(1), row(2, "paused_but_running"), row(3, "in_sync")])

    message, cursor = tick(instance, warehouse, channel(receiver), None)

    assert told(receiver) == [
        (LIFECYCLE_DRIFT, 1, "not_suspended"),
        (LIFECYCLE_DRIFT, 2, "paused_but_running"),
    ]
    first = receiver.accepted()[0]
    assert first["title"] == (
        "Lifecycle drift: not_suspended on deployment 1 (customer 1001) since 2026-11-09T05:00:00+00:00."
    )
    assert first["lines"][0] == "deployment 1 is not_suspended"
    assert "$56.50 at stake" in first["lines"][1]
    assert first["link"] == f"{WEBSERVER}/assets/billing/lifecycle_drift"
    assert "2 new drift(s)" in message
    assert set(json.loads(cursor)["alerted"]) == {"1:not_suspended", "2:paused_but_running"}

    # The same observation handled, no new one: nothing more.
    message, _ = tick(instance, warehouse, channel(receiver), cursor)
    assert message == "No lifecycle observation since the last tick."
    assert len(receiver.received) == 2


def test_an_unchanged_drift_is_never_repeated_and_a_cleared_one_gets_a_resolution(
    instance, warehouse, receiver
):
    observe(instance, warehouse, "first", [row(1), row(2, "paused_but_running"), row(4, "not_deprovisioned")])
    _, cursor = tick(instance, warehouse, channel(receiver), None)
    receiver.received.clear()
    # 1 stays, 2 is in sync again, 4 drifts another way now, 5 appears.
    observe(
        instance,
        warehouse,
        "second",
        [row(1), row(2, "in_sync"), row(4, "billed_after_termination"), row(5, "suspended_but_paid")],
    )

    _, cursor = tick(instance, warehouse, channel(receiver), cursor)

    assert sorted(told(receiver)) == [
        (LIFECYCLE_DRIFT, 4, "billed_after_termination"),
        (LIFECYCLE_DRIFT, 5, "suspended_but_paid"),
        (LIFECYCLE_RESOLVED, 2, "paused_but_running"),
        (LIFECYCLE_RESOLVED, 4, "not_deprovisioned"),
    ]
    resolutions = {
        alert["deployment_id"]: alert["title"]
        for alert in receiver.accepted()
        if alert["event"] == LIFECYCLE_RESOLVED
    }
    assert resolutions[2] == (
        "Lifecycle drift cleared: deployment 2 (customer 1002) is in sync again; it was paused_but_running."
    )
    assert "no longer shows it" in resolutions[4]
    assert set(json.loads(cursor)["alerted"]) == {
        "1:not_suspended",
        "4:billed_after_termination",
        "5:suspended_but_paid",
    }


def test_a_refused_alert_is_sent_once_on_the_next_tick_and_nothing_told_is_told_again(
    instance, warehouse, receiver
):
    observe(instance, warehouse, "first", [row(1), row(2, "paused_but_running")])
    receiver.answer_next(200, 503)

    message, cursor = tick(instance, warehouse, channel(receiver), None)

    assert "HTTP 503" in message and "next tick" in message
    assert SECRET not in message and receiver.url not in message
    held = json.loads(cursor)
    assert held["after_storage_id"] == 0 and set(held["alerted"]) == {"1:not_suspended"}
    refused = json.loads(receiver.received[1][2])["event_id"]

    _, cursor = tick(instance, warehouse, channel(receiver), cursor)

    assert told(receiver) == [
        (LIFECYCLE_DRIFT, 1, "not_suspended"),
        (LIFECYCLE_DRIFT, 2, "paused_but_running"),
    ]
    assert receiver.accepted()[1]["event_id"] == refused  # the receiver can deduplicate a resend
    assert len(receiver.received) == 3
    assert json.loads(cursor)["after_storage_id"] > 0


def test_an_unreachable_receiver_loses_nothing(instance, warehouse, receiver):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nobody = AlertChannel(webhook_url=f"http://127.0.0.1:{closed_port}/hooks", kind="generic", secret=SECRET)
    observe(instance, warehouse, "first", [row(1)])

    message, cursor = tick(instance, warehouse, nobody, None)
    assert "ConnectError" in message and str(closed_port) not in message
    assert json.loads(cursor) == {"after_storage_id": 0, "alerted": {}}
    # It clears, and another appears, while the receiver is down: once it is up, every observation
    # is told in order, so the first drift is alerted and then resolved.
    observe(instance, warehouse, "second", [row(1, "in_sync"), row(6, "paused_but_running")])

    _, cursor = tick(instance, warehouse, channel(receiver), cursor)

    assert told(receiver) == [
        (LIFECYCLE_DRIFT, 1, "not_suspended"),
        (LIFECYCLE_DRIFT, 6, "paused_but_running"),
        (LIFECYCLE_RESOLVED, 1, "not_suspended"),
    ]
    assert set(json.loads(cursor)["alerted"]) == {"6:paused_but_running"}


def test_many_new_drifts_in_one_observation_are_told_in_one_digest(instance, warehouse, receiver):
    count = ALERTS_PER_OBSERVATION + 5
    observe(instance, warehouse, "first", [row(d, amount=100 * d) for d in range(1, count + 1)])

    _, cursor = tick(instance, warehouse, channel(receiver), None)

    (digest,) = receiver.accepted()
    assert digest["event"] == LIFECYCLE_DRIFT
    total = sum(100 * d for d in range(1, count + 1))
    assert digest["title"] == (
        f"Lifecycle drift: {count} drift(s) appeared ({count} not_suspended), ${total // 100:,}.{total % 100:02d} at stake."
    )
    assert digest["lines"][0].startswith(f"• deployment {count}: not_suspended")
    assert len(json.loads(cursor)["alerted"]) == count


def test_without_a_channel_the_alerts_are_logged_and_the_cursor_moves(instance, warehouse):
    observe(instance, warehouse, "first", [row(1)])
    _, cursor = tick(instance, warehouse, AlertChannel(webhook_url=None), None)
    assert set(json.loads(cursor)["alerted"]) == {"1:not_suspended"}
