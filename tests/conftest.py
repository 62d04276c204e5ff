"""Fixtures shared by the suite: throw-away PostgreSQL databases and a small generated sandbox."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# The machine's PostgreSQL (trust auth). CI starts it in .ci/run; override to use another server.
POSTGRES_ADMIN_URL = os.environ.get(
    "FUSION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _admin_engine():
    return create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")


@contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped on exit."""
    name = f"fba_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with throwaway_postgres_database() as url:
        yield url


# --- A small generated sandbox, shared by the tests that run assets against it ------------------


@dataclass(frozen=True)
class GeneratedSandbox:
    """A sandbox generated for the test session: two closed periods and the provisional month."""

    out: Path
    nexacloud_url: str
    manifest: dict[str, Any]

    @property
    def odoo_store(self) -> Path:
        return self.out / "odoo.sqlite"

    @property
    def odoo_url(self) -> str:
        """The Odoo test double's store (a SQLite file): what the sandbox's Odoo resource serves."""
        return f"sqlite:///{self.odoo_store}"

    def odoo_models(self) -> dict[str, list[dict[str, Any]]]:
        """Every Odoo record of the store, per model, in the storage format of ``odoo_models``."""
        from fusion_billing_assets.sandbox.odoo_store import dump_models

        return dump_models(self.odoo_url)

    @property
    def closed_periods(self) -> list[str]:
        return [period["period"] for period in self.manifest["periods"] if period["closed"]]

    @property
    def provisional_period(self) -> str:
        return next(period["period"] for period in self.manifest["periods"] if period["provisional"])


# 42: the fewest customers, at or above the sandbox's minimum (39), whose seed-11 world puts the keyless
# reading in the second closed period, as the source-asset tests that break the first one assume.
SMALL_SCALE_OPTIONS = {
    "customers": 42,
    "max_deployments_per_customer": 3,
    "usage_window_minutes": 360,
    "periods": 3,
}


def current_billing_month() -> date:
    return datetime.now(UTC).astimezone(ZoneInfo("America/Toronto")).date().replace(day=1)


def generate_small_sandbox(
    out: Path, nexacloud_url: str | None = None, *, seed: int = 11, scale: dict[str, int] | None = None
) -> GeneratedSandbox:
    """A sandbox ending with the current month; the small scale unless another is given."""
    from fusion_billing_assets.sandbox.generator import SandboxScale, generate

    out.mkdir(parents=True, exist_ok=True)
    url = nexacloud_url or f"sqlite:///{out / 'nexacloud.sqlite'}"
    options = SMALL_SCALE_OPTIONS if scale is None else scale
    generate(url, out, seed=seed, scale=SandboxScale(**options), end_period=current_billing_month())
    return GeneratedSandbox(
        out=out, nexacloud_url=url, manifest=json.loads((out / "manifest.json").read_text())
    )


@pytest.fixture(scope="session")
def small_sandbox(tmp_path_factory) -> GeneratedSandbox:
    """The small sandbox in SQLite: NexaCloud database, Odoo records and manifest."""
    return generate_small_sandbox(tmp_path_factory.mktemp("small_sandbox"))


@pytest.fixture(scope="session")
def small_sandbox_on_postgres(tmp_path_factory) -> Iterator[GeneratedSandbox]:
    """The same small sandbox with its NexaCloud database in a throw-away PostgreSQL database."""
    with throwaway_postgres_database() as url:
        yield generate_small_sandbox(tmp_path_factory.mktemp("small_sandbox_pg"), url)
