"""How many Odoo requests an import plan takes at the size of a real customer base, and what applying it costs.

One command, one size (default 10,000 customers, about 20,000 deployments):

    python3 -m uv run --locked python benchmarks/import_plan.py --customers 10000

``--dry-run`` plans and sends nothing (no second plan): the plan alone, where the apply would take
too long. NexaCloud is a PostgreSQL database, as in production, read through the production
read-only engine: the request counts do not depend on it, the seconds of the first step do. The
test double is served over a real port, as a real Odoo is (HTTP and JSON over a socket, the
client's timeouts), but from a thread of this process, so that its own count of the requests it
served can be set beside the client's; the peak memory printed is this process's, the importer's
and the double's together.

1. builds a sandbox world of that many customers and writes only its accounts (customers, plans,
   deployments; no usage, no invoices) to a NexaCloud database of its own on the local PostgreSQL;
2. creates the Odoo test double's store, also on PostgreSQL, holding Odoo's own records the import
   points at (currencies, provinces, the monthly subscription plan, the partners made by hand),
   written as the sandbox generator writes them;
3. serves the test double from that store, writable, over a real port from a thread of this
   process, and speaks to it with the production client as the importer's Odoo user;
4. measures, step by step: the records the periods want (NexaCloud's side); the first plan, on an
   Odoo side that holds none of them; the apply through ``load``; and a second plan, which must find
   every record ``unchanged``.

For each plan it prints, per Odoo model, the records wanted, the requests made, the bound
⌈records / page size⌉ + the reads ``importer.odoo_side`` makes of that model (``READS``) and whether
it holds, each read apart, and the plan's counts per action. It exits 1 if a bound is exceeded, the
apply is incomplete or the second plan is not all ``unchanged`` (``excluded`` apart), so the figure
is checked, not only printed. The databases it makes (``fusion_bench_import_*``) are dropped at the
end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

# The database helpers of the period benchmark: the same server, the same naming.
from reconcile_period import _database_url, _drop_database, _machine, _now, _recreate_database

TIMEZONE = "America/Toronto"
XID_MODEL = "ir.model.data"
# The reads ``importer.odoo_side.read_odoo_side`` makes of each model: the constant of its bound.
# Each read pages its values ``page size`` to a request, so it costs ⌈values / page size⌉ requests,
# plus one when its last page comes back full (an empty one follows) or it has no values at all.
READS: Mapping[str, tuple[str, ...]] = {
    XID_MODEL: (
        "module = nexacloud: every external id the import made",
        "module in …, name in …: Odoo's own records the import points at",
    ),
    "product.product": ("id in …: the records external ids name", "default_code in …: look-alikes"),
    "res.partner": (
        "id in …: the records external ids name",
        "ref in …: look-alikes",
        "email in …: look-alikes",
    ),
    "sale.order": ("id in …: the records external ids name",),
    "sale.order.line": ("id in …: the records external ids name",),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000, help="customers (default %(default)s)")
    parser.add_argument(
        "--page-size", type=int, default=500, help="records per Odoo read request (default %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=200, help="rows per Odoo load call (default %(default)s)"
    )
    parser.add_argument(
        "--odoo-url",
        help="SQLAlchemy URL of the Odoo test double's store (default: a PostgreSQL database "
        "fusion_bench_import_*_odoo, made and dropped here; a store given here is emptied, not dropped)",
    )
    parser.add_argument("--periods", type=int, default=2, help="monthly periods of the world (default 2)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="plan only: the apply sends nothing, and the second plan is skipped",
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases it made")
    args = parser.parse_args()
    if args.odoo_url and args.odoo_url.startswith(("http://", "https://")):
        parser.error("--odoo-url names the test double's store (a SQLAlchemy URL), not an Odoo server")

    tag = f"{args.customers}_{args.periods}_{args.seed}"
    made = {"nexacloud": _database_url(f"fusion_bench_import_{tag}_nexacloud")}
    if not args.odoo_url:
        made["odoo"] = _database_url(f"fusion_bench_import_{tag}_odoo")
    urls = {"nexacloud": made["nexacloud"], "odoo": args.odoo_url or made["odoo"]}
    started = time.monotonic()
    try:
        figures = _run(args, urls, made)
    finally:
        if args.keep:
            print(f"(kept: {', '.join(_shown(url) for url in made.values())})")
        else:
            for url in made.values():
                _drop_database(url)
            print("(databases dropped; --keep keeps them)")
    figures["wall_seconds"] = time.monotonic() - started
    failures = _print_summary(args, figures)
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


def _run(args: argparse.Namespace, urls: dict[str, str], made: dict[str, str]) -> dict[str, Any]:
    import httpx

    from fusion_billing_assets.billing.periods import parse_period
    from fusion_billing_assets.sandbox.odoo_models import SANDBOX_DATABASE, SANDBOX_IMPORTER_API_KEY
    from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn, serving
    from fusion_billing_assets.sources.odoo import OdooClient

    print(f"machine: {_machine()}; started {_now()}", flush=True)
    figures: dict[str, Any] = {"steps": {}}
    steps = figures["steps"]

    # --- 1. the world and NexaCloud's accounts ----------------------------------------------------
    from fusion_billing_assets.sandbox.nexacloud_db import NexaCloudWriter
    from fusion_billing_assets.sandbox.world import SandboxScale, World

    end_period = datetime.now(UTC).date().replace(day=1)
    print(
        f"[1/7] a world of {args.customers:,} customers, {args.periods} periods to "
        f"{end_period:%Y-%m}; its accounts into {_shown(urls['nexacloud'])}",
        flush=True,
    )
    with _step(steps, "world"):
        world = World(
            seed=args.seed,
            scale=SandboxScale(
                customers=args.customers,
                max_deployments_per_customer=3,
                usage_window_minutes=60,
                periods=args.periods,
            ),
            end_period=parse_period(end_period.isoformat()),
            timezone=TIMEZONE,
        )
    figures["customers"] = len(world.customers)
    figures["deployments"] = len(world.deployments)
    print(
        f"      {len(world.customers):,} customers, {len(world.deployments):,} deployments "
        f"({steps['world']:.1f} s)",
        flush=True,
    )
    _recreate_database(urls["nexacloud"])
    with _step(steps, "nexacloud accounts"), NexaCloudWriter(urls["nexacloud"], _indented) as nexacloud:
        nexacloud.accounts(world)
    print(
        "      written: "
        + ", ".join(f"{table} {rows:,}" for table, rows in nexacloud.rows.items())
        + f" ({steps['nexacloud accounts']:.1f} s)",
        flush=True,
    )

    # --- 2. Odoo's own records --------------------------------------------------------------------
    from fusion_billing_assets.sandbox.generator import write_odoo_records
    from fusion_billing_assets.sandbox.odoo_billing import OdooBilling
    from fusion_billing_assets.sandbox.odoo_store import create_store

    print(f"[2/7] the Odoo store with Odoo's own records, in {_shown(urls['odoo'])}", flush=True)
    if "odoo" in made:
        _recreate_database(urls["odoo"])
    with _step(steps, "odoo store"):
        own = OdooBilling(world).own_records()
        write_odoo_records(create_store(urls["odoo"]), own)
    print(
        "      "
        + ", ".join(f"{model} {len(records):,}" for model, records in own.items() if records)
        + f" ({steps['odoo store']:.1f} s)",
        flush=True,
    )

    # --- 3. the test double, served -----------------------------------------------------------------
    app = OdooStandIn.from_store(urls["odoo"], writable=True)
    try:
        with serving(app) as base_url, httpx.Client(base_url=base_url) as http:
            print(f"[3/7] the Odoo test double, writable, serving on {base_url}", flush=True)
            client = OdooClient(
                http, database=SANDBOX_DATABASE, api_key=SANDBOX_IMPORTER_API_KEY, page_size=args.page_size
            )
            reads = _ReadLog(client)
            _measure(args, figures, urls, world, client, app, reads)
    finally:
        app.close()
    figures["peak_mib"] = _peak_mib()
    return figures


def _measure(args, figures, urls, world, client, app, reads: _ReadLog) -> None:
    from fusion_billing_assets.importer.apply import apply_plan
    from fusion_billing_assets.importer.nexacloud_side import wanted_for_periods
    from fusion_billing_assets.importer.odoo_side import read_odoo_side
    from fusion_billing_assets.importer.plan import counts_by_action, plan_import
    from fusion_billing_assets.sandbox.import_world import exclusions_of
    from fusion_billing_assets.sources.nexacloud import read_only_engine

    steps = figures["steps"]

    # --- 4. wanted records ----------------------------------------------------------------------------
    print(
        f"[4/7] the records {len(world.windows)} periods want "
        f"({world.windows[0].key} … {world.windows[-1].key}), read from NexaCloud read-only",
        flush=True,
    )
    exclusions = exclusions_of(world)
    engine = read_only_engine(urls["nexacloud"])
    try:
        with _step(steps, "wanted"), engine.connect() as connection:
            wanted = wanted_for_periods(connection, world.windows, exclusions=exclusions)
    finally:
        engine.dispose()
    by_model = Counter(record.model for record in wanted)
    foreign = _foreign_xids(wanted)
    figures["wanted"] = dict(by_model)
    figures["records"] = len(wanted)
    print(
        f"      {len(wanted):,} records: "
        + ", ".join(f"{model} {n:,}" for model, n in by_model.items())
        + f"; {len(foreign)} of Odoo's own external ids; {len(exclusions)} customer(s) excluded "
        f"({steps['wanted']:.1f} s, peak {_peak_mib():,} MiB)",
        flush=True,
    )
    records_of = {**by_model, XID_MODEL: len(wanted) + len(foreign)}

    # --- 5. the first plan --------------------------------------------------------------------------
    def plan(number: int, label: str) -> list:
        print(f"[{number}/7] the {label} plan: read Odoo's side, then decide each record", flush=True)
        before_client, before_app = dict(client.stats.calls_by_method), app.requests.copy()
        before_rows = dict(client.stats.rows_by_method)
        reads.start()
        with _step(steps, f"{label} plan: read Odoo"):
            side = read_odoo_side(client, wanted)
        with _step(steps, f"{label} plan: decide"):
            planned = plan_import(wanted, side)
        entry = {
            "read_seconds": steps[f"{label} plan: read Odoo"],
            "decide_seconds": steps[f"{label} plan: decide"],
            "calls": _difference(client.stats.calls_by_method, before_client),
            "double_calls": _difference(app.requests.copy(), before_app),
            "rows": _difference(client.stats.rows_by_method, before_rows),
            "reads": reads.stop(),
            "counts": {action: n for action, n in counts_by_action(planned).items() if n},
        }
        entry["models"] = _bounds(entry, records_of, args.page_size)
        figures[label] = entry
        _print_plan(label, entry, args.page_size)
        return planned

    planned = plan(5, "first")

    # --- 6. the apply ---------------------------------------------------------------------------------
    to_write = sum(n for action, n in figures["first"]["counts"].items() if action in ("create", "update"))
    print(
        f"[6/7] the apply{' (dry run)' if args.dry_run else ''}: {to_write:,} records through load, "
        f"{args.batch_size} to a call",
        flush=True,
    )
    # ``load`` writes one column set per call: the fewest calls are ⌈records / batch size⌉ per set.
    column_sets: Counter[tuple[str, tuple[str, ...]]] = Counter(
        (p.wanted.model, tuple(sorted(p.columns or {}))) for p in planned if p.action in ("create", "update")
    )
    fewest: Counter[str] = Counter()
    to_send: Counter[str] = Counter()
    for (model, _), n in column_sets.items():
        fewest[model] += math.ceil(n / args.batch_size)
        to_send[model] += n
    before_calls = dict(client.stats.calls_by_method)
    tracker = _ApplyProgress()
    with _step(steps, "apply"):
        result = apply_plan(
            client, planned, dry_run=args.dry_run, batch_size=args.batch_size, progress=tracker.report
        )
    tracker.finish()
    calls = _difference(client.stats.calls_by_method, before_calls)
    figures["apply"] = {
        "seconds": steps["apply"],
        "complete": result.complete,
        "stopped": result.stopped,
        "outcomes": {outcome: n for outcome, n in result.counts_by_outcome().items() if n},
        "written": result.written,
        "loads": {call.removesuffix(".load"): n for call, n in calls.items() if call.endswith(".load")},
        "other_calls": {call: n for call, n in calls.items() if not call.endswith(".load")},
        "model_seconds": tracker.seconds,
        "to_write": to_write,
        "fewest_loads": dict(fewest),
        "to_send": dict(to_send),
        "column_sets": dict(Counter(model for model, _ in column_sets)),
    }
    _print_apply(figures["apply"], args.batch_size, dry=args.dry_run)
    if not result.complete:
        for entry in result.log:
            if entry.external_id and entry.outcome not in ("loaded", "dry_run"):
                print(f"      first record not loaded: {entry.external_id}: {entry.outcome}: {entry.message}")
                break

    # --- 7. the second plan ---------------------------------------------------------------------------
    if args.dry_run:
        print("[7/7] the second plan: skipped (dry run: nothing was written)", flush=True)
    else:
        plan(7, "second")


# --- requests against their bound ------------------------------------------------------------------


class _ReadLog:
    """Each request the client sends, by model, method and the fields its domain conditions name.

    ``read_odoo_side`` asks ``search_read`` of ``res.partner`` three ways (by id, by ``ref``, by
    ``email``): the client's stats count them together, this tells them apart.
    """

    def __init__(self, client) -> None:
        self._call = client.call
        self._entries: dict[tuple[str, str, str], dict[str, int]] | None = None
        self._last_print = 0.0
        self._requests = 0
        client.call = self._logged

    def start(self) -> None:
        self._entries = {}
        self._requests = 0
        self._last_print = time.monotonic()

    def stop(self) -> dict[str, dict[str, int]]:
        entries, self._entries = self._entries or {}, None
        return {" ".join(key): value for key, value in entries.items()}

    def _logged(self, model: str, method: str, **arguments: Any) -> Any:
        answer = self._call(model, method, **arguments)
        if self._entries is not None:
            domain = arguments.get("domain") or []
            # The keyset condition (``id > last``) is paging, not the read: leave it out of the key.
            names = [
                f"{term[0]} {term[1]}"
                for term in domain
                if isinstance(term, list | tuple)
                and len(term) == 3
                and not (term[0] == "id" and term[1] == ">")
            ]
            values = max(
                (
                    len(term[2])
                    for term in domain
                    if isinstance(term, list | tuple) and len(term) == 3 and term[1] == "in"
                ),
                default=0,
            )
            entry = self._entries.setdefault(
                (model, method, ", ".join(names) or "all"), {"requests": 0, "rows": 0, "values": 0}
            )
            entry["requests"] += 1
            entry["rows"] += len(answer) if isinstance(answer, list) else 0
            if not any(
                term[1] == ">" for term in domain if isinstance(term, list | tuple) and len(term) == 3
            ):
                entry["values"] += values  # a list of values is counted on its first page only
            self._requests += 1
            if time.monotonic() - self._last_print >= 5:
                self._last_print = time.monotonic()
                print(f"      … {self._requests:,} requests so far, now {model}.{method}", flush=True)
        return answer


def _bounds(entry: dict, records_of: Mapping[str, int], page_size: int) -> dict[str, dict]:
    """Per model: records wanted, requests made, ⌈records / page size⌉ + its reads, and the verdict."""
    models: dict[str, dict] = {}
    for model in [*READS, *sorted({call.rsplit(".", 1)[0] for call in entry["calls"]} - set(READS))]:
        requests = sum(n for call, n in entry["calls"].items() if call.rsplit(".", 1)[0] == model)
        rows = sum(n for call, n in entry["rows"].items() if call.rsplit(".", 1)[0] == model)
        records = records_of.get(model, 0)
        constant = len(READS.get(model, ()))  # a model the importer is not known to read: bound 0
        bound = math.ceil(records / page_size) + constant if model in READS else 0
        models[model] = {
            "records": records,
            "requests": requests,
            "rows": rows,
            "constant": constant,
            "bound": bound,
            "within": requests <= bound,
        }
    return models


def _print_plan(label: str, entry: dict, page_size: int) -> None:
    print(
        f"      read Odoo's side {entry['read_seconds']:.2f} s, decided {entry['decide_seconds']:.2f} s; "
        f"peak {_peak_mib():,} MiB"
    )
    print(
        f"      {'model':<18} {'records':>8} {'requests':>8} {'rows recv':>9} "
        f"{'bound = ⌈records/' + str(page_size) + '⌉ + reads':>30}  verdict"
    )
    for model, values in entry["models"].items():
        formula = f"{math.ceil(values['records'] / page_size)} + {values['constant']} = {values['bound']}"
        print(
            f"      {model:<18} {values['records']:8,} {values['requests']:8,} {values['rows']:9,} "
            f"{formula:>30}  {'ok' if values['within'] else 'OVER'}"
        )
    print("      each read apart (values asked, requests, rows received):")
    for read, values in sorted(entry["reads"].items()):
        asked = f"{values['values']:7,}" if " in" in read else f"{'-':>7}"
        print(f"        {read:<58} {asked} values {values['requests']:5,} requests {values['rows']:7,} rows")
    if entry["calls"] != entry["double_calls"]:
        print(f"      the client counted {entry['calls']}, the test double served {entry['double_calls']}")
    else:
        print(f"      the test double served the same {sum(entry['double_calls'].values()):,} requests")
    print(
        "      actions: " + ", ".join(f"{action} {n:,}" for action, n in entry["counts"].items()), flush=True
    )


class _ApplyProgress:
    """Seconds per model from the apply's report after each batch; a line now and then."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.batches: Counter[str] = Counter()
        self._last = time.monotonic()
        self._last_print = self._last
        self._model: str | None = None

    def report(self, line: str) -> None:
        now = time.monotonic()
        model = line.split(":", 1)[0]
        self.seconds[model] += now - self._last
        self.batches[model] += 1
        self._last = now
        if model != self._model and self._model is not None:
            self._done(self._model)
        self._model = model
        if now - self._last_print >= 10:
            self._last_print = now
            print(f"      … {line} ({self.batches[model]} batch(es) of {model} so far)", flush=True)

    def finish(self) -> None:
        if self._model is not None:
            self._done(self._model)

    def _done(self, model: str) -> None:
        print(f"      {model}: {self.batches[model]} batch(es) in {self.seconds[model]:.1f} s", flush=True)


def _print_apply(apply: dict, batch_size: int, *, dry: bool) -> None:
    print(
        f"      {'complete' if apply['complete'] else 'INCOMPLETE'} in {apply['seconds']:.1f} s; "
        + ", ".join(f"{outcome} {n:,}" for outcome, n in apply["outcomes"].items())
        + (f"; stopped: {apply['stopped']}" if apply["stopped"] else "")
    )
    print(
        f"      {'model':<18} {'to send' if dry else 'written':>8} {'load calls':>10} {'fewest':>7} {'column sets':>11} "
        f"{'seconds':>8} {'records/s':>10}"
    )
    for model, seconds in apply["model_seconds"].items():
        written = sum(apply["written"].get(model, {}).values()) or apply["to_send"].get(model, 0) * dry
        rate = written / seconds if seconds and not dry else 0
        print(
            f"      {model:<18} {written:8,} {apply['loads'].get(model, 0):10,} "
            f"{apply['fewest_loads'].get(model, 0):7,} {apply['column_sets'].get(model, 0):11,} "
            f"{seconds:8.1f} {rate:10,.0f}"
        )
    print(f"      (fewest: ⌈records / {batch_size}⌉ per column set, load writing one set of columns a call)")
    if apply["other_calls"]:
        print(f"      other calls during the apply: {apply['other_calls']}")
    print(f"      peak {_peak_mib():,} MiB", flush=True)


def _print_summary(args: argparse.Namespace, figures: dict) -> list[str]:
    failures = []
    print()
    print(
        f"{figures['customers']:,} customers, {figures['deployments']:,} deployments, "
        f"{figures['records']:,} Odoo records wanted "
        f"({', '.join(f'{m} {n:,}' for m, n in figures['wanted'].items())}); "
        f"page size {args.page_size}, batch size {args.batch_size}"
    )
    for label in ("first", "second"):
        entry = figures.get(label)
        if entry is None:
            continue
        requests = sum(values["requests"] for values in entry["models"].values())
        bound = sum(values["bound"] for values in entry["models"].values())
        over = [model for model, values in entry["models"].items() if not values["within"]]
        print(
            f"{label} plan: {requests:,} requests (bound {bound:,}), "
            f"{entry['read_seconds'] + entry['decide_seconds']:.1f} s; "
            + ", ".join(f"{model} {v['requests']}/{v['bound']}" for model, v in entry["models"].items())
            + ("" if not over else f"; OVER for {', '.join(over)}")
        )
        for model in over:
            values = entry["models"][model]
            failures.append(
                f"{label} plan: {model} took {values['requests']} requests for {values['records']:,} records, "
                f"over its bound ⌈{values['records']:,} / {args.page_size}⌉ + {values['constant']} = {values['bound']}"
            )
    apply = figures["apply"]
    written = sum(sum(by_action.values()) for by_action in apply["written"].values())
    rate = written / apply["seconds"] if apply["seconds"] else 0
    print(
        f"apply{' (dry run)' if args.dry_run else ''}: {written:,} records written in {apply['seconds']:.1f} s "
        f"({rate:,.0f} records/s), {sum(apply['loads'].values()):,} load calls"
    )
    if not apply["complete"]:
        failures.append(f"the apply did not complete: {apply['stopped'] or apply['outcomes']}")
    second = figures.get("second")
    if second is not None:
        left = {
            action: n for action, n in second["counts"].items() if action not in ("unchanged", "excluded")
        }
        if left:
            failures.append(f"the second plan is not all unchanged: {left}")
    print(
        f"peak memory {figures['peak_mib']:,} MiB (this process: the importer and the test double's thread)"
    )
    print(f"benchmark wall time {figures['wall_seconds']:,.0f} s")
    return failures


# --- plumbing ----------------------------------------------------------------------------------------


@contextmanager
def _step(steps: dict[str, float], name: str) -> Iterator[None]:
    """Time a block into ``steps[name]`` (seconds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        steps[name] = time.perf_counter() - started


def _foreign_xids(wanted: Sequence) -> set[str]:
    """Odoo's own external ids the wanted records point at, as ``read_odoo_side`` collects them."""
    from fusion_billing_assets.importer.records import MODULE, Ref

    return {
        value.xid
        for record in wanted
        for value in [*record.values.values(), *record.on_create.values()]
        if isinstance(value, Ref) and not value.xid.startswith(f"{MODULE}.")
    }


def _difference(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {key: n - before.get(key, 0) for key, n in sorted(after.items()) if n - before.get(key, 0)}


def _indented(line: str) -> None:
    print(f"      {line}", flush=True)


def _peak_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
