"""The sandbox generator: a deterministic NexaCloud database and the Odoo records that mirror it.

``generate`` writes, from a seed and a scale:

- the NexaCloud database of docs/design.md §4 at any SQLAlchemy URL (a SQLite file or PostgreSQL), its
  tables dropped and recreated so a second run replaces the world instead of adding to it;
- ``odoo.json``: the records the Odoo test double serves, in the storage format of
  ``sandbox.odoo_models``;
- ``manifest.json``: the ground truth — every injected difference and edge case
  (``sandbox.scenarios``) and the expected reconciliation status of every customer in every
  closed period;
- ``waivers.csv``: the accepted difference of the ``waived`` case.

It wires the stages, each in its own module: the world and its cast (``world``), NexaCloud's
metering and invoices (``nexacloud_billing``), Odoo's usage ledger and records (``odoo_billing``),
the ground truth (``ground_truth``) and the writing of the NexaCloud database (``nexacloud_db``).
The last period is the current, provisional one: usage up to a fixed cut-off on its 15th and no
invoices on either side.

Everything random comes from one ``random.Random(seed)`` consumed in a fixed order (the order of
the stages below), and nothing reads the clock: the same seed, scale, end period and time zone
give byte-identical files and identical tables.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy.engine import make_url

from fusion_billing_assets.billing.periods import parse_period
from fusion_billing_assets.sandbox.ground_truth import manifest, waivers_csv
from fusion_billing_assets.sandbox.nexacloud_billing import (
    Progress,
    bill_nexacloud,
    meter_usage,
    usage_targets,
)
from fusion_billing_assets.sandbox.nexacloud_db import write_nexacloud
from fusion_billing_assets.sandbox.odoo_billing import odoo_records, push_usage
from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE, SANDBOX_LOGIN
from fusion_billing_assets.sandbox.world import DEFAULT_SCALE, SandboxScale, World

__all__ = ["DEFAULT_SCALE", "SandboxScale", "Summary", "generate"]


@dataclass(frozen=True)
class Summary:
    """What a generation produced, for the command line and for callers."""

    nexacloud_url: str  # password hidden
    odoo_path: Path
    manifest_path: Path
    waivers_path: Path
    periods: tuple[date, ...]
    nexacloud_rows: dict[str, int]
    odoo_records: dict[str, int]
    differences_by_status: dict[str, int]
    edge_cases: int

    @property
    def provisional_period(self) -> date:
        return self.periods[-1]


def generate(
    nexacloud_url: str,
    out_dir: Path,
    *,
    seed: int,
    scale: SandboxScale,
    end_period: date | str,
    timezone: str = "America/Toronto",
    progress: Progress | None = None,
) -> Summary:
    """Generate the sandbox world ending at ``end_period`` (the provisional period)."""
    scale.validate()
    report = progress or (lambda line: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    world = World(seed=seed, scale=scale, end_period=parse_period(end_period), timezone=timezone)
    report(
        f"world: {len(world.customers)} customers, {len(world.deployments)} deployments, "
        f"{len(world.castings)} cast roles, periods {world.windows[0].key} … {world.provisional.key} "
        f"(provisional)"
    )
    usage = meter_usage(world, usage_targets(world), report)
    ledger = push_usage(world, usage)
    invoices = bill_nexacloud(world, usage)
    report(f"NexaCloud invoices: {len(invoices)} with {sum(len(i.lines) for i in invoices)} lines")
    odoo = odoo_records(world, ledger)
    ground_truth = manifest(world, invoices, ledger, odoo)

    nexacloud_rows = write_nexacloud(nexacloud_url, world, usage, invoices, report)
    paths = {name: out_dir / name for name in ("odoo.json", "manifest.json", "waivers.csv")}
    odoo_document = {
        "database": SANDBOX_DATABASE,
        "api_key": SANDBOX_API_KEY,
        "login": SANDBOX_LOGIN,
        "models": odoo.models,
    }
    paths["odoo.json"].write_text(json.dumps(odoo_document, sort_keys=True, separators=(",", ":")))
    report(f"odoo.json: {sum(odoo.counts().values()):,} records, {paths['odoo.json'].stat().st_size:,} bytes")
    paths["manifest.json"].write_text(json.dumps(ground_truth, sort_keys=True, indent=1) + "\n")
    paths["waivers.csv"].write_text(waivers_csv(world))

    return Summary(
        nexacloud_url=make_url(nexacloud_url).render_as_string(hide_password=True),
        odoo_path=paths["odoo.json"],
        manifest_path=paths["manifest.json"],
        waivers_path=paths["waivers.csv"],
        periods=tuple(window.period for window in world.windows),
        nexacloud_rows=nexacloud_rows,
        odoo_records=odoo.counts(),
        differences_by_status=dict(sorted(Counter(d["status"] for d in ground_truth["differences"]).items())),
        edge_cases=len(ground_truth["edge_cases"]),
    )
