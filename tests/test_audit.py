"""The audit trail's domain (docs/design.md §12): input fingerprints, what moved since a sign-off,
when a period may be signed off, and the warehouse tables that keep runs and sign-offs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pandas as pd
import pytest
from sqlalchemy import create_engine

from fusion_billing_assets import warehouse
from fusion_billing_assets.billing.audit import (
    changed_inputs,
    changes_since_signoff,
    file_fingerprint,
    frame_fingerprint,
    settings_fingerprint,
    signoff_refusals,
)
from fusion_billing_assets.warehouse import RESULT_COLUMNS, RunRecord

OCTOBER = date(2026, 10, 1)
AT = datetime(2026, 11, 3, 6, 0, tzinfo=UTC)


def invoices() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "invoice_id": [1, 2],
            "customer_id": [10, 11],
            "total_cents": [5537, 11300],
            "period_start": [OCTOBER, OCTOBER],
            "rate": [Decimal("0.1300"), Decimal("0.0500")],
        }
    )


# --- fingerprints ---------------------------------------------------------------------------


def test_the_same_content_gives_the_same_fingerprint_in_any_copy():
    assert frame_fingerprint(invoices()) == frame_fingerprint(invoices().copy())
    assert frame_fingerprint(invoices()).rows == 2


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda f: f.assign(total_cents=[5537, 11301]), id="one cent"),
        pytest.param(lambda f: f.assign(rate=[Decimal("0.1300"), Decimal("0.0501")]), id="a rate"),
        pytest.param(lambda f: f.assign(period_start=[OCTOBER, date(2026, 10, 2)]), id="a date"),
        pytest.param(lambda f: f.iloc[:1], id="a row removed"),
        pytest.param(lambda f: pd.concat([f, f.iloc[:1]]), id="a row added"),
        pytest.param(lambda f: f.rename(columns={"rate": "tax_rate"}), id="a column renamed"),
        pytest.param(lambda f: f.assign(customer_id=[10, None]), id="a value gone"),
    ],
)
def test_any_change_of_content_changes_the_fingerprint(change):
    assert frame_fingerprint(change(invoices())) != frame_fingerprint(invoices())


def test_an_empty_frame_has_a_fingerprint_of_its_columns():
    empty = invoices().iloc[0:0]
    assert frame_fingerprint(empty).rows == 0
    assert frame_fingerprint(empty) != frame_fingerprint(empty.drop(columns=["rate"]))


def test_the_waiver_file_and_the_policy_are_fingerprinted_by_content(tmp_path):
    waivers = tmp_path / "waivers.csv"
    waivers.write_text("period,customer_id,delta_cents,reason,approver,expires_on\n")
    before = file_fingerprint(waivers)
    assert file_fingerprint(waivers) == before
    waivers.write_text(waivers.read_text() + "2026-10-01,2,1695,Onboarding,Dana,\n")
    assert file_fingerprint(waivers) != before
    assert file_fingerprint(tmp_path / "missing.csv") == file_fingerprint(None)
    policy = {"tolerance_cents": 0, "tax_rounding": "round_per_line"}
    assert settings_fingerprint(policy) == settings_fingerprint(dict(reversed(list(policy.items()))))
    assert settings_fingerprint({**policy, "tolerance_cents": 1}) != settings_fingerprint(policy)


def test_changed_inputs_names_exactly_the_inputs_that_moved():
    before = {"nexacloud/invoices": {"rows": 2, "sha256": "a"}, "waivers": {"rows": 1, "sha256": "w"}}
    after = {"nexacloud/invoices": {"rows": 2, "sha256": "b"}, "waivers": {"rows": 1, "sha256": "w"}}
    assert changed_inputs(before, after) == ["nexacloud/invoices"]
    assert changed_inputs(before, before) == []


# --- changes since sign-off -------------------------------------------------------------------


def result_rows(*rows: tuple) -> pd.DataFrame:
    """(customer_id, partner_id, status, nexacloud_total, odoo_total) → rows of the results contract."""
    frame = pd.DataFrame(
        [
            {
                **dict.fromkeys(RESULT_COLUMNS),
                "billing_period": OCTOBER,
                "customer_id": customer,
                "partner_id": partner,
                "customer_name": f"Customer {customer}",
                "status": status,
                "cause": "…",
                "nexacloud_invoice_count": 1,
                "odoo_invoice_count": 1,
                "nexacloud_currency": "CAD",
                "odoo_currency": "CAD",
                "nexacloud_subtotal_cents": nexacloud,
                "nexacloud_tax_cents": 0,
                "nexacloud_total_cents": nexacloud,
                "odoo_subtotal_cents": odoo,
                "odoo_tax_cents": 0,
                "odoo_total_cents": odoo,
                "expected_subtotal_cents": nexacloud,
                "expected_tax_cents": 0,
                "expected_total_cents": nexacloud,
                "delta_cents": odoo - nexacloud,
                "plan_fee_delta_cents": 0,
                "overage_delta_cents": odoo - nexacloud,
                "tax_delta_cents": 0,
                "nexacloud_cpu_seconds": Decimal("10.000"),
                "odoo_cpu_seconds": Decimal("10.000"),
                "provisional": False,
                "reconciled_at": AT,
            }
            for customer, partner, status, nexacloud, odoo in rows
        ],
        columns=RESULT_COLUMNS,
    )
    for column in ("customer_id", "partner_id"):
        frame[column] = frame[column].astype("Int64")
    return frame


def test_only_the_rows_that_moved_are_changes_with_their_old_and_new_figures():
    signed = result_rows(
        (1, 101, "match", 5537, 5537), (2, 102, "match", 4900, 4900), (None, 900, "unmapped", 0, 100)
    )
    current = result_rows(
        (1, 101, "match", 5537, 5537), (2, 102, "amount_mismatch", 5100, 4900), (3, 103, "match", 1, 1)
    )
    changes = changes_since_signoff(signed, current)
    by_customer = {
        (row.customer_id if not pd.isna(row.customer_id) else None): row for row in changes.itertuples()
    }
    assert set(by_customer) == {2, 3, None}
    moved = by_customer[2]
    assert (moved.change, moved.old_status, moved.new_status) == ("changed", "match", "amount_mismatch")
    assert (moved.old_nexacloud_total_cents, moved.new_nexacloud_total_cents) == (4900, 5100)
    assert "nexacloud_total_cents $49.00 → $51.00" in moved.moved
    assert "delta_cents $0.00 → -$2.00" in moved.moved
    assert by_customer[3].change == "added" and by_customer[None].change == "removed"


def test_an_identical_rerun_has_no_changes():
    rows = result_rows((1, 101, "match", 5537, 5537), (None, 900, "unmapped", 0, 100))
    assert changes_since_signoff(rows, rows.copy()).empty


# --- refusals -------------------------------------------------------------------------------


def refusals(results, **facts):
    return signoff_refusals(
        period_closed=facts.get("closed", True),
        run_provisional=facts.get("provisional", False),
        latest_run_failed=facts.get("failed", False),
        results=results,
        accepted_unexplained=facts.get("accept", ()),
    )


def test_a_clean_closed_period_can_be_signed_off():
    assert refusals(result_rows((1, 101, "match", 5537, 5537), (2, 102, "waived", 10, 20))) == []


def test_a_provisional_period_or_a_failed_latest_run_is_refused():
    clean = result_rows((1, 101, "match", 5537, 5537))
    assert "provisional" in refusals(clean, closed=False)[0]
    assert "provisional" in refusals(clean, provisional=True)[0]
    assert "failed" in refusals(clean, failed=True)[0]


def test_unexplained_differences_must_each_be_named():
    results = result_rows(
        (1, 101, "match", 1, 1), (2, 102, "duplicate", 5, 9), (None, 900, "unmapped", 0, 100)
    )
    (refusal,) = refusals(results)
    assert "2 unexplained difference(s) not accepted: 2 (duplicate), partner:900 (unmapped)" in refusal
    assert "partner:900 (unmapped)" in refusals(results, accept=["2"])[0]
    assert refusals(results, accept=["2", "partner:900"]) == []
    assert "not unexplained differences: 1" in refusals(results, accept=["1", "2", "partner:900"])[0]


# --- the warehouse's history and sign-off tables ----------------------------------------------


@pytest.fixture
def connection(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    with engine.begin() as connection:
        warehouse.ensure_tables(connection)
        yield connection
    engine.dispose()


def run(run_id: str, minute: int, fingerprint: str = "f") -> RunRecord:
    return RunRecord(
        run_id=run_id,
        period=OCTOBER,
        reconciled_at=AT.replace(minute=minute),
        provisional=False,
        input_fingerprints={"nexacloud/invoices": {"rows": 1, "sha256": fingerprint}},
        inputs_fingerprint=fingerprint,
    )


def test_every_run_is_kept_and_a_recorded_run_is_replaced_not_doubled(connection):
    first = result_rows((1, 101, "match", 5537, 5537))
    second = result_rows((1, 101, "amount_mismatch", 5600, 5537))
    warehouse.record_run(connection, run("run-1", 0, "a"), first)
    warehouse.record_run(connection, run("run-2", 5, "b"), second)
    warehouse.record_run(connection, run("run-2", 5, "b"), second)
    runs = warehouse.read_runs(connection, OCTOBER)
    assert list(runs["run_id"]) == ["run-1", "run-2"]
    assert runs.iloc[1]["counts_by_status"] == {"amount_mismatch": 1}
    assert runs.iloc[1]["input_fingerprints"] == {"nexacloud/invoices": {"rows": 1, "sha256": "b"}}
    assert list(warehouse.read_run_results(connection, "run-1")["nexacloud_total_cents"]) == [5537]
    assert list(warehouse.read_run_results(connection, "run-2")["nexacloud_total_cents"]) == [5600]


def test_pruning_keeps_the_latest_runs_and_every_signed_off_one(connection):
    rows = result_rows((1, 101, "match", 5537, 5537))
    for index in range(4):
        warehouse.record_run(connection, run(f"run-{index}", index), rows)
    warehouse.record_signoff(
        connection,
        period=OCTOBER,
        run_id="run-0",
        signed_by="Dana",
        signed_at=AT,
        note=None,
        results=rows,
        accepted_unexplained=[],
    )
    assert warehouse.prune_history(connection, OCTOBER, keep_runs=0) == 0
    assert warehouse.prune_history(connection, OCTOBER, keep_runs=1) == 2
    assert list(warehouse.read_runs(connection, OCTOBER)["run_id"]) == ["run-0", "run-3"]


def test_a_revoked_signoff_is_kept_and_no_longer_active(connection):
    rows = result_rows((1, 101, "match", 5537, 5537))
    signoff_id = warehouse.record_signoff(
        connection,
        period=OCTOBER,
        run_id="run-1",
        signed_by="Dana Whitfield",
        signed_at=AT,
        note="October close",
        results=rows,
        accepted_unexplained=[],
    )
    assert warehouse.active_signoff(connection, OCTOBER)["signoff_id"] == signoff_id
    revoked = warehouse.revoke_signoff(
        connection, period=OCTOBER, revoked_by="Sam", revoked_at=AT.replace(hour=9), reason="late usage"
    )
    assert revoked == signoff_id
    assert warehouse.active_signoff(connection, OCTOBER) is None
    (kept,) = warehouse.read_signoffs(connection, [OCTOBER]).to_dict("records")
    assert (kept["signed_by"], kept["revoked_by"], kept["revoke_reason"]) == (
        "Dana Whitfield",
        "Sam",
        "late usage",
    )
    assert kept["counts_by_status"] == {"match": 1}
    assert (
        warehouse.revoke_signoff(connection, period=OCTOBER, revoked_by="Sam", revoked_at=AT, reason="x")
        is None
    )


# --- flip readiness with sign-off required ----------------------------------------------------


def test_readiness_requires_a_signoff_with_nothing_moved_and_names_the_run_it_rests_on():
    from fusion_billing_assets.billing.readiness import PeriodSignoff, flip_readiness

    clean = result_rows((1, 101, "match", 5537, 5537))
    latest = {OCTOBER: "run-2"}
    without = flip_readiness(clean, [OCTOBER], 1, latest_runs=latest)
    assert without.ready and without.runs_judged == {"2026-10-01": "run-2"}
    unsigned = flip_readiness(clean, [OCTOBER], 1, latest_runs=latest, signoffs={})
    assert not unsigned.ready and unsigned.reasons == ("2026-10 is not signed off",)
    moved = flip_readiness(
        clean, [OCTOBER], 1, latest_runs=latest, signoffs={OCTOBER: PeriodSignoff("run-1", "Dana", 1)}
    )
    assert not moved.ready
    assert moved.reasons == (
        "2026-10 changed since Dana signed off run run-1 (1 row(s) moved): sign it off again or find out why",
    )
    signed = flip_readiness(
        clean, [OCTOBER], 1, latest_runs=latest, signoffs={OCTOBER: PeriodSignoff("run-1", "Dana")}
    )
    assert signed.ready and signed.runs_judged == {"2026-10-01": "run-1"}


# --- the command line -------------------------------------------------------------------------


def test_the_signoff_command_refuses_in_one_sentence_of_its_own(tmp_path):
    import os
    import subprocess
    import sys

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("NEXACLOUD_", "ODOO_", "BILLING_", "ALERT_"))
    }
    env["DAGSTER_HOME"] = str(tmp_path)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusion_billing_assets.cli",
            "signoff",
            "--period",
            "2026-10-01",
            "--by",
            "Dana",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stderr.strip() == (
        "billing period 2026-10-01 cannot be signed off: the period has no reconciliation results to sign off"
    )
