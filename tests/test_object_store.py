"""A run's frames in an object store every host can reach (``BILLING_IO_STORE_URL``; docs/operations.md §4).

moto's S3-compatible server runs inside the test. The period job of the small sandbox, with its
``io_manager`` pointed at ``s3://<bucket>/<prefix>``, writes one object per asset per billing
period there and nothing under the instance's local storage folder; ``billing/reconciliation`` re-run
alone reads its upstream frames back from the bucket and gives the same results; and no secret of
the store's options reaches a run's events.
"""

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    MonthlyPartitionsDefinition,
    asset,
    build_init_resource_context,
    materialize,
)
from moto.server import ThreadedMotoServer
from sqlalchemy import create_engine

from fusion_billing_assets.definitions import billing_period_job_name, build_resources, defs
from fusion_billing_assets.defs import nexacloud, odoo, reconciliation
from fusion_billing_assets.defs.io_managers import io_manager_for
from fusion_billing_assets.settings import load_settings
from fusion_billing_assets.warehouse import read_results
from tests.conftest import GeneratedSandbox

BUCKET = "fusion-billing-frames"
PREFIX = "runs/frames"
REGION = "us-east-1"
# moto accepts any credentials; these are the ones the AWS chain finds in the environment.
DUMMY_KEY_ID = "fusion-test-key-id"
DUMMY_SECRET = "dummy-secret-never-shown"

ASSETS = [*nexacloud.assets, *odoo.assets, *reconciliation.assets]
RECONCILIATION = AssetKey(["billing", "reconciliation"])
# Every asset of the period job that hands a frame on; billing/reconciliation writes the
# warehouse and returns no value, so it has no object.
STORED_ASSETS = [
    *(
        ("nexacloud", name)
        for name in ("customers", "plans", "deployments", "usage", "invoices", "invoice_lines")
    ),
    *(
        ("odoo", name)
        for name in ("account_links", "partners", "subscriptions", "usage", "invoices", "invoice_lines")
    ),
    ("billing", "account_mapping"),
    ("billing", "expected_charges"),
    ("billing", "usage_days_that_differ"),
]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on a free local port, for this module only."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET,
    )


def store_environment(endpoint: str, bucket: str, **options: Any) -> dict[str, str]:
    return {
        "BILLING_IO_STORE_URL": f"s3://{bucket}/{PREFIX}",
        "BILLING_IO_STORE_OPTIONS": json.dumps({"endpoint_url": endpoint, **options}),
        "AWS_ACCESS_KEY_ID": DUMMY_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        # Nothing else of the chain is consulted: no profile files, no instance metadata.
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def object_keys(endpoint: str, bucket: str) -> set[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def materialization_metadata(result: ExecuteInProcessResult, key: AssetKey) -> dict[str, Any]:
    (event,) = [event for event in result.get_asset_materialization_events() if event.asset_key == key]
    return {name: value.value for name, value in event.materialization.metadata.items()}


# --- The period job of the small sandbox on the S3-compatible store ------------------------------


@dataclass(frozen=True)
class StoredRuns:
    """Each closed period reconciled with the frames in the bucket, then its reconciliation re-run alone."""

    endpoint: str
    instance: DagsterInstance
    periods: list[str]
    full: dict[str, ExecuteInProcessResult]
    full_results: dict[str, pd.DataFrame]
    keys_after_full: set[str]
    rerun: dict[str, ExecuteInProcessResult]
    rerun_results: dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def stored_runs(small_sandbox: GeneratedSandbox, s3_endpoint, tmp_path_factory) -> Iterator[StoredRuns]:
    home = tmp_path_factory.mktemp("object_store_home")
    environment = store_environment(s3_endpoint, BUCKET)
    settings = load_settings({"DAGSTER_HOME": str(home), **environment})
    shutil.copytree(small_sandbox.out, settings.sandbox_dir)
    s3_client(s3_endpoint).create_bucket(Bucket=BUCKET)
    instance = DagsterInstance.ephemeral(tempdir=str(home / "instance"))
    job = defs.resolve_job_def(billing_period_job_name)
    periods = small_sandbox.closed_periods

    def results(period: str) -> pd.DataFrame:
        engine = create_engine(settings.warehouse_url)
        try:
            with engine.connect() as connection:
                return read_results(connection, [date.fromisoformat(period)])
        finally:
            engine.dispose()

    with pytest.MonkeyPatch.context() as patch:
        # The io_manager reads its URL and options through EnvVar when a run starts, as a run pod does.
        for name, value in environment.items():
            patch.setenv(name, value)
        resources = build_resources(settings)
        full = {
            period: job.execute_in_process(partition_key=period, instance=instance, resources=resources)
            for period in periods
        }
        full_results = {period: results(period) for period in periods}
        keys_after_full = object_keys(s3_endpoint, BUCKET)
        # Only the reconciliation's step: its thirteen upstream frames are loaded from the bucket.
        rerun = {
            period: materialize(
                ASSETS,
                selection=[RECONCILIATION],
                partition_key=period,
                instance=instance,
                resources=resources,
            )
            for period in periods
        }
        rerun_results = {period: results(period) for period in periods}
        yield StoredRuns(
            s3_endpoint, instance, periods, full, full_results, keys_after_full, rerun, rerun_results
        )


def test_the_period_job_writes_one_object_per_asset_per_period_into_the_bucket(stored_runs):
    assert len(stored_runs.periods) >= 2, "the small sandbox has two closed periods"
    expected = {
        f"{PREFIX}/{group}/{name}/{period}" for group, name in STORED_ASSETS for period in stored_runs.periods
    }
    assert stored_runs.keys_after_full == expected
    # The re-runs read those objects and wrote none of their own.
    assert object_keys(stored_runs.endpoint, BUCKET) == expected


def test_each_materialization_names_its_object_in_the_bucket(stored_runs):
    for period, result in stored_runs.full.items():
        for group, name in STORED_ASSETS:
            path = materialization_metadata(result, AssetKey([group, name]))["path"]
            assert path == f"s3://{BUCKET}/{PREFIX}/{group}/{name}/{period}"


def test_the_reconciliation_re_run_alone_reads_its_frames_back_and_gives_the_same_results(stored_runs):
    for period in stored_runs.periods:
        rerun = stored_runs.rerun[period]
        assert rerun.success
        assert {event.asset_key for event in rerun.get_asset_materialization_events()} == {RECONCILIATION}
        before = materialization_metadata(stored_runs.full[period], RECONCILIATION)
        after = materialization_metadata(rerun, RECONCILIATION)
        # The content hash of every input frame: what came back from the bucket is what was stored.
        assert after["input_fingerprints"] == before["input_fingerprints"]
        assert after["inputs_fingerprint"] == before["inputs_fingerprint"]
        assert after["counts_by_status"] == before["counts_by_status"]
        assert after["total_variance"] == before["total_variance"]
        pd.testing.assert_frame_equal(
            stored_runs.rerun_results[period].drop(columns="reconciled_at"),
            stored_runs.full_results[period].drop(columns="reconciled_at"),
        )
        assert len(stored_runs.full_results[period]) > 0


def test_nothing_is_written_to_the_instances_local_storage_folder(stored_runs):
    assert files_under(Path(stored_runs.instance.storage_directory())) == []


# --- Secrets of the store's options, and the local default ---------------------------------------

monthly = MonthlyPartitionsDefinition(start_date="2026-01-01")


@asset(partitions_def=monthly)
def a_frame() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.array([1, None], dtype="Int64")})


@asset(partitions_def=monthly)
def its_row_count(a_frame: pd.DataFrame) -> int:
    return len(a_frame)


def test_keys_given_in_the_store_options_never_reach_a_runs_events_or_config(
    s3_endpoint, tmp_path, monkeypatch
):
    bucket = "fusion-billing-options"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    # The credentials in the options this time, not in the environment's chain.
    environment = store_environment(s3_endpoint, bucket, key=DUMMY_KEY_ID, secret=DUMMY_SECRET)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        environment.pop(name)
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = load_settings({"DAGSTER_HOME": str(tmp_path), **environment})
    instance = DagsterInstance.ephemeral(tempdir=str(tmp_path / "instance"))
    result = materialize(
        [a_frame, its_row_count],
        partition_key="2026-03-01",
        instance=instance,
        resources={"io_manager": io_manager_for(settings)},
    )
    assert result.output_for_node("its_row_count") == 2
    assert object_keys(s3_endpoint, bucket) == {
        f"{PREFIX}/a_frame/2026-03-01",
        f"{PREFIX}/its_row_count/2026-03-01",
    }
    recorded = [str(entry) for entry in instance.all_logs(result.run_id)]
    recorded.append(str(instance.get_run_by_id(result.run_id)))
    assert not [text for text in recorded if DUMMY_SECRET in text]
    assert files_under(Path(instance.storage_directory())) == []


def test_with_no_store_configured_frames_go_to_the_instances_local_storage_folder(tmp_path):
    settings = load_settings({"DAGSTER_HOME": str(tmp_path)})
    instance = DagsterInstance.ephemeral(tempdir=str(tmp_path / "instance"))
    io_manager = build_resources(settings)["io_manager"]
    manager = io_manager.create_io_manager(build_init_resource_context(instance=instance))
    assert manager.base_dir == instance.storage_directory()
    materialize(
        [a_frame], partition_key="2026-03-01", instance=instance, resources={"io_manager": io_manager}
    )
    assert files_under(Path(instance.storage_directory())) == [
        Path(instance.storage_directory()) / "a_frame" / "2026-03-01"
    ]
