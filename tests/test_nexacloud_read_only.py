"""The NexaCloud resource can only read: a write through it fails on SQLite and on PostgreSQL."""

import pytest
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from fusion_billing_assets.defs.resources import NexaCloudDatabase
from fusion_billing_assets.sources.nexacloud import NexaCloudUnavailable
from fusion_billing_assets.sources.nexacloud_schema import metadata, plans

STARTER = {
    "id": 1,
    "code": "starter",
    "name": "Starter",
    "monthly_price_cents": 2900,
    "included_cpu_seconds": 360_000,
    "overage_cents_per_cpu_hour": 4.5,
    "currency": "CAD",
}


def _create_nexacloud(url: str) -> None:
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(plans), [STARTER])
    engine.dispose()


def _assert_reads_but_cannot_write(resource: NexaCloudDatabase) -> None:
    with resource.get_connection() as connection:
        assert connection.execute(select(func.count()).select_from(plans)).scalar_one() == 1
        with pytest.raises(DBAPIError, match=r"read-?only"):
            connection.execute(insert(plans), [{**STARTER, "id": 2, "code": "pro"}])
    with resource.get_connection() as connection:
        assert connection.execute(select(func.count()).select_from(plans)).scalar_one() == 1


def test_sqlite_file_is_opened_read_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'nexacloud.sqlite'}"
    _create_nexacloud(url)
    _assert_reads_but_cannot_write(NexaCloudDatabase(url=url))


def test_a_missing_sqlite_file_is_a_clear_error_not_a_new_empty_database(tmp_path):
    resource = NexaCloudDatabase(url=f"sqlite:///{tmp_path / 'absent.sqlite'}")
    with pytest.raises(NexaCloudUnavailable, match="does not exist"), resource.get_connection():
        pass
    assert not (tmp_path / "absent.sqlite").exists()


@pytest.mark.postgres
def test_postgres_sessions_are_read_only_with_a_statement_timeout(postgres_database_url):
    _create_nexacloud(postgres_database_url)
    resource = NexaCloudDatabase(url=postgres_database_url, statement_timeout_ms=15_000)
    _assert_reads_but_cannot_write(resource)
    with resource.get_connection() as connection:
        assert connection.execute(text("SHOW default_transaction_read_only")).scalar_one() == "on"
        assert connection.execute(text("SHOW statement_timeout")).scalar_one() == "15s"
        with pytest.raises(DBAPIError, match="read-only"):
            connection.execute(text("CREATE TABLE sneaky (id int)"))
