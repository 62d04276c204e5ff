"""Isolation contract (issue "Reliability"; docs/design.md §6.10): a broken record is set aside, never fatal.

A record that breaks its source's contract, or references what the period does not hold, gives the
customers it concerns ``source_data_error`` with a cause naming the source, the record and the
field; every other customer of the period reconciles exactly as it does without the breakage (its
row is compared with a clean run's, column by column); nothing set aside is silent. Only a frame
broken as a whole (a required column missing) stops its asset, naming the source and the column.

The domain tests break one record of the hand-worked ``World`` of ``tests/test_reconcile`` as a
source would hand it over (rows typed leniently, then validated), and push the frames through the
assets' wiring: ``screen_period`` → ``account_mapping`` → expected charges → ``reconcile``. The
end-to-end tests break a copy of the small sandbox (its NexaCloud SQLite file, its Odoo store,
its waiver file) and run the real job, comparing with a clean run of the same copy.
"""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from fusion_billing_assets.billing.expected import (
    active_days_per_deployment,
    expected_charges,
    expected_invoices,
)
from fusion_billing_assets.billing.isolation import refused_waivers
from fusion_billing_assets.billing.reconcile import (
    Policy,
    reconcile,
    usage_days_that_differ,
    usage_pairs_that_differ,
)
from fusion_billing_assets.billing.waivers import Waiver, read_waivers
from fusion_billing_assets.defs import nexacloud as nexacloud_assets
from fusion_billing_assets.defs.resources import NexaCloudDatabase
from fusion_billing_assets.sandbox.odoo_store import replace_records
from fusion_billing_assets.sources import nexacloud, odoo_frames
from fusion_billing_assets.sources.frames import typed_frame
from fusion_billing_assets.sources.screening import (
    ScreenedPeriod,
    billable,
    contract_of,
    mapped_accounts,
    period_inputs,
    screen_period,
)
from fusion_billing_assets.sources.validation import (
    DataQualityError,
    nexacloud_invoices,
    odoo_account_links,
    validate,
)
from tests.conftest import GeneratedSandbox
from tests.test_reconcile import ALICE, BOB, OCTOBER, RECONCILED_AT, Customer, Deployment, World
from tests.test_reconciliation_end_to_end import CodeLocation, copy_sandbox

SOURCE_DATA_ERROR = "source_data_error"
# A third customer, in Nova Scotia (HST 14 % in 2026): 9,000 CPU-seconds, 5,400 over the quota,
# 1.5 CPU-hours at 4.5¢ = 6.75¢ → 7¢; billed $49.00 + $0.07 + $6.87 tax = $55.94.
CAROL = Customer(3, "Harbour Data", "NS", (Deployment(31, {2: 9_000}),))
CUSTOMERS = (ALICE, BOB, CAROL)

COLUMNS: Mapping[str, Mapping[str, str]] = {
    "nexacloud/customers": nexacloud.CUSTOMER_COLUMNS,
    "nexacloud/plans": nexacloud.PLAN_COLUMNS,
    "nexacloud/deployments": nexacloud.DEPLOYMENT_COLUMNS,
    "nexacloud/usage": nexacloud.USAGE_COLUMNS,
    "nexacloud/invoices": nexacloud.INVOICE_COLUMNS,
    "nexacloud/invoice_lines": nexacloud.INVOICE_LINE_COLUMNS,
    "odoo/account_links": odoo_frames.LINK_COLUMNS,
    "odoo/partners": odoo_frames.PARTNER_COLUMNS,
    "odoo/subscriptions": odoo_frames.SUBSCRIPTION_COLUMNS,
    "odoo/usage": odoo_frames.ODOO_USAGE_COLUMNS,
    "odoo/invoices": odoo_frames.INVOICE_COLUMNS,
    "odoo/invoice_lines": odoo_frames.INVOICE_LINE_COLUMNS,
}
# What each system answers per local day when billing/usage_days_that_differ asks (no contract:
# only the totals are screened).
DAY_COLUMNS: Mapping[str, Mapping[str, str]] = {
    "nexacloud/usage_days": nexacloud.USAGE_DAY_COLUMNS,
    "odoo/usage_days": odoo_frames.ODOO_USAGE_DAY_COLUMNS,
}
Records = dict[str, list[dict[str, Any]]]


# --- The period as sources hand it over, and the assets' wiring ---------------------------------


def source_records(world: World) -> Records:
    """Every frame of the world as the plain records a source reads, by source name, with both
    systems' usage per local day."""
    inputs = world.inputs()
    frames = {
        "nexacloud/customers": inputs.customers,
        "nexacloud/plans": inputs.plans,
        "nexacloud/deployments": inputs.deployments,
        "nexacloud/usage": inputs.nexacloud_usage,
        "nexacloud/invoices": inputs.nexacloud_invoices,
        "nexacloud/invoice_lines": inputs.nexacloud_invoice_lines,
        "odoo/account_links": world.account_links(),
        "odoo/partners": inputs.partners,
        "odoo/subscriptions": inputs.subscriptions,
        "odoo/usage": inputs.odoo_usage,
        "odoo/invoices": inputs.odoo_invoices,
        "odoo/invoice_lines": inputs.odoo_invoice_lines,
        "nexacloud/usage_days": world.nexacloud_usage_days(),
        "odoo/usage_days": world.odoo_usage_days(),
    }
    return {
        source: [
            {
                column: None if pd.isna(value) else value
                for column, value in record.items()
                if column in {**COLUMNS, **DAY_COLUMNS}[source]
            }
            for record in frame.to_dict("records")
        ]
        for source, frame in frames.items()
    }


def source_frame(source: str, records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """What the source's asset yields: the records typed leniently, then validated."""
    columns = COLUMNS[source]
    frame = typed_frame(
        [[record.get(column) for column in columns] for record in records], columns, lenient=True
    )
    if source == "nexacloud/deployments":
        frame.insert(len(columns), "active_days", active_days_per_deployment(frame, OCTOBER))
    contract = odoo_account_links() if source == "odoo/account_links" else contract_of(source, OCTOBER)
    return validate(frame, contract)


def reconciled_period(
    records: Records, waivers: tuple[Waiver, ...] = (), waiver_set_aside: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, ScreenedPeriod]:
    """The period's results, wired as ``defs/reconciliation.py`` wires its four assets."""
    frames = {source: source_frame(source, rows) for source, rows in records.items() if source in COLUMNS}
    mapping = mapped_accounts(frames, frames.pop("odoo/account_links"), OCTOBER)
    pairs = usage_pairs_that_differ(frames["nexacloud/usage"], frames["odoo/usage"], mapping)
    days = {
        source: typed_frame([[row[column] for column in columns] for row in records[source]], columns)
        for source, columns in DAY_COLUMNS.items()
    }
    usage_days = usage_days_that_differ(pairs, days["nexacloud/usage_days"], days["odoo/usage_days"])
    screened = screen_period(frames, OCTOBER, mapping)
    lines = expected_charges(**billable(screened), window=OCTOBER)
    inputs = period_inputs(
        screened,
        OCTOBER,
        provisional=False,
        usage_days=usage_days,
        expected_lines=lines,
        expected_invoices=expected_invoices(lines),
        more_set_aside=waiver_set_aside,
    )
    results, _ = reconcile(inputs, mapping, waivers, Policy(), RECONCILED_AT)
    return results, screened


def broken(
    change: Callable[[Records], None], world: World | None = None
) -> tuple[pd.DataFrame, ScreenedPeriod]:
    records = copy.deepcopy(source_records(world or World(list(CUSTOMERS))))
    change(records)
    return reconciled_period(records)


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    """The period without any breakage: every customer matches (tests/test_reconcile's figures)."""
    results, screened = reconciled_period(source_records(World(list(CUSTOMERS))))
    assert screened.set_aside.empty
    assert list(results["status"]) == ["match"] * 3
    assert list(results["nexacloud_total_cents"]) == [5_553, 5_145, 5_594]
    return results


def record_of(records: Records, source: str, **key: Any) -> dict[str, Any]:
    (record,) = [row for row in records[source] if all(row[column] == value for column, value in key.items())]
    return record


def customer_row(results: pd.DataFrame, customer_id: int) -> pd.Series:
    rows = results[results["customer_id"] == customer_id]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def assert_isolated(
    results: pd.DataFrame,
    clean: pd.DataFrame,
    concerned: Mapping[int, Iterable[str]],
    *,
    apart: Iterable[int] = (),
    same_partner_rows: bool = True,
) -> None:
    """Each concerned customer has ``source_data_error`` with every text given in its cause; every
    other customer's row (but those judged ``apart``) is the clean run's, column by column."""
    for customer_id, named in concerned.items():
        row = customer_row(results, customer_id)
        assert row["status"] == SOURCE_DATA_ERROR, row["cause"]
        for text in named:
            assert text in row["cause"], f"{text!r} not in the cause: {row['cause']}"
    left_out = [*concerned, *apart]
    others = results[results["customer_id"].notna() & ~results["customer_id"].isin(left_out)]
    expected = clean[clean["customer_id"].notna() & ~clean["customer_id"].isin(left_out)]
    pd.testing.assert_frame_equal(others.reset_index(drop=True), expected.reset_index(drop=True))
    if same_partner_rows:
        pd.testing.assert_frame_equal(
            results[results["customer_id"].isna()].reset_index(drop=True),
            clean[clean["customer_id"].isna()].reset_index(drop=True),
        )


# --- a. An expected leg that cannot be formed ----------------------------------------------------


def test_a_customer_billed_in_usd_on_a_cad_plan_has_no_expected_leg_and_is_judged_on_both_bills(clean):
    def usd(records: Records) -> None:
        record_of(records, "nexacloud/customers", customer_id=BOB.customer_id)["currency"] = "USD"
        record_of(records, "nexacloud/invoices", customer_id=BOB.customer_id)["currency"] = "USD"

    results, screened = broken(usd)

    row = customer_row(results, BOB.customer_id)
    assert row["status"] == "currency_mismatch", row["cause"]
    assert "NexaCloud bills this customer in USD ($51.45) but Odoo invoiced in CAD ($51.45" in row["cause"]
    assert "Our expected leg is left empty: deployment 21's plan standard is priced in CAD" in row["cause"]
    assert "the customer is billed in USD" in row["cause"]
    for leg in ("subtotal", "tax", "total"):
        assert pd.isna(row[f"expected_{leg}_cents"]), leg
    assert (row["nexacloud_total_cents"], row["odoo_total_cents"]) == (5_145, 5_145)
    assert screened.set_aside.empty, "no record is broken: only our third opinion is missing"
    assert_isolated(results, clean, {}, apart=[BOB.customer_id])


# --- b, c. NexaCloud records -----------------------------------------------------------------------


def test_one_negative_usage_reading_sets_aside_only_its_customer(clean):
    def negative(records: Records) -> None:
        record_of(records, "nexacloud/usage", deployment_id=11)["negative_records"] = 1

    results, screened = broken(negative)

    assert_isolated(
        results, clean, {ALICE.customer_id: ["nexacloud/usage deployment_id=11: negative_records"]}
    )
    # One row per deployment with usage: Alice's, Bob's and Carol's.
    assert screened.counts["nexacloud/usage"] == {"rows_in": 3, "rows_used": 2, "rows_set_aside": 1}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param(
            lambda records: record_of(records, "nexacloud/invoices", invoice_id=5002).update(
                total_cents=5_146
            ),
            ["nexacloud/invoices invoice_id=5002", "total_cents = subtotal_cents + tax_cents"],
            id="total-is-not-subtotal-plus-tax",
        ),
        pytest.param(
            lambda records: record_of(records, "nexacloud/invoice_lines", invoice_line_id=3).update(
                amount_cents="49.00 CAD"
            ),
            ["nexacloud/invoice_lines invoice_line_id=3: amount_cents: not a whole number (got '49.00 CAD')"],
            id="unreadable-line-amount",
        ),
    ],
)
def test_one_bad_nexacloud_invoice_sets_aside_only_its_customer(clean, change, named):
    results, _ = broken(change)

    assert_isolated(results, clean, {BOB.customer_id: named})


# --- d. Odoo many2one values that read false or garbage --------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        pytest.param(
            lambda records: record_of(records, "odoo/subscriptions", subscription_id=1021).update(
                partner_id=False
            ),
            ["odoo/subscriptions subscription_id=1021: partner_id: missing (got False)"],
            id="subscription-partner-false",
        ),
        pytest.param(
            lambda records: record_of(records, "odoo/partners", partner_id=102).update(
                commercial_partner_id="res.partner,7"
            ),
            [
                "odoo/partners partner_id=102: commercial_partner_id: not a whole number",
                "odoo/invoices move_id=2: partner_id: partner 102 cannot be read",
            ],
            id="partner-commercial-partner-garbage",
        ),
    ],
)
def test_an_odoo_many2one_that_cannot_be_read_sets_aside_only_its_customer(clean, change, named):
    results, _ = broken(change)

    assert_isolated(results, clean, {BOB.customer_id: named})


# --- e. A bad plan ------------------------------------------------------------------------------------


def _bad_gold_plan(records: Records) -> None:
    standard = records["nexacloud/plans"][0]
    records["nexacloud/plans"].append(
        standard | {"plan_id": 2, "plan_code": "gold", "monthly_price_cents": -1}
    )


def test_a_bad_plan_nobody_uses_sets_nobody_aside_and_is_listed(clean):
    results, screened = broken(_bad_gold_plan)

    assert_isolated(results, clean, {})
    (listed,) = screened.set_aside.itertuples(index=False)
    assert (listed.source, listed.record) == ("nexacloud/plans", "plan_id=2")
    assert "monthly_price_cents" in listed.problem
    assert pd.isna(listed.customer_id) and pd.isna(listed.partner_id)


def test_a_bad_plan_used_by_one_customer_sets_aside_only_that_customer(clean):
    def used_by_bob(records: Records) -> None:
        _bad_gold_plan(records)
        record_of(records, "nexacloud/deployments", deployment_id=21)["plan_id"] = 2

    results, _ = broken(used_by_bob)

    assert_isolated(
        results,
        clean,
        {
            BOB.customer_id: [
                "nexacloud/plans plan_id=2: monthly_price_cents",
                "nexacloud/deployments deployment_id=21: plan_id: plan 2 is not a usable plan",
            ]
        },
    )


# --- f. A bad waiver row --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "concerned"),
    [("2026-09-01", {}), ("2026-10-01", {BOB.customer_id: ["waivers line 3", "delta_cents"]})],
    ids=["another-month", "this-period"],
)
def test_a_bad_waiver_row_sets_aside_only_its_customer_in_its_own_period(clean, tmp_path, period, concerned):
    waivers_csv = tmp_path / "waivers.csv"
    waivers_csv.write_text(
        "period,customer_id,delta_cents,reason,approver,expires_on\n"
        '2026-10-01,3,250,Migration credit,"Dana Whitfield, Controller",\n'
        f'{period},2,12.50,Onboarding,"Dana Whitfield, Controller",\n'
    )
    waiver_file = read_waivers(waivers_csv)
    assert [row.line for row in waiver_file.refused] == [3]

    results, _ = reconciled_period(
        source_records(World(list(CUSTOMERS))),
        waiver_file.waivers,
        refused_waivers(waiver_file.refused_for(OCTOBER.period)),
    )

    assert_isolated(results, clean, concerned)


# --- g. Links that are not one to one --------------------------------------------------------------------


def test_an_odoo_partner_linked_from_two_customers_sets_both_aside_not_a_match_on_the_others_data(clean):
    def bob_linked_to_alices_partner(records: Records) -> None:
        record_of(records, "odoo/account_links", link_kind="customer", nexacloud_id=2)["odoo_id"] = (
            ALICE.partner_id
        )

    results, _ = broken(bob_linked_to_alices_partner)

    conflict = f"Odoo partner {ALICE.partner_id} is linked from NexaCloud customers 1, 2"
    assert_isolated(
        results,
        clean,
        {ALICE.customer_id: [conflict], BOB.customer_id: [conflict]},
        same_partner_rows=False,
    )
    # Neither customer is judged on partner 101's invoice: it stays on a row of its own.
    for customer in (ALICE, BOB):
        row = customer_row(results, customer.customer_id)
        assert pd.isna(row["partner_id"]) and row["odoo_total_cents"] == 0
    partner_rows = results[results["customer_id"].isna()].set_index("partner_id")
    assert partner_rows.loc[ALICE.partner_id, "status"] == SOURCE_DATA_ERROR
    assert partner_rows.loc[ALICE.partner_id, "odoo_total_cents"] == 5_553
    assert partner_rows.loc[BOB.partner_id, "status"] == "unmapped"
    assert results["odoo_total_cents"].sum() == clean["odoo_total_cents"].sum()


def test_a_subscription_linked_from_two_deployments_sets_both_customers_aside(clean):
    def bobs_deployment_on_alices_subscription(records: Records) -> None:
        record_of(records, "odoo/account_links", link_kind="deployment", nexacloud_id=21)["odoo_id"] = 1011

    results, _ = broken(bobs_deployment_on_alices_subscription)

    conflict = "Odoo subscription 1011 is linked from NexaCloud deployments 11, 21"
    assert_isolated(results, clean, {ALICE.customer_id: [conflict], BOB.customer_id: [conflict]})


# --- h, i, j, k. The new contract rules ----------------------------------------------------------------


def test_a_nexacloud_invoice_line_of_a_missing_invoice_is_set_aside_and_named(clean):
    def orphan_line(records: Records) -> None:
        line = record_of(records, "nexacloud/invoice_lines", invoice_line_id=1)
        records["nexacloud/invoice_lines"].append(line | {"invoice_line_id": 99, "invoice_id": 7_777})

    results, screened = broken(orphan_line)

    assert_isolated(
        results,
        clean,
        {
            ALICE.customer_id: [
                "nexacloud/invoice_lines invoice_line_id=99: invoice_id: invoice 7777 is not an invoice of the period"
            ]
        },
    )
    assert screened.counts["nexacloud/invoice_lines"]["rows_set_aside"] == 1


def test_an_odoo_invoice_line_without_a_product_is_a_source_data_error_not_a_hidden_plan_fee_delta(clean):
    def no_product(records: Records) -> None:
        record_of(records, "odoo/invoice_lines", line_id=3)["product_code"] = None

    results, _ = broken(no_product)

    assert_isolated(results, clean, {BOB.customer_id: ["odoo/invoice_lines line_id=3: product_code"]})


def test_a_usage_record_without_an_idempotency_key_is_a_source_data_error(clean):
    def keyless(records: Records) -> None:
        record_of(records, "nexacloud/usage", deployment_id=31)["keyless_records"] = 1

    results, _ = broken(keyless)

    assert_isolated(
        results,
        clean,
        {
            CAROL.customer_id: [
                "nexacloud/usage deployment_id=31: keyless_records",
                "an idempotency_key on every usage record",
            ]
        },
    )


def test_an_odoo_invoice_whose_header_disagrees_with_its_lines_names_the_header_not_other_lines(clean):
    def header_one_dollar_high(records: Records) -> None:
        move = record_of(records, "odoo/invoices", move_id=2)
        move.update(untaxed_cents=move["untaxed_cents"] + 100, total_cents=move["total_cents"] + 100)

    results, _ = broken(header_one_dollar_high)

    assert_isolated(
        results,
        clean,
        {BOB.customer_id: ["odoo/invoices move_id=2", "untaxed amount = the sum of its product lines"]},
    )
    assert "other lines" not in customer_row(results, BOB.customer_id)["cause"]


def test_a_row_wide_check_is_named_once_not_blamed_on_every_field_of_the_record():
    records = source_records(World(list(CUSTOMERS)))["nexacloud/invoices"]
    records[1]["total_cents"] += 1
    frame = source_frame("nexacloud/invoices", records)
    (problem,) = frame["set_aside"].dropna()
    assert problem.count("total_cents = subtotal_cents + tax_cents") == 1, problem
    assert "customer_id:" not in problem and "stripe_invoice_id:" not in problem, problem


def test_an_invoice_to_a_contact_whose_company_cannot_be_read_is_named_on_some_row():
    world = World(list(CUSTOMERS), odoo_invoices_to_contact={BOB.customer_id})

    def contact_company_garbage(records: Records) -> None:
        record_of(records, "odoo/partners", partner_id=BOB.contact_id)["commercial_partner_id"] = "garbage"

    results, screened = broken(contact_company_garbage, world)

    assert set(screened.set_aside["record"]) == {f"partner_id={BOB.contact_id}", "move_id=2"}
    named = results[results["cause"].str.contains(f"partner_id={BOB.contact_id}", regex=False)]
    assert set(named["status"]) == {SOURCE_DATA_ERROR}, results[
        ["customer_id", "partner_id", "status", "cause"]
    ]
    assert customer_row(results, BOB.customer_id)["status"] != "missing_in_odoo"


# --- A frame broken as a whole -------------------------------------------------------------------------


def test_a_frame_missing_a_required_column_raises_naming_the_source_and_the_column():
    frame = source_frame("nexacloud/invoices", source_records(World(list(CUSTOMERS)))["nexacloud/invoices"])

    with pytest.raises(DataQualityError) as raised:
        validate(frame.drop(columns=["tax_cents"]), nexacloud_invoices(OCTOBER))

    assert raised.value.contract_name == "nexacloud/invoices"
    assert str(raised.value).startswith("nexacloud/invoices: ")
    assert "column_in_dataframe (got 'tax_cents')" in str(raised.value)


# --- End to end, through the real job on a copy of the small sandbox ---------------------------------------


@pytest.fixture(scope="module")
def clean_sandbox_run(small_sandbox, tmp_path_factory) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The first closed period of an untouched copy: its results and detail lines."""
    home = tmp_path_factory.mktemp("isolation_clean")
    location = CodeLocation.on(home, copy_sandbox(small_sandbox, home))
    period = small_sandbox.closed_periods[0]
    location.reconcile(period)
    results, lines = location.period(period)
    return period, results, lines


def _targets(manifest: Mapping[str, Any], results: pd.DataFrame, count: int) -> list[int]:
    """Customers that match with one invoice on each side, those cast in no role first."""
    cast = {row["customer_id"] for row in (*manifest["differences"], *manifest["edge_cases"])}
    candidates = results[
        (results["status"] == "match")
        & (results["nexacloud_invoice_count"] == 1)
        & (results["odoo_invoice_count"] == 1)
        & results["customer_id"].notna()
    ]["customer_id"].astype(int)
    ordered = sorted(candidates, key=lambda customer_id: (customer_id in cast, customer_id))
    assert len(ordered) >= count, "the small sandbox has enough matching customers to break"
    return ordered[:count]


def _broken_sandbox_run(
    small_sandbox: GeneratedSandbox, tmp_path: Path, period: str, change: Callable[[GeneratedSandbox], None]
) -> tuple[pd.DataFrame, Any]:
    location = CodeLocation.on(tmp_path, copy_sandbox(small_sandbox, tmp_path))
    change(location.sandbox)
    run = location.reconcile(period)
    assert run.success, "a broken record never fails the period"
    return location.period(period)[0], run


def _assert_sandbox_isolated(
    results: pd.DataFrame, clean: pd.DataFrame, concerned: Mapping[int, Iterable[str]]
):
    by_customer = results.set_index("customer_id", drop=False)
    for customer_id, named in concerned.items():
        row = by_customer.loc[customer_id]
        assert row["status"] == SOURCE_DATA_ERROR, (customer_id, row["cause"])
        for text in named:
            assert text in row["cause"], f"customer {customer_id}: {text!r} not in {row['cause']}"

    def others(frame: pd.DataFrame) -> pd.DataFrame:
        kept = frame[~frame["customer_id"].isin(list(concerned))].drop(columns="reconciled_at")
        return kept.sort_values(["customer_id", "partner_id"], na_position="last").reset_index(drop=True)

    pd.testing.assert_frame_equal(others(results), others(clean))


def _usage_record_of(connection, deployment_id: int, period: str) -> int:
    (record_id,) = connection.execute(
        "SELECT id FROM usage_records WHERE deployment_id = ? AND window_start >= ? AND window_start < date(?, '+1 month') "
        "ORDER BY id LIMIT 1",
        (deployment_id, period, period),
    ).fetchone()
    return record_id


def test_nexacloud_records_broken_in_the_database_set_aside_only_their_customers(
    small_sandbox, clean_sandbox_run, tmp_path
):
    period, clean_results, clean_lines = clean_sandbox_run
    negative, keyless, orphan = _targets(small_sandbox.manifest, clean_results, 3)
    deployment_of = clean_lines.groupby("customer_id")["deployment_id"].min().astype(int).to_dict()
    named: dict[int, list[str]] = {}

    def break_nexacloud(sandbox: GeneratedSandbox) -> None:
        with closing(sqlite3.connect(sandbox.out / "nexacloud.sqlite")) as connection, connection:
            negative_id = _usage_record_of(connection, deployment_of[negative], period)
            connection.execute("UPDATE usage_records SET quantity = -quantity WHERE id = ?", (negative_id,))
            # The contract's table has the key NOT NULL; a copy without the constraint can hold a NULL.
            connection.execute("CREATE TABLE usage_copy AS SELECT * FROM usage_records")
            connection.execute("DROP TABLE usage_records")
            connection.execute("ALTER TABLE usage_copy RENAME TO usage_records")
            keyless_id = _usage_record_of(connection, deployment_of[keyless], period)
            connection.execute("UPDATE usage_records SET idempotency_key = NULL WHERE id = ?", (keyless_id,))
            missing_invoice = connection.execute("SELECT MAX(id) + 1000 FROM invoices").fetchone()[0]
            line_id = connection.execute("SELECT MAX(id) + 1 FROM invoice_lines").fetchone()[0]
            connection.execute(
                "INSERT INTO invoice_lines SELECT ?, ?, deployment_id, kind, description, quantity, "
                "unit_price_cents, amount_cents, tax_cents FROM invoice_lines WHERE deployment_id = ? LIMIT 1",
                (line_id, missing_invoice, deployment_of[orphan]),
            )
        named[negative] = [
            f"nexacloud/usage deployment_id={deployment_of[negative]}",
            f"usage record {negative_id}",
        ]
        named[keyless] = [f"nexacloud/usage deployment_id={deployment_of[keyless]}", "keyless_records"]
        named[orphan] = [
            f"nexacloud/invoice_lines invoice_line_id={line_id}: invoice_id: invoice {missing_invoice} "
            "is not an invoice of the period"
        ]

    results, _ = _broken_sandbox_run(small_sandbox, tmp_path, period, break_nexacloud)

    _assert_sandbox_isolated(results, clean_results, named)


def test_odoo_records_broken_in_odoo_set_aside_only_their_customers(
    small_sandbox, clean_sandbox_run, tmp_path
):
    period, clean_results, clean_lines = clean_sandbox_run
    without_partner, without_product, bad_header = _targets(small_sandbox.manifest, clean_results, 3)
    subscription_of = (
        clean_lines.dropna(subset=["subscription_id"])
        .groupby("customer_id")["subscription_id"]
        .min()
        .astype(int)
        .to_dict()
    )
    named: dict[int, list[str]] = {}

    def break_odoo(sandbox: GeneratedSandbox) -> None:
        models = sandbox.odoo_models()
        orders = {order["id"]: order for order in models["sale.order"]}
        broken_order = orders[subscription_of[without_partner]]
        broken_order["partner_id"] = None  # reads as false

        def line_in_period(customer_id: int) -> dict:
            return min(
                (
                    line
                    for line in models["account.move.line"]
                    if line.get("subscription_id") == subscription_of[customer_id]
                    and (line.get("deferred_start_date") or "").startswith(period[:7])
                ),
                key=lambda line: line["id"],
            )

        no_product = line_in_period(without_product)
        no_product["product_id"] = None
        header_move = line_in_period(bad_header)["move_id"]
        move = next(move for move in models["account.move"] if move["id"] == header_move)
        move["amount_untaxed"] = round(move["amount_untaxed"] + 1.0, 2)
        move["amount_total"] = round(move["amount_total"] + 1.0, 2)
        replace_records(sandbox.odoo_url, "sale.order", [broken_order])
        replace_records(sandbox.odoo_url, "account.move.line", [no_product])
        replace_records(sandbox.odoo_url, "account.move", [move])
        named[without_partner] = [
            f"odoo/subscriptions subscription_id={subscription_of[without_partner]}: partner_id: missing"
        ]
        named[without_product] = [f"odoo/invoice_lines line_id={no_product['id']}: product_code"]
        named[bad_header] = [
            f"odoo/invoices move_id={header_move}",
            "untaxed amount = the sum of its product lines",
        ]

    results, _ = _broken_sandbox_run(small_sandbox, tmp_path, period, break_odoo)

    _assert_sandbox_isolated(results, clean_results, named)
    assert "other lines" not in results.set_index("customer_id").loc[bad_header, "cause"]


def test_a_usd_customer_a_bad_invoice_and_bad_waiver_rows_end_to_end(
    small_sandbox, clean_sandbox_run, tmp_path
):
    period, clean_results, _ = clean_sandbox_run
    in_usd, bad_total, bad_waiver, other_month = _targets(small_sandbox.manifest, clean_results, 4)
    another_period = next(closed for closed in small_sandbox.closed_periods if closed != period)

    def break_sources(sandbox: GeneratedSandbox) -> None:
        with closing(sqlite3.connect(sandbox.out / "nexacloud.sqlite")) as connection, connection:
            connection.execute("UPDATE customers SET currency = 'USD' WHERE id = ?", (in_usd,))
            connection.execute(
                "UPDATE invoices SET currency = 'USD' WHERE customer_id = ? AND period_start = ?",
                (in_usd, period),
            )
            connection.execute(
                "UPDATE invoices SET total_cents = total_cents + 1 WHERE customer_id = ? AND period_start = ?",
                (bad_total, period),
            )
        with (sandbox.out / "waivers.csv").open("a") as waivers:
            waivers.write(f"{period},{bad_waiver},0,Nothing to accept,Finance,\n")
            waivers.write(f"{another_period},{other_month},0,Nothing to accept,Finance,\n")

    results, _ = _broken_sandbox_run(small_sandbox, tmp_path, period, break_sources)

    by_customer = results.set_index("customer_id")
    usd = by_customer.loc[in_usd]
    assert usd["status"] == "currency_mismatch", usd["cause"]
    assert "NexaCloud bills this customer in USD" in usd["cause"] and "Odoo invoiced in CAD" in usd["cause"]
    assert "Our expected leg is left empty" in usd["cause"] and "billed in USD" in usd["cause"]
    assert pd.isna(usd["expected_total_cents"]) and pd.isna(usd["expected_subtotal_cents"])
    clean_row = clean_results.set_index("customer_id").loc[in_usd]
    assert (usd["nexacloud_total_cents"], usd["odoo_total_cents"]) == (
        clean_row["nexacloud_total_cents"],
        clean_row["odoo_total_cents"],
    )
    _assert_sandbox_isolated(
        results[results["customer_id"] != in_usd],
        clean_results[clean_results["customer_id"] != in_usd],
        {
            bad_total: ["nexacloud/invoices invoice_id=", "total_cents = subtotal_cents + tax_cents"],
            bad_waiver: ["waivers line", "delta_cents"],
        },
    )
    assert by_customer.loc[other_month, "status"] == "match"


@pytest.mark.parametrize(
    "column",
    [
        "stripe_invoice_id",
        "tax_cents",
    ],
)
def test_a_frame_missing_a_required_column_stops_its_asset_naming_the_source_and_the_column(
    small_sandbox, tmp_path, monkeypatch, column
):
    fetch_invoices = nexacloud.fetch_invoices
    monkeypatch.setattr(
        nexacloud, "fetch_invoices", lambda *args: fetch_invoices(*args).drop(columns=[column])
    )

    result = materialize(
        nexacloud_assets.assets,
        resources={"nexacloud": NexaCloudDatabase(url=small_sandbox.nexacloud_url)},
        partition_key=small_sandbox.closed_periods[0],
        instance=DagsterInstance.ephemeral(tempdir=str(tmp_path)),
        raise_on_error=False,
    )

    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_key == "nexacloud__invoices"
    message = failure.step_failure_data.error.message
    assert "nexacloud/invoices: " in message and f"column_in_dataframe (got '{column}')" in message, message


# --- Attribution reaches exactly the customers concerned ------------------------------------------


def test_a_bad_deployment_sets_aside_only_its_own_customer_not_every_customer_on_its_plan(clean):
    def region_missing(records: Records) -> None:
        (deployment,) = ALICE.deployments
        record_of(records, "nexacloud/deployments", deployment_id=deployment.deployment_id)["region"] = None

    results, _ = broken(region_missing)

    assert_isolated(results, clean, {ALICE.customer_id: ["nexacloud/deployments", "region"]})


def test_a_customer_whose_own_record_is_set_aside_keeps_its_odoo_invoices_on_its_row(clean):
    def email_missing(records: Records) -> None:
        record_of(records, "nexacloud/customers", customer_id=BOB.customer_id)["email"] = None

    results, _ = broken(email_missing)

    assert_isolated(results, clean, {BOB.customer_id: ["nexacloud/customers", "email"]})
    row = customer_row(results, BOB.customer_id)
    assert int(row["partner_id"]) == BOB.partner_id
    # Odoo's invoice stays on the customer's row: the Odoo leg is conserved, nothing vanishes.
    assert int(row["odoo_total_cents"]) == int(customer_row(clean, BOB.customer_id)["odoo_total_cents"])
    assert int(results["odoo_total_cents"].sum()) == int(clean["odoo_total_cents"].sum())


def test_a_broken_invoice_addressed_to_a_contact_sets_aside_the_contacts_company_customer():
    world = World(list(CUSTOMERS), odoo_invoices_to_contact={BOB.customer_id})

    def header_off_and_lines_without_subscription(records: Records) -> None:
        (move,) = [row for row in records["odoo/invoices"] if row["partner_id"] == BOB.contact_id]
        move["untaxed_cents"] += 100
        move["total_cents"] += 100
        for line in records["odoo/invoice_lines"]:
            if line["move_id"] == move["move_id"]:
                line["subscription_id"] = None

    results, _ = broken(header_off_and_lines_without_subscription, world)

    row = customer_row(results, BOB.customer_id)
    assert row["status"] == SOURCE_DATA_ERROR, row["cause"]
    assert "odoo/invoices" in row["cause"] and "untaxed amount = the sum of its product lines" in row["cause"]
    assert customer_row(results, ALICE.customer_id)["status"] == "match"


def test_a_nexacloud_invoice_of_a_customer_the_period_does_not_hold_is_listed_not_dropped(clean):
    def invoice_of_an_unknown_customer(records: Records) -> None:
        invoice = copy.deepcopy(record_of(records, "nexacloud/invoices", customer_id=ALICE.customer_id))
        records["nexacloud/invoices"].append(invoice | {"invoice_id": 9_100, "customer_id": 999})

    results, screened = broken(invoice_of_an_unknown_customer)

    listed = screened.set_aside[screened.set_aside["record"] == "invoice_id=9100"]
    assert set(listed["source"]) == {"nexacloud/invoices"}
    assert any("customer 999 is not a customer of the period" in problem for problem in listed["problem"])
    # Nobody else is judged on it: every row is the clean run's.
    assert_isolated(results, clean, {})
