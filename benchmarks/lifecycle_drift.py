"""Benchmark of the lifecycle drift judgement: what judging every mapped deployment costs Odoo.

    python benchmarks/lifecycle_drift.py --customers 1000     # about 2,000 deployments
    python benchmarks/lifecycle_drift.py --customers 10000    # about 20,000 deployments

Generates (or, with ``--reuse``, takes) a sandbox world in the local PostgreSQL — the same worlds
``reconcile_period.py`` makes, daily usage windows by default since the lifecycle read touches no
usage — serves its Odoo test double on a port of its own (read-only, the reconciliation's API
user), and times ``defs.lifecycle.judge_lifecycle`` at the sandbox's fixed moment (its manifest's
``lifecycle.as_of``, grace 7 days, the manifest's time zone), in this process, in three states:

1. as generated, with the sandbox's injected lifecycle cases: the kinds found must be the ground
   truth's, case by case, and every other mapped deployment in sync;
2. with many more drifts written straight into the store with SQL, on plain customers (active, every
   deployment running on a subscription in progress, none of the sandbox's cast or cases): posted
   invoices made unpaid and due 30 days before the judged day (``not_suspended`` for every
   subscription they bill), subscriptions paused (``paused_but_running``) and churned ten days
   before (``not_deprovisioned``) — so the overdue invoices and the drifting subscriptions'
   plan-fee reads grow. The kinds found must be the ground truth's plus what was written, with the
   ``since`` the written dates give and, for the overdue invoices, the amount they owe; the store is
   then put back as generated;
3. with one terminated deployment's ``terminated_at`` moved back in NexaCloud to 15 days before the
   first period: it must read as ``billed_after_termination`` (its invoice lines bill service after
   that day), and the lines read for terminated deployments — each list of subscriptions, ordered
   by termination day, read from its own earliest day — must hold at least that subscription's own
   later lines and at most every terminated subscription's lines after that day, as the store
   counts them.

Both systems are then judged once more as generated, which must find the ground truth again.

For each it prints the seconds (and where they went), the peak memory, the deployments judged,
the counts by kind, the Odoo requests per ``model.method`` with the rows each read, and the bound
each is held to: per model, requests ≤ ⌈rows / page size⌉ + one per read (a plain keyset read, or
each ``in`` list of at most a page of values), and all requests together far below the number of
deployments. It exits non-zero when a bound or an expectation fails.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import resource
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from reconcile_period import (
    PRESETS,
    _database_exists,
    _database_url,
    _drop_database,
    _free_port,
    _generate,
    _machine,
    _peak_mib,
    _serve_odoo,
    _wait_for_http,
)

GRACE_DAYS = 7
# All the requests of one judgement together: at least this many deployments judged per request.
DEPLOYMENTS_PER_REQUEST = 20
OVERDUE_DAYS = 30
CHURNED_DAYS_AGO = 10
DRIFT_KINDS = (
    "not_suspended",
    "not_deprovisioned",
    "suspended_but_paid",
    "billed_after_termination",
    "paused_but_running",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument(
        "--usage-window-minutes",
        type=int,
        default=1440,
        help="metering window of the generated world (default 1440: the lifecycle read touches no usage)",
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--overdue-invoices", type=int, help="invoices made overdue (default customers / 5)")
    parser.add_argument("--paused", type=int, help="subscriptions paused (default customers / 20)")
    parser.add_argument("--churned", type=int, help="subscriptions churned (default customers / 20)")
    parser.add_argument("--repeat", type=int, default=2, help="judgements per state (default 2)")
    parser.add_argument("--reuse", action="store_true", help="keep a world generated before with this scale")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work folder")
    args = parser.parse_args()
    injected = {
        "overdue_invoices": args.customers // 5 if args.overdue_invoices is None else args.overdue_invoices,
        "paused": args.customers // 20 if args.paused is None else args.paused,
        "churned": args.customers // 20 if args.churned is None else args.churned,
    }
    preset = {**PRESETS["S"], "customers": args.customers, "usage_window_minutes": args.usage_window_minutes}
    tag = f"lifecycle_{args.customers}_{args.usage_window_minutes}_{args.seed}"
    work = Path(f"/tmp/fusion-benchmark-{tag}")
    # The only databases this benchmark creates, and so the only ones it drops: these exact names.
    urls = {name: _database_url(f"fusion_bench_{tag}_{name}") for name in ("nexacloud", "odoo")}
    started = time.monotonic()
    print(f"machine: {_machine()}")
    manifest_path = work / "sandbox" / "manifest.json"
    if args.reuse and manifest_path.is_file() and _database_exists(urls["odoo"]):
        print(f"[1/4] reusing the world in {work / 'sandbox'}", flush=True)
    else:
        generation = _generate(work, urls, preset, args.seed)
        print(
            f"      generated in {generation['seconds']:,.0f} s, peak {generation['peak_mib']:,} MiB",
            flush=True,
        )
    manifest = json.loads(manifest_path.read_text())
    for missing in manifest["lifecycle"].get("not_built", []):
        print(f"      (the sandbox could not build case {missing['case']}: {missing['why']})", flush=True)

    port = _free_port()
    print(f"[2/4] serving the Odoo test double (read-only) from PostgreSQL on 127.0.0.1:{port}", flush=True)
    double = _serve_odoo(urls["odoo"], port)
    failures: list[str] = []
    rows: list[dict] = []
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/web/version", double)
        bench = Bench(urls, f"http://127.0.0.1:{port}", manifest, manifest_path, double.pid)
        print(
            f"[3/4] judging every mapped deployment as of {bench.as_of:%Y-%m-%d %H:%M} UTC "
            f"({bench.rules.timezone}, grace {bench.rules.grace_days} days), in three states",
            flush=True,
        )
        truth = bench.ground_truth()
        generated = bench.judge("as generated (the sandbox's cases)", args.repeat)
        rows.append(generated)
        failures += bench.expect(generated, truth)
        plan = bench.plan_drifts(injected, args.seed)
        print(
            f"      injecting in the Odoo store: {len(plan.invoices):,} invoice(s) overdue "
            f"({len(plan.overdue):,} subscription(s) billed), {len(plan.paused):,} paused, "
            f"{len(plan.churned):,} churned",
            flush=True,
        )
        try:
            bench.inject(plan)
            drifted = bench.judge("drifts injected with SQL", args.repeat)
            rows.append(drifted)
            failures += bench.expect(drifted, bench.with_injected(truth, plan), plan)
        finally:
            bench.restore(plan)
        old = bench.plan_old_termination(args.seed)
        print(
            f"      dating deployment {old.deployment_id}'s termination back to {old.moment:%Y-%m-%d %H:%M} UTC "
            f"in NexaCloud (was {old.was:%Y-%m-%d %H:%M} UTC)",
            flush=True,
        )
        try:
            bench.terminate_at(old.deployment_id, old.moment)
            dated_back = bench.judge("one termination dated back before the first period", args.repeat)
            rows.append(dated_back)
            failures += bench.expect(dated_back, bench.with_old_termination(truth, old), old=old)
        finally:
            bench.terminate_at(old.deployment_id, old.was)
        # Both systems as generated again: what --reuse will judge next time.
        restored = bench.judge("put back as generated", 1)
        failures += bench.expect(restored, truth)
    finally:
        double.terminate()
        double.wait(timeout=30)
    print("[4/4] figures")
    for row in rows:
        _print_row(row)
        failures += [f"{row['state']}: {problem}" for problem in row["bound_failures"]]
    failures += [f"{restored['state']}: {problem}" for problem in restored["bound_failures"]]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    first, last, dated_back = rows
    grown = ", ".join(
        f"{call} {first['calls'].get(call, {}).get('requests', 0)} → {entry['requests']}"
        for call, entry in last["calls"].items()
        if entry["requests"] != first["calls"].get(call, {}).get("requests", 0)
    )
    print(
        f"\nSummary: {args.customers:,} customers, {first['deployments_in_nexacloud']:,} deployments in "
        f"NexaCloud, {first['judged']:,} judged. As generated: {first['seconds']:.1f} s, "
        f"{first['odoo_requests']} Odoo request(s). With {last['drifts'] - first['drifts']:,} more drift(s) "
        f"injected: {last['seconds']:.1f} s, {last['odoo_requests']} request(s) ({grown or 'none grew'}), "
        f"one per {last['judged'] / last['odoo_requests']:,.0f} deployments. One termination dated back "
        f"before the first period: the lines read after termination went from {_lines_after(first):,} to "
        f"{_lines_after(dated_back):,} for one drift more. Peak memory of this process "
        f"{peak} MiB ({first['rss_before_mib']} MiB before the first judgement), of the test double "
        f"{max(row['double_peak_mib'] for row in rows)} MiB. Benchmark wall time "
        f"{time.monotonic() - started:,.0f} s."
    )
    figures = [{k: v for k, v in row.items() if k != "judged_frame"} for row in (*rows, restored)]
    (work / "lifecycle_figures.json").write_text(json.dumps(figures, indent=1, default=str) + "\n")
    for failure in failures:
        print(f"FAILED: {failure}")
    if not failures:
        print("every bound and expectation held")
    if not args.keep:
        for url in urls.values():
            _drop_database(url)
        shutil.rmtree(work, ignore_errors=True)
        print("(databases and work folder dropped; --keep keeps them)")
    else:
        print(f"kept: databases {', '.join(sorted(u.rsplit('/', 1)[1] for u in urls.values()))}, {work}")
    return 1 if failures else 0


def _lines_after(row: dict) -> int:
    """The invoice lines the judgement read for terminated deployments' subscriptions."""
    return sum(
        read["rows"]
        for read in row["calls"].get("account.move.line.search_read", {}).get("by_step", [])
        if read["step"] == "lines after termination"
    )


def _print_row(row: dict) -> None:
    print(f"\n{row['state']}")
    runs = ", ".join(f"{s:.2f}" for s in row["runs_seconds"])
    print(
        f"  {row['seconds']:.2f} s (runs: {runs}); peak RSS of this process {row['peak_mib']} MiB "
        f"(before the judgement {row['rss_before_mib']} MiB); test double peak {row['double_peak_mib']} MiB"
    )
    print(
        f"  judged {row['judged']:,} mapped deployment(s) of {row['deployments_in_nexacloud']:,}; "
        f"{row['drifts']:,} drift(s): "
        + ", ".join(f"{kind} {count:,}" for kind, count in row["counts_by_kind"].items())
    )
    print("  where the time went: " + ", ".join(f"{name} {s:.2f} s" for name, s in row["phases"].items()))
    print(
        f"  Odoo: {row['odoo_requests']} request(s), {row['odoo_pages']} page(s); bound per model "
        f"⌈rows / {row['page_size']}⌉ + one per read (a keyset read, or an `in` list of ≤ {row['page_size']} values)"
    )
    print(
        f"    {'model.method':36} {'requests':>8} {'rows':>8} {'reads':>6} {'in-list values':>15} {'bound':>6}"
    )
    for call, entry in row["calls"].items():
        print(
            f"    {call:36} {entry['requests']:8,} {entry['rows']:8,} {entry['reads']:6,} "
            f"{entry['in_values']:15,} {entry['bound']:6,} {'ok' if entry['within'] else 'OVER'}"
        )
        for read in entry["by_step"]:
            what = "keyset read" if read["values"] is None else f"in list of {read['values']:,}"
            print(
                f"      {read['step'] + ':':30} {what:>20}, {read['rows']:,} rows, {read['requests']} request(s)"
            )
    total = row["judged"] // DEPLOYMENTS_PER_REQUEST
    print(
        f"    {'all':36} {row['odoo_requests']:8,} {'':8} {'':6} {'':15} {total:6,} "
        f"{'ok' if row['odoo_requests'] <= total else 'OVER'} (one request per {DEPLOYMENTS_PER_REQUEST} deployments)"
    )


class Plan:
    """The drifts written into the Odoo store, with what each record held before."""

    def __init__(self, due: date, end_date: date):
        self.due, self.end_date = due, end_date
        # account.move id -> (payment_state, amount_residual, invoice_date_due) before
        self.invoices: dict[int, tuple] = {}
        # subscription id -> (deployment id, cents owed on the overdue invoices)
        self.overdue: dict[int, tuple[int, int]] = {}
        # subscription id -> (deployment id, subscription_state, end_date) before
        self.paused: dict[int, tuple] = {}
        self.churned: dict[int, tuple] = {}


@dataclass(frozen=True)
class OldTermination:
    """A terminated deployment whose termination is dated back before the first period."""

    deployment_id: int
    was: datetime
    moment: datetime
    # What its invoice lines starting after the new termination day bill, in cents.
    billed_after_cents: int
    # The invoice lines of every terminated deployment's subscription starting after that day: the
    # most the read can take, were every list of subscriptions read from that day.
    lines_after: int
    # The chosen one's own lines after that day: the least the read must take.
    own_lines_after: int


class Bench:
    """``judge_lifecycle`` against the served double, and edits of the double's store."""

    def __init__(
        self, urls: dict[str, str], odoo_url: str, manifest: dict, manifest_path: Path, double_pid: int
    ):
        from sqlalchemy import create_engine

        from fusion_billing_assets.billing.lifecycle import LifecycleRules
        from fusion_billing_assets.defs.resources import LifecycleClock, NexaCloudDatabase, OdooAPI
        from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE

        lifecycle = manifest["lifecycle"]
        if lifecycle["grace_days"] != GRACE_DAYS:
            raise SystemExit(
                f"the sandbox was built for a {lifecycle['grace_days']}-day grace period, not {GRACE_DAYS}"
            )
        self.manifest, self.double_pid = manifest, double_pid
        self.nexacloud = NexaCloudDatabase(url=urls["nexacloud"])
        self.odoo = OdooAPI(url=odoo_url, database=SANDBOX_DATABASE, api_key=SANDBOX_API_KEY)
        self.rules = LifecycleRules(timezone=lifecycle["timezone"], grace_days=GRACE_DAYS)
        self.as_of = LifecycleClock(manifest_path=str(manifest_path)).now()
        self.today = _local_day(self.as_of, self.rules.timezone)
        self.store = create_engine(urls["odoo"])
        self.source = create_engine(urls["nexacloud"])
        # Each read the judgement makes: its model, the step making it, the values of its `in`
        # list (None for a keyset read of a domain), the rows it received and the requests it cost.
        self.reads: list[dict] = []
        self.phases: dict[str, float] = {}
        self.step = ""
        self._instrument()

    # --- measuring ---------------------------------------------------------------------------

    def _instrument(self) -> None:
        """Count each read the judgement makes and time each of its steps, where it calls them."""
        import fusion_billing_assets.defs.lifecycle as defs_lifecycle
        from fusion_billing_assets.sources import nexacloud as nexacloud_queries
        from fusion_billing_assets.sources import odoo_frames as odoo_queries
        from fusion_billing_assets.sources.odoo import OdooClient

        bench = self
        search_read_all, search_read_in = OdooClient.search_read_all, OdooClient.search_read_in

        def counted_all(client, model, *args, **kwargs):
            before = client.stats.requests
            records = search_read_all(client, model, *args, **kwargs)
            bench.reads.append(
                {
                    "model": model,
                    "step": bench.step,
                    "values": None,
                    "rows": len(records),
                    "requests": client.stats.requests - before,
                }
            )
            return records

        def counted_in(client, model, name, values, *args, **kwargs):
            values = list(values)
            read = {"model": model, "step": bench.step, "values": len(set(values)), "rows": 0, "requests": 0}
            bench.reads.append(read)
            before = client.stats.requests
            for page in search_read_in(client, model, name, values, *args, **kwargs):
                read["rows"] += len(page)
                read["requests"] = client.stats.requests - before
                yield page
            read["requests"] = client.stats.requests - before

        OdooClient.search_read_all, OdooClient.search_read_in = counted_all, counted_in
        for module, name, label in (
            (nexacloud_queries, "fetch_deployment_states", "NexaCloud"),
            (odoo_queries, "fetch_account_links", "links"),
            (defs_lifecycle, "lifecycle_mapping", "mapping"),
            (odoo_queries, "fetch_subscription_states", "subscriptions"),
            (odoo_queries, "fetch_overdue_invoices", "overdue invoices"),
            (defs_lifecycle, "terminations", "terminations"),
            (odoo_queries, "fetch_lines_after", "lines after termination"),
            (defs_lifecycle, "classify", "classify"),
            (odoo_queries, "fetch_plan_fees", "plan fees"),
            (defs_lifecycle, "describe", "describe"),
        ):
            # Timed where judge_lifecycle looks it up; a step renamed since is left untimed.
            if callable(getattr(module, name, None)):
                setattr(module, name, self._timed(label, getattr(module, name)))

    def _timed(self, label: str, function):
        bench = self

        def timed(*args, **kwargs):
            started, outer = time.perf_counter(), bench.step
            bench.step = label
            try:
                return function(*args, **kwargs)
            finally:
                bench.step = outer
                bench.phases[label] = bench.phases.get(label, 0.0) + time.perf_counter() - started

        return timed

    def judge(self, state: str, repeat: int) -> dict:
        from fusion_billing_assets.billing.lifecycle import counts_by_kind
        from fusion_billing_assets.defs.lifecycle import judge_lifecycle

        runs = []
        _reset_peak(self.double_pid)
        for _ in range(max(1, repeat)):
            self.reads.clear()
            self.phases.clear()
            before = _reset_peak("self")
            started = time.perf_counter()
            judged, cost = judge_lifecycle(self.nexacloud, self.odoo, self.rules, self.as_of, None)
            seconds = time.perf_counter() - started
            runs.append(
                (
                    seconds,
                    _peak_rss_mib(),
                    before,
                    judged,
                    cost,
                    [dict(r) for r in self.reads],
                    dict(self.phases),
                )
            )
            print(
                f"      {state}: {len(judged):,} judged in {seconds:.2f} s, {cost['odoo_requests']} request(s)",
                flush=True,
            )
        best = min(runs, key=lambda run: run[0])
        seconds, _, _, judged, cost, reads, phases = best
        calls, rows_by_call = cost["odoo_calls"].value, cost["odoo_rows"].value
        page = self.odoo.page_size
        entries, bound_failures = {}, []
        for call in sorted(calls):
            model = call.rsplit(".", 1)[0]
            mine = [read for read in reads if read["model"] == model]
            in_lists = [read["values"] for read in mine if read["values"] is not None]
            reads_count = sum(1 for read in mine if read["values"] is None) + sum(
                math.ceil(values / page) for values in in_lists
            )
            rows = int(rows_by_call.get(call, 0))
            bound = math.ceil(rows / page) + reads_count
            entries[call] = {
                "requests": int(calls[call]),
                "rows": rows,
                "reads": reads_count,
                "in_values": sum(in_lists),
                "by_step": [
                    {key: read[key] for key in ("step", "values", "rows", "requests")} for read in mine
                ],
                "bound": bound,
                "within": calls[call] <= bound,
            }
            if calls[call] > bound:
                bound_failures.append(
                    f"{call}: {calls[call]} requests for {rows} rows, over the bound {bound}"
                )
        if cost["odoo_requests"] * DEPLOYMENTS_PER_REQUEST > len(judged):
            bound_failures.append(
                f"{cost['odoo_requests']} requests for {len(judged)} deployments: more than one per "
                f"{DEPLOYMENTS_PER_REQUEST}"
            )
        if len({(run[4]["odoo_requests"], len(run[3])) for run in runs}) > 1:
            bound_failures.append("the runs of one state made different requests or judged different rows")
        counts = counts_by_kind(judged)
        return {
            "state": state,
            "seconds": seconds,
            "runs_seconds": [run[0] for run in runs],
            "peak_mib": max(run[1] for run in runs),
            "rss_before_mib": runs[0][2],
            "double_peak_mib": _peak_mib(self.double_pid),
            "judged": len(judged),
            "deployments_in_nexacloud": cost["deployments_in_nexacloud"],
            "links_to_missing_subscriptions": cost["links_to_missing_subscriptions"],
            "counts_by_kind": counts,
            "drifts": sum(counts.get(kind, 0) for kind in DRIFT_KINDS),
            "odoo_requests": cost["odoo_requests"],
            "odoo_pages": cost["odoo_pages"],
            "page_size": page,
            "calls": entries,
            "phases": {name: round(s, 3) for name, s in phases.items()},
            "bound_failures": bound_failures,
            "judged_frame": judged,
        }

    # --- what must be found -------------------------------------------------------------------

    def ground_truth(self) -> dict:
        """From the manifest and the two databases, never from the classifier: the mapped
        deployments and the kind each case's deployment must read as."""
        from sqlalchemy import text

        with self.source.connect() as connection:
            deployments = {int(d) for (d,) in connection.execute(text("SELECT id FROM deployments"))}
        links, subscriptions = self._links()
        mapped = {d for d, s in links.items() if d in deployments and s in subscriptions}
        kinds = {int(case["deployment_id"]): case["kind"] for case in self.manifest["lifecycle"]["cases"]}
        return {"mapped": len(mapped), "kinds": kinds, "since": {}, "amounts": {}}

    def _links(self) -> tuple[dict[int, int], dict[int, tuple]]:
        """Each deployment's subscription (its first link, as the mapping keeps it), and every
        subscription's (state, end date)."""
        from sqlalchemy import text

        links: dict[int, int] = {}
        with self.store.connect() as connection:
            for name, res_id in connection.execute(
                text(
                    "SELECT name, res_id FROM ir_model_data WHERE module = 'nexacloud' "
                    "AND model = 'sale.order' AND name LIKE 'deployment\\_%' ORDER BY id"
                )
            ):
                links.setdefault(int(name.partition("_")[2]), int(res_id))
            subscriptions = {
                int(i): (state, end)
                for i, state, end in connection.execute(
                    text("SELECT id, subscription_state, end_date FROM sale_order")
                )
            }
        return links, subscriptions

    def with_injected(self, truth: dict, plan: Plan) -> dict:
        kinds = dict(truth["kinds"])
        since, amounts = {}, {}
        overdue_since = _midnight_after(plan.due + timedelta(days=GRACE_DAYS), self.rules.timezone)
        for deployment, cents in plan.overdue.values():
            kinds[deployment], since[deployment], amounts[deployment] = "not_suspended", overdue_since, cents
        for deployment, *_ in plan.paused.values():
            kinds[deployment], since[deployment] = "paused_but_running", self.as_of
        churned_since = _midnight_after(plan.end_date, self.rules.timezone)
        for deployment, *_ in plan.churned.values():
            kinds[deployment], since[deployment] = "not_deprovisioned", churned_since
        return {"mapped": truth["mapped"], "kinds": kinds, "since": since, "amounts": amounts}

    def expect(
        self, row: dict, truth: dict, plan: Plan | None = None, old: OldTermination | None = None
    ) -> list[str]:
        import pandas as pd

        judged = row["judged_frame"].set_index("deployment_id")
        failures = []
        if row["judged"] != truth["mapped"]:
            failures.append(f"judged {row['judged']:,} deployments, {truth['mapped']:,} are mapped")
        expected = Counter(kind for kind in truth["kinds"].values() if kind != "in_sync")
        found = {kind: count for kind, count in row["counts_by_kind"].items() if kind != "in_sync" and count}
        if found != dict(expected):
            failures.append(f"found {found}, expected {dict(expected)}")
        wrong = [
            f"{d}: {judged.at[d, 'kind'] if d in judged.index else 'not judged'} (expected {kind})"
            for d, kind in truth["kinds"].items()
            if d not in judged.index or judged.at[d, "kind"] != kind
        ]
        if wrong:
            failures.append(
                f"{len(wrong)} deployment(s) of another kind than expected: {', '.join(wrong[:10])}"
            )
        late = [
            d
            for d, moment in truth["since"].items()
            if d in judged.index and pd.Timestamp(judged.at[d, "since"]) != pd.Timestamp(moment)
        ]
        if late:
            failures.append(
                f"{len(late)} injected drift(s) with another since than expected, e.g. {late[:5]}"
            )
        off = [
            d
            for d, cents in truth["amounts"].items()
            if d in judged.index and int(judged.at[d, "amount_at_stake_cents"]) != cents
        ]
        if off:
            failures.append(
                f"{len(off)} overdue drift(s) with another amount at stake than owed, e.g. {off[:5]}"
            )
        if plan is not None:
            fee_priced = [d for d, *_ in (*plan.paused.values(), *plan.churned.values())]
            unpriced = [
                d for d in fee_priced if d in judged.index and int(judged.at[d, "amount_at_stake_cents"]) <= 0
            ]
            if unpriced:
                failures.append(
                    f"{len(unpriced)} paused or churned drift(s) without their plan fee, e.g. {unpriced[:5]}"
                )
        # Each list of subscriptions (ordered by termination day) is read from its own earliest
        # day: the old termination widens its own list's read only.
        if old is not None and not old.own_lines_after <= _lines_after(row) <= old.lines_after:
            failures.append(
                f"read {_lines_after(row):,} invoice lines after termination: not between the dated-back "
                f"subscription's own {old.own_lines_after:,} and the {old.lines_after:,} every terminated "
                "subscription holds after that day"
            )
        verdict = "as expected" if not failures else f"{len(failures)} expectation(s) failed"
        print(f"      {row['state']}: {verdict}", flush=True)
        return [f"{row['state']}: {failure}" for failure in failures]

    # --- the drifts written with SQL ----------------------------------------------------------

    def _cast(self) -> set[int]:
        """The customers of the sandbox's cast roles, delivery faults and lifecycle cases."""
        return {
            int(entry["customer_id"])
            for section in ("differences", "edge_cases", "delivery_faults")
            for entry in self.manifest.get(section) or []
            if entry.get("customer_id") is not None
        } | {int(case["customer_id"]) for case in self.manifest["lifecycle"]["cases"]}

    def plan_drifts(self, counts: dict[str, int], seed: int) -> Plan:
        """Plain customers (active, every deployment running on its own subscription in progress,
        in no cast role or case): some paused, some churned, some of the others' invoices overdue."""
        from sqlalchemy import text

        plan = Plan(
            due=self.today - timedelta(days=OVERDUE_DAYS),
            end_date=self.today - timedelta(days=CHURNED_DAYS_AGO),
        )
        links, subscriptions = self._links()
        taken = Counter(links.values())
        cast = self._cast()
        by_customer: dict[int, list[tuple[int, int | None]]] = {}
        with self.source.connect() as connection:
            for deployment, customer, status, terminated, customer_status in connection.execute(
                text(
                    "SELECT d.id, d.customer_id, d.status, d.terminated_at IS NOT NULL, c.status "
                    "FROM deployments d JOIN customers c ON c.id = d.customer_id ORDER BY d.id"
                )
            ):
                subscription = links.get(int(deployment))
                plain = (
                    status == "running"
                    and not terminated
                    and customer_status == "active"
                    and subscription is not None
                    and taken[subscription] == 1
                    and subscriptions.get(subscription, (None,))[0] == "3_progress"
                )
                by_customer.setdefault(int(customer), []).append(
                    (int(deployment), subscription if plain else None)
                )
        with self.store.connect() as connection:
            partner_of = {
                int(name.partition("_")[2]): int(res_id)
                for name, res_id in connection.execute(
                    text(
                        "SELECT name, res_id FROM ir_model_data WHERE module = 'nexacloud' "
                        "AND model = 'res.partner' AND name LIKE 'customer\\_%'"
                    )
                )
            }
        pool = sorted(
            customer
            for customer, deployments in by_customer.items()
            if customer not in cast and customer in partner_of and all(s is not None for _, s in deployments)
        )
        rng = random.Random(f"lifecycle-benchmark:{seed}")
        rng.shuffle(pool)
        needed = counts["paused"] + counts["churned"]
        if needed > len(pool):
            raise SystemExit(
                f"only {len(pool)} plain customers for {needed} paused and churned subscriptions"
            )
        for customer, target in zip(
            pool[:needed], ["paused"] * counts["paused"] + ["churned"] * counts["churned"], strict=True
        ):
            deployment, subscription = rng.choice(by_customer[customer])
            state, end = subscriptions[subscription]
            getattr(plan, target)[subscription] = (deployment, state, end)
        rest = {partner_of[c]: c for c in pool[needed:]}
        subscription_of_customer = {c: {s: d for d, s in by_customer[c]} for c in rest.values()}
        with self.store.connect() as connection:
            moves: dict[int, dict[int, int]] = {}
            for move, partner, subscription, cents in connection.execute(
                text(
                    "SELECT m.id, m.partner_id, l.subscription_id, round(sum(l.price_total) * 100) "
                    "FROM account_move m JOIN account_move_line l ON l.move_id = m.id "
                    "WHERE m.move_type = 'out_invoice' AND m.state = 'posted' AND m.partner_id = ANY(:partners) "
                    "AND l.display_type = 'product' AND l.subscription_id IS NOT NULL "
                    "GROUP BY m.id, m.partner_id, l.subscription_id ORDER BY m.id, l.subscription_id"
                ),
                {"partners": sorted(rest)},
            ):
                moves.setdefault(int(move), {})[int(subscription)] = (
                    int(cents) if int(subscription) in subscription_of_customer[rest[int(partner)]] else None
                )
            # Only invoices whose every line bills one of their customer's own subscriptions.
            eligible = sorted(m for m, owed in moves.items() if all(c is not None for c in owed.values()))
            if counts["overdue_invoices"] > len(eligible):
                raise SystemExit(
                    f"only {len(eligible)} invoices of plain customers for {counts['overdue_invoices']}"
                )
            chosen = sorted(rng.sample(eligible, counts["overdue_invoices"]))
            for move, state, residual, due in connection.execute(
                text(
                    "SELECT id, payment_state, amount_residual, invoice_date_due FROM account_move WHERE id = ANY(:ids)"
                ),
                {"ids": chosen},
            ):
                plan.invoices[int(move)] = (state, residual, due)
        deployment_of = {s: d for c in subscription_of_customer.values() for s, d in c.items()}
        for move in chosen:
            for subscription, cents in moves[move].items():
                deployment, owed = plan.overdue.get(subscription, (deployment_of[subscription], 0))
                plan.overdue[subscription] = (deployment, owed + cents)
        return plan

    def inject(self, plan: Plan) -> None:
        from sqlalchemy import text

        with self.store.begin() as connection:
            connection.execute(
                text(
                    "UPDATE account_move SET payment_state = 'not_paid', amount_residual = amount_total, "
                    "invoice_date_due = :due WHERE id = ANY(:ids)"
                ),
                {"due": plan.due, "ids": sorted(plan.invoices)},
            )
            connection.execute(
                text("UPDATE sale_order SET subscription_state = '4_paused' WHERE id = ANY(:ids)"),
                {"ids": sorted(plan.paused)},
            )
            connection.execute(
                text(
                    "UPDATE sale_order SET subscription_state = '6_churn', end_date = :end WHERE id = ANY(:ids)"
                ),
                {"end": plan.end_date, "ids": sorted(plan.churned)},
            )

    def plan_old_termination(self, seed: int) -> OldTermination:
        """A terminated deployment of a plain customer, on a churned subscription of its own that
        invoice lines bill, its termination moved to noon (local) 15 days before the first period."""
        from zoneinfo import ZoneInfo

        from sqlalchemy import text

        links, subscriptions = self._links()
        taken = Counter(links.values())
        first_period = date.fromisoformat(self.manifest["periods"][0]["period"])
        moment = datetime.combine(
            first_period - timedelta(days=15),
            datetime.min.time().replace(hour=12),
            ZoneInfo(self.rules.timezone),
        ).astimezone(UTC)
        with self.source.connect() as connection:
            ended = {
                int(d): (int(c), at)
                for d, c, at in connection.execute(
                    text(
                        "SELECT d.id, d.customer_id, d.terminated_at FROM deployments d "
                        "JOIN customers c ON c.id = d.customer_id "
                        "WHERE d.terminated_at IS NOT NULL AND d.status = 'terminated' AND c.status = 'active'"
                    )
                )
            }
            every_ended = [
                int(d)
                for (d,) in connection.execute(
                    text("SELECT id FROM deployments WHERE terminated_at IS NOT NULL")
                )
            ]
        cast = self._cast()
        candidates = sorted(
            d
            for d, (customer, _) in ended.items()
            if customer not in cast
            and d in links
            and taken[links[d]] == 1
            and subscriptions.get(links[d], (None,))[0] == "6_churn"
        )
        day = _local_day(moment, self.rules.timezone)
        later = (
            "FROM account_move_line l JOIN account_move m ON m.id = l.move_id "
            "WHERE l.display_type = 'product' AND m.move_type = 'out_invoice' AND m.state != 'cancel' "
            "AND (l.deferred_start_date > :day OR (l.deferred_start_date IS NULL AND m.invoice_date > :day)) "
            "AND l.subscription_id = ANY(:subscriptions)"
        )
        with self.store.connect() as connection:
            billed = {
                int(subscription): int(cents)
                for subscription, cents in connection.execute(
                    text(f"SELECT l.subscription_id, round(sum(l.price_total) * 100) {later} GROUP BY 1"),
                    {"day": day, "subscriptions": [links[d] for d in candidates]},
                )
            }
            candidates = [d for d in candidates if billed.get(links[d], 0) > 0]
            if not candidates:
                raise SystemExit(
                    "no terminated deployment of a plain customer with invoice lines to date back"
                )
            chosen = random.Random(f"lifecycle-benchmark-termination:{seed}").choice(candidates)
            # The earliest termination is now the chosen one's: every terminated deployment's
            # subscription has its lines after that day read.
            lines_after = connection.execute(
                text(f"SELECT count(*) {later}"),
                {"day": day, "subscriptions": sorted({links[d] for d in every_ended if d in links})},
            ).scalar_one()
            own_lines_after = connection.execute(
                text(f"SELECT count(*) {later}"), {"day": day, "subscriptions": [links[chosen]]}
            ).scalar_one()
        return OldTermination(
            deployment_id=chosen,
            was=ended[chosen][1],
            moment=moment,
            billed_after_cents=billed[links[chosen]],
            lines_after=int(lines_after),
            own_lines_after=int(own_lines_after),
        )

    def terminate_at(self, deployment_id: int, moment: datetime) -> None:
        from sqlalchemy import text

        with self.source.begin() as connection:
            connection.execute(
                text("UPDATE deployments SET terminated_at = :at WHERE id = :id"),
                {"at": moment, "id": deployment_id},
            )

    def with_old_termination(self, truth: dict, old: OldTermination) -> dict:
        return {
            "mapped": truth["mapped"],
            "kinds": {**truth["kinds"], old.deployment_id: "billed_after_termination"},
            "since": {old.deployment_id: old.moment},
            "amounts": {old.deployment_id: old.billed_after_cents},
        }

    def restore(self, plan: Plan) -> None:
        """Every record written back as it was, so the world can be judged again (``--reuse``)."""
        from sqlalchemy import text

        with self.store.begin() as connection:
            if plan.invoices:
                connection.execute(
                    text(
                        "UPDATE account_move SET payment_state = :state, amount_residual = :residual, "
                        "invoice_date_due = :due WHERE id = :id"
                    ),
                    [
                        {"id": move, "state": state, "residual": residual, "due": due}
                        for move, (state, residual, due) in plan.invoices.items()
                    ],
                )
            originals = [*plan.paused.items(), *plan.churned.items()]
            if originals:
                connection.execute(
                    text("UPDATE sale_order SET subscription_state = :state, end_date = :end WHERE id = :id"),
                    [{"id": s, "state": state, "end": end} for s, (_, state, end) in originals],
                )
        print("      the Odoo store put back as generated", flush=True)


def _local_day(moment, timezone: str) -> date:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(timezone)).date()


def _midnight_after(day: date, timezone: str) -> datetime:
    from datetime import time as clock
    from zoneinfo import ZoneInfo

    return datetime.combine(day + timedelta(days=1), clock(), tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def _reset_peak(pid: int | str) -> int:
    """Reset a process's peak resident memory (Linux ``clear_refs``); return its resident now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_mib("VmRSS", pid)


def _peak_rss_mib() -> int:
    return _status_mib("VmHWM", "self")


def _status_mib(field: str, pid: int | str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) // 1024 if match else 0


if __name__ == "__main__":
    sys.exit(main())
