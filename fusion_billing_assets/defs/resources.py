"""Resources: NexaCloud (read-only SQL), Odoo (httpx client) and the results warehouse.

With neither ``NEXACLOUD_DATABASE_URL`` nor ``ODOO_URL`` set, the resources point at the embedded
sandbox: the generated SQLite NexaCloud database and the Odoo test double reached in-process
through ``httpx.WSGITransport`` — the same client code path as production, minus the network.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from dagster import ConfigurableResource, EnvVar
from pydantic import Field
from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import make_url

from fusion_billing_assets.settings import Settings, redact_url
from fusion_billing_assets.sources.nexacloud import read_only_engine
from fusion_billing_assets.sources.odoo import DEFAULT_PAGE_SIZE, OdooClient

SANDBOX_ODOO_URL = "http://odoo.sandbox.invalid"


class SandboxNotGenerated(RuntimeError):
    """The embedded sandbox has not been generated yet."""


class NexaCloudDatabase(ConfigurableResource):
    """NexaCloud's database, opened read-only: a write through it fails."""

    url: str = Field(description="SQLAlchemy URL of the NexaCloud database (a secret: may hold a password).")
    statement_timeout_ms: int = Field(default=120_000, description="PostgreSQL statement timeout per query.")

    @contextmanager
    def get_connection(self) -> Iterator[Connection]:
        engine = read_only_engine(self.url, statement_timeout_ms=self.statement_timeout_ms)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()

    def describe(self) -> str:
        return redact_url(self.url)


class OdooAPI(ConfigurableResource):
    """Odoo 19 over JSON-2 (or legacy /jsonrpc), as a dedicated read-only API user."""

    url: str = Field(description="Base URL of the Odoo server.")
    database: str = Field(description="Odoo database name, sent as X-Odoo-Database.")
    api_key: str = Field(description="Bearer API key of the read-only Odoo user (a secret).")
    protocol: str = Field(default="json2", description="json2 (Odoo 19) or jsonrpc (legacy).")
    login: str | None = Field(default=None, description="Login of the API key's user; needed by jsonrpc.")
    timeout_seconds: float = Field(default=60.0, description="Read timeout of one HTTP request.")
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, description="Records per keyset page.")
    sandbox_data: str | None = Field(
        default=None, description="Path of the sandbox's odoo.json: serves the Odoo test double in-process."
    )

    @contextmanager
    def get_client(self) -> Iterator[OdooClient]:
        timeout = httpx.Timeout(self.timeout_seconds, connect=10.0)
        transport = _sandbox_transport(self.sandbox_data) if self.sandbox_data else None
        with httpx.Client(base_url=self.url, timeout=timeout, transport=transport) as http:
            yield OdooClient(
                http,
                database=self.database,
                api_key=self.api_key,
                protocol=self.protocol,
                login=self.login,
                page_size=self.page_size,
            )


class Warehouse(ConfigurableResource):
    """Where reconciliation results and evidence tables are written."""

    url: str = Field(description="SQLAlchemy URL of the results warehouse (a secret: may hold a password).")

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        engine = self._engine()
        try:
            with engine.begin() as connection:
                yield connection
        finally:
            engine.dispose()

    def describe(self) -> str:
        return redact_url(self.url)

    def _engine(self):
        url = make_url(self.url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return create_engine(url, pool_pre_ping=True)


def sandbox_paths(sandbox_dir: Path) -> dict[str, Path]:
    return {
        "nexacloud": sandbox_dir / "nexacloud.sqlite",
        "odoo": sandbox_dir / "odoo.json",
        "manifest": sandbox_dir / "manifest.json",
        "waivers": sandbox_dir / "waivers.csv",
    }


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    """The resources for the configured systems, or for the embedded sandbox when none is."""
    # A configured URL may carry a password: EnvVar keeps its value out of the UI.
    warehouse = Warehouse(
        url=EnvVar("BILLING_WAREHOUSE_URL") if settings.warehouse_configured else settings.warehouse_url
    )
    if settings.uses_sandbox:
        from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE, SANDBOX_LOGIN

        paths = sandbox_paths(settings.sandbox_dir)
        return {
            "nexacloud": NexaCloudDatabase(url=f"sqlite:///{paths['nexacloud']}"),
            "odoo": OdooAPI(
                url=SANDBOX_ODOO_URL,
                database=SANDBOX_DATABASE,
                api_key=SANDBOX_API_KEY,
                login=SANDBOX_LOGIN,
                sandbox_data=str(paths["odoo"]),
            ),
            "warehouse": warehouse,
        }
    odoo = settings.odoo
    assert odoo is not None  # load_settings guarantees both sources or neither
    return {
        "nexacloud": NexaCloudDatabase(url=EnvVar("NEXACLOUD_DATABASE_URL")),
        "odoo": OdooAPI(
            url=odoo.url,
            database=odoo.database,
            api_key=EnvVar("ODOO_API_KEY"),
            protocol=odoo.protocol,
            login=odoo.login,
        ),
        "warehouse": warehouse,
    }


@functools.lru_cache(maxsize=2)
def _load_standin(path: str, modified_ns: int):
    from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn

    return OdooStandIn.from_file(path)


def _sandbox_transport(path: str) -> httpx.WSGITransport:
    data = Path(path)
    if not data.is_file():
        raise SandboxNotGenerated(
            f"the sandbox's Odoo data {data} does not exist; generate the sandbox first "
            "(python -m fusion_billing_assets.sandbox generate, or the README's main command)."
        )
    # Loading the records costs seconds at large scales: keep one test double per file version.
    return httpx.WSGITransport(app=_load_standin(str(data), data.stat().st_mtime_ns))
