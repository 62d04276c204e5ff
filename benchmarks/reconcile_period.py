"""How long one billing period takes at the size of a real customer base, against its floors and peers.

One command, one preset (S: 1,000 customers / ~2,000 deployments; M: 10,000 / ~20,000; L:
50,000 / ~100,000, optional):

    python3 -m uv run --locked python benchmarks/reconcile_period.py --preset S

1. generates the sandbox world into the local PostgreSQL (NexaCloud's database and the Odoo test
   double's store, one database each; ``--reuse`` keeps a world generated before with the same
   preset and seed);
2. serves the Odoo test double from PostgreSQL over HTTP, in a process of its own;
3. materializes the latest closed period through ``dagster asset materialize`` with the selection
   of the job the UI launches (``reconcile_billing_period``), on the production resources (the
   code location reads NexaCloud's PostgreSQL and calls the served Odoo over HTTP) — a process of
   its own whose peak memory is measured apart from the test double's;
4. runs the same steps again called directly (each asset's function, in a process of its own,
   without Dagster's executor, event log or IO manager) — the difference is Dagster's overhead;
5. measures the references on the same data in the same run: the bare SQL aggregate of the
   period's usage (the floor for the NexaCloud leg), ``datacompy`` comparing the same per-customer
   frames (the peer for the diff and classification) and pandas ``DataFrame.to_sql`` writing the
   same result rows (the peer for the warehouse write).

It prints, per step, wall time, rows, rows/s and Odoo requests and pages, then the references as
ratios against the targets of docs/benchmarks.md, and writes every figure to
``<work>/figures.json``. Everything it creates is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

PRESETS = {
    "S": {"customers": 1_000, "periods": 2},
    "M": {"customers": 10_000, "periods": 2},
    "L": {"customers": 50_000, "periods": 2},
}
ADMIN_URL = os.environ.get("FUSION_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TIMEZONE = "America/Toronto"
# Targets (docs/benchmarks.md): what each ratio must stay within.
TARGETS = {
    "nexacloud_usage_vs_sql_floor": ("≤", 1.3),
    "datacompy_vs_reconcile": ("≥", 5.0),
    "to_sql_vs_warehouse_write": ("≥", 5.0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="S")
    parser.add_argument("--customers", type=int, help="override the preset's customer count")
    parser.add_argument(
        "--usage-window-minutes",
        type=int,
        default=60,
        help="metering window (default 60): 15 meters four times the records for the same deployments",
    )
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--work", type=Path, help="work folder (default /tmp/fusion-benchmark-<preset>)")
    parser.add_argument("--reuse", action="store_true", help="keep a world generated before with this preset")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work folder")
    parser.add_argument("--direct", type=Path, help=argparse.SUPPRESS)  # the child of step 4
    args = parser.parse_args()
    if args.direct:
        return _direct_child(args.direct)

    preset = dict(PRESETS[args.preset])
    if args.customers:
        preset["customers"] = args.customers
    preset["usage_window_minutes"] = args.usage_window_minutes
    tag = f"{args.preset.lower()}_{preset['customers']}_{args.usage_window_minutes}_{args.seed}"
    work = args.work or Path(f"/tmp/fusion-benchmark-{tag}")
    urls = {name: _database_url(f"fusion_bench_{tag}_{name}") for name in ("nexacloud", "odoo", "warehouse")}
    figures: dict[str, Any] = {
        "preset": args.preset,
        "scale": preset,
        "machine": _machine(),
        "started_at": _now(),
    }
    started = time.monotonic()

    generated = work / "sandbox" / "manifest.json"
    if args.reuse and generated.is_file() and _database_exists(urls["odoo"]):
        print(f"[1/5] reusing the world generated in {work / 'sandbox'}", flush=True)
        figures["generation"] = json.loads((work / "generation.json").read_text())
    else:
        figures["generation"] = _generate(work, urls, preset, args.seed)
    manifest = json.loads(generated.read_text())
    period = [p["period"] for p in manifest["periods"] if p["closed"]][-1]
    figures["period"] = period

    _recreate_database(urls["warehouse"])
    _warm_up(urls)
    port = _free_port()
    print(f"[2/5] serving the Odoo test double from PostgreSQL on 127.0.0.1:{port}", flush=True)
    odoo = _serve_odoo(urls["odoo"], port)
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/web/version", odoo)
        env = _code_location_env(work, urls, port)
        figures["dagster"] = _dagster_run(work, env, period)
        figures["odoo_double_peak_mib_after_dagster_run"] = _peak_mib(odoo.pid)
        figures["direct"] = _direct_run(work, env, period)
        figures["odoo_double_peak_mib"] = _peak_mib(odoo.pid)
    finally:
        odoo.terminate()
        odoo.wait(timeout=30)
    figures["references"] = _references(work, urls, period, figures)
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    (work / "figures.json").write_text(json.dumps(figures, indent=1, default=str) + "\n")
    _print_figures(figures)
    if not args.keep:
        for url in urls.values():
            _drop_database(url)
        shutil.rmtree(work, ignore_errors=True)
        print("(databases and work folder dropped; --keep keeps them)")
    else:
        print(f"figures: {work / 'figures.json'}")
    return 0 if figures["dagster"]["success"] else 1


# --- 1. generation ------------------------------------------------------------------------------


def _generate(work: Path, urls: dict[str, str], preset: dict, seed: int) -> dict:
    print(
        f"[1/5] generating {preset['customers']:,} customers, {preset['periods']} periods into PostgreSQL",
        flush=True,
    )
    shutil.rmtree(work, ignore_errors=True)
    (work / "sandbox").mkdir(parents=True)
    for name in ("nexacloud", "odoo"):
        _recreate_database(urls[name])
    end_period = datetime.now(UTC).date().replace(day=1).isoformat()
    command = [
        sys.executable,
        "-m",
        "fusion_billing_assets.sandbox",
        "generate",
        "--out",
        str(work / "sandbox"),
        "--nexacloud-url",
        urls["nexacloud"],
        "--odoo-url",
        urls["odoo"],
        "--seed",
        str(seed),
        "--customers",
        str(preset["customers"]),
        "--periods",
        str(preset["periods"]),
        "--usage-window-minutes",
        str(preset["usage_window_minutes"]),
        "--end-period",
        end_period,
        "--timezone",
        TIMEZONE,
    ]
    seconds, peak, code = _measured(command, prefix="      ")
    if code:
        raise SystemExit(f"generation failed (exit {code})")
    figures = {"seconds": round(seconds, 1), "peak_mib": peak}
    (work / "generation.json").write_text(json.dumps(figures))
    return figures


def _warm_up(urls: dict[str, str]) -> None:
    """Read both usage tables once, so every run below starts from the same warm cache."""
    from sqlalchemy import create_engine, text

    for name, table in (("nexacloud", "usage_records"), ("odoo", "fusion_billing_usage")):
        engine = create_engine(urls[name])
        try:
            with engine.connect() as connection:
                connection.execute(text(f"SELECT count(*), sum(quantity) FROM {table}")).one()
        finally:
            engine.dispose()


# --- 3. the run through Dagster ---------------------------------------------------------------------


def _code_location_env(work: Path, urls: dict[str, str], port: int) -> dict[str, str]:
    from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE, SANDBOX_LOGIN
    from fusion_billing_assets.sandbox.scenarios import TOLERANCE_CENTS

    home = work / "dagster_home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "NEXACLOUD_DATABASE_URL": urls["nexacloud"],
        "ODOO_URL": f"http://127.0.0.1:{port}",
        "ODOO_DATABASE": SANDBOX_DATABASE,
        "ODOO_LOGIN": SANDBOX_LOGIN,
        "ODOO_API_KEY": SANDBOX_API_KEY,
        "BILLING_WAREHOUSE_URL": urls["warehouse"],
        "BILLING_TIMEZONE": TIMEZONE,
        "BILLING_TOLERANCE_CENTS": str(TOLERANCE_CENTS),
        "BILLING_WAIVERS_FILE": str(work / "sandbox" / "waivers.csv"),
    }


def _dagster_run(work: Path, env: dict[str, str], period: str) -> dict:
    print(
        f"[3/5] materializing {period} through `dagster asset materialize` (job reconcile_billing_period)",
        flush=True,
    )
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "fusion_billing_assets.definitions",
        "--select",
        _job_selection(),
        "--partition",
        period,
    ]
    seconds, peak, code = _measured(command, env=env, quiet=True, log=work / "dagster_run.log")
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    from dagster import DagsterEventType, DagsterInstance

    instance = DagsterInstance.get()
    (run,) = instance.get_runs(limit=1)
    steps = _steps_of(instance, run.run_id, DagsterEventType)
    run_stats = instance.get_run_stats(run.run_id)
    return {
        "success": code == 0,
        "process_seconds": round(seconds, 2),
        "run_seconds": round((run_stats.end_time or 0) - (run_stats.start_time or 0), 2),
        "peak_mib": peak,
        "steps": steps,
        "odoo_requests_per_call": _odoo_requests_per_call(steps),
    }


def _job_selection() -> str:
    from fusion_billing_assets.definitions import billing_period_job_name, defs

    job = defs.resolve_job_def(billing_period_job_name)
    keys = sorted(key.to_user_string() for key in job.asset_layer.executable_asset_keys)
    return ",".join(keys)


def _steps_of(instance, run_id: str, event_types) -> dict[str, dict]:
    started: dict[str, float] = {}
    steps: dict[str, dict] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        step = steps.setdefault(event.step_key, {"rows": 0, "odoo_requests": 0, "odoo_pages": 0})
        if event.event_type == event_types.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type in (event_types.STEP_SUCCESS, event_types.STEP_FAILURE):
            step["seconds"] = round(record.timestamp - started.get(event.step_key, record.timestamp), 3)
            step["failed"] = event.event_type == event_types.STEP_FAILURE
        elif event.event_type == event_types.ASSET_MATERIALIZATION:
            metadata = event.event_specific_data.materialization.metadata
            for name, key in (
                ("rows", "dagster/row_count"),
                ("odoo_requests", "odoo_requests"),
                ("odoo_pages", "odoo_pages"),
            ):
                if key in metadata:
                    step[name] += int(metadata[key].value)
            # A multi-asset repeats its step's cost on each of its assets: count it once.
            for name in ("odoo_calls", "odoo_rows"):
                if name in metadata and name not in step:
                    step[name] = dict(metadata[name].value)
    return steps


def _odoo_requests_per_call(steps: dict[str, dict]) -> dict[str, dict]:
    """Per Odoo ``model.method``: requests, rows received, and the bound ⌈rows / page size⌉ + 2."""
    from fusion_billing_assets.sources.odoo import DEFAULT_PAGE_SIZE, GROUP_PAGE_SIZE

    calls: dict[str, dict] = {}
    for step in steps.values():
        for call, requests in step.get("odoo_calls", {}).items():
            entry = calls.setdefault(call, {"requests": 0, "rows": 0})
            entry["requests"] += requests
            entry["rows"] += step.get("odoo_rows", {}).get(call, 0)
    for call, entry in calls.items():
        page = GROUP_PAGE_SIZE if call.endswith("read_group") else DEFAULT_PAGE_SIZE
        entry["bound"] = -(-entry["rows"] // page) + 2
        entry["within"] = entry["requests"] <= entry["bound"]
    return dict(sorted(calls.items()))


# --- 4. the same steps called directly ----------------------------------------------------------------


def _direct_run(work: Path, env: dict[str, str], period: str) -> dict:
    print(
        "[4/5] the same steps called directly, without Dagster's executor, event log or IO manager",
        flush=True,
    )
    request = work / "direct.json"
    request.write_text(json.dumps({"period": period, "frames": str(work / "direct_frames.pickle")}))
    env = {**env, "DAGSTER_HOME": str(work / "dagster_home_direct")}
    Path(env["DAGSTER_HOME"]).mkdir(exist_ok=True)
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    seconds, peak, code = _measured(
        [sys.executable, __file__, "--direct", str(request)], env=env, quiet=True, log=work / "direct.log"
    )
    if code:
        raise SystemExit(f"the direct run failed (exit {code}); see {work / 'direct.log'}")
    figures = json.loads((work / "direct_figures.json").read_text())
    figures.update(process_seconds=round(seconds, 2), peak_mib=peak)
    return figures


def _direct_child(request_path: Path) -> int:
    """Each asset of the job, in dependency order, called as a plain function on its inputs."""
    import pickle

    from dagster import AssetCheckResult, MaterializeResult, Output, build_asset_context

    import fusion_billing_assets.defs.reconciliation as reconciliation_module
    from fusion_billing_assets.definitions import billing_period_job_name, defs

    request = json.loads(request_path.read_text())
    period = request["period"]
    timings: dict[str, float] = {}
    captured: dict[str, Any] = {}

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            result = function(*args, **kwargs)
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
            captured[name] = (args, kwargs, result)
            return result

        return wrapper

    # The pieces the references are measured against, timed where the asset calls them.
    for name in ("reconcile", "replace_period", "record_run"):
        setattr(reconciliation_module, name, timed(name, getattr(reconciliation_module, name)))

    job = defs.resolve_job_def(billing_period_job_name)
    graph = defs.resolve_asset_graph()
    selected = set(job.asset_layer.executable_asset_keys)
    resources = defs.resources
    values: dict[Any, Any] = {}
    steps: dict[str, dict] = {}
    done: set = set()
    for key in graph.toposorted_asset_keys:
        if key not in selected or key in done:
            continue
        assets_def = graph.get(key).assets_def
        done.update(assets_def.keys)
        inputs = {name: values[input_key] for name, input_key in assets_def.keys_by_input_name.items()}
        # The asset's own function, as the executor calls it, minus the executor.
        compute = assets_def.op.compute_fn.decorated_fn
        parameters = inspect.signature(compute).parameters
        needed = {name: resource for name, resource in resources.items() if name in parameters}
        # The context resolves the resources' configuration (EnvVar fields) as a run would.
        with build_asset_context(partition_key=period, resources=needed) as context:
            initialized = {name: getattr(context.resources, name) for name in needed}
            started = time.perf_counter()
            outcome = compute(_DirectContext(context), **inputs, **initialized)
            produced = list(outcome) if not isinstance(outcome, Output | MaterializeResult) else [outcome]
            seconds = time.perf_counter() - started
        rows = 0
        for item in produced:
            if isinstance(item, Output):
                output_key = assets_def.keys_by_output_name[item.output_name]
                values[output_key] = item.value
                rows += len(item.value) if hasattr(item.value, "__len__") else 0
            elif isinstance(item, AssetCheckResult | MaterializeResult):
                continue
        steps[assets_def.op.name] = {"seconds": round(seconds, 3), "rows": rows}
    with open(request["frames"], "wb") as frames:
        args, kwargs, (results, lines) = captured["reconcile"]
        pickle.dump({"results": results, "lines": lines, "inputs": args, "kwargs": kwargs}, frames)
    figures = {"steps": steps, "functions": {name: round(s, 3) for name, s in timings.items()}}
    (request_path.parent / "direct_figures.json").write_text(json.dumps(figures))
    return 0


class _DirectContext:
    """The asset's context as direct invocation builds it, plus the run id a real run would give."""

    run = SimpleNamespace(run_id=f"direct-{uuid.uuid4()}", tags={})

    def __init__(self, context):
        self._context = context

    def __getattr__(self, name: str):
        return getattr(self._context, name)


# --- 5. references ----------------------------------------------------------------------------------


def _references(work: Path, urls: dict[str, str], period: str, figures: dict) -> dict:
    import pickle

    from datacompy.core import Compare
    from sqlalchemy import create_engine, text

    from fusion_billing_assets.billing.periods import period_window
    from fusion_billing_assets.warehouse import ensure_tables, replace_period

    print("[5/5] references on the same data: bare SQL aggregate, datacompy, DataFrame.to_sql", flush=True)
    window = period_window(period, TIMEZONE)
    references: dict[str, Any] = {}

    engine = create_engine(urls["nexacloud"])
    try:
        with engine.connect() as connection:
            query = text(
                "SELECT deployment_id, count(*), sum(quantity) FROM usage_records "
                "WHERE metric = 'cpu_seconds' AND window_start >= :start AND window_start < :end "
                "GROUP BY deployment_id"
            )
            best = float("inf")
            for _ in range(2):  # the first warms the cache as the run before it did
                started = time.perf_counter()
                rows = connection.execute(query, {"start": window.start_utc, "end": window.end_utc}).all()
                best = min(best, time.perf_counter() - started)
            usage_records = connection.execute(
                text(
                    "SELECT count(*) FROM usage_records WHERE window_start >= :start AND window_start < :end"
                ),
                {"start": window.start_utc, "end": window.end_utc},
            ).scalar_one()
    finally:
        engine.dispose()
    references["sql_usage_aggregate_seconds"] = round(best, 3)
    references["usage_records_in_period"] = int(usage_records)
    references["deployments_with_usage"] = len(rows)
    usage_step = figures["direct"]["steps"].get("nexacloud__usage", {}).get("seconds")
    references["nexacloud_usage_vs_sql_floor"] = _ratio(usage_step, best)

    frames = pickle.loads((work / "direct_frames.pickle").read_bytes())
    results, lines = frames["results"], frames["lines"]
    sides = {}
    for side in ("nexacloud", "odoo"):
        columns = [c for c in results.columns if c.startswith(f"{side}_")]
        sides[side] = results[["customer_id", *columns]].rename(
            columns=lambda c, s=side: c.removeprefix(f"{s}_")
        )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # datacompy's own pandas warnings, not ours
        comparison = Compare(
            sides["nexacloud"].dropna(subset=["customer_id"]),
            sides["odoo"].dropna(subset=["customer_id"]),
            join_columns=["customer_id"],
            df1_name="nexacloud",
            df2_name="odoo",
        )
        # What a person reads of it, as our rows' causes are: the differing rows and the report.
        comparison.all_mismatch()
        comparison.report()
    references["datacompy_seconds"] = round(time.perf_counter() - started, 3)
    reconcile_seconds = figures["direct"]["functions"]["reconcile"]
    references["reconcile_seconds"] = reconcile_seconds
    references["datacompy_vs_reconcile"] = _ratio(references["datacompy_seconds"], reconcile_seconds)

    engine = create_engine(urls["warehouse"])
    try:
        with engine.begin() as connection:
            ensure_tables(connection)
            started = time.perf_counter()
            replace_period(connection, window.period, results, lines)
            ours = time.perf_counter() - started
        started = time.perf_counter()
        results.to_sql("to_sql_results", engine, if_exists="replace", index=False)
        lines.to_sql("to_sql_lines", engine, if_exists="replace", index=False)
        theirs = time.perf_counter() - started
    finally:
        engine.dispose()
    references.update(
        result_rows=len(results),
        line_rows=len(lines),
        warehouse_write_seconds=round(ours, 3),
        to_sql_seconds=round(theirs, 3),
        to_sql_vs_warehouse_write=_ratio(theirs, ours),
    )
    direct_total = sum(step["seconds"] for step in figures["direct"]["steps"].values())
    references["direct_steps_seconds"] = round(direct_total, 2)
    references["dagster_run_seconds"] = figures["dagster"]["run_seconds"]
    references["dagster_overhead_seconds"] = round(figures["dagster"]["run_seconds"] - direct_total, 2)
    return references


# --- printing ----------------------------------------------------------------------------------------


def _print_figures(figures: dict) -> None:
    generation, dagster, direct, refs = (
        figures["generation"],
        figures["dagster"],
        figures["direct"],
        figures["references"],
    )
    print()
    print(f"preset {figures['preset']}, period {figures['period']}, {figures['machine']}")
    print(f"generation: {generation['seconds']:,.1f} s, peak {generation['peak_mib']:,} MiB")
    print(
        f"usage records in the period: {refs['usage_records_in_period']:,}; "
        f"deployments with usage: {refs['deployments_with_usage']:,}; customers: {refs['result_rows']:,}"
    )
    print(
        f"dagster asset materialize: {'succeeded' if dagster['success'] else 'FAILED'}, "
        f"run {dagster['run_seconds']:.1f} s (process {dagster['process_seconds']:.1f} s with start-up), "
        f"peak {dagster['peak_mib']:,} MiB; Odoo test double peak {figures['odoo_double_peak_mib']:,} MiB"
    )
    print(
        f"{'step':<34} {'dagster s':>9} {'direct s':>9} {'rows':>11} {'rows/s':>11} {'odoo req':>8} "
        f"{'pages':>6}"
    )
    for step, values in sorted(dagster["steps"].items(), key=lambda item: -item[1].get("seconds", 0)):
        seconds = values.get("seconds", 0)
        direct_seconds = direct["steps"].get(step, {}).get("seconds", float("nan"))
        rate = values["rows"] / seconds if seconds else 0
        print(
            f"{step:<34} {seconds:9.2f} {direct_seconds:9.2f} {values['rows']:11,} {rate:11,.0f} "
            f"{values['odoo_requests']:8,} {values['odoo_pages']:6,}"
        )
    print("Odoo requests per call (target: ≤ ⌈rows / page size⌉ + 2):")
    for call, entry in dagster["odoo_requests_per_call"].items():
        verdict = "ok" if entry["within"] else "OVER"
        print(
            f"  {call:<48} {entry['requests']:6,} requests for {entry['rows']:9,} rows "
            f"(bound {entry['bound']:,}) {verdict}"
        )
    print(
        f"direct: steps {refs['direct_steps_seconds']:.1f} s, process {direct['process_seconds']:.1f} s, "
        f"peak {direct['peak_mib']:,} MiB; Dagster's overhead {refs['dagster_overhead_seconds']:.1f} s"
    )
    print("references (same data, same run):")
    print(
        f"  bare SQL usage aggregate {refs['sql_usage_aggregate_seconds']:.2f} s: nexacloud/usage is "
        f"{refs['nexacloud_usage_vs_sql_floor']}× the floor (target ≤ 1.3×)"
    )
    print(
        f"  datacompy {refs['datacompy_seconds']:.2f} s vs reconcile() {refs['reconcile_seconds']:.2f} s: "
        f"{refs['datacompy_vs_reconcile']}× faster (target ≥ 5×)"
    )
    print(
        f"  to_sql {refs['to_sql_seconds']:.2f} s vs warehouse write {refs['warehouse_write_seconds']:.2f} s "
        f"({refs['result_rows']:,} results + {refs['line_rows']:,} lines): "
        f"{refs['to_sql_vs_warehouse_write']}× faster (target ≥ 5×)"
    )
    print(f"benchmark wall time {figures['wall_seconds']:,.0f} s")


# --- plumbing ----------------------------------------------------------------------------------------


def _measured(
    command: list[str],
    *,
    env: dict | None = None,
    quiet: bool = False,
    log: Path | None = None,
    prefix: str = "",
) -> tuple[float, int, int]:
    """Run a child; return its wall seconds, its peak resident memory (MiB) and its exit code."""
    started = time.monotonic()
    output = open(log, "w") if log else None  # noqa: SIM115 — closed below, after the child ends
    process = subprocess.Popen(
        command, env=env, stdout=output or subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if output is None:
        for line in process.stdout:
            if not quiet:
                print(prefix + line.rstrip(), flush=True)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if output:
        output.close()
    return time.monotonic() - started, int(usage.ru_maxrss / 1024), process.returncode


def _peak_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 2)


def _database_url(name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _admin(statement: str) -> list:
    from sqlalchemy import create_engine, text

    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            result = connection.execute(text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def _database_exists(url: str) -> bool:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    return bool(_admin(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))


def _recreate_database(url: str) -> None:
    _drop_database(url)
    from sqlalchemy.engine import make_url

    _admin(f'CREATE DATABASE "{make_url(url).database}"')


def _drop_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve_odoo(store_url: str, port: int, *, writable: bool = False) -> subprocess.Popen:
    """The Odoo test double serving the store on 127.0.0.1:``port``, in a process of its own."""
    command = [sys.executable, "-m", "fusion_billing_assets.sandbox", "serve-odoo", "--store", store_url]
    command += ["--port", str(port), *(["--writable"] if writable else [])]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def _wait_for_http(url: str, process: subprocess.Popen) -> None:
    import httpx

    for _ in range(200):
        if process.poll() is not None:
            raise SystemExit(f"the Odoo test double exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"the Odoo test double did not answer on {url}")


def _machine() -> str:
    cpus = os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    server = _admin("SHOW server_version")[0][0]
    return f"{cpus} cores, {memory:.0f} GiB, PostgreSQL {server}, Python {sys.version.split()[0]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


if __name__ == "__main__":
    sys.exit(main())
