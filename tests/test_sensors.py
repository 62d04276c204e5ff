"""The sensors: mismatch alerts from reconciliation results, run-failure alerts, late-usage re-runs.

Each sensor is evaluated against a real (ephemeral) Dagster instance holding real
``billing/reconciliation`` materialization events, a SQLite warehouse seeded with result rows, and
alerts posted over HTTP to a receiver listening on 127.0.0.1 that checks their signature. What is
held: an alert per period and per distinct set of differences, a cursor that only moves past a
materialization once the receiver accepted its alert, provisional months kept quiet unless asked,
run failures named by job, period and step, and re-runs of closed periods that received usage
after their last reconciliation — with periods cut in the billing time zone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetRecordsFilter,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    Definitions,
    RunRequest,
    RunStatusChangeRecordsFilter,
    SensorEvaluationContext,
    SkipReason,
    asset,
    build_sensor_context,
    define_asset_job,
)
from dagster._core.events import StepMaterializationData
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from sqlalchemy import create_engine, func, select

from fusion_billing_assets.alerts import EVENT_ID_HEADER, MISMATCH, RESOLVED, RUN_FAILED, SIGNATURE_HEADER
from fusion_billing_assets.definitions import defs
from fusion_billing_assets.defs.jobs import BILLING_PERIOD_JOB, REASON_TAG
from fusion_billing_assets.defs.resources import AlertChannel, NexaCloudDatabase, Warehouse
from fusion_billing_assets.defs.sensors import (
    late_usage_reruns,
    reconciliation_alerts,
    run_failure_alerts,
)
from fusion_billing_assets.partitions import billing_periods, window_of
from fusion_billing_assets.sources.nexacloud import latest_usage_recorded_at
from fusion_billing_assets.sources.nexacloud_schema import deployments, usage_records
from fusion_billing_assets.warehouse import ensure_tables, replace_period
from tests.conftest import GeneratedSandbox
from tests.test_reports import differing_row
from tests.test_warehouse import lines_frame, result_row, results_frame

RECONCILIATION = AssetKey(["billing", "reconciliation"])
AUGUST, SEPTEMBER, OCTOBER, NOVEMBER = "2026-08-01", "2026-09-01", "2026-10-01", "2026-11-01"
SECRET = "hmac-key-that-must-never-leak"
WEBSERVER = "http://dagster.test"
NO_NEW_MATERIALIZATION = "No reconciliation was materialized since the last tick."


# --- A webhook receiver on 127.0.0.1 -----------------------------------------------------------


@dataclass
class Receiver:
    """A generic-webhook receiver: answers each POST with the next planned status (200 after)."""

    url: str = ""
    planned_statuses: list[int] = field(default_factory=list)
    received: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)

    def answer_next(self, *statuses: int) -> None:
        self.planned_statuses.extend(statuses)

    def accepted(self) -> list[dict]:
        """The bodies answered 2xx, each checked against its signature as a receiver would."""
        bodies = []
        for status, headers, body in self.received:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(expected, headers[SIGNATURE_HEADER]), "bad signature"
            payload = json.loads(body)
            assert headers[EVENT_ID_HEADER] == payload["event_id"]
            if 200 <= status < 300:
                bodies.append(payload)
        return bodies


@pytest.fixture
def receiver(monkeypatch) -> Iterator[Receiver]:
    # A proxy configured on the machine must not stand between the sensor and 127.0.0.1.
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = receiver.planned_statuses.pop(0) if receiver.planned_statuses else 200
            receiver.received.append((status, dict(self.headers), body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/billing"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- The instance, the warehouse and their events ---------------------------------------------


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    return Warehouse(url=f"sqlite:///{tmp_path / 'warehouse.sqlite'}")


def channel(receiver: Receiver, **options) -> AlertChannel:
    return AlertChannel(
        webhook_url=receiver.url, kind="generic", secret=SECRET, webserver_url=WEBSERVER, **options
    )


def seed(warehouse: Warehouse, period: str, rows: list[dict]) -> None:
    """Replace a period's results in the warehouse, as the reconciliation asset does."""
    first_day = date.fromisoformat(period)
    results = results_frame([{**row, "billing_period": first_day} for row in rows])
    with warehouse.begin() as connection:
        ensure_tables(connection)
        replace_period(connection, first_day, results, lines_frame([]))


def reconciled(instance: DagsterInstance, period: str, at: datetime | None = None) -> int:
    """Record a materialization of the period's reconciliation; its storage id.

    ``at`` back- or forward-dates it: the public API stamps events with the current time, and
    the late-usage sensor compares exactly that timestamp against NexaCloud's ingestion times.
    """
    materialization = AssetMaterialization(asset_key=RECONCILIATION, partition=period)
    if at is None:
        instance.report_runless_asset_event(materialization)
    else:
        instance.report_dagster_event(
            DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                job_name=RUNLESS_JOB_NAME,
                event_specific_data=StepMaterializationData(materialization),
            ),
            run_id=RUNLESS_RUN_ID,
            timestamp=at.timestamp(),
        )
    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=RECONCILIATION, asset_partitions=[period]), limit=1
    ).records
    return record.storage_id


def mismatch(customer_id: int = 5, delta_cents: int = 1_234, status: str = "usage_mismatch", **overrides):
    return differing_row(customer_id, status, delta_cents, **overrides)


def alert_tick(
    instance: DagsterInstance, warehouse: Warehouse, alert_channel: AlertChannel, cursor: str | None
) -> tuple[SkipReason, str | None]:
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={"warehouse": warehouse, "alert_channel": alert_channel}
    ) as context:
        outcome = reconciliation_alerts(context)
    assert isinstance(outcome, SkipReason)
    return outcome, context.cursor


# --- reconciliation_alerts --------------------------------------------------------------------


def test_the_first_tick_alerts_each_mismatching_period_once_and_no_clean_one(instance, warehouse, receiver):
    seed(warehouse, AUGUST, [result_row(1), mismatch(5)])
    seed(warehouse, SEPTEMBER, [result_row(1), differing_row(3, "within_tolerance", 1)])
    seed(warehouse, OCTOBER, [result_row(1), mismatch(6, -5_000, "rate_mismatch"), mismatch(7, 90)])
    reconciled(instance, AUGUST)
    reconciled(instance, SEPTEMBER)
    last = reconciled(instance, OCTOBER)

    outcome, cursor = alert_tick(instance, warehouse, channel(receiver), None)

    alerts = receiver.accepted()
    assert [(alert["event"], alert["period"]) for alert in alerts] == [
        (MISMATCH, AUGUST),
        (MISMATCH, OCTOBER),
    ]
    assert alerts[1]["counts_by_status"] == {"match": 1, "usage_mismatch": 1, "rate_mismatch": 1}
    assert alerts[1]["link"] == f"{WEBSERVER}/assets/billing/reconciliation?partition={OCTOBER}"
    assert f"sent {AUGUST} ({MISMATCH}), {OCTOBER} ({MISMATCH})" in outcome.skip_message
    assert "1 materialization(s) needed no new alert" in outcome.skip_message
    state = json.loads(cursor)
    assert set(state) == {"after_storage_id", "fingerprints", "signoff_changes"}
    assert state["signoff_changes"] == {}  # no period is signed off
    assert state["after_storage_id"] == last
    assert state["fingerprints"] == {AUGUST: alerts[0]["fingerprint"], OCTOBER: alerts[1]["fingerprint"]}


def test_a_tick_without_a_new_materialization_sends_nothing(instance, warehouse, receiver):
    seed(warehouse, OCTOBER, [mismatch()])
    reconciled(instance, OCTOBER)
    _, cursor = alert_tick(instance, warehouse, channel(receiver), None)
    assert len(receiver.received) == 1

    outcome, unchanged = alert_tick(instance, warehouse, channel(receiver), cursor)

    assert outcome.skip_message == NO_NEW_MATERIALIZATION
    assert unchanged == cursor
    assert len(receiver.received) == 1


def test_a_period_is_alerted_again_only_when_its_differences_change_and_told_when_resolved(
    instance, warehouse, receiver
):
    seed(warehouse, OCTOBER, [result_row(1), mismatch(5)])
    reconciled(instance, OCTOBER)
    _, cursor = alert_tick(instance, warehouse, channel(receiver), None)
    (first,) = receiver.accepted()

    seed(warehouse, OCTOBER, [result_row(1), mismatch(5, cause="Re-worded by the second run.")])
    same = reconciled(instance, OCTOBER)
    outcome, cursor = alert_tick(instance, warehouse, channel(receiver), cursor)
    assert len(receiver.received) == 1
    assert "1 materialization(s) needed no new alert" in outcome.skip_message
    assert json.loads(cursor)["after_storage_id"] == same

    seed(warehouse, OCTOBER, [result_row(1), mismatch(5, delta_cents=1_500)])
    reconciled(instance, OCTOBER)
    _, cursor = alert_tick(instance, warehouse, channel(receiver), cursor)
    changed = receiver.accepted()[1:]
    assert [alert["event"] for alert in changed] == [MISMATCH]
    assert changed[0]["event_id"] != first["event_id"]
    assert json.loads(cursor)["fingerprints"] == {OCTOBER: changed[0]["fingerprint"]}

    seed(warehouse, OCTOBER, [result_row(1), result_row(5)])
    reconciled(instance, OCTOBER)
    _, cursor = alert_tick(instance, warehouse, channel(receiver), cursor)
    resolved = receiver.accepted()[2:]
    assert [(alert["event"], alert["period"]) for alert in resolved] == [(RESOLVED, OCTOBER)]
    assert json.loads(cursor)["fingerprints"] == {}


def test_a_refused_alert_holds_the_cursor_at_its_materialization_and_is_delivered_once_next_tick(
    instance, warehouse, receiver
):
    seed(warehouse, AUGUST, [mismatch(5)])
    seed(warehouse, SEPTEMBER, [mismatch(6, -700, "tax_mismatch")])
    august = reconciled(instance, AUGUST)
    september = reconciled(instance, SEPTEMBER)
    receiver.answer_next(200, 500)

    outcome, cursor = alert_tick(instance, warehouse, channel(receiver), None)

    assert "HTTP 500" in outcome.skip_message
    assert f"the {SEPTEMBER} alert will be sent again on the next tick" in outcome.skip_message
    assert SECRET not in outcome.skip_message and receiver.url not in outcome.skip_message
    held = json.loads(cursor)
    assert held["after_storage_id"] == august < september
    assert set(held["fingerprints"]) == {AUGUST}
    refused_event_id = json.loads(receiver.received[1][2])["event_id"]

    _, cursor = alert_tick(instance, warehouse, channel(receiver), cursor)

    assert [alert["period"] for alert in receiver.accepted()] == [AUGUST, SEPTEMBER]
    assert len(receiver.received) == 3
    assert receiver.accepted()[1]["event_id"] == refused_event_id  # the receiver can deduplicate
    assert json.loads(cursor)["after_storage_id"] == september

    outcome, _ = alert_tick(instance, warehouse, channel(receiver), cursor)
    assert outcome.skip_message == NO_NEW_MATERIALIZATION
    assert len(receiver.received) == 3


def test_an_unreachable_receiver_holds_the_cursor_where_it_was(instance, warehouse, receiver):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nobody = AlertChannel(
        webhook_url=f"http://127.0.0.1:{closed_port}/hooks/billing", kind="generic", secret=SECRET
    )
    seed(warehouse, OCTOBER, [mismatch()])
    reconciled(instance, OCTOBER)

    outcome, cursor = alert_tick(instance, warehouse, nobody, None)

    assert "ConnectError" in outcome.skip_message and "next tick" in outcome.skip_message
    assert str(closed_port) not in outcome.skip_message
    assert json.loads(cursor) == {"after_storage_id": 0, "fingerprints": {}, "signoff_changes": {}}

    alert_tick(instance, warehouse, channel(receiver), cursor)
    assert [alert["period"] for alert in receiver.accepted()] == [OCTOBER]


def test_a_provisional_month_is_alerted_only_when_asked_and_once_it_has_closed(instance, warehouse, receiver):
    seed(warehouse, NOVEMBER, [result_row(1, provisional=True), mismatch(5, provisional=True)])
    quiet = reconciled(instance, NOVEMBER)

    outcome, cursor = alert_tick(instance, warehouse, channel(receiver), None)
    assert receiver.received == []
    assert "1 materialization(s) needed no new alert" in outcome.skip_message
    assert json.loads(cursor) == {"after_storage_id": quiet, "fingerprints": {}, "signoff_changes": {}}

    reconciled(instance, NOVEMBER)
    _, asked_cursor = alert_tick(instance, warehouse, channel(receiver, include_provisional=True), cursor)
    (provisional,) = receiver.accepted()
    assert provisional["provisional"] is True
    assert f"Billing period {NOVEMBER} (provisional)" in provisional["title"]
    assert set(json.loads(asked_cursor)["fingerprints"]) == {NOVEMBER}

    # Without include_provisional, the month is alerted once its final reconciliation is in.
    seed(warehouse, NOVEMBER, [result_row(1), mismatch(5)])
    reconciled(instance, NOVEMBER)
    alert_tick(instance, warehouse, channel(receiver), cursor)
    final = receiver.accepted()[1:]
    assert [(alert["period"], alert["provisional"]) for alert in final] == [(NOVEMBER, False)]


# --- run_failure_alerts -----------------------------------------------------------------------


@asset(key=["billing", "reconciliation"], partitions_def=billing_periods)
def failing_reconciliation() -> None:
    """A stand-in for the reconciliation asset that fails the way a source outage does."""
    raise RuntimeError("Odoo answered HTTP 503 while reading account.move")


failing_job = define_asset_job(BILLING_PERIOD_JOB, selection=[failing_reconciliation])
failing_defs = Definitions(assets=[failing_reconciliation], jobs=[failing_job])


def failed_run(instance: DagsterInstance, period: str = OCTOBER):
    result = failing_defs.resolve_job_def(BILLING_PERIOD_JOB).execute_in_process(
        partition_key=period, instance=instance, raise_on_error=False
    )
    assert not result.success
    return result


def alert_run_failure(instance: DagsterInstance, result, receiver: Receiver) -> None:
    """A tick of the sensor whose cursor is still at the start of the event log."""
    assert result.get_run_failure_event() is not None
    run_failure_tick(instance, receiver, "0")


def run_failure_tick(instance: DagsterInstance, receiver: Receiver, cursor: str | None) -> str | None:
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={"alert_channel": channel(receiver)}
    ) as context:
        return run_failure_alerts.evaluate_tick(context).cursor


LOCATION, REPOSITORY = "fusion_billing_assets", "__repository__"


def failed_run_launched_from(instance: DagsterInstance, location: str, job_name: str) -> DagsterRun:
    """A failed run as the webserver or daemon launches it: with the origin of its code location."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(location), repository_name=REPOSITORY
        ),
        job_name=job_name,
    )
    run = instance.add_run(DagsterRun(job_name=job_name, remote_job_origin=origin))
    instance.report_run_failed(run)
    return run


def run_failure_tick_in_location(instance: DagsterInstance, receiver: Receiver) -> str | None:
    """A tick of the sensor as the daemon evaluates it, inside this code location."""
    with SensorEvaluationContext(
        instance_ref=None,
        instance=instance,
        cursor="0",
        repository_name=REPOSITORY,
        code_location_origin=RegisteredCodeLocationOrigin(LOCATION),
        resources={"alert_channel": channel(receiver)},
    ) as context:
        return run_failure_alerts.evaluate_tick(context).cursor


def test_a_failed_run_is_alerted_with_its_job_period_and_failed_step(instance, receiver):
    result = failed_run(instance)

    alert_run_failure(instance, result, receiver)

    (alert,) = receiver.accepted()
    assert alert["event"] == RUN_FAILED
    assert alert["title"] == (
        f"Run of {BILLING_PERIOD_JOB} for billing period {OCTOBER} failed at billing__reconciliation."
    )
    assert alert["job"] == BILLING_PERIOD_JOB and alert["period"] == OCTOBER
    assert alert["failed_steps"] == ["billing__reconciliation"]
    assert alert["run_id"] == result.run_id
    assert alert["link"] == f"{WEBSERVER}/runs/{result.run_id}"


def test_a_run_failure_alert_quotes_the_steps_own_error(instance, receiver):
    result = failed_run(instance)

    alert_run_failure(instance, result, receiver)

    (alert,) = receiver.accepted()
    assert "RuntimeError: Odoo answered HTTP 503 while reading account.move" in alert["lines"][0]


def test_a_failed_run_of_any_job_of_this_code_location_is_alerted_and_another_locations_is_not(
    instance, receiver
):
    # The UI's ad-hoc materializations run Dagster's implicit asset job, whatever it is named.
    ours = failed_run_launched_from(instance, LOCATION, "an_ad_hoc_asset_job")
    failed_run_launched_from(instance, "another_location", BILLING_PERIOD_JOB)

    cursor = run_failure_tick_in_location(instance, receiver)

    assert [alert["run_id"] for alert in receiver.accepted()] == [ours.run_id]
    # The other location's failure is passed over for good, not held for a later tick.
    latest = instance.fetch_run_status_changes(
        RunStatusChangeRecordsFilter(event_type=DagsterEventType.RUN_FAILURE), limit=1
    ).records[0]
    assert cursor == str(latest.storage_id)


def test_an_in_process_run_is_alerted_only_when_it_ran_one_of_this_code_locations_jobs(instance, receiver):
    ours = failed_run(instance)
    foreign = Definitions(assets=[failing_reconciliation], jobs=[define_asset_job("elsewhere")])
    assert (
        not foreign.resolve_job_def("elsewhere")
        .execute_in_process(partition_key=OCTOBER, instance=instance, raise_on_error=False)
        .success
    )

    with build_sensor_context(
        instance=instance, cursor="0", definitions=defs, resources={"alert_channel": channel(receiver)}
    ) as context:
        run_failure_alerts.evaluate_tick(context)

    assert [alert["run_id"] for alert in receiver.accepted()] == [ours.run_id]


def test_the_first_tick_watches_failures_from_now_on(instance, receiver):
    failed_run(instance)
    cursor = run_failure_tick(instance, receiver, None)
    assert cursor is not None and int(cursor) > 0
    assert run_failure_tick(instance, receiver, cursor) == cursor
    assert receiver.accepted() == []


def test_a_refused_run_failure_alert_is_sent_again_on_a_later_tick(instance, receiver):
    # The first evaluation only places the run-status cursor at the end of the event log.
    started = run_failure_tick(instance, receiver, None)
    result = failed_run(instance)
    receiver.answer_next(500)

    refused = run_failure_tick(instance, receiver, started)
    run_failure_tick(instance, receiver, refused)

    assert receiver.received[0][0] == 500  # the receiver refused the first delivery
    assert [alert["run_id"] for alert in receiver.accepted()] == [result.run_id]


# --- late_usage_reruns ------------------------------------------------------------------------


@pytest.fixture
def nexacloud_copy(small_sandbox: GeneratedSandbox, tmp_path) -> str:
    """A private copy of the session's NexaCloud database, free to receive late usage."""
    copy = tmp_path / "nexacloud.sqlite"
    shutil.copyfile(small_sandbox.out / "nexacloud.sqlite", copy)
    return f"sqlite:///{copy}"


def latest_recorded(nexacloud_url: str, period: str) -> datetime:
    with NexaCloudDatabase(url=nexacloud_url).get_connection() as connection:
        latest = latest_usage_recorded_at(connection, window_of(period))
    assert latest is not None, f"the sandbox has usage in {period}"
    return latest


def record_usage(nexacloud_url: str, window_start: datetime, recorded_at: datetime) -> None:
    """NexaCloud ingests one half-hour of CPU usage, as late as ``recorded_at``."""
    engine = create_engine(nexacloud_url)
    try:
        with engine.begin() as connection:
            last_id = connection.execute(select(func.max(usage_records.c.id))).scalar_one()
            deployment_id = connection.execute(select(func.min(deployments.c.id))).scalar_one()
            connection.execute(
                usage_records.insert().values(
                    id=last_id + 1,
                    deployment_id=deployment_id,
                    metric="cpu_seconds",
                    window_start=window_start,
                    window_end=window_start + timedelta(minutes=30),
                    quantity=1_800,
                    recorded_at=recorded_at,
                    idempotency_key=f"late-usage-test-{last_id + 1}",
                )
            )
    finally:
        engine.dispose()


def late_usage_tick(instance: DagsterInstance, nexacloud_url: str):
    with build_sensor_context(
        instance=instance, resources={"nexacloud": NexaCloudDatabase(url=nexacloud_url)}
    ) as context:
        return late_usage_reruns(context)


def test_a_closed_period_reconciled_before_its_last_usage_arrived_is_rerun(
    instance, small_sandbox, nexacloud_copy
):
    period = small_sandbox.closed_periods[-1]
    latest = latest_recorded(nexacloud_copy, period)
    reconciled(instance, period, at=latest - timedelta(minutes=1))

    outcome = late_usage_tick(instance, nexacloud_copy)
    again = late_usage_tick(instance, nexacloud_copy)

    assert isinstance(outcome, list)
    (request,) = outcome
    assert isinstance(request, RunRequest)
    assert request.partition_key == period
    assert f"late usage recorded at {latest:%Y-%m-%d %H:%M}Z" in request.tags[REASON_TAG]
    assert period in request.run_key
    assert [rerun.run_key for rerun in again] == [request.run_key]  # the same news, one run


def test_a_period_reconciled_after_its_last_usage_arrived_is_left_alone(
    instance, small_sandbox, nexacloud_copy
):
    period = small_sandbox.closed_periods[-1]
    latest = latest_recorded(nexacloud_copy, period)
    reconciled(instance, period, at=latest - timedelta(days=1))
    reconciled(instance, period, at=latest + timedelta(minutes=1))  # the last one counts

    outcome = late_usage_tick(instance, nexacloud_copy)

    assert isinstance(outcome, SkipReason)
    assert outcome.skip_message.startswith("No usage arrived after the last reconciliation of")
    assert period in outcome.skip_message


@pytest.mark.parametrize(
    ("offset", "belongs_to"),
    [(timedelta(minutes=-30), "earlier"), (timedelta(0), "later")],
    ids=["last-local-half-hour-of-the-earlier-month", "first-local-instant-of-the-later-month"],
)
def test_late_usage_reruns_the_period_of_its_local_month(
    instance, small_sandbox, nexacloud_copy, offset, belongs_to
):
    earlier, later = small_sandbox.closed_periods[-2:]
    boundary = window_of(later).start_utc  # local midnight, 04:00 UTC in Toronto's summer time
    assert boundary.hour != 0
    reconciled_at = max(latest_recorded(nexacloud_copy, p) for p in (earlier, later)) + timedelta(hours=1)
    reconciled(instance, earlier, at=reconciled_at)
    reconciled(instance, later, at=reconciled_at)
    # Before the boundary, the usage starts on the later month's first day in UTC, yet in the
    # earlier month in Toronto.
    record_usage(
        nexacloud_copy, window_start=boundary + offset, recorded_at=reconciled_at + timedelta(hours=1)
    )

    outcome = late_usage_tick(instance, nexacloud_copy)

    assert [request.partition_key for request in outcome] == [
        {"earlier": earlier, "later": later}[belongs_to]
    ]


def test_late_usage_of_the_provisional_month_requests_no_rerun(instance, small_sandbox, nexacloud_copy):
    period = small_sandbox.provisional_period
    reconciled_at = datetime.now(UTC) - timedelta(hours=1)
    reconciled(instance, period, at=reconciled_at)
    record_usage(nexacloud_copy, window_of(period).start_utc, recorded_at=datetime.now(UTC))

    outcome = late_usage_tick(instance, nexacloud_copy)

    assert isinstance(outcome, SkipReason)
    assert period not in outcome.skip_message
