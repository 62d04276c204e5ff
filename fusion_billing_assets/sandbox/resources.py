"""The embedded default's resources: the generated NexaCloud database and the Odoo test double.

With neither ``NEXACLOUD_DATABASE_URL`` nor ``ODOO_URL`` set, ``definitions`` wires these instead
of the production ones. NexaCloud is the sandbox's SQLite file, opened read-only like any other;
Odoo is the production ``OdooAPI`` whose requests go through ``httpx.WSGITransport`` to the test
double in this process: the same client code path from request to parsed frame, minus the network.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import httpx
from dagster import ConfigurableResource
from pydantic import Field

from fusion_billing_assets.defs.resources import (
    NexaCloudDatabase,
    OdooAPI,
    alert_channel_for,
    policy_for,
    warehouse_for,
)
from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE, SANDBOX_LOGIN
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
        return self.root / "odoo.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def waivers(self) -> Path:
        return self.root / "waivers.csv"

    @property
    def nexacloud_url(self) -> str:
        return f"sqlite:///{self.nexacloud}"


class SandboxOdooAPI(OdooAPI):
    """``OdooAPI`` answered by the Odoo test double serving a generated ``odoo.json`` in-process."""

    data_file: str = Field(description="The sandbox's odoo.json, the records the test double serves.")

    def transport(self) -> httpx.BaseTransport:
        data = Path(self.data_file)
        if not data.is_file():
            raise SandboxNotGenerated(
                f"the sandbox's Odoo data {data} does not exist; generate the sandbox first "
                "(python -m fusion_billing_assets.sandbox generate, or the README's main command)."
            )
        # Loading the records costs seconds at large scales: keep one test double per file version.
        return httpx.WSGITransport(app=_load_standin(str(data), data.stat().st_mtime_ns))


def sandbox_odoo(data_file: Path | str, protocol: str = OdooProtocol.JSON2.value) -> SandboxOdooAPI:
    """The Odoo resource for a generated sandbox's ``odoo.json``, over either protocol."""
    return SandboxOdooAPI(
        url=SANDBOX_ODOO_URL,
        database=SANDBOX_DATABASE,
        api_key=SANDBOX_API_KEY,
        login=SANDBOX_LOGIN,
        protocol=protocol,
        data_file=str(data_file),
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
        "odoo": sandbox_odoo(paths.odoo),
        "warehouse": warehouse_for(settings),
        "alert_channel": alert_channel_for(settings),
    }


@functools.lru_cache(maxsize=2)
def _load_standin(path: str, modified_ns: int):
    from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn

    return OdooStandIn.from_file(path)
