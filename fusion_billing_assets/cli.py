"""``fusion-billing``: the main job from the command line.

``fusion-billing reconcile`` generates the embedded sandbox when it is missing or stale, then
materializes every billing period of the sandbox through the same Dagster job the UI launches,
recording the runs in the local instance so the UI shows them afterwards, and says where to look.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

from fusion_billing_assets.billing.periods import period_of
from fusion_billing_assets.settings import LOCAL_INSTANCE_HOME, PROJECT_ROOT, redact_url

DEFAULT_SEED = 7
RUN_TAGS = {"fusion/trigger": "cli"}
# The run's full event log is in the UI; the terminal gets a few lines per period, and a failure
# in the step's own words rather than Dagster's traceback.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
_CLASS_NAME = re.compile(r"[A-Za-z_][\w.]*")
LOCAL_INSTANCE_CONFIG = """\
# The embedded instance of the sandbox, created by `fusion-billing reconcile`: runs, events and
# asset values are kept in SQLite files and folders beside this file. Production uses
# dagster_home/dagster.yaml (PostgreSQL) instead.
telemetry:
  enabled: false
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fusion-billing", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    reconcile = commands.add_parser(
        "reconcile", help="reconcile the billing periods (the sandbox's by default)"
    )
    reconcile.add_argument(
        "--period",
        action="append",
        dest="periods",
        metavar="YYYY-MM-01",
        help="a billing period to reconcile (repeatable); default: every period of the sandbox",
    )
    reconcile.add_argument("--regenerate", action="store_true", help="generate the sandbox again first")
    reconcile.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="sandbox seed (default %(default)s)"
    )
    signoff = commands.add_parser(
        "signoff", help="sign off a closed billing period's current results (or revoke the sign-off)"
    )
    signoff.add_argument("--period", required=True, metavar="YYYY-MM-01", help="the closed billing period")
    signoff.add_argument("--by", required=True, metavar="NAME", help="who signs off (or revokes)")
    signoff.add_argument("--note", help="what was checked, or why it is accepted")
    signoff.add_argument(
        "--accept-unexplained",
        action="append",
        default=[],
        metavar="ROWS",
        help="rows accepted although they count against the switch: customer ids, or partner:<id> "
        "for an Odoo partner without a customer (comma-separated, repeatable)",
    )
    signoff.add_argument("--revoke", action="store_true", help="revoke the period's active sign-off")
    signoff.add_argument("--reason", help="why the sign-off is revoked (required with --revoke)")
    importing = commands.add_parser(
        "import",
        help="plan the import of a period's NexaCloud records into Odoo, and apply it with --apply",
    )
    importing.add_argument("--period", required=True, metavar="YYYY-MM-01", help="the billing period")
    importing.add_argument(
        "--apply", action="store_true", help="write the plan to Odoo (without it: a dry run, nothing written)"
    )
    repair = commands.add_parser(
        "repair-usage",
        help="re-push a period's missing usage records to Odoo's /usage (a dry run without --apply)",
    )
    repair.add_argument("--period", required=True, metavar="YYYY-MM-01", help="the billing period")
    repair.add_argument(
        "--apply", action="store_true", help="push to Odoo (without it: a dry run, nothing pushed)"
    )
    commands.add_parser(
        "lifecycle",
        help="observe the control loop now: does every deployment follow its Odoo subscription? (reads only)",
    )
    args = parser.parse_args(argv)
    if args.command == "lifecycle":
        return _lifecycle()
    if args.command == "signoff":
        return _signoff(args)
    if args.command == "import":
        return _import(args)
    if args.command == "repair-usage":
        return _repair_usage(args)
    return _reconcile(args)


def _repair_usage(args: argparse.Namespace) -> int:
    """Run the repair job in this process, then (``--apply``) check the period's delivery again."""
    _prepare_instance_home()
    from dagster import DagsterInstance

    definitions = _definitions()
    if definitions is None:
        return 2
    defs, repair_usage_job_name = definitions.defs, definitions.repair_usage_job_name
    instance = DagsterInstance.get()
    mode = "pushing to Odoo" if args.apply else "dry run: nothing is pushed"
    print(f"Repairing the usage delivery of {args.period} ({mode}) …", flush=True)
    result = defs.resolve_job_def(repair_usage_job_name).execute_in_process(
        run_config={
            "ops": {"repair_period_usage": {"config": {"period": args.period, "dry_run": not args.apply}}},
            **QUIET,
        },
        instance=instance,
        raise_on_error=False,
        tags=RUN_TAGS,
    )
    summary = _step_summary(result, "repair_period_usage")
    if summary:
        pushed = ", ".join(f"{n} {outcome}" for outcome, n in summary["pushed"].items() if n)
        print(
            f"Missing records: {summary['missing']}; {'pushed' if args.apply else 'would push'}: {pushed or 'nothing'}"
        )
        left = ", ".join(f"{n} {kind}" for kind, n in summary["for_a_person"].items())
        if left:
            print(f"Left for a person (see the run's metadata): {left}")
    for failure in result.get_step_failure_events():
        print(_failure_sentence(failure), file=sys.stderr)
    print(
        f"Repair {args.period} {'succeeded' if result.success else 'FAILED'} (run {result.run_id}; log: table usage_repair_log)"
    )
    if not args.apply:
        return 0 if result.success else 1
    check = defs.resolve_job_def("check_usage_delivery").execute_in_process(
        partition_key=args.period, instance=instance, raise_on_error=False, tags=RUN_TAGS, run_config=QUIET
    )
    evaluations = {e.check_name: e for e in check.get_asset_check_evaluations()}
    delivered = evaluations.get("every_usage_record_delivered")
    if delivered is not None:
        counts = delivered.metadata["counts_by_kind"].value
        verdict = "every usage record delivered" if delivered.passed else f"gaps left: {counts}"
        print(f"Delivery check of {args.period} again: {verdict} (run {check.run_id})")
    return 0 if result.success and check.success else 1


def _lifecycle() -> int:
    """Materialize billing/lifecycle_drift in this process and print what it found."""
    _prepare_instance_home()
    from dagster import DagsterInstance

    definitions = _definitions()
    if definitions is None:
        return 2
    print("Observing the control loop (billing/lifecycle_drift) …", flush=True)
    result = definitions.defs.resolve_job_def(definitions.observe_lifecycle_job_name).execute_in_process(
        instance=DagsterInstance.get(), raise_on_error=False, tags=RUN_TAGS, run_config=QUIET
    )
    for line in _lifecycle_report(result):
        print(f"  {line}")
    lifecycle = _materialization_metadata(result).get("billing/lifecycle_drift")
    if lifecycle and lifecycle["drifts"]:
        print(lifecycle["largest_drifts"])
    print(
        f"Observation {'succeeded' if result.success else 'FAILED'} (run {result.run_id}; "
        "table billing_lifecycle_drift)"
    )
    return 0 if result.success else 1


def _step_summary(result, node: str) -> dict | None:
    """A job's summary: its output on success, the failure's metadata otherwise."""
    if result.success:
        return result.output_for_node(node)
    for failure in result.get_step_failure_events():
        data = failure.event_specific_data.user_failure_data
        if data is not None and "summary" in data.metadata:
            return data.metadata["summary"].value
    return None


def _import(args: argparse.Namespace) -> int:
    """Run the import job in this process: plan, print its counts, then (``--apply``) write it."""
    _prepare_instance_home()
    from dagster import DagsterInstance

    from fusion_billing_assets.settings import ConfigurationError, load_settings

    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    definitions = _definitions()
    if definitions is None:
        return 2
    defs, apply_import_job_name = definitions.defs, definitions.apply_import_job_name
    if settings.uses_sandbox:
        _ensure_sandbox(settings, regenerate=False, seed=DEFAULT_SEED)
    mode = "applying it to Odoo" if args.apply else "dry run: nothing is written to Odoo"
    print(f"Planning the import of {args.period} ({mode}) …", flush=True)
    started = time.monotonic()
    result = defs.resolve_job_def(apply_import_job_name).execute_in_process(
        run_config={
            "ops": {"apply_period_import": {"config": {"period": args.period, "dry_run": not args.apply}}},
            **QUIET,
        },
        instance=DagsterInstance.get(),
        raise_on_error=False,
        tags=RUN_TAGS,
    )
    summary = _step_summary(result, "apply_period_import")
    if summary:
        plan = ", ".join(f"{count} {action}" for action, count in summary["plan"].items() if count)
        print(f"Plan: {plan or 'nothing'} (table odoo_import_plan in {_warehouse_location(settings)})")
        for action, external_id, detail in summary["notable"]:
            print(f"  {action:9} {external_id}: {detail}")
        sent = ", ".join(f"{count} {outcome}" for outcome, count in summary["sent"].items() if count)
        print(f"{'Applied' if args.apply else 'Would send'}: {sent or 'nothing to write'}")
        for model, written in summary["written"].items():
            print(f"  {model}: {written['create']} created, {written['update']} updated")
    for failure in result.get_step_failure_events():
        print(_failure_sentence(failure), file=sys.stderr)
    seconds = time.monotonic() - started
    outcome = "succeeded" if result.success else "FAILED"
    print(
        f"Import {args.period} {outcome} in {seconds:.1f} s (run {result.run_id}; log: table odoo_import_log)"
    )
    if not args.apply and result.success:
        print("Nothing was written. Read the plan, resolve any conflict, then run again with --apply.")
    return 0 if result.success else 1


def _signoff(args: argparse.Namespace) -> int:
    """Run the sign-off job in this process, on the instance the reconciliations ran on."""
    _prepare_instance_home()
    from dagster import DagsterInstance

    from fusion_billing_assets.defs.signoff import SIGNOFF_JOB

    definitions = _definitions()
    if definitions is None:
        return 2
    defs = definitions.defs
    accepted = [
        name.strip() for value in args.accept_unexplained for name in value.split(",") if name.strip()
    ]
    config = {
        "period": args.period,
        "signed_by": args.by,
        "note": args.note,
        "accept_unexplained": accepted,
        "revoke": args.revoke,
        "reason": args.reason,
    }
    result = defs.resolve_job_def(SIGNOFF_JOB).execute_in_process(
        run_config={"ops": {"sign_off_period": {"config": config}}, **QUIET},
        instance=DagsterInstance.get(),
        raise_on_error=False,
        tags=RUN_TAGS,
    )
    if not result.success:
        for failure in result.get_step_failure_events():
            print(_failure_sentence(failure), file=sys.stderr)
        return 1
    action = "revoked the sign-off of" if args.revoke else "signed off"
    print(f"{args.by} {action} {args.period} (run {result.run_id}).")
    return 0


def _definitions():
    """The code location's definitions module, or None once a configuration error is printed."""
    from fusion_billing_assets.settings import ConfigurationError

    try:
        from fusion_billing_assets import definitions
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return None
    return definitions


def _failure_sentence(failure) -> str:
    """What a failed step says in its own words, not Dagster's wrapper around them.

    Dagster wraps an exception raised by an asset or op ("Error occurred while executing op …")
    with the original as its cause; the sentence that names the source, record and field is the
    original's message, without its class name.
    """
    error = failure.event_specific_data.error
    while error.cause is not None and error.cls_name and error.cls_name.startswith("Dagster"):
        error = error.cause
    message = error.message.strip()
    name, separator, rest = message.partition(": ")
    if separator and _CLASS_NAME.fullmatch(name):
        message = rest
    return message


def _prepare_instance_home() -> Path:
    # The embedded default: a SQLite instance home inside the checkout, created on first use.
    os.environ.setdefault("DAGSTER_HOME", str(LOCAL_INSTANCE_HOME))
    instance_home = Path(os.environ["DAGSTER_HOME"])
    instance_home.mkdir(parents=True, exist_ok=True)
    instance_config = instance_home / "dagster.yaml"
    if not instance_config.exists():
        instance_config.write_text(LOCAL_INSTANCE_CONFIG)
    return instance_home


def _reconcile(args: argparse.Namespace) -> int:
    instance_home = _prepare_instance_home()

    from fusion_billing_assets.settings import ConfigurationError, load_settings

    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2

    if settings.uses_sandbox:
        manifest = _ensure_sandbox(settings, regenerate=args.regenerate, seed=args.seed)
        periods = args.periods or [period["period"] for period in manifest["periods"]]
    elif args.periods:
        periods = args.periods
    else:
        print(
            "name the periods to reconcile with --period YYYY-MM-01 when running on real systems",
            file=sys.stderr,
        )
        return 2

    from dagster import DagsterInstance

    from fusion_billing_assets.definitions import (
        billing_period_job_name,
        defs,
        flip_readiness_job_name,
        observe_lifecycle_job_name,
    )

    instance = DagsterInstance.get()
    job = defs.resolve_job_def(billing_period_job_name)
    print(f"Materializing {len(periods)} billing period(s) with job {job.name} (instance {instance_home})")
    outcomes = []
    for number, period in enumerate(periods, start=1):
        started = time.monotonic()
        print(f"[{number}/{len(periods)}] {period} …", flush=True)
        result = job.execute_in_process(
            partition_key=period, instance=instance, raise_on_error=False, tags=RUN_TAGS, run_config=QUIET
        )
        seconds = time.monotonic() - started
        outcome = "succeeded" if result.success else "FAILED"
        print(f"[{number}/{len(periods)}] {period} {outcome} in {seconds:.1f} s (run {result.run_id})")
        for line in _period_report(result):
            print(f"      {line}")
        outcomes.append((period, result))
    failed = [period for period, result in outcomes if not result.success]
    print("Observing the control loop (billing/lifecycle_drift) …", flush=True)
    lifecycle = defs.resolve_job_def(observe_lifecycle_job_name).execute_in_process(
        instance=instance, raise_on_error=False, tags=RUN_TAGS, run_config=QUIET
    )
    for line in _lifecycle_report(lifecycle):
        print(f"      {line}")
    readiness = defs.resolve_job_def(flip_readiness_job_name).execute_in_process(
        instance=instance, raise_on_error=False, tags=RUN_TAGS, run_config=QUIET
    )
    print()
    print(
        f"Summary: {len(outcomes) - len(failed)} period(s) reconciled, {len(failed)} failed"
        + (f": {', '.join(failed)}" if failed else ".")
    )
    for line in _readiness_report(readiness):
        print(line)
    print("Where to look:")
    print(
        f"  the Dagster UI over these runs: DAGSTER_HOME={instance_home} "
        f"python3 -m uv run --locked dagster dev -w {PROJECT_ROOT / 'workspace.yaml'}  (then http://localhost:3000)"
    )
    print(
        f"  results: tables billing_reconciliation and billing_lifecycle_drift in {_warehouse_location(settings)}"
    )
    print(f"  reports for finance (CSV, HTML) per period: {settings.reconciliation.reports_dir}")
    if settings.uses_sandbox:
        print(f"  the sandbox and its ground truth: {settings.sandbox_dir} (manifest.json)")
    return 1 if failed else 0


def _period_report(result) -> list[str]:
    """A period at a glance: the statuses, the variance, the checks, where its report is."""
    metadata = _materialization_metadata(result)
    lines = []
    reconciliation = metadata.get("billing/reconciliation")
    if reconciliation:
        counts = {status: count for status, count in reconciliation["counts_by_status"].items() if count}
        lines.append(", ".join(f"{count} {status}" for status, count in counts.items()))
        lines.append(
            f"variance {reconciliation['total_variance']}; "
            f"{reconciliation['unexplained_differences']} unexplained difference(s)"
            + ("; provisional" if reconciliation["provisional"] else "")
        )
        lines.append(f"report: {reconciliation.get('report_html', '(none)')}")
    checks = result.get_asset_check_evaluations()
    failed_checks = [check.check_name for check in checks if not check.passed]
    lines.append(
        f"checks: {len(checks) - len(failed_checks)}/{len(checks)} passed"
        + (f"; failed: {', '.join(failed_checks)}" if failed_checks else "")
    )
    for failure in result.get_step_failure_events():
        lines.append(f"failed step {failure.step_key}: {_failure_sentence(failure)[:500]}")
    return lines


def _lifecycle_report(result) -> list[str]:
    """The control loop at a glance: what was judged, the drifts by kind, those past the grace period."""
    lifecycle = _materialization_metadata(result).get("billing/lifecycle_drift")
    if not lifecycle:
        lines = ["the control loop could not be observed (see the observe_lifecycle run in the UI)"]
        return lines + [
            f"failed step {f.step_key}: {_failure_sentence(f)[:500]}"
            for f in result.get_step_failure_events()
        ]
    drifting = {
        kind: count for kind, count in lifecycle["counts_by_kind"].items() if count and kind != "in_sync"
    }
    return [
        f"{lifecycle['dagster/row_count']} mapped deployment(s) judged as of "
        f"{datetime.fromisoformat(lifecycle['as_of']):%Y-%m-%d %H:%M} UTC: "
        + (", ".join(f"{count} {kind}" for kind, count in drifting.items()) or "every one in sync"),
        f"{lifecycle['drifts_older_than_grace']} drift(s) older than the {lifecycle['grace_days']}-day grace "
        f"period; {lifecycle['amount_at_stake']} at stake",
    ]


def _readiness_report(result) -> list[str]:
    readiness = _materialization_metadata(result).get("billing/flip_readiness")
    if not readiness:
        return ["Flip readiness: could not be judged (see the assess_flip_readiness run in the UI)."]
    judged = ", ".join(readiness["periods_judged"]) or "no closed period"
    return [f"Flip readiness: {readiness['verdict'].upper()} (judged {judged})", readiness["reasons"]]


def _materialization_metadata(result) -> dict[str, dict]:
    metadata = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        metadata[materialization.asset_key.to_user_string()] = {
            key: value.value for key, value in materialization.metadata.items()
        }
    return metadata


def _warehouse_location(settings) -> str:
    return redact_url(settings.warehouse_url)


def _ensure_sandbox(settings, *, regenerate: bool, seed: int) -> dict:
    from fusion_billing_assets.sandbox.generator import DEFAULT_SCALE, generate
    from fusion_billing_assets.sandbox.resources import SandboxPaths

    paths = SandboxPaths(settings.sandbox_dir)
    current_period = period_of(datetime.now(UTC), settings.timezone)
    manifest = _read_manifest(paths.manifest)
    stale = (
        manifest is None
        or manifest.get("seed") != seed
        or _end_period(manifest) != current_period
        # A sandbox from before the Odoo test double kept its records in a SQL store, or from
        # before its Odoo accounts were made by the importer.
        or not paths.odoo.is_file()
        or not paths.import_exclusions.is_file()
        # or from before it carried the lifecycle states of both systems.
        or "lifecycle" not in manifest
    )
    if regenerate or stale:
        print(
            f"Generating the sandbox in {settings.sandbox_dir} (seed {seed}, periods up to {current_period})"
        )
        generate(
            paths.nexacloud_url,
            settings.sandbox_dir,
            seed=seed,
            scale=DEFAULT_SCALE,
            end_period=current_period,
            timezone=settings.timezone,
            odoo_url=paths.odoo_url,
            progress=lambda line: print(f"  {line}", flush=True),
        )
        manifest = _read_manifest(paths.manifest)
    else:
        print(f"Using the sandbox in {settings.sandbox_dir} (seed {seed}; --regenerate to rebuild it)")
    return manifest


def _read_manifest(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _end_period(manifest: dict) -> date | None:
    periods = manifest.get("periods") or []
    return date.fromisoformat(periods[-1]["period"]) if periods else None


if __name__ == "__main__":
    sys.exit(main())
