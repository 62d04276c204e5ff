"""Operating the code location end to end (README "Operating it"; docs/design.md §3, §8).

The production instance file (PostgreSQL storage, queued runs) in a throw-away home over a
generated sandbox, and the real processes: ``dagster-webserver`` and ``dagster-daemon``, each in a
process group of its own. A backfill of the sandbox's three periods, launched through GraphQL as
the UI launches it, runs to success and materializes ``billing/reconciliation`` once per period.
The ``reconciliation_alerts`` sensor, running by default, then posts exactly one generic webhook
per closed period with unexplained differences — signed with HMAC-SHA256 over the exact body,
its event id in a header — none for the provisional month, and none again on its next tick.
When a period's differences change while the receiver is down, its new alert is refused once,
sent again on the next tick and accepted exactly once; every alert's counts are the sandbox's
ground truth (its manifest), not merely what the warehouse holds. Headless chromium renders the
UI's assets page with the groups nexacloud, odoo and reconciliation in its DOM, and its screenshot
(kept in tests/artifacts/) is a drawn page, not a blank one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from fusion_billing_assets.billing.statuses import unexplained
from fusion_billing_assets.settings import PROJECT_ROOT
from fusion_billing_assets.warehouse import read_period
from tests.conftest import GeneratedSandbox, generate_small_sandbox, throwaway_postgres_database
from tests.e2e_support import (
    LOOPBACK,
    WINDOW_SIZE,
    GraphQL,
    ProcessGroups,
    ReceivedRequest,
    WebhookReceiver,
    ensure_chromium,
    free_port,
    read_png,
    visit_headless,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SEED = 23
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
# The console scripts of the environment the suite runs in (uv's .venv).
BIN = Path(sys.executable).parent
LOCATION = "fusion_billing_assets"  # workspace.yaml's location_name
REPOSITORY = "__repository__"  # the repository a Definitions object becomes
JOB = "reconcile_billing_period"
SENSOR = "reconciliation_alerts"
SENSOR_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": SENSOR}
RECONCILIATION = AssetKey(["billing", "reconciliation"])
ASSET_GROUPS = {"nexacloud", "odoo", "reconciliation", "importer", "lifecycle"}
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# The environment a deployment is configured through; none of it leaks in from the test's shell.
CONFIGURATION_PREFIXES = ("DAGSTER_", "BILLING_", "ALERT_", "NEXACLOUD_", "ODOO_")
SENSOR_TICK_SECONDS = 60
# The statuses that count against the switch (README "Reading the results"), written out here.
ACCEPTED = {"match", "within_tolerance", "rounding_difference", "waived"}
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class Deployment:
    """The running code location: its instance home, processes, receiver and GraphQL endpoint."""

    home: Path
    sandbox: GeneratedSandbox
    warehouse_url: str
    webserver_url: str
    webhook_secret: str
    receiver: WebhookReceiver
    graphql: GraphQL
    processes: ProcessGroups
    environment: dict[str, str]

    def start_daemon(self) -> None:
        self.processes.start(
            "dagster-daemon",
            [str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
            env=self.environment,
            cwd=PROJECT_ROOT,
        )

    def diagnostics(self) -> str:
        exited = self.processes.exited()
        return (f"exited early: {exited}\n" if exited else "") + self.processes.log_tails()

    def alive(self) -> bool:
        exited = self.processes.exited()
        assert not exited, f"a Dagster process exited: {exited}\n{self.diagnostics()}"
        return True


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    """The production instance over the sandbox, served by a webserver; the daemon starts on demand."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    ensure_chromium()
    sandbox = generate_small_sandbox(home / "sandbox", seed=SEED)
    warehouse_url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    with ExitStack() as stack:
        storage = make_url(stack.enter_context(throwaway_postgres_database()))
        instance_storage = {
            "DAGSTER_PG_HOST": storage.host,
            "DAGSTER_PG_PORT": str(storage.port or 5432),
            "DAGSTER_PG_USERNAME": storage.username,
            "DAGSTER_PG_PASSWORD": storage.password or "",
            "DAGSTER_PG_DB": storage.database,
        }
        # The test reads the same instance as the processes do.
        for name, value in instance_storage.items():
            monkeypatch.setenv(name, value)
        receiver = stack.enter_context(WebhookReceiver())
        webserver_url = f"http://{LOOPBACK}:{free_port()}"
        webhook_secret = secrets.token_hex(16)
        environment = {
            **{
                name: value
                for name, value in os.environ.items()
                if not name.startswith(CONFIGURATION_PREFIXES)
            },
            **instance_storage,
            "DAGSTER_HOME": str(home),
            "BILLING_WAREHOUSE_URL": warehouse_url,
            # The partitions start with the sandbox, so the UI lists its periods only.
            "BILLING_START_PERIOD": sandbox.manifest["periods"][0]["period"],
            "ALERT_WEBHOOK_URL": receiver.url,
            "ALERT_WEBHOOK_KIND": "generic",
            "ALERT_WEBHOOK_SECRET": webhook_secret,
            "DAGSTER_WEBSERVER_URL": webserver_url,
            # Alerts go to the receiver on 127.0.0.1 directly, whatever proxy the shell names.
            "NO_PROXY": LOOPBACK,
            "no_proxy": LOOPBACK,
        }
        processes = ProcessGroups(tmp_path / "logs")
        stack.callback(processes.stop_all)
        graphql = GraphQL(webserver_url)
        stack.callback(graphql.close)
        running = Deployment(
            home,
            sandbox,
            warehouse_url,
            webserver_url,
            webhook_secret,
            receiver,
            graphql,
            processes,
            environment,
        )
        port = webserver_url.rsplit(":", 1)[1]
        processes.start(
            "dagster-webserver",
            [str(BIN / "dagster-webserver"), "-w", str(WORKSPACE), "-h", LOOPBACK, "-p", port],
            env=environment,
            cwd=PROJECT_ROOT,
        )
        wait_for(
            lambda: running.alive() and graphql.server_answers(),
            timeout=120,
            waiting_for="the webserver to answer /server_info",
            diagnostics=running.diagnostics,
        )
        yield running


def test_backfilled_periods_alert_once_each_and_a_refused_alert_arrives_once_the_receiver_recovers(
    deployment: Deployment,
) -> None:
    sandbox = deployment.sandbox
    closed, provisional = sandbox.closed_periods, sandbox.provisional_period
    periods = [*closed, provisional]
    assert len(periods) == 3

    # The sensor runs by default. It is switched off (the UI's toggle) until the backfill has
    # finished, so that its first tick sees the three periods, not whichever runs ended within its
    # first minute, and on again afterwards: from then on it ticks on its own every minute.
    sensor = sensor_state(deployment)
    assert (sensor["defaultStatus"], sensor["sensorState"]["status"]) == ("RUNNING", "RUNNING")
    stopped = deployment.graphql(STOP_SENSOR, id=sensor["sensorState"]["id"])["stopSensor"]
    assert stopped["instigationState"]["status"] == "STOPPED", stopped

    # --- A backfill of the three periods, one queued run per period, run by the daemon -------------
    backfill_id = launch_backfill(deployment, periods)
    deployment.start_daemon()
    runs = wait_for_successful_runs(deployment, {"key": "dagster/backfill", "value": backfill_id}, periods)

    with DagsterInstance.from_config(str(deployment.home)) as instance:
        for period in periods:
            records = reconciliation_materializations(instance, period)
            assert [record.run_id for record in records] == [runs[period]], period

    results = {period: period_results(deployment, period) for period in periods}
    assert results[provisional]["provisional"].all()
    assert not any(results[period]["provisional"].any() for period in closed)
    # The sandbox injects unexplained differences into every period, the provisional one included:
    # its silence below is the rule for provisional months, not an absence of news.
    held_back = {period: unexplained(results[period]) for period in periods}
    assert all(len(held_back[period]) for period in periods)
    truth = {period: manifest_statuses(sandbox, period) for period in closed}
    for period in closed:
        assert Counter(results[period]["status"]) == truth[period], period

    # --- First round: one signed alert per closed period, none for the provisional month ----------
    started = deployment.graphql(START_SENSOR, selector=SENSOR_SELECTOR)["startSensor"]
    assert started["sensorState"]["status"] == "RUNNING", started
    first_tick = wait_for(
        lambda: finished_tick_after(deployment, None, with_requests=len(closed)),
        timeout=90,
        waiting_for=f"the sensor's first tick to deliver {len(closed)} alerts",
        diagnostics=deployment.diagnostics,
    )
    first_round = deployment.receiver.requests
    assert all(request.accepted for request in first_round)
    first_alerts = {}
    for request in first_round:
        alert = verified_alert(request, deployment.webhook_secret)
        first_alerts[alert["period"]] = alert
        assert_describes_results(
            alert, results[alert["period"]], truth[alert["period"]], deployment.webserver_url
        )
    assert Counter(alert["period"] for alert in map(json_body, first_round)) == Counter(closed)
    assert provisional not in first_alerts
    assert first_tick["error"] is None and first_tick["status"] == "SKIPPED", first_tick

    # --- The receiver goes down while one period's differences change ------------------------------
    period = closed[-1]
    customer = plain_matching_customer(sandbox, period)
    bill_one_dollar_more(sandbox.out / "nexacloud.sqlite", customer, period)
    deployment.receiver.refuse_next(1)
    rerun = launch_run(deployment, period)
    # The period's runs are now its backfill run and this one.
    wait_for_successful_runs(deployment, {"key": "dagster/partition", "value": period}, [period, period])
    changed = period_results(deployment, period)
    row = changed[changed["customer_id"] == customer].iloc[0]
    assert (row["status"], row["delta_cents"]) == ("amount_mismatch", -100), row.to_dict()

    refusing_tick = wait_for(
        lambda: finished_tick_after(deployment, first_tick, with_requests=len(first_round) + 1),
        timeout=SENSOR_TICK_SECONDS * 2 + 30,
        waiting_for="the sensor to alert on the changed period",
        diagnostics=deployment.diagnostics,
    )
    refused = deployment.receiver.requests[len(first_round)]
    assert refused.answered == 500
    refused_alert = verified_alert(refused, deployment.webhook_secret)
    assert refused_alert["period"] == period
    assert refused_alert["fingerprint"] != first_alerts[period]["fingerprint"]
    # The ground truth, with the customer billed a dollar more moved from match to amount_mismatch.
    changed_truth = truth[period] - Counter(match=1) + Counter(amount_mismatch=1)
    assert_describes_results(refused_alert, changed, changed_truth, deployment.webserver_url)
    assert "sent again on the next tick" in (refusing_tick["skipReason"] or ""), refusing_tick

    # While the sensor waits for its next tick, the UI is looked at.
    check_the_assets_page(deployment)

    delivering_tick = wait_for(
        lambda: finished_tick_after(deployment, refusing_tick, with_requests=len(first_round) + 2),
        timeout=SENSOR_TICK_SECONDS + 30,
        waiting_for="the refused alert to be sent again",
        diagnostics=deployment.diagnostics,
    )
    delivered = deployment.receiver.requests[-1]
    assert delivered.accepted
    delivered_alert = verified_alert(delivered, deployment.webhook_secret)
    # The same news under the same event id (a receiver can deduplicate), signed afresh.
    assert delivered_alert["event_id"] == refused_alert["event_id"]
    assert {**delivered_alert, "sent_at": None} == {**refused_alert, "sent_at": None}

    # Nothing else ever arrived: no first-round alert twice, no provisional month, no run failure.
    everything = deployment.receiver.requests
    assert [request.answered for request in everything] == [200] * len(closed) + [500, 200]
    accepted_news = Counter(json_body(request)["event_id"] for request in everything if request.accepted)
    assert set(accepted_news.values()) == {1}
    # And nothing more will: the cursor has moved past the rerun's materialization and remembers
    # the differences it announced, so no later tick has anything left to send.
    with DagsterInstance.from_config(str(deployment.home)) as instance:
        latest = reconciliation_materializations(instance, period)[0]
        assert latest.run_id == rerun
        assert latest.storage_id == max(
            record.storage_id for p in periods for record in reconciliation_materializations(instance, p)
        )
    cursor = json.loads(delivering_tick["cursor"])
    assert cursor["after_storage_id"] == latest.storage_id
    assert cursor["fingerprints"] == {
        **{p: first_alerts[p]["fingerprint"] for p in closed},
        period: delivered_alert["fingerprint"],
    }


# --- GraphQL ---------------------------------------------------------------------------------------

SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      defaultStatus
      sensorState {
        id
        status
        ticks(limit: 10) { tickId status timestamp endTimestamp skipReason cursor error { message } }
      }
    }
    ... on Error { message }
  }
}
"""
STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on Error { message }
  }
}
"""
START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on Error { message }
  }
}
"""
LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}
"""
RUNS = """
query Runs($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
    ... on Error { message }
  }
}
"""
ASSET_GROUPS_QUERY = "query Groups { assetNodes { groupName assetKey { path } } }"
SET_NUX_SEEN = "mutation NuxSeen { setNuxSeen }"


def sensor_state(deployment: Deployment) -> dict[str, Any]:
    sensor = deployment.graphql(SENSOR_QUERY, selector=SENSOR_SELECTOR)["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    return sensor


def finished_tick_after(
    deployment: Deployment, previous: dict[str, Any] | None, *, with_requests: int
) -> dict[str, Any] | None:
    """The latest sensor tick, once it is a new one, has ended and the receiver holds that many requests."""
    deployment.alive()
    ticks = sensor_state(deployment)["sensorState"]["ticks"]
    if not ticks or ticks[0]["status"] == "STARTED":
        return None
    if previous is not None and float(ticks[0]["timestamp"]) <= float(previous["timestamp"]):
        return None
    received = len(deployment.receiver.requests)
    assert received <= with_requests, f"{received} requests arrived, expected {with_requests}"
    return ticks[0] if received == with_requests else None


def launch_backfill(deployment: Deployment, periods: list[str]) -> str:
    params = {
        "selector": {
            "partitionSetName": f"{JOB}_partition_set",
            "repositorySelector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY},
        },
        "partitionNames": periods,
        "title": "end-to-end backfill",
    }
    launched = deployment.graphql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def launch_run(deployment: Deployment, period: str) -> str:
    """Materialize one period again, as the UI's Materialize button does."""
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": JOB},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": period}]},
    }
    launched = deployment.graphql(LAUNCH_RUN, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def wait_for_successful_runs(
    deployment: Deployment, tag: dict[str, str], periods: list[str]
) -> dict[str, str]:
    """Wait until the runs tagged ``tag`` — one per listed period, a period listed twice having two
    — have all ended; each must have succeeded. Returns the newest run id of each period."""

    def ended() -> list[dict[str, Any]] | None:
        deployment.alive()
        runs = deployment.graphql(RUNS, tags=[tag])["runsOrError"]["results"]
        if len(runs) < len(periods) or any(run["status"] not in TERMINAL_RUN_STATUSES for run in runs):
            return None
        return runs

    runs = wait_for(
        ended,
        timeout=240,
        interval=2,
        waiting_for=f"the runs of {periods} tagged {tag} to end",
        diagnostics=deployment.diagnostics,
    )
    assert sorted(map(run_partition, runs)) == sorted(periods)
    failed = [run for run in runs if run["status"] != "SUCCESS"]
    assert not failed, f"runs that did not succeed: {failed}\n{deployment.diagnostics()}"
    by_period: dict[str, str] = {}
    for run in runs:  # newest first
        by_period.setdefault(run_partition(run), run["runId"])
    return by_period


def run_partition(run: dict[str, Any]) -> str:
    return next(tag["value"] for tag in run["tags"] if tag["key"] == "dagster/partition")


# --- The instance and the warehouse -----------------------------------------------------------------


def reconciliation_materializations(instance: DagsterInstance, period: str) -> list:
    """The period's ``billing/reconciliation`` materializations, newest first."""
    return instance.fetch_materializations(
        AssetRecordsFilter(asset_key=RECONCILIATION, asset_partitions=[period]), limit=10
    ).records


def period_results(deployment: Deployment, period: str) -> pd.DataFrame:
    engine = create_engine(deployment.warehouse_url)
    try:
        with engine.connect() as connection:
            results, _ = read_period(connection, period)
    finally:
        engine.dispose()
    return results


def manifest_statuses(sandbox: GeneratedSandbox, period: str) -> Counter[str]:
    """How many rows of each status the generator says a closed period must reconcile to."""
    return Counter(entry["status"] for entry in sandbox.manifest["expected"] if entry["period"] == period)


def plain_matching_customer(sandbox: GeneratedSandbox, period: str) -> int:
    """A customer whose period reconciles to the cent and is no edge case of the sandbox."""
    special = {
        entry["customer_id"]
        for entry in [*sandbox.manifest["edge_cases"], *sandbox.manifest["differences"]]
        if entry["period"] == period
    }
    return min(
        entry["customer_id"]
        for entry in sandbox.manifest["expected"]
        if entry["period"] == period and entry["status"] == "match" and entry["customer_id"] not in special
    )


def bill_one_dollar_more(nexacloud_sqlite: Path, customer: int, period: str) -> None:
    """NexaCloud's invoice of the period charges $1.00 more on its base line, lines still adding up."""
    with closing(sqlite3.connect(nexacloud_sqlite)) as connection, connection:
        ((invoice_id,),) = connection.execute(
            "SELECT id FROM invoices WHERE customer_id = ? AND period_start = ? AND status != 'void'",
            (customer, period),
        ).fetchall()
        line_id = connection.execute(
            "SELECT min(id) FROM invoice_lines WHERE invoice_id = ? AND kind = 'base'", (invoice_id,)
        ).fetchone()[0]
        connection.execute(
            "UPDATE invoice_lines SET amount_cents = amount_cents + 100 WHERE id = ?", (line_id,)
        )
        connection.execute(
            "UPDATE invoices SET subtotal_cents = subtotal_cents + 100, total_cents = total_cents + 100 "
            "WHERE id = ?",
            (invoice_id,),
        )


# --- The alerts ------------------------------------------------------------------------------------


def json_body(request: ReceivedRequest) -> dict[str, Any]:
    return json.loads(request.body)


def verified_alert(request: ReceivedRequest, secret: str) -> dict[str, Any]:
    """The alert a request carried, once its signature over the exact body bytes and its headers hold."""
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.header("X-Fusion-Signature") or "", expected), request.headers
    assert secret.encode() not in request.body
    alert = json_body(request)
    assert request.header("X-Fusion-Event-Id") == alert["event_id"]
    assert request.header("X-Fusion-Timestamp") == alert["sent_at"]
    assert request.header("Content-Type") == "application/json"
    return alert


def assert_describes_results(
    alert: dict[str, Any], results: pd.DataFrame, truth: Counter[str], webserver_url: str
) -> None:
    """A mismatch alert states the period's ground-truth counts and the amounts the warehouse holds,
    and links to them."""
    period = alert["period"]
    held_back = unexplained(results)
    assert alert["event"] == "reconciliation.mismatch"
    assert alert["provisional"] is False
    assert alert["link"] == f"{webserver_url}/assets/billing/reconciliation?partition={period}"
    assert alert["counts_by_status"] == dict(truth)
    unexplained_count = sum(count for status, count in truth.items() if status not in ACCEPTED)
    assert f"{unexplained_count} unexplained difference(s)" in alert["title"]
    assert alert["total_variance_cents"] == int(results["delta_cents"].abs().sum())
    largest = held_back["delta_cents"].abs().max()
    assert max(abs(difference["delta_cents"]) for difference in alert["largest_differences"]) == largest


# --- The UI ----------------------------------------------------------------------------------------


def check_the_assets_page(deployment: Deployment) -> None:
    """Chromium renders the assets page with its asset groups; its screenshot is kept."""
    groups = {node["groupName"] for node in deployment.graphql(ASSET_GROUPS_QUERY)["assetNodes"]}
    assert groups == ASSET_GROUPS
    # What the community dialog's "Skip" button does, so that it does not cover the page.
    assert deployment.graphql(SET_NUX_SEEN)["setNuxSeen"] is True
    url = f"{deployment.webserver_url}/assets"
    profiles = deployment.home.parent / "chromium"
    page = visit_headless(url, "--dump-dom", profile=profiles / "dom").decode()
    # Each asset's row links to its group: /asset-groups~group:"<name>"/…, quoted as HTML.
    shown = set(re.findall(r'/asset-groups~group(?::|%3A)(?:"|&quot;|%22)([\w-]+)', page))
    assert shown == ASSET_GROUPS, shown
    assert "Join the Dagster community" not in page
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n!.gitignore\n")
    screenshot = ARTIFACTS / "assets-page.png"
    screenshot.unlink(missing_ok=True)
    visit_headless(url, f"--screenshot={screenshot}", profile=profiles / "screenshot")
    print(f"\nscreenshot of {url}: {screenshot}")
    picture = read_png(screenshot.read_bytes())
    assert (picture.width, picture.height) == WINDOW_SIZE
    colours = picture.colour_shares()
    _, background_pixels = colours.most_common(1)[0]
    drawn = 1 - background_pixels / len(picture.pixels)
    # A blank page is one colour, a spinner alone a few hundred pixels; the assets table, the
    # navigation and their anti-aliased text are tens of thousands of pixels in dozens of colours.
    assert len(colours) >= 32 and drawn >= 0.01, f"{len(colours)} colours, {drawn:.2%} drawn: {screenshot}"
