"""The sandbox generator: a deterministic NexaCloud database and the Odoo records that mirror it.

``generate`` writes, from a seed and a scale:

- the NexaCloud database of docs/design.md §4 at any SQLAlchemy URL (a SQLite file or PostgreSQL), its
  tables dropped and recreated so a second run replaces the world instead of adding to it;
- the Odoo test double's store (``sandbox.odoo_store``; ``odoo.sqlite`` beside the manifest
  unless another SQLAlchemy URL is given): the records it serves, in the storage format of
  ``sandbox.odoo_models``, replaced the same way;
- ``manifest.json``: the ground truth — every injected difference and edge case
  (``sandbox.scenarios``), the expected reconciliation status of every customer in every
  closed period, every usage record whose delivery failed, and the lifecycle cases with the kind
  each deployment they touch must be classified as (``lifecycle``);
- ``waivers.csv``: the accepted difference of the ``waived`` case;
- ``import_exclusions.csv``: the customer the ground truth says was never imported.

It wires the stages, each in its own module: the world and its cast (``world``), NexaCloud's
metering and invoices (``nexacloud_billing``), Odoo's accounts made by the production importer
(``import_world``), Odoo's usage ledger and records (``odoo_billing``), the lifecycle states of
both systems (``lifecycle``: run once everything else is written, it updates a few deployments'
statuses and a few subscriptions and invoices, none of which any billing figure reads), the ground
truth (``ground_truth``) and the writing of the NexaCloud database (``nexacloud_db``).
The last period is the current, provisional one: usage up to a fixed cut-off on its 15th and no
invoices on either side.

Usage is streamed, never held: NexaCloud's metering (``metered_usage``) is read once into
NexaCloud's database and once more, through the pushes Odoo received (``UsagePushes``), into the
Odoo store, both in bulk (``COPY`` on PostgreSQL); only sums per deployment and period, and the
few records whose delivery was faulted (for the ground truth's ``delivery_faults``), stay in
memory, so memory grows with deployments, not with usage records.

Everything random comes from ``random.Random(seed)`` consumed in a fixed order (the order of the
stages below) and, for metering, from one stream per deployment and period derived from the seed,
and for the lifecycle cases from one stream of their own (so picking them changes no other draw);
nothing reads the clock: the same seed, scale, end period and time zone give byte-identical files
and identical tables.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from fusion_billing_assets.billing.periods import parse_period
from fusion_billing_assets.sandbox.ground_truth import manifest, waivers_csv
from fusion_billing_assets.sandbox.import_world import edit_plan_prices, exclusions_csv, import_world
from fusion_billing_assets.sandbox.lifecycle import apply_lifecycle, plan_lifecycle
from fusion_billing_assets.sandbox.nexacloud_billing import (
    Progress,
    bill_nexacloud,
    metered_usage,
    reporting,
    usage_targets,
)
from fusion_billing_assets.sandbox.nexacloud_db import NexaCloudWriter
from fusion_billing_assets.sandbox.odoo_billing import LEDGER_COLUMNS, OdooBilling, UsageLedger, UsagePushes
from fusion_billing_assets.sandbox.odoo_store import (
    STORED_FIELDS,
    TABLES,
    check_store,
    create_store,
    insert_rows,
    open_store,
)
from fusion_billing_assets.sandbox.world import DEFAULT_SCALE, SandboxScale, World

__all__ = ["DEFAULT_SCALE", "GenerationError", "SandboxScale", "Summary", "generate"]


@dataclass(frozen=True)
class Summary:
    """What a generation produced, for the command line and for callers."""

    nexacloud_url: str  # password hidden
    odoo_url: str  # password hidden
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


def default_odoo_url(out_dir: Path) -> str:
    """The Odoo test double's store when none is given: a SQLite file beside the manifest."""
    return f"sqlite:///{Path(out_dir) / 'odoo.sqlite'}"


def generate(
    nexacloud_url: str,
    out_dir: Path,
    *,
    seed: int,
    scale: SandboxScale,
    end_period: date | str,
    timezone: str = "America/Toronto",
    odoo_url: str | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Generate the sandbox world ending at ``end_period`` (the provisional period)."""
    scale.validate()
    report = progress or (lambda line: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    odoo_url = odoo_url or default_odoo_url(out_dir)

    world = World(seed=seed, scale=scale, end_period=parse_period(end_period), timezone=timezone)
    report(
        f"world: {len(world.customers):,} customers, {len(world.deployments):,} deployments, "
        f"{len(world.castings)} cast roles, periods {world.windows[0].key} … {world.provisional.key} "
        f"(provisional)"
    )
    targets = usage_targets(world)

    billing = OdooBilling(world)
    write_odoo_records(create_store(odoo_url), billing.own_records())
    with NexaCloudWriter(nexacloud_url, report) as nexacloud:
        nexacloud.accounts(world)
        # The importer reads NexaCloud's accounts as any reader would: once they are committed.
        nexacloud.commit()
        imported = import_world(world, nexacloud_url, odoo_url, report)
        billing.adopt_import(imported.external_ids, imported.subscription_names)
        edited = edit_plan_prices(odoo_url, billing.old_plan_prices(), billing.records.product_of)
        report(f"odoo: {edited} plan fee line(s) left at an old price after the import")
        # The two systems' usage streams are independent: Odoo's ledger is written by a second
        # process while this one writes NexaCloud's database, one core each.
        ledger_writer = _LedgerWriter(world, targets, billing, odoo_url, report)
        try:
            metered = nexacloud.usage(metered_usage(world, targets))
            invoices = bill_nexacloud(world, metered)
            nexacloud.invoices(invoices)
            ledger, _ = ledger_writer.result()
        finally:
            ledger_writer.stop()
    report(f"NexaCloud invoices: {len(invoices):,} with {sum(len(i.lines) for i in invoices):,} lines")

    odoo = billing.invoices(ledger)
    engine = open_store(odoo_url)
    write_odoo_records(engine, odoo.take())
    odoo_rows = _odoo_counts(odoo_url)
    report("odoo: " + ", ".join(f"{model} {count:,}" for model, count in sorted(odoo_rows.items())))

    # Last, on both systems as written: the lifecycle states, which no billing figure reads.
    lifecycle = plan_lifecycle(world, odoo, odoo_url)
    apply_lifecycle(lifecycle, nexacloud_url, odoo_url)
    report(
        f"lifecycle: {len({e.case for e in lifecycle.entries})} cases on {len(lifecycle.deployments())} "
        f"deployments, judged at {lifecycle.as_of:%Y-%m-%d %H:%M} UTC"
    )
    for case, why in lifecycle.not_built.items():
        report(f"lifecycle: case {case.value} not built: {why}")

    ground_truth = manifest(world, invoices, ledger, odoo, lifecycle)
    paths = {name: out_dir / name for name in ("manifest.json", "waivers.csv", "import_exclusions.csv")}
    paths["manifest.json"].write_text(json.dumps(ground_truth, sort_keys=True, indent=1) + "\n")
    paths["waivers.csv"].write_text(waivers_csv(world))
    paths["import_exclusions.csv"].write_text(exclusions_csv(world))

    return Summary(
        nexacloud_url=make_url(nexacloud_url).render_as_string(hide_password=True),
        odoo_url=make_url(odoo_url).render_as_string(hide_password=True),
        manifest_path=paths["manifest.json"],
        waivers_path=paths["waivers.csv"],
        periods=tuple(window.period for window in world.windows),
        nexacloud_rows=nexacloud.rows,
        odoo_records=dict(sorted(odoo_rows.items())),
        differences_by_status=dict(sorted(Counter(d["status"] for d in ground_truth["differences"]).items())),
        edge_cases=len(ground_truth["edge_cases"]),
    )


def write_odoo_records(engine, models: dict[str, list[dict]]) -> None:
    """Insert records in the storage format of ``odoo_models`` and check the store's references."""
    try:
        with engine.begin() as connection:
            for model, records in models.items():
                columns = [name for name in STORED_FIELDS[model] if name != "display_name"]
                insert_rows(
                    connection, model, columns, ([record[name] for name in columns] for record in records)
                )
        check_store(engine)
    finally:
        engine.dispose()


def _odoo_counts(odoo_url: str) -> dict[str, int]:
    engine = open_store(odoo_url)
    try:
        with engine.connect() as connection:
            return {
                model: connection.execute(select(func.count()).select_from(TABLES[model])).scalar_one()
                for model in STORED_FIELDS
            }
    finally:
        engine.dispose()


class GenerationError(RuntimeError):
    """A stage of the generation failed; the message says which and why (never a password)."""


class _LedgerWriter:
    """Odoo's usage ledger written by a forked process: the store created, NexaCloud's metering
    read again through the pushes Odoo received, and the ledger's sums sent back.

    Where processes cannot be forked, the same work runs here, before NexaCloud's.
    """

    def __init__(self, world: World, targets: dict, billing: OdooBilling, odoo_url: str, report: Progress):
        arguments = (world, targets, billing, odoo_url, report)
        self._process = None
        if "fork" not in multiprocessing.get_all_start_methods():
            self._outcome = _write_ledger(*arguments)
            return
        context = multiprocessing.get_context("fork")
        self._receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_ledger_child, args=(sender, *arguments), daemon=True)
        self._process.start()
        sender.close()

    def result(self) -> tuple[UsageLedger, int]:
        if self._process is None:
            return self._outcome
        try:
            outcome = self._receiver.recv()
        except EOFError:
            self._process.join()
            raise GenerationError(
                f"the process writing Odoo's usage ledger ended (exit code {self._process.exitcode})"
            ) from None
        if isinstance(outcome, str):
            raise GenerationError(f"writing Odoo's usage ledger failed: {outcome}")
        return outcome

    def stop(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.terminate()
            self._process.join()
            self._receiver.close()


def _write_ledger(
    world: World, targets: dict, billing: OdooBilling, odoo_url: str, report: Progress
) -> tuple[UsageLedger, int]:
    pushes = UsagePushes(world)
    engine = open_store(odoo_url)
    try:
        with engine.begin() as connection:
            rows = insert_rows(
                connection,
                "fusion.billing.usage",
                LEDGER_COLUMNS,
                reporting(
                    billing.ledger_rows(pushes.entries(metered_usage(world, targets))),
                    "odoo fusion.billing.usage",
                    report,
                ),
            )
    finally:
        engine.dispose()
    return pushes.ledger(), rows


def _ledger_child(sender, *arguments) -> None:
    try:
        outcome: object = _write_ledger(*arguments)
    except SQLAlchemyError as error:
        # The driver's own sentence (server refused, no such database), never the URL's password.
        outcome = str(getattr(error, "orig", None) or error).splitlines()[0]
    except Exception as error:
        outcome = f"{type(error).__name__}: {error}"
    sender.send(outcome)
    sender.close()
