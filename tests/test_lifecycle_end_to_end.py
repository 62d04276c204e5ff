"""The control loop end to end on the sandbox (docs/design.md §11): ``billing/lifecycle_drift``
materialized through the code location's own job and resources, read back from
``billing_lifecycle_drift``, compared with the ground truth the sandbox recorded (its manifest's
``lifecycle`` cases); the alert sensor telling each new drift once and its resolution once the
drift is put right in Odoo; flip readiness naming the drifts older than the grace period; and an
observation Odoo refuses leaving the previous one, and the channel, as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, SkipReason, build_sensor_context
from sqlalchemy import create_engine, func, select, update

from fusion_billing_assets.alerts import LIFECYCLE_DRIFT, LIFECYCLE_RESOLVED
from fusion_billing_assets.definitions import (
    apply_import_job_name,
    build_resources,
    defs,
    flip_readiness_job_name,
    observe_lifecycle_job_name,
)
from fusion_billing_assets.defs.lifecycle import lifecycle_drift_alerts
from fusion_billing_assets.defs.resources import AlertChannel
from fusion_billing_assets.sandbox.odoo_store import TABLES
from fusion_billing_assets.sandbox.resources import SandboxOdooAPI
from fusion_billing_assets.settings import load_settings
from fusion_billing_assets.sources.nexacloud_schema import deployments
from fusion_billing_assets.warehouse import read_lifecycle_drift, read_lifecycle_observations
from tests import test_sensors
from tests.conftest import GeneratedSandbox
from tests.test_sensors import SECRET, WEBSERVER, Receiver

receiver = test_sensors.receiver
DRIFT_KINDS = {
    "not_suspended",
    "not_deprovisioned",
    "suspended_but_paid",
    "billed_after_termination",
    "paused_but_running",
}


@dataclass
class Location:
    home: Path
    instance: DagsterInstance
    manifest: dict

    def resources(self) -> dict:
        return build_resources(load_settings({"DAGSTER_HOME": str(self.home)}))

    def observe(self) -> ExecuteInProcessResult:
        return defs.resolve_job_def(observe_lifecycle_job_name).execute_in_process(
            instance=self.instance, resources=self.resources()
        )

    def drift_table(self) -> pd.DataFrame:
        with self.resources()["warehouse"].begin() as connection:
            return read_lifecycle_drift(connection)

    @property
    def cases(self) -> list[dict]:
        return self.manifest["lifecycle"]["cases"]

    @property
    def as_of(self) -> pd.Timestamp:
        return pd.Timestamp(self.manifest["lifecycle"]["as_of"], tz="UTC")


@pytest.fixture
def location(small_sandbox: GeneratedSandbox, tmp_path) -> Iterator[Location]:
    """A home of its own over a copy of the small sandbox: these tests change Odoo's records."""
    shutil.copytree(small_sandbox.out, tmp_path / "sandbox")
    manifest = json.loads((tmp_path / "sandbox" / "manifest.json").read_text())
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as instance:
        yield Location(tmp_path, instance, manifest)


def metadata(result: ExecuteInProcessResult, key: str) -> dict:
    (event,) = [
        event
        for event in result.get_asset_materialization_events()
        if event.event_specific_data.materialization.asset_key.to_user_string() == key
    ]
    return {name: value.value for name, value in event.event_specific_data.materialization.metadata.items()}


def tick(location: Location, receiver: Receiver, cursor: str | None) -> str | None:
    channel = AlertChannel(webhook_url=receiver.url, kind="generic", secret=SECRET, webserver_url=WEBSERVER)
    resources = {"warehouse": location.resources()["warehouse"], "alert_channel": channel}
    with build_sensor_context(instance=location.instance, cursor=cursor, resources=resources) as context:
        assert isinstance(lifecycle_drift_alerts(context), SkipReason)
    return context.cursor


def test_every_injected_drift_is_found_with_its_kind_and_none_of_the_look_alikes(location):
    result = location.observe()
    table = location.drift_table().set_index("deployment_id")

    expected = {case["deployment_id"]: case for case in location.cases}
    assert {case["kind"] for case in location.cases} == {*DRIFT_KINDS, "in_sync"}
    for deployment_id, case in expected.items():
        found = table.loc[deployment_id]
        assert found["kind"] == case["kind"], (case["case"], found["cause"])
        assert (
            found["customer_id"] == case["customer_id"]
            and found["subscription_id"] == case["subscription_id"]
        )
        if case["since"] is not None:
            assert found["since"] == pd.Timestamp(case["since"], tz="UTC"), case["case"]
        elif case["kind"] != "in_sync":
            # Neither system dates it: first observed at the moment judged.
            assert found["since"] == location.as_of
    # Nothing else drifts: every other mapped deployment is in sync.
    drifting = set(table.index[table["kind"] != "in_sync"])
    assert drifting == {d for d, case in expected.items() if case["kind"] != "in_sync"}
    look_alikes = [case for case in location.cases if case["kind"] == "in_sync"]
    assert {case["case"] for case in look_alikes} == {
        "in_grace",
        "suspended_and_overdue",
        "terminated_and_churned_same_day",
    }
    for case in look_alikes:
        assert table.at[case["deployment_id"], "cause"], f"{case['case']} says why it is in sync"

    # Every row has its states and a cause with the figures; amounts are what is at stake.
    drifts = table[table["kind"] != "in_sync"]
    assert (drifts["amount_at_stake_cents"] > 0).all()
    assert drifts["cause"].str.contains(r"\$\d").all()
    info = metadata(result, "billing/lifecycle_drift")
    assert info["dagster/row_count"] == len(table)
    assert info["counts_by_kind"] == {
        "in_sync": int((table["kind"] == "in_sync").sum()),
        **{kind: 1 for kind in DRIFT_KINDS},
        "not_judged": 0,
    }
    assert info["as_of"] == location.as_of.isoformat()
    # Odoo is read in pages per model: at this size, one or two requests each, never one per deployment.
    assert max(info["odoo_calls"].values()) <= 2 and info["odoo_requests"] < len(table) / 4
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    assert checks["every_deployment_judged"].passed
    check = checks["no_drift_beyond_grace"]
    beyond = {
        case["deployment_id"]
        for case in location.cases
        if case["since"] is not None
        and pd.Timestamp(case["since"], tz="UTC") < location.as_of - timedelta(days=7)
    }
    assert check.passed is not bool(beyond)
    assert sorted(check.metadata["deployment_ids"].value) == sorted(beyond)


def test_each_new_drift_is_alerted_once_and_a_drift_put_right_gets_its_resolution(location, receiver):
    location.observe()
    cursor = tick(location, receiver, None)
    drift_cases = [case for case in location.cases if case["kind"] != "in_sync"]
    alerts = receiver.accepted()
    assert sorted((alert["event"], alert["deployment_id"], alert["kind"]) for alert in alerts) == sorted(
        (LIFECYCLE_DRIFT, case["deployment_id"], case["kind"]) for case in drift_cases
    )
    assert all(alert["link"] == f"{WEBSERVER}/assets/billing/lifecycle_drift" for alert in alerts)

    # The customer pays the overdue invoice in Odoo; the next hour's observation finds it in sync.
    overdue = next(case for case in location.cases if case["case"] == "not_suspended")
    invoice_name = next(alert for alert in alerts if alert["kind"] == "not_suspended")["lines"][0].split()[1]
    moves = TABLES["account.move"]
    engine = create_engine(f"sqlite:///{location.home / 'sandbox' / 'odoo.sqlite'}")
    with engine.begin() as connection:
        paid = connection.execute(
            update(moves)
            .where(moves.c.name == invoice_name)
            .values(payment_state="paid", amount_residual=0.0)
        )
        assert paid.rowcount == 1
    engine.dispose()
    location.observe()
    receiver.received.clear()

    cursor = tick(location, receiver, cursor)

    (resolution,) = receiver.accepted()
    assert resolution["event"] == LIFECYCLE_RESOLVED
    assert (resolution["deployment_id"], resolution["kind"]) == (overdue["deployment_id"], "not_suspended")
    assert resolution["title"].endswith("is in sync again; it was not_suspended.")
    assert location.drift_table().set_index("deployment_id").at[overdue["deployment_id"], "kind"] == "in_sync"

    # Another observation with nothing changed: nothing is told again.
    location.observe()
    receiver.received.clear()
    tick(location, receiver, cursor)
    assert receiver.received == []


def test_flip_readiness_names_each_drift_older_than_the_grace_period(location):
    location.observe()
    result = defs.resolve_job_def(flip_readiness_job_name).execute_in_process(
        instance=location.instance, resources=location.resources()
    )
    readiness = metadata(result, "billing/flip_readiness")

    beyond = sorted(
        case["deployment_id"]
        for case in location.cases
        if case["since"] is not None
        and pd.Timestamp(case["since"], tz="UTC") < location.as_of - timedelta(days=7)
    )
    assert beyond, "the sandbox holds a drift older than the grace period"
    assert sorted(readiness["lifecycle_drifts_held_back"]) == beyond
    for case in location.cases:
        named = (
            f"deployment {case['deployment_id']} (customer {case['customer_id']}) has drifted"
            in readiness["reasons"]
        )
        assert named == (case["deployment_id"] in beyond), case["case"]
    with location.resources()["warehouse"].begin() as connection:
        observed_at = read_lifecycle_observations(connection)["observed_at"].iloc[-1]
    assert readiness["lifecycle_observed_at"] == observed_at.isoformat(timespec="seconds")
    assert datetime.fromisoformat(readiness["lifecycle_observed_at"]) <= datetime.fromisoformat(
        readiness["judged_at"]
    )


class OdooRefusingInvoices(SandboxOdooAPI):
    """The sandbox's Odoo, whose read-only user has lost access to invoices."""

    def transport(self) -> httpx.BaseTransport:
        served = super().transport()

        def answer(request: httpx.Request) -> httpx.Response:
            if "/account.move/" in request.url.path:
                return httpx.Response(
                    403,
                    json={
                        "name": "odoo.exceptions.AccessError",
                        "message": "You are not allowed to access 'Journal Entry' (account.move) records.",
                        "arguments": [],
                        "context": {},
                        "debug": "",
                    },
                )
            return served.handle_request(request)

        return httpx.MockTransport(answer)


def test_an_observation_that_fails_keeps_the_previous_one_and_tells_nobody(location, receiver):
    location.observe()
    cursor = tick(location, receiver, None)
    before = location.drift_table()
    receiver.received.clear()
    resources = location.resources()
    refusing = resources["odoo"]
    resources["odoo"] = OdooRefusingInvoices(
        url=refusing.url,
        database=refusing.database,
        api_key=refusing.api_key,
        login=refusing.login,
        store_url=refusing.store_url,
    )

    failed = defs.resolve_job_def(observe_lifecycle_job_name).execute_in_process(
        instance=location.instance, resources=resources, raise_on_error=False
    )

    assert not failed.success
    (failure,) = failed.get_step_failure_events()
    error = failure.event_specific_data.error.to_string()
    assert "account.move" in error and "not allowed" in error
    assert refusing.api_key not in error
    pd.testing.assert_frame_equal(location.drift_table(), before)
    with resources["warehouse"].begin() as connection:
        assert len(read_lifecycle_observations(connection)) == 1
    tick(location, receiver, cursor)
    assert receiver.received == []


def test_the_lifecycle_command_observes_and_lists_every_drift(location):
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("NEXACLOUD_", "ODOO_", "BILLING_", "ALERT_"))
    }
    environment["DAGSTER_HOME"] = str(location.home)
    completed = subprocess.run(
        [sys.executable, "-m", "fusion_billing_assets.cli", "lifecycle"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    deployments = len(location.drift_table())
    assert f"{deployments} mapped deployment(s) judged as of {location.as_of:%Y-%m-%d %H:%M} UTC" in out
    for case in location.cases:
        if case["kind"] != "in_sync":
            assert f"| {case['deployment_id']} | {case['customer_id']} | {case['kind']} |" in out
    assert "Observation succeeded" in out


def test_an_invoice_line_billing_a_terminated_deployment_after_its_last_day_is_found(location):
    """Odoo churned the subscription, yet a later invoice bills it: billed after termination."""
    churned = next(case for case in location.cases if case["case"] == "terminated_and_churned_same_day")
    lines, moves = TABLES["account.move.line"], TABLES["account.move"]
    engine = create_engine(f"sqlite:///{location.home / 'sandbox' / 'odoo.sqlite'}")
    with engine.begin() as connection:
        last = (
            connection.execute(
                select(lines)
                .where(lines.c.subscription_id == churned["subscription_id"])
                .order_by(lines.c.deferred_start_date.desc(), lines.c.id.desc())
            )
            .first()
            ._asdict()
        )
        next_id = connection.execute(select(func.max(lines.c.id))).scalar_one() + 1
        ended = date.fromisoformat(last["deferred_start_date"])
        after = (ended.replace(day=28) + timedelta(days=4)).replace(day=1)
        # The month after its last one, billed again on the same invoice; and once more on a
        # cancelled invoice, which bills nothing.
        cancelled = connection.execute(select(moves.c.id).where(moves.c.state == "cancel")).scalar()
        for offset, move_id, total in ((1, last["move_id"], 56.5), (2, cancelled, 99.0)):
            connection.execute(
                lines.insert().values(
                    {
                        **last,
                        "id": next_id + offset,
                        "move_id": move_id,
                        "deferred_start_date": after.isoformat(),
                        "deferred_end_date": None,
                        "price_total": total,
                    }
                )
            )
    engine.dispose()

    location.observe()

    found = location.drift_table().set_index("deployment_id").loc[churned["deployment_id"]]
    assert found["kind"] == "billed_after_termination"
    assert found["amount_at_stake_cents"] == 5_650
    assert f"for service from {after.isoformat()} ($56.50)" in found["cause"]
    # Since NexaCloud terminated it, as its database says.
    nexacloud = create_engine(f"sqlite:///{location.home / 'sandbox' / 'nexacloud.sqlite'}")
    with nexacloud.connect() as connection:
        terminated_at = connection.execute(
            select(deployments.c.terminated_at).where(deployments.c.id == churned["deployment_id"])
        ).scalar_one()
    nexacloud.dispose()
    assert found["since"] == pd.Timestamp(terminated_at, tz="UTC")  # stored in UTC


def test_the_importer_churning_a_terminated_deployments_subscription_clears_billing_after_termination(
    location, receiver
):
    """The runbook's fix for billed_after_termination: import the period, and the drift resolves."""
    location.observe()
    cursor = tick(location, receiver, None)
    billed = next(case for case in location.cases if case["case"] == "billed_after_termination")
    # A period the deployment lived in: the one it was terminated in.
    period = pd.Timestamp(billed["since"]).tz_localize("UTC").tz_convert(location.manifest["timezone"])
    applied = defs.resolve_job_def(apply_import_job_name).execute_in_process(
        run_config={
            "ops": {"apply_period_import": {"config": {"period": f"{period:%Y-%m}-01", "dry_run": False}}}
        },
        instance=location.instance,
        resources=location.resources(),
    )
    assert applied.success
    receiver.received.clear()

    location.observe()
    tick(location, receiver, cursor)

    found = location.drift_table().set_index("deployment_id").loc[billed["deployment_id"]]
    assert (found["kind"], found["odoo_state"]) == ("in_sync", "6_churn")
    (resolution,) = receiver.accepted()
    assert (resolution["event"], resolution["deployment_id"], resolution["kind"]) == (
        LIFECYCLE_RESOLVED,
        billed["deployment_id"],
        "billed_after_termination",
    )
