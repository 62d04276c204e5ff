"""The embedded default's resources: the generated NexaCloud database and the Odoo test double.

With neither ``NEXACLOUD_DATABASE_URL`` nor ``ODOO_URL`` set, ``definitions`` wires these instead
of the production ones. NexaCloud is the sandbox's SQLite file, opened read-only like any other;
Odoo is the production ``OdooAPI`` whose requests go through ``httpx.WSGITransport`` to the test
double in this process, answering from its SQL store (``odoo.sqlite``): the same client code path
from request to parsed frame, minus the network.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import httpx
from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy.engine import make_url

from fusion_billing_assets.defs.resources import (
    LifecycleClock,
    NexaCloudDatabase,
    OdooAPI,
    OdooUsageEndpoint,
    alert_channel_for,
    import_policy_for,
    policy_for,
    warehouse_for,
)
from fusion_billing_assets.sandbox.odoo_models import (
    SANDBOX_API_KEY,
    SANDBOX_DATABASE,
    SANDBOX_IMPORTER_API_KEY,
    SANDBOX_IMPORTER_LOGIN,
    SANDBOX_LOGIN,
    SANDBOX_METERING_API_KEY,
)
from fusion_billing_assets.sandbox.scenarios import TOLERANCE_CENTS
from fusion_billing_assets.settings import Settings
from fusion_billing_assets.sources.odoo import OdooProtocol

# Never resolved: every request goes to the in-process transport.
SANDBOX_ODOO_URL = "http://odoo.sandbox.invalid"


class SandboxNotGenerated(RuntimeError):
    """The embedded sandbox has not been generated yet."""


@dataclass(frozen=True)
class SandboxPaths:
    """Where a generated sandbox keeps its files."""

    root: Path

    @property
    def nexacloud(self) -> Path:
        return self.root / "nexacloud.sqlite"

    @property
    def odoo(self) -> Path:
        return self.root / "odoo.sqlite"

    @property
    def odoo_url(self) -> str:
        return f"sqlite:///{self.odoo}"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def waivers(self) -> Path:
        return self.root / "waivers.csv"

    @property
    def import_exclusions(self) -> Path:
        return self.root / "import_exclusions.csv"

    @property
    def nexacloud_url(self) -> str:
        return f"sqlite:///{self.nexacloud}"


class SandboxOdooAPI(OdooAPI):
    """``OdooAPI`` answered in-process by the Odoo test double serving a generated store."""

    store_url: str = Field(description="SQLAlchemy URL of the store whose records the test double serves.")
    writable: bool = Field(
        default=False, description="Open the store for writing (the importer's user); read-only otherwise."
    )

    def transport(self) -> httpx.BaseTransport:
        url = make_url(self.store_url)
        if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
            raise SandboxNotGenerated(
                f"the sandbox's Odoo store {url.database} does not exist; generate the sandbox first "
                "(python -m fusion_billing_assets.sandbox generate, or the README's main command)."
            )
        return httpx.WSGITransport(app=_standin(self.store_url, self.writable))


def sandbox_odoo(store_url: str, protocol: str = OdooProtocol.JSON2.value) -> SandboxOdooAPI:
    """The Odoo resource for a generated sandbox's store, over either protocol."""
    return SandboxOdooAPI(
        url=SANDBOX_ODOO_URL,
        database=SANDBOX_DATABASE,
        api_key=SANDBOX_API_KEY,
        login=SANDBOX_LOGIN,
        protocol=protocol,
        store_url=store_url,
    )


class SandboxOdooUsageEndpoint(OdooUsageEndpoint):
    """``POST /usage`` answered in-process by the Odoo test double, writable, as NexaCloud's metering."""

    store_url: str = Field(description="SQLAlchemy URL of the store whose records the test double serves.")

    def transport(self) -> httpx.BaseTransport:
        return httpx.WSGITransport(app=_standin(self.store_url, True))


def sandbox_odoo_importer(store_url: str, protocol: str = OdooProtocol.JSON2.value) -> SandboxOdooAPI:
    """The importer's Odoo user on a generated sandbox's store: the one that may write."""
    return SandboxOdooAPI(
        url=SANDBOX_ODOO_URL,
        database=SANDBOX_DATABASE,
        api_key=SANDBOX_IMPORTER_API_KEY,
        login=SANDBOX_IMPORTER_LOGIN,
        protocol=protocol,
        store_url=store_url,
        writable=True,
    )


def sandbox_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    """The resources of the embedded sandbox under ``settings.sandbox_dir``."""
    paths = SandboxPaths(settings.sandbox_dir)
    return {
        # The sandbox's ground truth assumes its own tolerance and waivers unless others are configured.
        "reconciliation_policy": policy_for(
            settings, default_tolerance_cents=TOLERANCE_CENTS, default_waivers_file=paths.waivers
        ),
        "nexacloud": NexaCloudDatabase(url=paths.nexacloud_url),
        "odoo": sandbox_odoo(paths.odoo_url),
        "odoo_importer": sandbox_odoo_importer(paths.odoo_url),
        "odoo_usage": SandboxOdooUsageEndpoint(
            url=SANDBOX_ODOO_URL,
            database=SANDBOX_DATABASE,
            api_key=SANDBOX_METERING_API_KEY,
            store_url=paths.odoo_url,
        ),
        # The sandbox leaves out, on purpose, the customers its ground truth says stay unmapped.
        "import_policy": import_policy_for(settings, default_exclusions_file=paths.import_exclusions),
        "warehouse": warehouse_for(settings),
        "alert_channel": alert_channel_for(settings),
        # The sandbox is a world frozen at its own moment: its lifecycle is judged then, not now.
        "lifecycle_clock": LifecycleClock(manifest_path=str(paths.manifest)),
    }


@functools.lru_cache(maxsize=8)
def _standin(store_url: str, writable: bool = False):
    # One test double (and its connection pool) per store and mode for the life of the process.
    from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn

    return OdooStandIn.from_store(store_url, writable=writable)
