"""The production instance (dagster_home/dagster.yaml) runs on PostgreSQL with a bounded run queue."""

import shutil

import pytest
from dagster import AssetKey, DagsterInstance, materialize
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fusion_billing_assets.defs.nexacloud import nexacloud_customers, nexacloud_plans
from fusion_billing_assets.defs.resources import NexaCloudDatabase
from fusion_billing_assets.settings import PROJECT_ROOT
from tests.conftest import SMALL_SCALE_OPTIONS

pytestmark = pytest.mark.postgres


@pytest.fixture
def production_home(tmp_path, monkeypatch, postgres_database_url):
    """A copy of the production instance home, its storage pointed at a throw-away database."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    url = make_url(postgres_database_url)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    return home, postgres_database_url


def test_the_production_instance_materializes_a_period_into_postgres(production_home, small_sandbox):
    home, database_url = production_home
    period = small_sandbox.closed_periods[-1]
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        result = materialize(
            [nexacloud_customers, nexacloud_plans],
            instance=instance,
            partition_key=period,
            resources={"nexacloud": NexaCloudDatabase(url=small_sandbox.nexacloud_url)},
        )
        assert result.success
        event = instance.get_latest_materialization_event(AssetKey(["nexacloud", "customers"]))
        assert event.asset_materialization.partition == period
        assert (
            event.asset_materialization.metadata["dagster/row_count"].value
            == SMALL_SCALE_OPTIONS["customers"]
        )

    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored_runs = connection.execute(text("SELECT run_id FROM runs")).scalars().all()
    engine.dispose()
    assert result.run_id in stored_runs


def test_the_run_queue_allows_a_few_runs_and_never_two_of_the_same_period(production_home):
    home, _ = production_home
    with DagsterInstance.from_config(str(home)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        settings = instance.get_concurrency_config().run_queue_config
        assert 0 < settings.max_concurrent_runs <= 4
        assert {
            "key": "dagster/partition",
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        } in settings.tag_concurrency_limits
