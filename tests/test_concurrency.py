"""Two runs of the same billing period never interleave: the second writes after the first.

The guard is the database's, so it holds for runs the queue never saw (two command lines at
once): on PostgreSQL an advisory lock per period taken as the write transaction's first
statement, on SQLite the write lock held from ``BEGIN IMMEDIATE``. The second writer waits, sees
the first run's rows whole and replaces them whole; the history keeps both runs. The production
run queue, for its part, launches one run per period at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
import yaml
from dagster import DagsterEvent, DagsterEventType, DagsterInstance, DagsterRunStatus
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from fusion_billing_assets.cli import DEFAULT_SEED, LOCAL_INSTANCE_CONFIG
from fusion_billing_assets.defs.jobs import BILLING_PERIOD_JOB
from fusion_billing_assets.defs.resources import Warehouse
from fusion_billing_assets.settings import PROJECT_ROOT
from fusion_billing_assets.warehouse import (
    RunRecord,
    ensure_tables,
    lock_period,
    read_period,
    read_run_results,
    read_runs,
    record_run,
    replace_period,
)
from tests.conftest import current_billing_month, generate_small_sandbox, throwaway_postgres_database
from tests.test_warehouse import OCTOBER, period_rows

# --- two writers of one period through Warehouse.begin() ---------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse(request, tmp_path):
    """A warehouse with its tables, in a SQLite file or a throw-away PostgreSQL database."""
    if request.param == "sqlite":
        warehouse = Warehouse(url=f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
        with warehouse.begin() as connection:
            ensure_tables(connection)
        yield warehouse
        return
    with throwaway_postgres_database() as url:
        warehouse = Warehouse(url=url)
        with warehouse.begin() as connection:
            ensure_tables(connection)
        yield warehouse


def run_record(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        period=OCTOBER,
        reconciled_at=datetime.now(UTC),
        provisional=False,
        input_fingerprints={},
        inputs_fingerprint=run_id,
    )


def test_two_writers_of_one_period_take_turns_and_the_period_holds_one_whole_run(warehouse):
    first_results, first_lines = period_rows(OCTOBER, range(1, 4))
    second_results, second_lines = period_rows(OCTOBER, range(11, 16))
    first_has_deleted = threading.Event()
    moments: dict[str, float] = {}
    errors: list[BaseException] = []

    def first_writer() -> None:
        try:
            with warehouse.begin() as connection:
                lock_period(connection, OCTOBER)
                replace_period(connection, OCTOBER, first_results, first_lines)
                first_has_deleted.set()
                time.sleep(1)  # the second writer arrives while this one is mid-write
                record_run(connection, run_record("first"), first_results)
                moments["first_commits"] = time.monotonic()
        except BaseException as error:
            errors.append(error)
            first_has_deleted.set()

    def second_writer() -> None:
        try:
            first_has_deleted.wait(timeout=30)
            with warehouse.begin() as connection:
                lock_period(connection, OCTOBER)
                # The first statement after the guard is a read: it must see the first run whole.
                moments["second_holds_the_period"] = time.monotonic()
                seen, _ = read_period(connection, OCTOBER)
                moments["second_saw"] = seen["customer_id"].tolist()
                replace_period(connection, OCTOBER, second_results, second_lines)
                record_run(connection, run_record("second"), second_results)
        except BaseException as error:
            errors.append(error)

    writers = [threading.Thread(target=first_writer), threading.Thread(target=second_writer)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert not errors, errors

    assert moments["second_holds_the_period"] >= moments["first_commits"]
    assert moments["second_saw"] == [1, 2, 3]
    with warehouse.begin() as connection:
        results, lines = read_period(connection, OCTOBER)
        runs = read_runs(connection, OCTOBER)
        second_run = read_run_results(connection, "second")
    assert results["customer_id"].tolist() == [11, 12, 13, 14, 15]
    assert lines["customer_id"].tolist() == [11, 12, 13, 14, 15]
    assert results.equals(second_run)
    assert runs["run_id"].tolist() == ["first", "second"]
    assert runs["row_count"].tolist() == [3, 5]


def test_a_writer_that_fails_lets_the_next_one_in_and_leaves_the_previous_rows(warehouse):
    kept_results, kept_lines = period_rows(OCTOBER, range(1, 3))
    with warehouse.begin() as connection:
        replace_period(connection, OCTOBER, kept_results, kept_lines)
        record_run(connection, run_record("kept"), kept_results)
    failing_has_deleted = threading.Event()
    moments: dict[str, float] = {}

    def failing_writer() -> None:
        try:
            with warehouse.begin() as connection:
                lock_period(connection, OCTOBER)
                replace_period(connection, OCTOBER, *period_rows(OCTOBER, range(7, 9)))
                failing_has_deleted.set()
                time.sleep(0.5)
                moments["fails"] = time.monotonic()
                raise RuntimeError("the run fails mid-write")
        except RuntimeError:
            pass

    writer = threading.Thread(target=failing_writer)
    writer.start()
    assert failing_has_deleted.wait(timeout=30)
    with warehouse.begin() as connection:
        lock_period(connection, OCTOBER)
        moments["next_holds_the_period"] = time.monotonic()
        results, _ = read_period(connection, OCTOBER)
        runs = read_runs(connection, OCTOBER)
    writer.join(timeout=30)
    assert moments["next_holds_the_period"] >= moments["fails"]
    assert results["customer_id"].tolist() == [1, 2]
    assert runs["run_id"].tolist() == ["kept"]


def test_a_sqlite_transaction_holds_the_write_lock_from_begin_and_waits_a_minute_for_it(tmp_path):
    path = tmp_path / "warehouse.sqlite"
    warehouse = Warehouse(url=f"sqlite:///{path}")
    other = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with warehouse.begin() as connection:
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60_000
            # Nothing written yet, and another writer is already shut out.
            with pytest.raises(OperationalError, match="database is locked"), other.begin() as intruder:
                intruder.exec_driver_sql("CREATE TABLE intruder (id INTEGER)")
        with other.begin() as intruder:
            intruder.exec_driver_sql("CREATE TABLE intruder (id INTEGER)")
    finally:
        other.dispose()


# --- two `fusion-billing reconcile --period P` processes outside the queue --------------------


def test_two_reconcile_commands_for_one_period_leave_one_whole_run(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE_CONFIG)
    # The instance's storage exists before the two commands start: two first openings of one
    # SQLite instance at once would each stamp its schema version.
    DagsterInstance.from_config(str(home)).dispose()
    # The command's own seed and the current month: it reuses this small sandbox.
    sandbox = generate_small_sandbox(home / "sandbox", seed=DEFAULT_SEED)
    assert sandbox.manifest["periods"][-1]["period"] == current_billing_month().isoformat()
    period = sandbox.closed_periods[-1]
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("BILLING_", "NEXACLOUD_", "ODOO_", "ALERT_", "DAGSTER_"))
    }
    environment["DAGSTER_HOME"] = str(home)
    command = [sys.executable, "-m", "fusion_billing_assets.cli", "reconcile", "--period", period]
    commands = [
        subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120)[0].decode() for process in commands]
    for process, output in zip(commands, outputs, strict=True):
        assert process.returncode == 0, output
        assert "Using the sandbox" in output, output

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(RunsFilter(job_name=BILLING_PERIOD_JOB))
    assert [record.dagster_run.status for record in records] == [DagsterRunStatus.SUCCESS] * 2
    first, second = sorted(records, key=lambda record: record.start_time)
    assert second.start_time < first.end_time, "the two runs did not overlap"

    warehouse = Warehouse(url=f"sqlite:///{home / 'warehouse.sqlite'}")
    with warehouse.begin() as connection:
        current, _ = read_period(connection, period)
        runs = read_runs(connection, period)
        history = {run_id: read_run_results(connection, run_id) for run_id in runs["run_id"]}
    assert set(runs["run_id"]) == {record.dagster_run.run_id for record in records}
    assert not current.empty
    # Both runs read the same sandbox; their rows differ by their reconciliation time only. The
    # current view is exactly one run's rows, not a mix of the two.
    assert len([run_id for run_id, rows in history.items() if current.equals(rows)]) == 1
    assert current["reconciled_at"].nunique() == 1


# --- the production run queue -----------------------------------------------------------------

PRODUCTION_INSTANCE = PROJECT_ROOT / "dagster_home" / "dagster.yaml"


def test_the_production_queue_admits_one_run_per_billing_period():
    config = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def _finish(instance: DagsterInstance, run_id: str) -> None:
    run = instance.get_run_by_id(run_id)
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name),
        run_id=run_id,
    )


def test_the_queue_daemon_launches_one_run_of_a_period_at_a_time(tmp_path):
    # The production queue's settings on a throw-away SQLite instance, runs launched nowhere.
    production = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    (tmp_path / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                "run_coordinator": production["run_coordinator"],
                "concurrency": {"runs": production["concurrency"]["runs"]},
                "run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"},
                "telemetry": {"enabled": False},
            }
        )
    )
    october, november = "2026-10-01", "2026-11-01"
    with (
        DagsterInstance.from_config(str(tmp_path)) as instance,
        create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as workspace,
    ):
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        origin = RemoteJobOrigin(
            RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("fusion_billing_assets"), "__repository__"),
            BILLING_PERIOD_JOB,
        )
        submitted = {}
        for name, period in (("october", october), ("october again", october), ("november", november)):
            run = create_run_for_test(
                instance,
                job_name=origin.job_name,
                status=DagsterRunStatus.NOT_STARTED,
                tags={"dagster/partition": period},
                remote_job_origin=origin,
            )
            instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))
            submitted[name] = run.run_id
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

        def dequeue() -> set[str]:
            list(daemon.run_iteration(workspace))
            return {run.run_id for run in instance.run_launcher.queue()}

        assert dequeue() == {submitted["october"], submitted["november"]}
        # While the first October run is in progress, the second stays in the queue.
        assert dequeue() == {submitted["october"], submitted["november"]}
        assert instance.get_run_by_id(submitted["october again"]).status == DagsterRunStatus.QUEUED
        _finish(instance, submitted["october"])
        assert submitted["october again"] in dequeue()
