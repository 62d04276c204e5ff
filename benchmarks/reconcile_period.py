"""How long one billing period takes end to end, step by step, at a scale you choose.

Generates a sandbox (SQLite, or PostgreSQL with --nexacloud-url), then materializes the latest
closed period through the same job the UI launches, in this process, and prints the wall time of
generation, of the run and of every step, with the peak memory of the process.

    python3 -m uv run --locked python benchmarks/reconcile_period.py --customers 400 --periods 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--max-deployments", type=int, default=3)
    parser.add_argument("--usage-window-minutes", type=int, default=60)
    parser.add_argument("--periods", type=int, default=2, help="periods generated, the last one provisional")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--protocol", choices=("json2", "jsonrpc"), default="json2")
    parser.add_argument("--nexacloud-url", help="SQLAlchemy URL for the generated NexaCloud database")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fusion-benchmark-"))
    os.environ["DAGSTER_HOME"] = str(workdir / "home")
    (workdir / "home").mkdir()
    (workdir / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    from dagster import DagsterEventType, DagsterInstance

    from fusion_billing_assets.definitions import billing_period_job_name, defs
    from fusion_billing_assets.defs.resources import (
        NexaCloudDatabase,
        OdooAPI,
        ReconciliationPolicy,
        Warehouse,
    )
    from fusion_billing_assets.sandbox.generator import SandboxScale, generate
    from fusion_billing_assets.sandbox.odoo_models import SANDBOX_API_KEY, SANDBOX_DATABASE, SANDBOX_LOGIN
    from fusion_billing_assets.sandbox.scenarios import TOLERANCE_CENTS

    scale = SandboxScale(
        customers=args.customers,
        max_deployments_per_customer=args.max_deployments,
        usage_window_minutes=args.usage_window_minutes,
        periods=args.periods,
    )
    sandbox = workdir / "sandbox"
    url = args.nexacloud_url or f"sqlite:///{sandbox / 'nexacloud.sqlite'}"
    end_period = datetime.now(UTC).astimezone(ZoneInfo("America/Toronto")).date().replace(day=1)
    print(f"Generating {scale} into {sandbox} …", flush=True)
    started = time.monotonic()
    generate(
        url,
        sandbox,
        seed=args.seed,
        scale=scale,
        end_period=end_period,
        progress=lambda line: print(f"  {line}"),
    )
    generation_seconds = time.monotonic() - started
    manifest = json.loads((sandbox / "manifest.json").read_text())
    period = [p["period"] for p in manifest["periods"] if p["closed"]][-1]

    resources = {
        "nexacloud": NexaCloudDatabase(url=url),
        "odoo": OdooAPI(
            url="http://odoo.sandbox.invalid",
            database=SANDBOX_DATABASE,
            api_key=SANDBOX_API_KEY,
            login=SANDBOX_LOGIN,
            protocol=args.protocol,
            sandbox_data=str(sandbox / "odoo.json"),
        ),
        "warehouse": Warehouse(url=f"sqlite:///{workdir / 'warehouse.sqlite'}"),
        "reconciliation_policy": ReconciliationPolicy(
            tolerance_cents=TOLERANCE_CENTS,
            waivers_file=str(sandbox / "waivers.csv"),
            reports_dir=str(workdir / "reports"),
        ),
    }
    print(f"Materializing period {period} ({args.protocol}) …", flush=True)
    instance = DagsterInstance.get()
    started = time.monotonic()
    result = defs.resolve_job_def(billing_period_job_name).execute_in_process(
        partition_key=period,
        instance=instance,
        resources=resources,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    run_seconds = time.monotonic() - started
    step_seconds = _step_durations(instance, result.run_id, DagsterEventType)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print()
    print(f"scale: {manifest['scale']}")
    print(f"sandbox generation: {generation_seconds:.1f} s")
    print(f"period {period}: run {'succeeded' if result.success else 'FAILED'} in {run_seconds:.1f} s wall")
    for step, seconds in sorted(step_seconds.items(), key=lambda item: -item[1]):
        print(f"  {step:<40} {seconds:6.2f} s")
    print(f"peak resident memory of this process: {peak_mib:,.0f} MiB")
    print(f"work folder (delete when done): {workdir}")
    return 0 if result.success else 1


def _step_durations(instance, run_id: str, event_types) -> dict[str, float]:
    started: dict[str, float] = {}
    durations: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == event_types.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.event_type in (event_types.STEP_SUCCESS, event_types.STEP_FAILURE):
            durations[event.step_key] = record.timestamp - started.get(event.step_key, record.timestamp)
    return durations


if __name__ == "__main__":
    sys.exit(main())
