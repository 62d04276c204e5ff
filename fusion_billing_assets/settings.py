"""The code location's configuration, read from the environment and checked when it loads.

Every setting of docs/design.md §3 is validated here, once, so a half-configured deployment fails at load
with a sentence naming the variable to fix instead of a traceback from deep inside a library.
Secrets (the Odoo API key, passwords inside URLs, the object store's options) are only checked for
presence or form: they reach the resources through Dagster's ``EnvVar`` and never appear in a message.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import fsspec
import httpx
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from fusion_billing_assets.alerts import is_loopback_host, webhook_address_refusal
from fusion_billing_assets.billing.periods import parse_period
from fusion_billing_assets.sources.odoo import OdooProtocol

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The embedded default needs no server: a SQLite instance home inside the checkout.
LOCAL_INSTANCE_HOME = PROJECT_ROOT / "dagster_home" / "local"

DEFAULT_TIMEZONE = "America/Toronto"
DEFAULT_START_PERIOD = "2026-01-01"
TAX_ROUNDINGS = ("round_per_line", "round_globally")
ALERT_KINDS = ("slack", "generic")
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
SUPPORTED_DATABASES = ("postgresql", "sqlite")
# fsspec reads these but cannot write them: frames stored there would fail at the first write.
READ_ONLY_STORES = ("http", "https")
LOCAL_STORES = ("file", "local")


class ConfigurationError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True)
class OdooSettings:
    url: str
    database: str
    protocol: str
    login: str | None
    # ODOO_IMPORT_API_KEY: the importer's own Odoo user, the only one that writes (only whether set).
    import_key_configured: bool = False
    import_login: str | None = None
    # ODOO_USAGE_API_KEY: the key NexaCloud's metering pushes usage with, for the repair (only whether set).
    usage_key_configured: bool = False


@dataclass(frozen=True)
class ImportSettings:
    # BILLING_IMPORT_EXCLUSIONS_FILE: customers left out of the import, with a reason; None: the
    # default of the systems imported (none in production, the sandbox's own otherwise).
    exclusions_file: Path | None
    batch_size: int


@dataclass(frozen=True)
class ReconciliationSettings:
    # None: the default of the systems reconciled (0 in production, the sandbox's own otherwise).
    tolerance_cents: int | None
    tax_rounding: str
    waivers_file: Path | None
    reports_dir: Path
    flip_ready_periods: int
    flip_requires_signoff: bool = False
    # Runs of a period kept in the history; 0 keeps every run. Signed-off runs are always kept.
    history_keep_runs: int = 0
    # BILLING_SUSPEND_GRACE_DAYS: days past an invoice's due date before its deployment must be
    # suspended, and how old a lifecycle drift may be before it holds the flip back.
    suspend_grace_days: int = 7


@dataclass(frozen=True)
class AlertSettings:
    # None: alerts are only written to the sensor's log.
    webhook_url_configured: bool
    kind: str
    secret_configured: bool
    webserver_url: str
    include_provisional: bool
    close_day: int
    # ALERT_WEBHOOK_ALLOW_PRIVATE: the receiver may be on a private network address.
    allow_private_webhook: bool = False


@dataclass(frozen=True)
class IOStoreSettings:
    # BILLING_IO_STORE_URL, an fsspec URL without a password; None: the instance's local storage folder.
    url: str | None
    # Only whether BILLING_IO_STORE_OPTIONS is set: its value may hold keys.
    options_configured: bool


@dataclass(frozen=True)
class Settings:
    timezone: str
    start_period: date
    instance_home: Path
    warehouse_url: str
    warehouse_configured: bool
    # None on both means the embedded sandbox serves NexaCloud and Odoo.
    nexacloud_url: str | None
    odoo: OdooSettings | None
    reconciliation: ReconciliationSettings
    alerts: AlertSettings
    io_store: IOStoreSettings
    importer: ImportSettings = ImportSettings(exclusions_file=None, batch_size=200)

    @property
    def uses_sandbox(self) -> bool:
        return self.nexacloud_url is None

    @property
    def sandbox_dir(self) -> Path:
        return self.instance_home / "sandbox"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    instance_home = Path(_get(env, "DAGSTER_HOME") or LOCAL_INSTANCE_HOME)
    nexacloud_url = _get(env, "NEXACLOUD_DATABASE_URL")
    odoo_url = _get(env, "ODOO_URL")
    if bool(nexacloud_url) != bool(odoo_url):
        missing, present = (
            ("ODOO_URL", "NEXACLOUD_DATABASE_URL")
            if nexacloud_url
            else ("NEXACLOUD_DATABASE_URL", "ODOO_URL")
        )
        raise ConfigurationError(
            f"{present} is set but {missing} is not: set both to reconcile the real systems, "
            "or neither to run on the embedded sandbox."
        )
    configured_warehouse = _get(env, "BILLING_WAREHOUSE_URL")
    warehouse_url = configured_warehouse or f"sqlite:///{instance_home / 'warehouse.sqlite'}"
    return Settings(
        timezone=_timezone(env),
        start_period=_start_period(env),
        instance_home=instance_home,
        warehouse_url=_writable_database(
            "BILLING_WAREHOUSE_URL", _database_url(env, "BILLING_WAREHOUSE_URL", warehouse_url)
        ),
        warehouse_configured=configured_warehouse is not None,
        nexacloud_url=nexacloud_url and _database_url(env, "NEXACLOUD_DATABASE_URL", nexacloud_url),
        odoo=_odoo(env, odoo_url) if odoo_url else None,
        reconciliation=_reconciliation(env, instance_home),
        alerts=_alerts(env),
        io_store=_io_store(env),
        importer=_importer(env),
    )


def _importer(env: Mapping[str, str]) -> ImportSettings:
    exclusions = _get(env, "BILLING_IMPORT_EXCLUSIONS_FILE")
    return ImportSettings(
        exclusions_file=Path(exclusions) if exclusions else None,
        batch_size=_positive_int(
            _get(env, "BILLING_IMPORT_BATCH_SIZE") or "200", "BILLING_IMPORT_BATCH_SIZE"
        ),
    )


def redact_url(url: str | URL) -> str:
    """A database URL fit for logs and metadata: the password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


def redact_store_url(url: str) -> str:
    """An fsspec URL fit for messages: a password (``user:password@``) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def io_store_url(value: str) -> str:
    """BILLING_IO_STORE_URL checked: a writable fsspec store, with a bucket or host, and no password.

    A password is refused rather than redacted: Dagster puts each object's full path in its
    metadata and debug logs, and s3fs would keep it in every key. Credentials come from the
    provider's own chain (AWS: environment, web identity, instance role) or from
    BILLING_IO_STORE_OPTIONS. Messages show the URL only as ``redact_store_url`` gives it.
    """
    name = "BILLING_IO_STORE_URL"
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        raise ConfigurationError(f"{name} is not a URL (expected e.g. s3://bucket/prefix).") from None
    if not parts.scheme or "://" not in value:
        raise ConfigurationError(f"{name} is not an fsspec URL (expected e.g. s3://bucket/prefix).")
    shown = redact_store_url(value)
    if password is not None:
        raise ConfigurationError(
            f"{name}={shown!r} carries a password: take it out of the URL and let the store's own "
            "credential chain (for S3: AWS environment, service-account role) or BILLING_IO_STORE_OPTIONS "
            "provide it."
        )
    if parts.scheme in READ_ONLY_STORES:
        raise ConfigurationError(
            f"{name}={shown!r}: fsspec can only read over {parts.scheme}; name a store it can write, "
            "such as s3://bucket/prefix."
        )
    try:
        fsspec.get_filesystem_class(parts.scheme)
    except ValueError:
        raise ConfigurationError(
            f"{name}={shown!r}: {parts.scheme!r} is not a store fsspec knows (e.g. s3://bucket/prefix)."
        ) from None
    except ImportError as missing:
        # fsspec's own sentence names the package to install ("Please install gcsfs to …").
        raise ConfigurationError(f"{name}={shown!r}: {missing}.") from None
    if parts.scheme in LOCAL_STORES:
        if parts.netloc or not parts.path.startswith("/"):
            raise ConfigurationError(f"{name}={shown!r} must name an absolute folder (file:///path).")
    elif not parts.netloc:
        raise ConfigurationError(f"{name}={shown!r} names no bucket or host (s3://bucket/prefix).")
    return value


def io_store_options(value: str) -> dict[str, Any]:
    """BILLING_IO_STORE_OPTIONS parsed: a JSON object of fsspec storage options. No message repeats
    the value, which may hold a key."""
    name = "BILLING_IO_STORE_OPTIONS"
    example = 'e.g. {"endpoint_url": "http://minio:9000"}'
    try:
        options = json.loads(value)
    except ValueError:
        raise ConfigurationError(f"{name} is not valid JSON (expected an object, {example}).") from None
    if not isinstance(options, dict):
        raise ConfigurationError(f"{name} must be a JSON object of fsspec storage options, {example}.")
    return options


def _io_store(env: Mapping[str, str]) -> IOStoreSettings:
    url = _get(env, "BILLING_IO_STORE_URL")
    options = _get(env, "BILLING_IO_STORE_OPTIONS")
    if options is not None and url is None:
        raise ConfigurationError(
            "BILLING_IO_STORE_OPTIONS is set but BILLING_IO_STORE_URL is not: the options configure the "
            "store that URL names (unset, frames stay on the instance's local disk)."
        )
    if options is not None:
        io_store_options(options)
    return IOStoreSettings(url=url and io_store_url(url), options_configured=options is not None)


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _timezone(env: Mapping[str, str]) -> str:
    name = _get(env, "BILLING_TIMEZONE") or DEFAULT_TIMEZONE
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"BILLING_TIMEZONE={name!r} is not a known IANA time zone (for example America/Toronto)."
        ) from None
    return name


def _start_period(env: Mapping[str, str]) -> date:
    value = _get(env, "BILLING_START_PERIOD") or DEFAULT_START_PERIOD
    try:
        return parse_period(value)
    except ValueError as error:
        raise ConfigurationError(f"BILLING_START_PERIOD: {error}.") from None


def _database_url(env: Mapping[str, str], name: str, value: str) -> str:
    # The value may hold a password, so no message below repeats it.
    try:
        url = make_url(value)
    except ArgumentError:
        raise ConfigurationError(
            f"{name} is not a SQLAlchemy database URL "
            "(expected e.g. postgresql+psycopg://user:password@host:5432/dbname or sqlite:///path/file.sqlite)."
        ) from None
    if url.get_backend_name() not in SUPPORTED_DATABASES:
        raise ConfigurationError(
            f"{name} points at a {url.get_backend_name()!r} database; supported are "
            f"{', '.join(SUPPORTED_DATABASES)}."
        )
    if url.get_backend_name() == "postgresql" and not url.database:
        raise ConfigurationError(f"{name} names no database (…/dbname at the end of the URL).")
    return value


def _reconciliation(env: Mapping[str, str], instance_home: Path) -> ReconciliationSettings:
    tolerance = _get(env, "BILLING_TOLERANCE_CENTS")
    rounding = _get(env, "BILLING_TAX_ROUNDING") or TAX_ROUNDINGS[0]
    if rounding not in TAX_ROUNDINGS:
        raise ConfigurationError(
            f"BILLING_TAX_ROUNDING={rounding!r} is not one of {', '.join(TAX_ROUNDINGS)}."
        )
    waivers = _get(env, "BILLING_WAIVERS_FILE")
    return ReconciliationSettings(
        tolerance_cents=None
        if tolerance is None
        else _non_negative_int(tolerance, "BILLING_TOLERANCE_CENTS"),
        tax_rounding=rounding,
        waivers_file=Path(waivers) if waivers else None,
        reports_dir=_writable_folder(
            "BILLING_REPORTS_DIR", Path(_get(env, "BILLING_REPORTS_DIR") or instance_home / "reports")
        ),
        flip_ready_periods=_positive_int(
            _get(env, "BILLING_FLIP_READY_PERIODS") or "1", "BILLING_FLIP_READY_PERIODS"
        ),
        flip_requires_signoff=_boolean(env, "BILLING_FLIP_REQUIRES_SIGNOFF"),
        history_keep_runs=_non_negative_int(
            _get(env, "BILLING_HISTORY_KEEP_RUNS") or "0", "BILLING_HISTORY_KEEP_RUNS"
        ),
        suspend_grace_days=_non_negative_int(
            _get(env, "BILLING_SUSPEND_GRACE_DAYS") or "7", "BILLING_SUSPEND_GRACE_DAYS"
        ),
    )


def _alerts(env: Mapping[str, str]) -> AlertSettings:
    url = _get(env, "ALERT_WEBHOOK_URL")
    kind = _get(env, "ALERT_WEBHOOK_KIND") or "slack"
    if kind not in ALERT_KINDS:
        raise ConfigurationError(f"ALERT_WEBHOOK_KIND={kind!r} is not one of {', '.join(ALERT_KINDS)}.")
    allow_private = _boolean(env, "ALERT_WEBHOOK_ALLOW_PRIVATE")
    if url:
        _webhook_url(url, allow_private=allow_private)
    secret = _get(env, "ALERT_WEBHOOK_SECRET")
    if url and kind == "generic" and not secret:
        raise ConfigurationError(
            "ALERT_WEBHOOK_KIND=generic signs every alert: set ALERT_WEBHOOK_SECRET (shared with the receiver)."
        )
    close_day = _positive_int(_get(env, "BILLING_CLOSE_DAY") or "3", "BILLING_CLOSE_DAY")
    if close_day > 28:
        raise ConfigurationError("BILLING_CLOSE_DAY must be between 1 and 28, a day every month has.")
    return AlertSettings(
        webhook_url_configured=url is not None,
        kind=kind,
        secret_configured=secret is not None,
        webserver_url=(_get(env, "DAGSTER_WEBSERVER_URL") or "http://localhost:3000").rstrip("/"),
        include_provisional=_boolean(env, "BILLING_ALERT_PROVISIONAL"),
        close_day=close_day,
        allow_private_webhook=allow_private,
    )


def _webhook_url(value: str, *, allow_private: bool) -> None:
    """https, or http to loopback; a literal address must be one alerts may go to (alerts.py).

    A host name is resolved and its addresses checked when each alert is sent, not here: DNS
    answers change. No message repeats the URL, which may hold a token (Slack's does).
    """
    parsed = _http_url(value, "ALERT_WEBHOOK_URL is not an http(s) URL.")
    host = parsed.host
    if parsed.scheme == "http" and not is_loopback_host(host):
        raise ConfigurationError(
            "ALERT_WEBHOOK_URL must be https: plain http is accepted only to a loopback address "
            "(127.0.0.1, ::1, localhost)."
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    refusal = webhook_address_refusal(address, allow_private=allow_private)
    if refusal is not None:
        allowable = webhook_address_refusal(address, allow_private=True) is None
        hint = (
            "; set ALERT_WEBHOOK_ALLOW_PRIVATE=true if the receiver is inside your network"
            if allowable
            else ""
        )
        raise ConfigurationError(f"ALERT_WEBHOOK_URL points at {refusal}, where alerts are not sent{hint}.")


def _writable_folder(name: str, folder: Path) -> Path:
    """A folder files can be written into, or the nearest existing ancestor allows creating it.

    Checked at load: a run that found out only after writing its results would have changed them
    and then failed.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigurationError(f"{name}={str(folder)!r} cannot be a folder: {str(existing)!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"{name}={str(folder)!r} cannot be written: {str(existing)!r} is not writable."
        )
    return folder


def _writable_database(name: str, url: str) -> str:
    """A SQLite file's folder must be writable; a server database is checked when first used."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database)
        if database.is_dir():
            raise ConfigurationError(f"{name} points at the folder {str(database)!r}, not a SQLite file.")
        if database.exists() and not os.access(database, os.W_OK):
            raise ConfigurationError(f"{name}: the SQLite file {str(database)!r} is not writable.")
        try:
            _writable_folder(name, database.parent)
        except ConfigurationError:
            raise ConfigurationError(
                f"{name}: the folder of the SQLite file {str(database)!r} cannot be written."
            ) from None
    return url


def _boolean(env: Mapping[str, str], name: str) -> bool:
    value = (_get(env, name) or "false").lower()
    if value not in BOOLEANS:
        raise ConfigurationError(f"{name}={value!r} is not true or false.")
    return BOOLEANS[value]


def _http_url(value: str, error: str) -> httpx.URL:
    """An http(s) URL with a host, or the error: the value itself is never repeated (it may be a secret)."""
    try:
        parsed = httpx.URL(value)
    except httpx.InvalidURL:
        raise ConfigurationError(error) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(error)
    return parsed


def _non_negative_int(value: str, name: str) -> int:
    if not value.isdigit():
        raise ConfigurationError(f"{name}={value!r} is not a whole, non-negative number.")
    return int(value)


def _positive_int(value: str, name: str) -> int:
    number = _non_negative_int(value, name)
    if number == 0:
        raise ConfigurationError(f"{name} must be at least 1.")
    return number


def _odoo(env: Mapping[str, str], url: str) -> OdooSettings:
    parsed = _http_url(url, "ODOO_URL is not an http(s) URL with a host (e.g. https://odoo.example.com).")
    if parsed.userinfo:
        raise ConfigurationError("ODOO_URL must not carry credentials; put the key in ODOO_API_KEY.")
    database = _get(env, "ODOO_DATABASE")
    if not database:
        raise ConfigurationError("ODOO_URL is set but ODOO_DATABASE (the Odoo database name) is not.")
    if not _get(env, "ODOO_API_KEY"):
        raise ConfigurationError(
            "ODOO_URL is set but ODOO_API_KEY (the API key of the read-only Odoo user) is not."
        )
    protocol = _get(env, "ODOO_PROTOCOL") or OdooProtocol.JSON2.value
    if protocol not in tuple(OdooProtocol):
        raise ConfigurationError(f"ODOO_PROTOCOL={protocol!r} is not one of {', '.join(OdooProtocol)}.")
    login = _get(env, "ODOO_LOGIN")
    if protocol == OdooProtocol.JSONRPC and not login:
        raise ConfigurationError("ODOO_PROTOCOL=jsonrpc needs ODOO_LOGIN (the login of the API key's user).")
    import_login = _get(env, "ODOO_IMPORT_LOGIN")
    import_key = _get(env, "ODOO_IMPORT_API_KEY")
    if import_key and protocol == OdooProtocol.JSONRPC and not import_login:
        raise ConfigurationError(
            "ODOO_PROTOCOL=jsonrpc needs ODOO_IMPORT_LOGIN (the login of the importer's Odoo user) "
            "with ODOO_IMPORT_API_KEY."
        )
    return OdooSettings(
        url=str(parsed).rstrip("/"),
        database=database,
        protocol=protocol,
        login=login,
        import_key_configured=bool(import_key),
        import_login=import_login,
        usage_key_configured=bool(_get(env, "ODOO_USAGE_API_KEY")),
    )
