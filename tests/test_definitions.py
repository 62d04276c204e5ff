"""The code location loads: its assets, checks, job and resources, on one partitions definition."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from dagster import AssetKey

from fusion_billing_assets.definitions import billing_period_job_name, defs, flip_readiness_job_name
from fusion_billing_assets.partitions import BILLING_TIMEZONE, billing_periods

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


def test_every_asset_but_flip_readiness_shares_the_one_billing_periods_definition_by_identity():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        expected = None if key == AssetKey(["billing", "flip_readiness"]) else billing_periods
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


def test_blocking_referential_checks_guard_the_sources():
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "deployments_reference_known_customers_and_plans",
        "usage_references_known_deployments",
        "invoice_lines_add_up_to_their_invoices",
        "invoiced_partners_exist",
        "invoice_lines_belong_to_known_invoices",
        "one_row_per_customer",
        "leg_totals_match_invoices",
        "no_unexplained_differences",
    } <= checks
