"""The reconciliation's checks re-judge what is stored, without materializing anything again.

``one_row_per_customer``, ``leg_totals_match_invoices`` and ``no_unexplained_differences`` run
after ``billing/reconciliation`` in a period's run, and on their own (the UI's "Execute", or a run
of the check selection): then they read the period's rows from the warehouse and the source frames
the IO manager stored for it, judge the latest reconciled period unless the run names one, and
record the period they judged. Rows changed in the warehouse after the materialization fail the
re-run checks with the offending customers named; the asset is not materialized again.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
)
from sqlalchemy import delete, update

from fusion_billing_assets.definitions import build_resources
from fusion_billing_assets.defs import nexacloud, odoo, reconciliation
from fusion_billing_assets.defs.jobs import reconcile_billing_period
from fusion_billing_assets.settings import load_settings
from fusion_billing_assets.warehouse import billing_reconciliation
from tests.conftest import GeneratedSandbox

RECONCILIATION = AssetKey(["billing", "reconciliation"])
CHECKS = (
    "one_row_per_customer",
    "leg_totals_match_invoices",
    "no_unexplained_differences",
    "unchanged_since_signoff",
)
# A changed signed-off period is worth a look, not an error: the signed-off figures are kept.
SEVERITIES = {
    **dict.fromkeys(CHECKS, AssetCheckSeverity.ERROR),
    "unchanged_since_signoff": AssetCheckSeverity.WARN,
}
PARTITION_TAG = "dagster/partition"
ASSETS = [*nexacloud.assets, *odoo.assets, *reconciliation.assets]


@dataclass
class StoredPeriods:
    """The sandbox's closed periods materialized (earliest first) into one instance and warehouse."""

    instance: DagsterInstance
    resources: dict[str, Any]
    periods: list[str]
    runs: dict[str, ExecuteInProcessResult]

    def judge(self, period: str | None = None) -> dict[str, AssetCheckEvaluation]:
        """Run the checks alone, as "Execute" does (no asset step); ``period`` tags the run
        with a billing period, as a run launched for one partition is."""
        result = materialize(
            ASSETS,
            selection=AssetSelection.checks(*reconciliation.asset_checks),
            instance=self.instance,
            resources=self.resources,
            tags={PARTITION_TAG: period} if period else None,
        )
        assert not result.get_asset_materialization_events(), "a check run materialized an asset"
        return evaluations(result)

    def change_stored_rows(self, period: str, statement) -> None:
        with self.resources["warehouse"].begin() as connection:
            connection.execute(
                statement.where(billing_reconciliation.c.billing_period == date.fromisoformat(period))
            )


def evaluations(result: ExecuteInProcessResult) -> dict[str, AssetCheckEvaluation]:
    found = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == RECONCILIATION}
    assert set(found) == set(CHECKS)
    return found


def metadata(evaluation: AssetCheckEvaluation) -> dict[str, Any]:
    return {name: value.value for name, value in evaluation.metadata.items()}


@pytest.fixture(scope="module")
def stored(small_sandbox: GeneratedSandbox, tmp_path_factory) -> StoredPeriods:
    home = tmp_path_factory.mktemp("stored_periods")
    settings = load_settings({"DAGSTER_HOME": str(home)})
    shutil.copytree(small_sandbox.out, settings.sandbox_dir)
    instance = DagsterInstance.ephemeral(tempdir=str(home / "dagster"))
    resources = build_resources(settings)
    periods = sorted(small_sandbox.closed_periods)
    runs = {
        period: materialize(
            ASSETS,
            selection=reconcile_billing_period.selection,
            partition_key=period,
            instance=instance,
            resources=resources,
        )
        for period in periods
    }
    return StoredPeriods(instance, resources, periods, runs)


def test_checks_run_alone_judge_the_latest_reconciled_period_as_the_materializing_run_did(stored):
    latest = stored.periods[-1]
    in_run = evaluations(stored.runs[latest])

    alone = stored.judge()

    for name in CHECKS:
        assert metadata(alone[name]) == metadata(in_run[name]), name
        assert metadata(alone[name])["billing_period"] == latest
        assert alone[name].passed == in_run[name].passed
        assert alone[name].severity == SEVERITIES[name]
    assert alone["one_row_per_customer"].passed and alone["leg_totals_match_invoices"].passed
    # The sandbox injects unexplained differences in every closed period.
    assert not alone["no_unexplained_differences"].passed
    assert not alone["no_unexplained_differences"].blocking


def test_a_check_run_for_a_named_period_judges_that_period(stored):
    earliest = stored.periods[0]

    judged = stored.judge(earliest)

    for name in CHECKS:
        assert metadata(judged[name])["billing_period"] == earliest, name
        assert metadata(judged[name]) == metadata(evaluations(stored.runs[earliest])[name]), name


def test_rows_changed_in_the_warehouse_after_materialization_fail_the_rerun_checks(stored):
    period = stored.periods[0]
    before = {name: metadata(evaluation) for name, evaluation in stored.judge(period).items()}
    lost, raised = before["no_unexplained_differences"]["offending_customer_ids"][:2]

    stored.change_stored_rows(
        period, delete(billing_reconciliation).where(billing_reconciliation.c.customer_id == lost)
    )
    stored.change_stored_rows(
        period,
        update(billing_reconciliation)
        .where(billing_reconciliation.c.customer_id == raised)
        .values(nexacloud_total_cents=billing_reconciliation.c.nexacloud_total_cents + 100),
    )
    after = stored.judge(period)

    one_row = metadata(after["one_row_per_customer"])
    assert not after["one_row_per_customer"].passed
    assert one_row["billing_period"] == period
    assert one_row["lost_customer_ids"] == [lost]
    assert one_row["rows_out"] == before["one_row_per_customer"]["rows_out"] - 1
    legs = metadata(after["leg_totals_match_invoices"])
    assert not after["leg_totals_match_invoices"].passed
    assert legs["nexacloud_invoices"] == before["leg_totals_match_invoices"]["nexacloud_invoices"]
    assert legs["nexacloud_in_results"] != legs["nexacloud_invoices"]
    unexplained = metadata(after["no_unexplained_differences"])
    assert unexplained["unexplained_count"] == before["no_unexplained_differences"]["unexplained_count"] - 1
    assert lost not in unexplained["offending_customer_ids"]


def test_a_period_whose_stored_rows_are_all_accepted_passes_the_rerun_check(stored):
    period = stored.periods[-1]

    stored.change_stored_rows(period, update(billing_reconciliation).values(status="match"))
    judged = stored.judge()

    assert judged["no_unexplained_differences"].passed
    assert metadata(judged["no_unexplained_differences"]) == {
        "billing_period": period,
        "unexplained_count": 0,
        "offending_customer_ids": [],
        "offending_partner_ids": [],
    }
