"""Usage delivery on a copy of the generated sandbox (docs/design.md §10), held to its ground truth.

The sandbox injects delivery faults beside the billing ones and lists each affected record in
``manifest["delivery_faults"]``: the delivery check must find exactly those, with their kinds,
and nothing else. The repair pushes the missing ones with their original keys; the period's check
then passes for them, the re-reconciled customers' Odoo CPU-seconds equal NexaCloud's, and a
second repair finds every record already there.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

import pytest

from fusion_billing_assets.definitions import defs, repair_usage_job_name
from fusion_billing_assets.warehouse import read_repair_log, read_usage_gaps
from tests.test_reconciliation_end_to_end import CodeLocation, copy_sandbox


@pytest.fixture
def location(small_sandbox, tmp_path) -> CodeLocation:
    return CodeLocation.on(tmp_path, copy_sandbox(small_sandbox, tmp_path))


def faults_by_period(manifest) -> dict[str, set[tuple]]:
    faults = defaultdict(set)
    for fault in manifest["delivery_faults"]:
        faults[fault["period"]].add((fault["kind"], fault["idempotency_key"], int(fault["subscription_id"])))
    return faults


def stored_gaps(location: CodeLocation, period: str):
    with location.warehouse.begin() as connection:
        return read_usage_gaps(connection, date.fromisoformat(period))


def repair(location: CodeLocation, period: str, *, dry_run: bool):
    return defs.resolve_job_def(repair_usage_job_name).execute_in_process(
        run_config={"ops": {"repair_period_usage": {"config": {"period": period, "dry_run": dry_run}}}},
        instance=location.instance,
        resources=location.resources(),
        raise_on_error=False,
    )


def test_every_injected_delivery_fault_is_found_with_its_kind_and_nothing_else(location):
    truth = faults_by_period(location.sandbox.manifest)
    assert {kind for faults in truth.values() for kind, _, _ in faults} == {
        "missing",
        "quantity_differs",
        "wrong_subscription",
        "extra",
    }
    for period in location.sandbox.closed_periods:
        result = location.reconcile(period)
        (check,) = [
            c for c in result.get_asset_check_evaluations() if c.check_name == "every_usage_record_delivered"
        ]
        gaps = stored_gaps(location, period)
        found = {(g.kind, g.idempotency_key, int(g.subscription_id)) for g in gaps.itertuples()}
        assert found == truth.get(period, set()), period
        assert check.passed is (not found), period


def test_a_repair_pushes_the_missing_records_with_their_keys_and_a_second_finds_them_there(location):
    truth = location.sandbox.manifest["delivery_faults"]
    period = next(f["period"] for f in truth if f["kind"] == "missing")
    missing = {f["idempotency_key"]: f for f in truth if f["period"] == period and f["kind"] == "missing"}
    location.reconcile(period)

    dry = repair(location, period, dry_run=True)
    assert dry.success
    assert dry.output_for_node("repair_period_usage")["pushed"]["dry_run"] == len(missing)

    applied = repair(location, period, dry_run=False)
    assert applied.success
    assert applied.output_for_node("repair_period_usage")["pushed"]["created"] == len(missing)
    with location.warehouse.begin() as connection:
        log = read_repair_log(connection, applied.run_id)
    assert set(log["idempotency_key"]) == set(missing)
    assert {row.idempotency_key: row.quantity for row in log.itertuples()} == {
        key: Decimal(fault["nexacloud_quantity"]) for key, fault in missing.items()
    }
    # Run again before anything re-checks the period: Odoo already holds every key.
    again = repair(location, period, dry_run=False)
    assert again.success
    pushed = again.output_for_node("repair_period_usage")["pushed"]
    assert pushed["duplicate"] == len(missing) and pushed["created"] == 0

    result = location.reconcile(period)
    (check,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "every_usage_record_delivered"
    ]
    left = {(g.kind, g.idempotency_key) for g in stored_gaps(location, period).itertuples()}
    assert not {key for kind, key in left if kind == "missing"}
    assert check.passed is (not left)
    repaired = {int(f["deployment_id"]) for f in missing.values()}
    _, lines = location.period(period)
    for line in lines[lines["deployment_id"].isin(repaired)].itertuples():
        others = [
            f
            for f in truth
            if f["period"] == period
            and f["kind"] != "missing"
            and int(f["deployment_id"] or 0) == line.deployment_id
        ]
        if not others:
            assert line.odoo_cpu_seconds == line.nexacloud_cpu_seconds, line.deployment_id
