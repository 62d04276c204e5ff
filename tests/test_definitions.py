"""The code location loads: its assets, checks, job and resources, on one partitions definition;
``dg list defs`` (what a Dagster user reaches for) lists the same assets, checks and jobs."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from dagster import AssetCheckKey, AssetKey

from fusion_billing_assets.definitions import billing_period_job_name, defs, flip_readiness_job_name
from fusion_billing_assets.partitions import BILLING_TIMEZONE, billing_periods
from fusion_billing_assets.settings import PROJECT_ROOT

# The console scripts of the environment the suite runs in (uv's .venv).
BIN = Path(sys.executable).parent
RECONCILIATION = AssetKey(["billing", "reconciliation"])
RECONCILIATION_CHECKS = {
    AssetCheckKey(RECONCILIATION, name)
    for name in ("one_row_per_customer", "leg_totals_match_invoices", "no_unexplained_differences")
}

SOURCE_ASSETS = {
    ("nexacloud", name)
    for name in ("customers", "plans", "deployments", "usage", "invoices", "invoice_lines")
} | {
    ("odoo", name)
    for name in ("account_links", "partners", "subscriptions", "usage", "invoices", "invoice_lines")
}


def test_definitions_load_with_every_source_asset_in_its_group():
    graph = defs.resolve_asset_graph()
    keys = {tuple(key.path) for key in graph.get_all_asset_keys()}
    assert keys >= SOURCE_ASSETS
    for group, name in SOURCE_ASSETS:
        node = graph.get(AssetKey([group, name]))
        assert node.group_name == group
        assert node.description, f"{group}/{name} states its business meaning"


# They judge the present, not a billing period.
UNPARTITIONED = {AssetKey(["billing", "flip_readiness"]), AssetKey(["billing", "lifecycle_drift"])}


def test_every_asset_but_the_present_state_judges_shares_the_one_billing_periods_definition_by_identity():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        expected = None if key in UNPARTITIONED else billing_periods
        assert graph.get(key).partitions_def is expected, key.to_user_string()


def test_the_current_month_is_a_partition_and_the_first_is_the_configured_start():
    keys = billing_periods.get_partition_keys()
    assert keys[0] == "2026-01-01"
    current_month = datetime.now(UTC).astimezone(ZoneInfo(BILLING_TIMEZONE)).strftime("%Y-%m-01")
    assert keys[-1] == current_month


def test_the_reconciliation_jobs_and_resources_are_defined():
    assert defs.resolve_job_def(billing_period_job_name).partitions_def is billing_periods
    assert defs.resolve_job_def(flip_readiness_job_name).partitions_def is None
    assert set(defs.resources) >= {"nexacloud", "odoo", "warehouse", "reconciliation_policy"}


def test_the_checks_judge_without_blocking_so_a_bad_record_never_stops_a_period():
    """The source frames' referential checks and the reconciliation's all report without blocking:
    what fails them is set aside (source_data_error) or shown, and the period is reconciled."""
    graph = defs.resolve_asset_graph()
    specs = {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}
    referential = {
        "deployments_reference_known_customers_and_plans",
        "usage_references_known_deployments",
        "invoice_lines_add_up_to_their_invoices",
        "invoiced_partners_exist",
        "invoice_lines_belong_to_known_invoices",
    }
    assert referential <= set(specs)
    assert {name for name in referential if specs[name].blocking} == set()
    reconciliation_checks = {
        key.name: key for key in graph.asset_check_keys if key.asset_key.path == ["billing", "reconciliation"]
    }
    assert set(reconciliation_checks) == {
        "one_row_per_customer",
        "leg_totals_match_invoices",
        "no_unexplained_differences",
        "unchanged_since_signoff",
    }
    assert not any(graph.get_check_spec(key).blocking for key in reconciliation_checks.values())


def test_the_reconciliation_checks_run_in_the_period_job_and_can_be_executed_on_their_own():
    graph = defs.resolve_asset_graph()
    job_checks = defs.resolve_job_def(billing_period_job_name).asset_layer.asset_graph.asset_check_keys
    assert job_checks >= RECONCILIATION_CHECKS
    for check_key in RECONCILIATION_CHECKS:
        # Alone in its execution set: the UI's "Execute" runs it without materializing the asset.
        assert graph.get_execution_set_asset_and_check_keys(check_key) == {check_key}
        assert not graph.get(check_key).blocking


def test_dg_list_defs_lists_the_assets_checks_and_jobs_from_the_project_root():
    completed = subprocess.run(
        [str(BIN / "dg"), "list", "defs", "--json"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "VIRTUAL_ENV": str(BIN.parent)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    listed = json.loads(completed.stdout)

    graph = defs.resolve_asset_graph()
    assert {asset["asset_key"] for asset in listed["assets"]} == {
        key.to_user_string() for key in graph.get_all_asset_keys()
    }
    assert (
        {check["key"] for check in listed["asset_checks"]}
        == {key.to_user_string() for key in graph.asset_check_keys}
        >= {key.to_user_string() for key in RECONCILIATION_CHECKS}
    )
    assert (
        {job["name"] for job in listed["jobs"]}
        == {job.name for job in defs.jobs}
        >= {
            billing_period_job_name,
            flip_readiness_job_name,
        }
    )
    assert {sensor["name"] for sensor in listed["sensors"]} == {sensor.name for sensor in defs.sensors}
