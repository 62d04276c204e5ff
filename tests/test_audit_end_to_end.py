"""The audit trail end to end (docs/design.md §12), on a copy of the small sandbox: every run is
kept with the fingerprints of its inputs, a closed period is signed off through the job the UI
launches, and a re-run after one NexaCloud invoice changed keeps the signed-off figures, names
what moved and alerts once."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd
import pytest
from dagster import AssetKey

from fusion_billing_assets.definitions import defs
from fusion_billing_assets.defs.resources import AlertChannel, Warehouse
from fusion_billing_assets.defs.signoff import SIGNOFF_JOB
from fusion_billing_assets.warehouse import read_run_results, read_runs, read_signoffs
from tests.test_reconciliation_end_to_end import (
    CodeLocation,
    _add_to_the_base_line,
    _plain_matching_customer,
    check_evaluation,
    copy_sandbox,
    materialization_metadata,
)
from tests.test_sensors import SECRET, Receiver, alert_tick, receiver  # noqa: F401 (a fixture)

RECONCILIATION = AssetKey(["billing", "reconciliation"])
# The statuses that count against the switch, from the README, not from the module under test.
UNEXPLAINED = {
    "usage_mismatch",
    "rate_mismatch",
    "tax_mismatch",
    "amount_mismatch",
    "missing_in_odoo",
    "missing_in_nexacloud",
    "unmapped",
    "duplicate",
    "currency_mismatch",
    "source_data_error",
}


def sign_off(location: CodeLocation, period: str, **config: Any):
    """Run the sign-off job as the UI (and ``fusion-billing signoff``) does."""
    return defs.resolve_job_def(SIGNOFF_JOB).execute_in_process(
        run_config={"ops": {"sign_off_period": {"config": {"period": period, **config}}}},
        instance=location.instance,
        resources=location.resources(),
        raise_on_error=False,
    )


def failure_text(result) -> str:
    (failure,) = result.get_step_failure_events()
    return failure.event_specific_data.error.message


def unexplained_rows(location: CodeLocation, period: str) -> list[str]:
    """How a person names the period's unexplained rows: customer ids, partner:<id> for orphans."""
    results = location.results([period])
    held = results[results["status"].isin(UNEXPLAINED)]
    return [
        str(int(row.customer_id)) if not pd.isna(row.customer_id) else f"partner:{int(row.partner_id)}"
        for row in held.itertuples()
    ]


def reconciliation_metadata(result) -> dict[str, Any]:
    return materialization_metadata(result, RECONCILIATION)


@pytest.fixture
def location(small_sandbox, tmp_path) -> CodeLocation:
    return CodeLocation.on(tmp_path, copy_sandbox(small_sandbox, tmp_path))


def test_a_signed_off_period_rerun_after_one_invoice_changed_keeps_both_runs_names_the_customer_and_alerts_once(
    location,
    receiver: Receiver,  # noqa: F811
):
    period = max(location.sandbox.closed_periods)
    channel = AlertChannel(webhook_url=receiver.url, kind="generic", secret=SECRET)
    warehouse: Warehouse = location.warehouse
    first = location.reconcile(period)
    _, cursor = alert_tick(location.instance, warehouse, channel, None)
    assert [alert["event"] for alert in receiver.accepted()] == ["reconciliation.mismatch"]

    accepted = unexplained_rows(location, period)
    assert accepted, "the sandbox injects unexplained differences into every closed period"
    signed = sign_off(
        location, period, signed_by="Dana Whitfield", accept_unexplained=accepted, note="October"
    )
    assert signed.success, failure_text(signed)

    customer = _plain_matching_customer(location.sandbox.manifest, period)
    before = location.results([period]).set_index("customer_id").loc[customer]
    _add_to_the_base_line(location.sandbox, customer, period, 1_000)
    second = location.reconcile(period)

    # The current view shows the new figures; the history keeps both runs' rows.
    after = location.results([period]).set_index("customer_id").loc[customer]
    assert int(after["nexacloud_total_cents"]) == int(before["nexacloud_total_cents"]) + 1_000
    assert after["status"] == "amount_mismatch"
    with location._reading() as connection:
        runs = read_runs(connection, date.fromisoformat(period))
        assert list(runs["run_id"]) == [first.run_id, second.run_id]
        kept = read_run_results(connection, first.run_id).set_index("customer_id").loc[customer]
        assert int(kept["nexacloud_total_cents"]) == int(before["nexacloud_total_cents"])
        (signoff,) = read_signoffs(connection, [date.fromisoformat(period)]).to_dict("records")
    assert (signoff["run_id"], signoff["signed_by"], signoff["note"]) == (
        first.run_id,
        "Dana Whitfield",
        "October",
    )
    assert sorted(signoff["accepted_unexplained"]) == sorted(accepted)

    # What moved since sign-off: exactly that customer, old → new, and why.
    metadata = reconciliation_metadata(second)
    assert metadata["signed_off"] is True and metadata["signed_off_run_id"] == first.run_id
    assert metadata["rows_changed_since_signoff"] == 1
    changes = metadata["changed_since_signoff"]
    assert f"| {customer} |" in changes and "match → amount_mismatch" in changes
    old, new = int(before["nexacloud_total_cents"]), int(before["nexacloud_total_cents"]) + 1_000
    assert f"nexacloud_total_cents ${old / 100:,.2f} → ${new / 100:,.2f}" in changes
    assert "nexacloud/invoice_lines, nexacloud/invoices" in changes
    check = check_evaluation(second, "unchanged_since_signoff")
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["rows_changed"].value == 1
    page = (location.home / "reports" / period / f"reconciliation-{period}.html").read_text()
    assert (
        second.run_id in page and "signed off by Dana Whitfield" in page and "Changed since sign-off" in page
    )

    # One message for the change since sign-off (beside the period's changed differences).
    _, cursor = alert_tick(location.instance, warehouse, channel, cursor)
    events = [alert["event"] for alert in receiver.accepted()]
    assert events.count("reconciliation.changed_since_signoff") == 1
    changed = next(a for a in receiver.accepted() if a["event"] == "reconciliation.changed_since_signoff")
    assert changed["rows_changed"] == 1 and changed["signed_off_by"] == "Dana Whitfield"
    assert any(
        line.startswith(f"• customer {customer}") and "match → amount_mismatch" in line
        for line in changed["lines"]
    )

    # A second identical re-run: a new history entry, nothing new to say.
    third = location.reconcile(period)
    assert (
        reconciliation_metadata(third)["inputs_fingerprint"]
        == reconciliation_metadata(second)["inputs_fingerprint"]
    )
    delivered = len(receiver.accepted())
    outcome, _ = alert_tick(location.instance, warehouse, channel, cursor)
    assert len(receiver.accepted()) == delivered, outcome.skip_message


def test_input_fingerprints_change_exactly_with_the_input_that_changed(location, tmp_path):
    period = max(location.sandbox.closed_periods)
    fingerprints = lambda result: reconciliation_metadata(result)["input_fingerprints"]  # noqa: E731
    first = fingerprints(location.reconcile(period))
    assert set(first) >= {"nexacloud/invoices", "odoo/invoices", "odoo/usage", "waivers", "policy"}

    assert fingerprints(location.reconcile(period)) == first, "an identical re-run must fingerprint alike"

    customer = _plain_matching_customer(location.sandbox.manifest, period)
    _add_to_the_base_line(location.sandbox, customer, period, 500)
    after_invoice = fingerprints(location.reconcile(period))
    assert changed(first, after_invoice) == {"nexacloud/invoices", "nexacloud/invoice_lines"}

    waivers = location.sandbox.out / "waivers.csv"
    waivers.write_text(waivers.read_text() + f"{period},{customer},500,Agreed credit,Dana Whitfield,\n")
    after_waiver = fingerprints(location.reconcile(period))
    assert changed(after_invoice, after_waiver) == {"waivers"}

    result = defs.resolve_job_def("reconcile_billing_period").execute_in_process(
        partition_key=period,
        instance=location.instance,
        resources=location.resources(BILLING_TOLERANCE_CENTS="7"),
    )
    assert changed(after_waiver, fingerprints(result)) == {"policy"}


def changed(before: dict, after: dict) -> set[str]:
    return {name for name in set(before) | set(after) if before.get(name) != after.get(name)}


def test_signoff_refuses_a_provisional_period_a_failed_latest_run_and_unnamed_differences(location, tmp_path):
    provisional = location.sandbox.provisional_period
    closed = max(location.sandbox.closed_periods)
    location.reconcile(provisional)
    refused = sign_off(location, provisional, signed_by="Dana")
    assert not refused.success and "provisional" in failure_text(refused)

    location.reconcile(closed)
    unnamed = sign_off(location, closed, signed_by="Dana")
    assert not unnamed.success
    held = unexplained_rows(location, closed)
    assert f"{len(held)} unexplained difference(s) not accepted" in failure_text(unnamed)
    partly = sign_off(location, closed, signed_by="Dana", accept_unexplained=held[1:])
    assert not partly.success and f"1 unexplained difference(s) not accepted: {held[0]} (" in failure_text(
        partly
    )
    typo = sign_off(location, closed, signed_by="Dana", accept_unexplained=[*held, "999999"])
    assert not typo.success and "not unexplained differences: 999999" in failure_text(typo)

    # A run of the period that fails makes it the latest run: its reports folder, fine when the
    # code location loaded, became a file since.
    blocked = tmp_path / "reports-became-a-file"
    resources = location.resources(BILLING_REPORTS_DIR=str(blocked))
    blocked.write_text("not a folder")
    before = location.results([closed])
    failed = defs.resolve_job_def("reconcile_billing_period").execute_in_process(
        partition_key=closed, instance=location.instance, resources=resources, raise_on_error=False
    )
    assert not failed.success
    pd.testing.assert_frame_equal(location.results([closed]), before)  # the failed run changed nothing
    after_failure = sign_off(location, closed, signed_by="Dana", accept_unexplained=held)
    assert not after_failure.success and "latest reconciliation run of the period failed" in failure_text(
        after_failure
    )
    with location._reading() as connection:
        assert read_signoffs(connection).empty, "a refused sign-off records nothing"


def test_a_signoff_is_revoked_with_a_reason_and_kept(location):
    closed = max(location.sandbox.closed_periods)
    location.reconcile(closed)
    held = unexplained_rows(location, closed)
    assert sign_off(location, closed, signed_by="Dana", accept_unexplained=held).success
    without_reason = sign_off(location, closed, signed_by="Sam", revoke=True)
    assert not without_reason.success and "must say why" in failure_text(without_reason)
    assert sign_off(location, closed, signed_by="Sam", revoke=True, reason="late usage arrived").success
    again = sign_off(location, closed, signed_by="Sam", revoke=True, reason="twice")
    assert not again.success and "no active sign-off to revoke" in failure_text(again)
    with location._reading() as connection:
        (kept,) = read_signoffs(connection).to_dict("records")
    assert (kept["signed_by"], kept["revoked_by"], kept["revoke_reason"]) == (
        "Dana",
        "Sam",
        "late usage arrived",
    )
    assert not pd.isna(kept["revoked_at"])


def test_flip_readiness_counts_only_signed_off_periods_when_required(location):
    closed = sorted(location.sandbox.closed_periods)
    for period in closed:
        location.reconcile(period)
    unsigned = location.assess_flip_readiness(BILLING_FLIP_REQUIRES_SIGNOFF="true")
    assert unsigned["verdict"] == "not_ready"
    assert f"- {closed[-1][:7]} is not signed off" in unsigned["reasons"]
    latest_run = unsigned["runs_judged"][closed[-1]]
    assert sign_off(
        location, closed[-1], signed_by="Dana", accept_unexplained=unexplained_rows(location, closed[-1])
    ).success
    signed = location.assess_flip_readiness(BILLING_FLIP_REQUIRES_SIGNOFF="true")
    assert "is not signed off" not in signed["reasons"]
    assert signed["runs_judged"] == {closed[-1]: latest_run}
    # Still not ready: the sandbox's unexplained differences were accepted for sign-off, not explained.
    assert signed["verdict"] == "not_ready"
