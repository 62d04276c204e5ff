"""Benchmark of the usage delivery check: what proving delivery record by record costs Odoo.

    python benchmarks/usage_delivery.py --customers 1000     # about 2,000 deployments
    python benchmarks/usage_delivery.py --customers 10000    # about 20,000 deployments

Generates (or, with ``--reuse``, takes) a sandbox world in the local PostgreSQL — the same worlds
``reconcile_period.py`` makes — serves its Odoo test double on a port of its own (writable), and
times ``billing/usage_delivery``'s work for the latest closed period, in this process, in four
states of the ledger:

1. as generated, with the sandbox's injected delivery faults;
2. with every gap put right (missing records pushed to ``/usage`` with their keys, the other kinds
   corrected in the store): no gap, so only the group pages should be read;
3. and 4. with one ledger record deleted in each of 10, then 100, random (subscription, day)
   segments: the records read must grow with those segments, not with the period.

For each it prints the seconds, the Odoo requests per method, the records read on each side and
the gaps found, checks those expectations and exits non-zero when one fails.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from datetime import UTC, date
from pathlib import Path

from reconcile_period import (
    PRESETS,
    _database_exists,
    _database_url,
    _drop_database,
    _free_port,
    _generate,
    _machine,
    _serve_odoo,
    _wait_for_http,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--usage-window-minutes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="keep a world generated before with this scale")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work folder")
    args = parser.parse_args()
    preset = {**PRESETS["S"], "customers": args.customers, "usage_window_minutes": args.usage_window_minutes}
    tag = f"delivery_{args.customers}_{args.usage_window_minutes}_{args.seed}"
    work = Path(f"/tmp/fusion-benchmark-{tag}")
    urls = {name: _database_url(f"fusion_bench_{tag}_{name}") for name in ("nexacloud", "odoo", "warehouse")}
    print(f"machine: {_machine()}")
    if args.reuse and (work / "sandbox" / "manifest.json").is_file() and _database_exists(urls["odoo"]):
        print(f"[1/4] reusing the world in {work / 'sandbox'}", flush=True)
    else:
        _generate(work, urls, preset, args.seed)
    manifest = json.loads((work / "sandbox" / "manifest.json").read_text())
    period = [p["period"] for p in manifest["periods"] if p["closed"]][-1]

    port = _free_port()
    print(f"[2/4] serving the Odoo test double (writable) from PostgreSQL on 127.0.0.1:{port}", flush=True)
    double = _serve_odoo(urls["odoo"], port, writable=True)
    failures: list[str] = []
    rows = []
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/web/version", double)
        bench = Bench(urls, f"http://127.0.0.1:{port}", period)
        print(f"[3/4] the delivery check of {period}, four states of the ledger", flush=True)
        generated = bench.check("as generated (injected faults)")
        rows.append(generated)
        expected = {kind: 0 for kind in generated["counts_by_kind"]}
        for fault in manifest.get("delivery_faults", []):
            if fault["period"] == period:
                expected[fault["kind"]] += 1
        if manifest.get("delivery_faults") is not None and generated["counts_by_kind"] != expected:
            failures.append(
                f"as generated: found {generated['counts_by_kind']}, the ground truth says {expected}"
            )
        bench.put_right(generated["gaps"])
        clean = bench.check("every gap put right")
        rows.append(clean)
        if clean["gap_count"]:
            failures.append(f"after putting every gap right, {clean['gap_count']} gap(s) remain")
        if clean["ledger_records_read"] or clean["nexacloud_records_read"]:
            failures.append("a period without gaps read records, not only groups")
        for segments in (10, 100):
            bench.lose_one_record_in(segments)
            gappy = bench.check(f"one record lost in each of {segments} segments")
            rows.append(gappy)
            if gappy["counts_by_kind"]["missing"] != segments or gappy["segments_that_disagree"] != segments:
                failures.append(f"{segments} gappy segments: found {gappy['counts_by_kind']}")
            bench.put_right(gappy["gaps"])
    finally:
        double.terminate()
        double.wait(timeout=30)
    print("[4/4] figures")
    print(f"{'state':44} {'seconds':>8} {'requests':>9} {'groups':>8} {'nc read':>8} {'odoo read':>9}  gaps")
    for row in rows:
        print(
            f"{row['state']:44} {row['seconds']:8.2f} {row['odoo_requests']:9} {row['ledger_segments']:8,} "
            f"{row['nexacloud_records_read']:8,} {row['ledger_records_read']:9,}  {row['gap_count']}"
        )
        print(f"{'':44} requests per method: {json.dumps(row['odoo_calls'])}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    deployments = rows[0]["deployments"]
    print(
        f"Summary: {args.customers:,} customers, {deployments:,} mapped deployments, period {period}; "
        f"a clean period took {rows[1]['seconds']:.1f} s and {rows[1]['odoo_requests']} Odoo request(s); "
        f"peak memory of this process {peak} MiB."
    )
    (work / "delivery_figures.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "gaps"} for r in rows], indent=1, default=str)
    )
    for failure in failures:
        print(f"FAILED: {failure}")
    if not args.keep:
        for url in urls.values():
            _drop_database(url)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        print("(databases and work folder dropped; --keep keeps them)")
    return 1 if failures else 0


class Bench:
    """The delivery check's work against the served double, and edits of its ledger."""

    def __init__(self, urls: dict[str, str], odoo_url: str, period: str):
        from sqlalchemy import create_engine

        from fusion_billing_assets.defs.resources import NexaCloudDatabase, OdooAPI, OdooUsageEndpoint
        from fusion_billing_assets.sandbox.odoo_models import (
            SANDBOX_API_KEY,
            SANDBOX_DATABASE,
            SANDBOX_METERING_API_KEY,
        )

        self.urls, self.period = urls, period
        self.nexacloud = NexaCloudDatabase(url=urls["nexacloud"])
        self.odoo = OdooAPI(url=odoo_url, database=SANDBOX_DATABASE, api_key=SANDBOX_API_KEY, page_size=500)
        self.usage = OdooUsageEndpoint(
            url=odoo_url, database=SANDBOX_DATABASE, api_key=SANDBOX_METERING_API_KEY
        )
        self.store = create_engine(urls["odoo"])
        self.mapping = self._mapping()
        self.random = random.Random(7)

    def _mapping(self):
        from fusion_billing_assets.defs.odoo import MODELS
        from fusion_billing_assets.sources.odoo_frames import fetch_account_links

        with self.odoo.get_client() as client:
            links = fetch_account_links(client, MODELS)
        return links[["link_kind", "nexacloud_id", "odoo_id"]]

    def check(self, state: str) -> dict:
        from fusion_billing_assets.billing.delivery import counts_by_kind
        from fusion_billing_assets.defs.delivery import find_gaps
        from fusion_billing_assets.partitions import window_of

        started = time.monotonic()
        gaps, cost = find_gaps(window_of(self.period), self.nexacloud, self.odoo, self.mapping)
        seconds = time.monotonic() - started
        row = {
            "state": state,
            "seconds": seconds,
            "gap_count": len(gaps),
            "counts_by_kind": counts_by_kind(gaps),
            "odoo_requests": cost["odoo_requests"],
            "odoo_calls": cost["odoo_calls"].value,
            "ledger_segments": cost["ledger_segments"],
            "segments_that_disagree": cost["segments_that_disagree"],
            "nexacloud_records_read": cost["nexacloud_records_read"],
            "ledger_records_read": cost["ledger_records_read"],
            "deployments": int((self.mapping["link_kind"] == "deployment").sum()),
            "gaps": gaps,
        }
        print(
            f"      {state}: {len(gaps)} gap(s) in {seconds:.2f} s, {cost['odoo_requests']} request(s)",
            flush=True,
        )
        return row

    def put_right(self, gaps) -> None:
        """Missing records pushed with their keys; every other kind corrected in the store."""
        from sqlalchemy import text

        from fusion_billing_assets.defs.usage_repair import push_records
        from fusion_billing_assets.sources import nexacloud as queries
        from fusion_billing_assets.sources.odoo_usage import batches

        missing = gaps[gaps["kind"] == "missing"]
        with self.nexacloud.get_connection() as connection:
            sources = queries.fetch_usage_by_keys(connection, missing["idempotency_key"])
        with self.usage.get_pusher() as pusher:
            for batch in batches(push_records(missing, sources)):
                pusher.push(batch)
        with self.store.begin() as connection:
            for gap in gaps.itertuples():
                if gap.kind in ("extra", "wrong_subscription"):
                    connection.execute(
                        text(
                            "DELETE FROM fusion_billing_usage WHERE idempotency_key = :key AND subscription_id = :sub"
                        ),
                        {"key": gap.idempotency_key, "sub": int(gap.subscription_id)},
                    )
                elif gap.kind == "quantity_differs":
                    connection.execute(
                        text("UPDATE fusion_billing_usage SET quantity = :q WHERE idempotency_key = :key"),
                        {"q": int(gap.nexacloud_cpu_milliseconds) / 1000, "key": gap.idempotency_key},
                    )
        wrong = gaps[gaps["kind"] == "wrong_subscription"]
        if len(wrong):
            moved = wrong.assign(subscription_id=self._mapped(wrong["deployment_id"]))
            with self.nexacloud.get_connection() as connection:
                sources = queries.fetch_usage_by_keys(connection, moved["idempotency_key"])
            with self.usage.get_pusher() as pusher:
                for batch in batches(push_records(moved, sources)):
                    pusher.push(batch)

    def _mapped(self, deployments):
        links = self.mapping[self.mapping["link_kind"] == "deployment"]
        subscription_of = dict(
            zip(links["nexacloud_id"].astype(int), links["odoo_id"].astype(int), strict=True)
        )
        return [subscription_of[int(d)] for d in deployments]

    def lose_one_record_in(self, segments: int) -> None:
        """Delete one ledger record in each of ``segments`` random (subscription, local day) segments."""
        from sqlalchemy import text

        from fusion_billing_assets.billing.periods import local_day
        from fusion_billing_assets.partitions import window_of

        window = window_of(self.period)
        start, end = window.start_utc.replace(tzinfo=None), window.end_utc.replace(tzinfo=None)
        with self.store.begin() as connection:
            candidates = connection.execute(
                text(
                    "SELECT id, subscription_id, timestamp FROM fusion_billing_usage "
                    "WHERE timestamp >= :start AND timestamp < :end ORDER BY random() LIMIT :n"
                ),
                {"start": start, "end": end, "n": segments * 20},
            ).all()
            chosen: dict[tuple[int, date], int] = {}
            for record_id, subscription, moment in candidates:
                segment = (subscription, local_day(moment.replace(tzinfo=UTC), window.timezone))
                chosen.setdefault(segment, record_id)
                if len(chosen) == segments:
                    break
            connection.execute(
                text("DELETE FROM fusion_billing_usage WHERE id = ANY(:ids)"), {"ids": list(chosen.values())}
            )


if __name__ == "__main__":
    sys.exit(main())
