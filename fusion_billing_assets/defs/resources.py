"""Resources: NexaCloud (read-only SQL), Odoo (httpx client), the results warehouse, the policy and
the alert channel, wired for the configured production systems.

Nothing here knows the embedded sandbox: ``fusion_billing_assets.sandbox.resources`` builds the
same resources for it, and ``definitions`` picks one of the two sets when the code location loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from dagster import ConfigurableResource, EnvVar
from pydantic import Field
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from fusion_billing_assets.alerts import AlertChannelConfig
from fusion_billing_assets.settings import Settings, redact_url
from fusion_billing_assets.sources.nexacloud import read_only_engine
from fusion_billing_assets.sources.odoo import (
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_PAGE_SIZE,
    OdooClient,
    OdooProtocol,
    RetryPolicy,
)
from fusion_billing_assets.sources.odoo_usage import UsagePusher


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
    protocol: str = Field(
        default=OdooProtocol.JSON2.value, description="json2 (Odoo 19) or jsonrpc (legacy)."
    )
    login: str | None = Field(default=None, description="Login of the API key's user; needed by jsonrpc.")
    timeout_seconds: float = Field(default=60.0, description="Read timeout of one HTTP request.")
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, description="Records per keyset page.")
    deadline_seconds: float = Field(
        default=DEFAULT_DEADLINE_SECONDS, description="Wall-clock limit of one request, body included."
    )
    max_elapsed_seconds: float = Field(
        default=RetryPolicy().max_elapsed_seconds,
        description="Wall-clock limit of one call, retries included.",
    )

    @contextmanager
    def get_client(self) -> Iterator[OdooClient]:
        timeout = httpx.Timeout(self.timeout_seconds, connect=10.0)
        with httpx.Client(base_url=self.url, timeout=timeout, transport=self.transport()) as http:
            yield OdooClient(
                http,
                database=self.database,
                api_key=self.api_key,
                protocol=self.protocol,
                login=self.login,
                page_size=self.page_size,
                deadline_seconds=self.deadline_seconds,
                retry=RetryPolicy(max_elapsed_seconds=self.max_elapsed_seconds),
            )

    def transport(self) -> httpx.BaseTransport | None:
        """How requests reach Odoo: None is the network, as in production."""
        return None


class OdooImporterNotConfigured(OdooAPI):
    """The importer's Odoo user where none is configured: planning works, writing says what is missing."""

    @contextmanager
    def get_client(self) -> Iterator[OdooClient]:
        raise RuntimeError(
            "the importer has no Odoo user: set ODOO_IMPORT_API_KEY (and ODOO_IMPORT_LOGIN for jsonrpc) "
            "to the API key of the Odoo user that may create partners, products and subscriptions"
        )
        yield


class OdooUsageEndpoint(ConfigurableResource):
    """Odoo's ``POST /usage`` as NexaCloud's metering user: what the usage repair pushes with."""

    url: str = Field(description="Base URL of the Odoo server.")
    database: str = Field(description="Odoo database name, sent as X-Odoo-Database.")
    api_key: str | None = Field(
        default=None, description="Bearer API key of the user NexaCloud pushes usage as (a secret)."
    )
    timeout_seconds: float = Field(default=60.0, description="Read timeout of one push.")

    @contextmanager
    def get_pusher(self) -> Iterator[UsagePusher]:
        if not self.api_key:
            raise RuntimeError(
                "the usage repair has no Odoo key: set ODOO_USAGE_API_KEY to the API key NexaCloud's "
                "metering pushes usage with (its user may push to the imported subscriptions)"
            )
        timeout = httpx.Timeout(self.timeout_seconds, connect=10.0)
        with httpx.Client(base_url=self.url, timeout=timeout, transport=self.transport()) as http:
            yield UsagePusher(http, database=self.database, api_key=self.api_key)

    def transport(self) -> httpx.BaseTransport | None:
        return None


class ImportPolicy(ConfigurableResource):
    """How the importer writes: who is left out of it, and how many records go in one ``load``."""

    exclusions_file: str | None = Field(
        default=None,
        description="CSV of the customers left out of the import (customer_id,reason,decided_by).",
    )
    batch_size: int = Field(default=200, description="Records per Odoo load call (one transaction each).")


class WarehouseError(RuntimeError):
    """The warehouse refused a statement; the message names the statement, never a row's values."""


class Warehouse(ConfigurableResource):
    """Where reconciliation results and evidence tables are written."""

    url: str = Field(description="SQLAlchemy URL of the results warehouse (a secret: may hold a password).")
    sqlite_busy_timeout_seconds: float = Field(
        default=60.0,
        description="On SQLite, how long a transaction waits for another one's write lock before failing.",
    )

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error.

        On SQLite the transaction holds the database's write lock from its BEGIN to its end
        (``BEGIN IMMEDIATE``), reads included: two writers take turns instead of interleaving,
        and a second one waits up to ``sqlite_busy_timeout_seconds`` for the first. On PostgreSQL
        a writer guards its period with ``warehouse.lock_period``.

        A database error leaves as a WarehouseError, unchained: the driver's own message can
        quote the row it refused (PostgreSQL's "Failing row contains (…)"), and a run's event log
        keeps every exception of a chain.
        """
        engine = self._engine()
        try:
            with engine.begin() as connection:
                yield connection
        except DBAPIError as error:
            raise WarehouseError(_without_row_values(error)) from None
        finally:
            engine.dispose()

    def describe(self) -> str:
        return redact_url(self.url)

    def _engine(self) -> Engine:
        url = make_url(self.url)
        sqlite = url.get_backend_name() == "sqlite"
        if sqlite and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # Bound parameters are row values (names, causes, amounts): keep them out of every error.
        engine = create_engine(
            url,
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args={"timeout": self.sqlite_busy_timeout_seconds} if sqlite else {},
        )
        if sqlite:
            # pysqlite emits a DEFERRED BEGIN only before the first INSERT, UPDATE or DELETE: what
            # a transaction reads or creates before that is outside it, and it takes the write
            # lock late, after another writer may have read the same rows. SQLAlchemy's recipe:
            # pysqlite emits no BEGIN, the engine emits BEGIN IMMEDIATE, which waits for the write
            # lock (up to the busy timeout) and holds it to COMMIT or ROLLBACK.
            @event.listens_for(engine, "connect")
            def _driver_emits_no_begin(dbapi_connection, _connection_record) -> None:
                dbapi_connection.isolation_level = None

            @event.listens_for(engine, "begin")
            def _begin_immediate(connection: Connection) -> None:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine


def _without_row_values(error: DBAPIError) -> str:
    """What failed, without the values of the rows involved: the driver's error and the bound SQL."""
    driver_error = error.orig
    diagnostics = getattr(driver_error, "diag", None)
    sqlstate = getattr(diagnostics, "sqlstate", None)
    if sqlstate is None:
        # sqlite3, or a PostgreSQL connection failure: one line naming a constraint, column or host.
        what = str(driver_error).strip().splitlines()[0] if str(driver_error).strip() else ""
    elif sqlstate.startswith("22"):
        # A data exception quotes the value it could not take ('invalid input syntax …: "x"').
        what = f"SQLSTATE {sqlstate}, column {diagnostics.column_name or 'unknown'}"
    else:
        # PostgreSQL's DETAIL ("Failing row contains (…)", "Key (…)=(…)") is left out.
        what = f"SQLSTATE {sqlstate}: {diagnostics.message_primary}"
    statement = " ".join((error.statement or "").split())
    return (
        f"the warehouse refused a statement: {type(driver_error).__name__}"
        + (f" ({what})" if what else "")
        + (f"; SQL: {statement[:300]}" if statement else "")
    )


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
    flip_requires_signoff: bool = Field(
        default=False, description="Count only signed-off periods, unchanged since, towards the switch."
    )
    history_keep_runs: int = Field(
        default=0, description="Runs of a period kept in the history (0: all); signed-off runs stay."
    )
    suspend_grace_days: int = Field(
        default=7,
        description="Days past due before a deployment must be suspended, and the oldest a lifecycle "
        "drift may be without holding the flip back (BILLING_SUSPEND_GRACE_DAYS).",
    )


class LifecycleClock(ConfigurableResource):
    """The moment the control loop is judged at: now, or a generated sandbox's own fixed moment."""

    manifest_path: str | None = Field(
        default=None, description="A sandbox manifest whose lifecycle.as_of is the moment judged."
    )

    def now(self) -> datetime:
        if self.manifest_path is None:
            return datetime.now(UTC)
        lifecycle = json.loads(Path(self.manifest_path).read_text()).get("lifecycle")
        if not lifecycle:
            raise ValueError(
                f"the sandbox manifest {self.manifest_path} has no lifecycle section: generate the sandbox again"
            )
        return datetime.fromisoformat(lifecycle["as_of"]).replace(tzinfo=UTC)


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
    allow_private_addresses: bool = Field(
        default=False,
        description="Allow a receiver on a private network address (ALERT_WEBHOOK_ALLOW_PRIVATE).",
    )

    def config(self) -> AlertChannelConfig:
        return AlertChannelConfig(
            url=self.webhook_url,
            kind=self.kind,
            secret=self.secret,
            allow_private=self.allow_private_addresses,
        )

    def link(self, path: str) -> str:
        return f"{self.webserver_url.rstrip('/')}/{path.lstrip('/')}"


# The waiver file of the real systems, kept under version control with the code.
PRODUCTION_WAIVERS_FILE = Path(__file__).resolve().parent.parent / "waivers.csv"


def production_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    """The resources for the configured NexaCloud database and Odoo server."""
    odoo = settings.odoo
    if settings.uses_sandbox or odoo is None:
        raise ValueError("production resources need NEXACLOUD_DATABASE_URL and ODOO_URL")
    return {
        "reconciliation_policy": policy_for(
            settings, default_tolerance_cents=0, default_waivers_file=PRODUCTION_WAIVERS_FILE
        ),
        # A configured URL may carry a password, the key is a secret: EnvVar keeps them out of the UI.
        "nexacloud": NexaCloudDatabase(url=EnvVar("NEXACLOUD_DATABASE_URL")),
        "odoo": OdooAPI(
            url=odoo.url,
            database=odoo.database,
            api_key=EnvVar("ODOO_API_KEY"),
            protocol=odoo.protocol,
            login=odoo.login,
        ),
        "odoo_importer": odoo_importer_for(settings),
        "odoo_usage": OdooUsageEndpoint(
            url=odoo.url,
            database=odoo.database,
            api_key=EnvVar("ODOO_USAGE_API_KEY") if odoo.usage_key_configured else None,
        ),
        "import_policy": import_policy_for(settings, default_exclusions_file=None),
        "warehouse": warehouse_for(settings),
        "alert_channel": alert_channel_for(settings),
        "lifecycle_clock": LifecycleClock(),
    }


def odoo_importer_for(settings: Settings) -> OdooAPI:
    """The importer's own Odoo user (the only writer), or a stand-in that says it is not configured."""
    odoo = settings.odoo
    if odoo is None:
        raise ValueError("the importer's Odoo user needs ODOO_URL")
    if not odoo.import_key_configured:
        return OdooImporterNotConfigured(
            url=odoo.url, database=odoo.database, api_key="", protocol=odoo.protocol
        )
    return OdooAPI(
        url=odoo.url,
        database=odoo.database,
        api_key=EnvVar("ODOO_IMPORT_API_KEY"),
        protocol=odoo.protocol,
        login=odoo.import_login,
    )


def import_policy_for(settings: Settings, *, default_exclusions_file: Path | None) -> ImportPolicy:
    configured = settings.importer
    exclusions = configured.exclusions_file or default_exclusions_file
    return ImportPolicy(
        exclusions_file=str(exclusions) if exclusions else None, batch_size=configured.batch_size
    )


def policy_for(
    settings: Settings, *, default_tolerance_cents: int, default_waivers_file: Path
) -> ReconciliationPolicy:
    """The configured reconciliation policy, with the defaults of the systems reconciled."""
    policy = settings.reconciliation
    return ReconciliationPolicy(
        tolerance_cents=default_tolerance_cents if policy.tolerance_cents is None else policy.tolerance_cents,
        tax_rounding=policy.tax_rounding,
        waivers_file=str(policy.waivers_file or default_waivers_file),
        reports_dir=str(policy.reports_dir),
        flip_ready_periods=policy.flip_ready_periods,
        flip_requires_signoff=policy.flip_requires_signoff,
        history_keep_runs=policy.history_keep_runs,
        suspend_grace_days=policy.suspend_grace_days,
    )


def warehouse_for(settings: Settings) -> Warehouse:
    # A configured URL may carry a password: EnvVar keeps its value out of the UI.
    return Warehouse(
        url=EnvVar("BILLING_WAREHOUSE_URL") if settings.warehouse_configured else settings.warehouse_url
    )


def alert_channel_for(settings: Settings) -> AlertChannel:
    alerts = settings.alerts
    return AlertChannel(
        # The receiver URL and the signing key are secrets: EnvVar keeps their values out of the UI.
        webhook_url=EnvVar("ALERT_WEBHOOK_URL") if alerts.webhook_url_configured else None,
        kind=alerts.kind,
        secret=EnvVar("ALERT_WEBHOOK_SECRET") if alerts.secret_configured else None,
        webserver_url=alerts.webserver_url,
        include_provisional=alerts.include_provisional,
        allow_private_addresses=alerts.allow_private_webhook,
    )
