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

from fusion_billing_assets.alerts import AlertChannelConfig
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


class ReconciliationPolicy(ConfigurableResource):
    """The rules a reconciliation is judged by: tolerance, tax rounding, waivers, readiness."""

    tolerance_cents: int = Field(
        default=0, description="Largest unexplained difference still acceptable, in cents."
    )
    tax_rounding: str = Field(default="round_per_line", description="round_per_line or round_globally.")
    waivers_file: str | None = Field(default=None, description="The version-controlled waiver file (CSV).")
    reports_dir: str = Field(description="Where each period's CSV and HTML reports are written.")
    flip_ready_periods: int = Field(
        default=1, description="Consecutive clean closed periods needed before the switch to Odoo."
    )


class AlertChannel(ConfigurableResource):
    """Where alerts go: a Slack incoming webhook or a generic JSON webhook signed with HMAC-SHA256."""

    webhook_url: str | None = Field(
        default=None, description="Receiver URL (a secret); unset: alerts are logged."
    )
    kind: str = Field(default="slack", description="slack or generic.")
    secret: str | None = Field(default=None, description="HMAC key of the generic webhook (a secret).")
    webserver_url: str = Field(default="http://localhost:3000", description="Base URL of links in alerts.")
    include_provisional: bool = Field(
        default=False, description="Alert on the current, provisional month too."
    )

    def config(self) -> AlertChannelConfig:
        return AlertChannelConfig(url=self.webhook_url, kind=self.kind, secret=self.secret)

    def link(self, path: str) -> str:
        return f"{self.webserver_url.rstrip('/')}/{path.lstrip('/')}"


# The waiver file of the real systems, kept under version control with the code.
PRODUCTION_WAIVERS_FILE = Path(__file__).resolve().parent.parent / "waivers.csv"


def sandbox_paths(sandbox_dir: Path) -> dict[str, Path]:
    return {
        "nexacloud": sandbox_dir / "nexacloud.sqlite",
        "odoo": sandbox_dir / "odoo.json",
        "manifest": sandbox_dir / "manifest.json",
        "waivers": sandbox_dir / "waivers.csv",
    }


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    """The resources for the configured systems, or for the embedded sandbox when none is."""
    return {**_source_resources(settings), "alert_channel": _alert_channel(settings)}


def _alert_channel(settings: Settings) -> AlertChannel:
    alerts = settings.alerts
    return AlertChannel(
        # The receiver URL and the signing key are secrets: EnvVar keeps their values out of the UI.
        webhook_url=EnvVar("ALERT_WEBHOOK_URL") if alerts.webhook_url_configured else None,
        kind=alerts.kind,
        secret=EnvVar("ALERT_WEBHOOK_SECRET") if alerts.secret_configured else None,
        webserver_url=alerts.webserver_url,
        include_provisional=alerts.include_provisional,
    )


def _source_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    # A configured URL may carry a password: EnvVar keeps its value out of the UI.
    warehouse = Warehouse(
        url=EnvVar("BILLING_WAREHOUSE_URL") if settings.warehouse_configured else settings.warehouse_url
    )
    policy = settings.reconciliation
    if settings.uses_sandbox:
        from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE, SANDBOX_LOGIN
        from fusion_billing_assets.sandbox.scenarios import TOLERANCE_CENTS

        paths = sandbox_paths(settings.sandbox_dir)
        return {
            "reconciliation_policy": ReconciliationPolicy(
                # The sandbox's ground truth assumes its own tolerance unless one is configured.
                tolerance_cents=TOLERANCE_CENTS if policy.tolerance_cents is None else policy.tolerance_cents,
                tax_rounding=policy.tax_rounding,
                waivers_file=str(policy.waivers_file or paths["waivers"]),
                reports_dir=str(policy.reports_dir),
                flip_ready_periods=policy.flip_ready_periods,
            ),
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
        "reconciliation_policy": ReconciliationPolicy(
            tolerance_cents=policy.tolerance_cents or 0,
            tax_rounding=policy.tax_rounding,
            waivers_file=str(policy.waivers_file or PRODUCTION_WAIVERS_FILE),
            reports_dir=str(policy.reports_dir),
            flip_ready_periods=policy.flip_ready_periods,
        ),
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
