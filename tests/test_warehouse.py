"""The results contract in the warehouse: a period is replaced whole or not at all, on SQLite and PostgreSQL.

Also the builders of hand-made result and line rows that the report tests share.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, literal_column, select
from sqlalchemy.exc import IntegrityError

from fusion_billing_assets.warehouse import (
    LINE_COLUMNS,
    RESULT_COLUMNS,
    RunRecord,
    billing_reconciliation,
    billing_reconciliation_lines,
    ensure_tables,
    read_period,
    read_results,
    read_run_results,
    record_run,
    replace_period,
)

SEPTEMBER = date(2026, 9, 1)
OCTOBER = date(2026, 10, 1)
RECONCILED_AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def result_row(customer_id: int | None = 1, **overrides: Any) -> dict[str, Any]:
    """One ``billing_reconciliation`` row: a matching $113.00 invoice unless told otherwise."""
    row = {
        "billing_period": OCTOBER,
        "customer_id": customer_id,
        "partner_id": None if customer_id is None else 1000 + customer_id,
        "customer_name": None if customer_id is None else f"Customer {customer_id}",
        "status": "match",
        "cause": "NexaCloud and Odoo agree to the cent.",
        "nexacloud_invoice_count": 1,
        "odoo_invoice_count": 1,
        "nexacloud_currency": "CAD",
        "odoo_currency": "CAD",
        "nexacloud_subtotal_cents": 10_000,
        "nexacloud_tax_cents": 1_300,
        "nexacloud_total_cents": 11_300,
        "odoo_subtotal_cents": 10_000,
        "odoo_tax_cents": 1_300,
        "odoo_total_cents": 11_300,
        "expected_subtotal_cents": 10_000,
        "expected_tax_cents": 1_300,
        "expected_total_cents": 11_300,
        "delta_cents": 0,
        "plan_fee_delta_cents": 0,
        "overage_delta_cents": 0,
        "tax_delta_cents": 0,
        "nexacloud_cpu_seconds": Decimal("3600.000"),
        "odoo_cpu_seconds": Decimal("3600.000"),
        "waiver_reason": None,
        "waiver_approver": None,
        "provisional": False,
        "reconciled_at": RECONCILED_AT,
    }
    unknown = set(overrides) - set(row)
    assert not unknown, f"not result columns: {unknown}"
    return {**row, **overrides}


def line_row(customer_id: int | None = 1, deployment_id: int | None = 10, **overrides: Any) -> dict[str, Any]:
    """One ``billing_reconciliation_lines`` row: a deployment billed alike by both systems."""
    row = {
        "billing_period": OCTOBER,
        "customer_id": customer_id,
        "partner_id": None if customer_id is None else 1000 + customer_id,
        "deployment_id": deployment_id,
        "subscription_id": None if deployment_id is None else 5000 + deployment_id,
        "plan_code": "starter",
        "active_days": 31,
        "nexacloud_cpu_seconds": Decimal("3600.000"),
        "odoo_cpu_seconds": Decimal("3600.000"),
        "nexacloud_plan_price_cents": 10_000,
        "odoo_plan_price_cents": 10_000,
        "nexacloud_overage_rate": Decimal("4.5000"),
        "odoo_overage_rate": Decimal("4.5000"),
        "nexacloud_base_cents": 10_000,
        "nexacloud_overage_cents": 0,
        "nexacloud_tax_cents": 1_300,
        "odoo_plan_fee_cents": 10_000,
        "odoo_overage_cents": 0,
        "odoo_tax_cents": 1_300,
        "expected_base_cents": 10_000,
        "expected_overage_cents": 0,
        "expected_tax_cents": 1_300,
        "note": None,
    }
    unknown = set(overrides) - set(row)
    assert not unknown, f"not line columns: {unknown}"
    return {**row, **overrides}


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def lines_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=LINE_COLUMNS)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse_engine(request, tmp_path):
    """An empty warehouse with the results tables, in a SQLite file or a throw-away PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_database_url")
    engine = create_engine(url)
    with engine.begin() as connection:
        ensure_tables(connection)
        ensure_tables(connection)  # a second call finds the tables and leaves them be
    yield engine
    engine.dispose()


def write(engine, period: date, results: pd.DataFrame, lines: pd.DataFrame) -> None:
    with engine.begin() as connection:
        replace_period(connection, period, results, lines)


def read(engine, period: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    with engine.connect() as connection:
        return read_period(connection, period)


def period_rows(period: date, customers: range, **overrides: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        results_frame([result_row(customer, billing_period=period, **overrides) for customer in customers]),
        lines_frame([line_row(customer, 10 * customer, billing_period=period) for customer in customers]),
    )


def test_a_period_reads_back_as_written_with_its_types(warehouse_engine):
    results = results_frame(
        [
            result_row(
                7,
                status="waived",
                cause="Odoo billed 2 cents more; accepted in the waiver file.",
                odoo_total_cents=11_302,
                delta_cents=2,
                tax_delta_cents=2,
                odoo_cpu_seconds=Decimal("3600.125"),
                waiver_reason="Known HST rounding on a legacy plan",
                waiver_approver="finance@nexa.example",
                provisional=True,
            ),
            result_row(
                None,
                status="missing_in_nexacloud",
                cause="Odoo invoiced partner 4242, which maps to no NexaCloud customer.",
                partner_id=4242,
                nexacloud_invoice_count=0,
                nexacloud_currency=None,
                nexacloud_total_cents=0,
                delta_cents=11_300,
                provisional=True,
            ),
        ]
    )
    lines = lines_frame(
        [
            line_row(7, 70, note="Odoo's usage ledger holds 0.125 CPU-seconds more."),
            line_row(7, None, plan_code=None, active_days=None, nexacloud_plan_price_cents=None),
        ]
    )

    write(warehouse_engine, OCTOBER, results, lines)
    stored_results, stored_lines = read(warehouse_engine, OCTOBER)

    pd.testing.assert_frame_equal(stored_results, results.astype(stored_results.dtypes.to_dict()))
    pd.testing.assert_frame_equal(stored_lines, lines.astype(stored_lines.dtypes.to_dict()))
    assert list(stored_results.columns) == RESULT_COLUMNS
    assert list(stored_lines.columns) == LINE_COLUMNS
    assert stored_results["delta_cents"].dtype == "int64"
    assert stored_results["customer_id"].dtype == "Int64"
    assert stored_results["provisional"].dtype == bool
    assert stored_results["billing_period"].tolist() == [OCTOBER, OCTOBER]
    assert stored_results["odoo_cpu_seconds"].tolist() == [Decimal("3600.125"), Decimal("3600.000")]
    assert all(isinstance(value, Decimal) for value in stored_lines["odoo_overage_rate"])
    assert stored_results["reconciled_at"].tolist() == [pd.Timestamp(RECONCILED_AT)] * 2
    assert stored_lines["deployment_id"].isna().tolist() == [False, True]


def test_numpy_and_pandas_values_are_bound_as_plain_python(warehouse_engine):
    results = results_frame([result_row(1), result_row(2)])
    # What pandas makes of a computed frame: numpy integers, floats where a null crept in, NA, NaT.
    results["delta_cents"] = np.array([0, 5], dtype="int64")
    results["partner_id"] = [1001.0, np.nan]
    results["customer_name"] = ["Customer 1", pd.NA]
    results["provisional"] = np.array([True, False])
    results["reconciled_at"] = pd.to_datetime([RECONCILED_AT, RECONCILED_AT], utc=True)
    results["nexacloud_cpu_seconds"] = [3600.5, 7]
    lines = lines_frame([line_row(1)]).astype({"active_days": "Int64"})
    lines.loc[0, "active_days"] = pd.NA

    write(warehouse_engine, OCTOBER, results, lines)
    stored_results, stored_lines = read(warehouse_engine, OCTOBER)

    assert stored_results["delta_cents"].tolist() == [0, 5]
    assert stored_results["partner_id"].tolist() == [1001, pd.NA]
    assert stored_results["customer_name"].tolist() == ["Customer 1", None]
    assert stored_results["provisional"].tolist() == [True, False]
    assert stored_results["nexacloud_cpu_seconds"].tolist() == [Decimal("3600.5"), Decimal("7")]
    assert stored_lines["active_days"].isna().all()


def test_replacing_a_period_changes_only_that_period(warehouse_engine):
    write(warehouse_engine, SEPTEMBER, *period_rows(SEPTEMBER, range(1, 4)))
    write(warehouse_engine, OCTOBER, *period_rows(OCTOBER, range(1, 4)))
    september_before = read(warehouse_engine, SEPTEMBER)

    write(warehouse_engine, OCTOBER, *period_rows(OCTOBER, range(5, 7), status="usage_mismatch"))

    october_results, october_lines = read(warehouse_engine, OCTOBER)
    assert october_results["customer_id"].tolist() == [5, 6]
    assert set(october_results["status"]) == {"usage_mismatch"}
    assert october_lines["deployment_id"].tolist() == [50, 60]
    for before, after in zip(september_before, read(warehouse_engine, SEPTEMBER), strict=True):
        pd.testing.assert_frame_equal(before, after)
        assert len(after) == 3


def test_an_emptied_period_keeps_no_rows(warehouse_engine):
    write(warehouse_engine, OCTOBER, *period_rows(OCTOBER, range(1, 3)))
    write(warehouse_engine, OCTOBER, results_frame([]), lines_frame([]))

    results, lines = read(warehouse_engine, OCTOBER)
    assert results.empty and lines.empty
    assert list(results.columns) == RESULT_COLUMNS
    assert results["delta_cents"].dtype == "int64"


@pytest.mark.parametrize("failing_table", ["results", "lines"])
def test_a_write_that_fails_midway_leaves_the_previous_rows(warehouse_engine, failing_table):
    write(warehouse_engine, SEPTEMBER, *period_rows(SEPTEMBER, range(1, 3)))
    write(warehouse_engine, OCTOBER, *period_rows(OCTOBER, range(1, 4)))
    before = {period: read(warehouse_engine, period) for period in (SEPTEMBER, OCTOBER)}
    results, lines = period_rows(OCTOBER, range(7, 10))
    # NOT NULL is the database's to enforce: the deletes and the first insert have already run.
    if failing_table == "results":
        results.loc[2, "status"] = None
    else:
        lines.loc[2, "nexacloud_cpu_seconds"] = None

    with pytest.raises(IntegrityError):
        write(warehouse_engine, OCTOBER, results, lines)

    for period, (results_before, lines_before) in before.items():
        results_after, lines_after = read(warehouse_engine, period)
        pd.testing.assert_frame_equal(results_after, results_before)
        pd.testing.assert_frame_equal(lines_after, lines_before)


def test_a_row_of_another_period_is_refused_before_anything_is_written(warehouse_engine):
    write(warehouse_engine, OCTOBER, *period_rows(OCTOBER, range(1, 3)))
    results, lines = period_rows(OCTOBER, range(1, 4), status="amount_mismatch")
    results.loc[1, "billing_period"] = SEPTEMBER

    with pytest.raises(
        ValueError, match=r"billing_reconciliation row 1 \(customer_id=2, .*2026-09-01, not 2026-10-01"
    ):
        write(warehouse_engine, OCTOBER, results, lines)
    with pytest.raises(ValueError, match=r"billing_reconciliation_lines frame .* missing \['note'\]"):
        write(warehouse_engine, OCTOBER, period_rows(OCTOBER, range(1, 2))[0], lines.drop(columns="note"))

    assert read(warehouse_engine, OCTOBER)[0]["status"].tolist() == ["match", "match"]


def test_results_are_read_for_chosen_periods_or_all(warehouse_engine):
    november = date(2026, 11, 1)
    for period, customers in ((SEPTEMBER, range(1, 3)), (OCTOBER, range(3, 4)), (november, range(4, 6))):
        write(warehouse_engine, period, *period_rows(period, customers))

    with warehouse_engine.connect() as connection:
        every_period = read_results(connection)
        two_periods = read_results(connection, [november, SEPTEMBER])
        no_period = read_results(connection, [])

    assert every_period["billing_period"].tolist() == [SEPTEMBER] * 2 + [OCTOBER] + [november] * 2
    assert two_periods["customer_id"].tolist() == [1, 2, 4, 5]
    assert no_period.empty and list(no_period.columns) == RESULT_COLUMNS


@pytest.mark.postgres
def test_two_writers_of_one_period_on_postgres_take_turns(postgres_database_url):
    engine = create_engine(postgres_database_url)
    with engine.begin() as connection:
        ensure_tables(connection)
    second_writer_done = threading.Event()

    def second_writer() -> None:
        write(engine, OCTOBER, *period_rows(OCTOBER, range(5, 7)))
        second_writer_done.set()

    try:
        with engine.begin() as connection:
            replace_period(connection, OCTOBER, *period_rows(OCTOBER, range(1, 4)))
            writer = threading.Thread(target=second_writer)
            writer.start()
            # The second writer waits on the period's lock until this transaction commits.
            assert not second_writer_done.wait(timeout=1)
        writer.join(timeout=30)
        assert second_writer_done.is_set()
        results, lines = read(engine, OCTOBER)
        assert results["customer_id"].tolist() == [5, 6]
        assert lines["customer_id"].tolist() == [5, 6]
    finally:
        engine.dispose()


# --- bulk writes: COPY on PostgreSQL, one executemany of tuples on SQLite ---------------------

TORONTO = ZoneInfo("America/Toronto")
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
# What COPY's text format and SQL quoting make special, and text that merely looks special.
AWKWARD_TEXTS = [
    "tab\there\tand there",
    "new\nline, carriage\r\nreturn, lone\rreturn",
    "back\\slash, \\N, \\t, \\\\, trailing\\",
    "\\.",
    "quotes ' \" `'; DROP TABLE billing_reconciliation; --",
    "unicode: é ß Ω 東京 🧾 \u200b\u00a0 עברית",
    "",
    "NULL",
    "\\N",
    " leading and trailing spaces ",
]


def awkward_frames() -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]], list[dict[str, Any]]]:
    """Results and lines full of awkward values, and the same rows as the plain Python an insert binds."""
    result_rows, line_rows = [], []
    for index, text in enumerate(AWKWARD_TEXTS):
        customer = None if index == 3 else 1 + index
        result_rows.append(
            result_row(
                customer,
                partner_id=None if index in (1, 5) else 7_000_000_000 + index,
                customer_name=text if index != 2 else None,
                status=f"status {index}",
                cause=f"{text}\n{AWKWARD_TEXTS[-1 - index]}",
                nexacloud_currency=None if index % 2 else "CAD",
                nexacloud_total_cents=[INT64_MAX, INT64_MIN, 0, -1][index % 4],
                odoo_total_cents=9_007_199_254_740_993 * (1 if index % 2 else -1),
                expected_subtotal_cents=None if index % 3 == 0 else 10_000 + index,
                expected_total_cents=None,
                nexacloud_cpu_seconds=[Decimal("0.001"), Decimal("-12345.678"), Decimal("999999999999.999")][
                    index % 3
                ],
                odoo_cpu_seconds=Decimal(index),
                waiver_reason=text if index % 2 else None,
                waiver_approver="NULL" if index == 0 else text,
                provisional=bool(index % 2),
                # Microseconds, and a wall clock in Toronto across the DST change: stored as UTC.
                reconciled_at=datetime(
                    2026, 11, 1, 1, 30, 0, 123_456 + index, tzinfo=TORONTO, fold=index % 2
                ),
            )
        )
        line_rows.append(
            line_row(
                customer,
                None if index == 4 else 900 + index,
                plan_code=text,
                active_days=None if index % 2 else index,
                nexacloud_plan_price_cents=None if index == 0 else 10_000 * index,
                odoo_plan_price_cents=INT64_MAX - index,
                nexacloud_overage_rate=None if index == 1 else Decimal("0.0001") * index,
                odoo_overage_rate=Decimal("-99999999.9999"),
                note=text if index != 6 else None,
            )
        )
    results, lines = results_frame(result_rows), lines_frame(line_rows)
    # As reconcile() hands them over: nullable ids and amounts as Int64, the run's time as datetime64.
    for frame, rows in ((results, result_rows), (lines, line_rows)):
        for column in frame.columns[frame.dtypes == "float64"]:
            frame[column] = pd.array([row[column] for row in rows], dtype="Int64")
    results["reconciled_at"] = pd.to_datetime(results["reconciled_at"], utc=True)
    # What SQLAlchemy's own insert was given before: plain Python values, times converted to UTC.
    bound_results = [{**row, "reconciled_at": row["reconciled_at"].astimezone(UTC)} for row in result_rows]
    return results, lines, bound_results, line_rows


def stored_rows(connection, table, period: date) -> list[tuple]:
    """The rows exactly as the database driver hands them out, without the period column."""
    columns = [column for column in table.columns if column.name != "billing_period"]
    statement = (
        select(*(literal_column(column.name) for column in columns))
        .select_from(table)
        .where(table.c.billing_period == period)
        .order_by(literal_column("customer_id"), literal_column("partner_id"))
    )
    if table is billing_reconciliation_lines:
        statement = statement.order_by(literal_column("deployment_id"))
    return [tuple(row) for row in connection.execute(statement)]


def test_awkward_values_read_back_as_written(warehouse_engine):
    results, lines, _, _ = awkward_frames()
    run = RunRecord(
        run_id="run\twith\\awkward\nid",
        period=OCTOBER,
        reconciled_at=RECONCILED_AT,
        provisional=False,
        input_fingerprints={},
        inputs_fingerprint="fingerprint",
    )
    with warehouse_engine.begin() as connection:
        replace_period(connection, OCTOBER, results, lines)
        record_run(connection, run, results)

    stored_results, stored_lines = read(warehouse_engine, OCTOBER)
    with warehouse_engine.connect() as connection:
        history = read_run_results(connection, run.run_id)
        every_period = read_results(connection)

    in_read_order = ["customer_id", "partner_id"]
    expected_results = results.sort_values(in_read_order, na_position="last", ignore_index=True)
    expected_lines = lines.sort_values(
        [*in_read_order, "deployment_id"], na_position="last", ignore_index=True
    )
    pd.testing.assert_frame_equal(stored_results, expected_results.astype(stored_results.dtypes.to_dict()))
    pd.testing.assert_frame_equal(stored_lines, expected_lines.astype(stored_lines.dtypes.to_dict()))
    pd.testing.assert_frame_equal(history, stored_results)
    pd.testing.assert_frame_equal(every_period, stored_results)
    assert stored_results["customer_name"].tolist().count("") == 1  # empty text is not NULL …
    assert stored_results["customer_name"].isna().sum() == 1  # … and NULL is not text
    assert set(AWKWARD_TEXTS) <= set(stored_lines["plan_code"])
    assert stored_results["nexacloud_total_cents"].dtype == "int64"
    assert {INT64_MAX, INT64_MIN} <= set(stored_results["nexacloud_total_cents"])
    assert stored_results["odoo_total_cents"].abs().max() == 2**53 + 1  # beyond a float's exact integers
    assert stored_lines["odoo_plan_price_cents"].max() == INT64_MAX
    assert str(stored_results["reconciled_at"].dt.tz) == "UTC"
    assert stored_results["reconciled_at"].dt.microsecond.min() == 123_456


def test_a_bulk_write_stores_what_sqlalchemys_own_insert_stores(warehouse_engine):
    results, lines, bound_results, bound_lines = awkward_frames()
    with warehouse_engine.begin() as connection:
        replace_period(connection, OCTOBER, results, lines)
        # The reference: the same rows in another period, through a Core insert of plain values.
        for table, rows in (
            (billing_reconciliation, bound_results),
            (billing_reconciliation_lines, bound_lines),
        ):
            connection.execute(table.insert(), [{**row, "billing_period": SEPTEMBER} for row in rows])

    with warehouse_engine.connect() as connection:
        for table in (billing_reconciliation, billing_reconciliation_lines):
            bulk, reference = (
                stored_rows(connection, table, OCTOBER),
                stored_rows(connection, table, SEPTEMBER),
            )
            assert len(bulk) == len(AWKWARD_TEXTS)
            assert bulk == reference, table.name
    october, september = read(warehouse_engine, OCTOBER), read(warehouse_engine, SEPTEMBER)
    for bulk, reference in zip(october, september, strict=True):
        pd.testing.assert_frame_equal(
            bulk.drop(columns="billing_period"), reference.drop(columns="billing_period")
        )


def test_the_same_values_in_other_dtypes_are_stored_alike(warehouse_engine):
    canonical, lines = period_rows(OCTOBER, range(1, 4))
    canonical["partner_id"] = pd.array([1001, None, 1003], dtype="Int64")
    canonical["reconciled_at"] = pd.to_datetime([RECONCILED_AT] * 3, utc=True)
    variant = canonical.copy()
    variant["partner_id"] = [1001.0, np.nan, 1003.0]
    variant["customer_id"] = pd.Series([np.int64(1), 2, np.int32(3)], dtype=object)
    variant["delta_cents"] = np.array([0, 0, 0], dtype="uint16")
    variant["customer_name"] = variant["customer_name"].astype("string")
    variant["odoo_cpu_seconds"] = [3600, 3600.0, Decimal("3600.000")]
    variant["provisional"] = pd.array([False, False, False], dtype="boolean")
    variant["billing_period"] = [pd.Timestamp(OCTOBER), datetime(2026, 10, 1, 0, 0), "2026-10-01"]
    # Naive times are taken as UTC; aware ones are converted to it.
    variant["reconciled_at"] = [
        RECONCILED_AT.replace(tzinfo=None),
        RECONCILED_AT.astimezone(TORONTO),
        pd.Timestamp(RECONCILED_AT).tz_convert("Asia/Kolkata"),
    ]

    write(warehouse_engine, OCTOBER, canonical, lines)
    expected = read(warehouse_engine, OCTOBER)
    write(warehouse_engine, OCTOBER, variant, lines)
    stored = read(warehouse_engine, OCTOBER)

    for before, after in zip(expected, stored, strict=True):
        pd.testing.assert_frame_equal(after, before)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("delta_cents", [0, 12.5, 0], r"row 1: column delta_cents: 12.5 is not a whole number"),
        ("delta_cents", [0, 0, float("inf")], r"row 2: column delta_cents: inf is not a whole number"),
        ("delta_cents", [True, False, True], r"row 0: column delta_cents: True is a boolean, not a number"),
        (
            "delta_cents",
            [Decimal(0), Decimal("12.5"), Decimal(0)],
            r"row 1: column delta_cents: Decimal\('12.5'\) is not a whole number",
        ),
        ("partner_id", [1, "two", 3], r"row 1: column partner_id: invalid literal for int\(\)"),
        (
            "odoo_cpu_seconds",
            [Decimal(1), Decimal("-Infinity"), Decimal(1)],
            r"row 1: column odoo_cpu_seconds: a money amount must be finite, got Decimal\('-Infinity'\)",
        ),
        (
            "odoo_cpu_seconds",
            [1.5, 2.0, float("inf")],
            r"row 2: .* must be finite, got inf",
        ),
        ("odoo_cpu_seconds", [True, True, True], r"row 0: .* cannot be a boolean, got True"),
        ("reconciled_at", [RECONCILED_AT, "the day after", RECONCILED_AT], r"row 1: column reconciled_at: "),
        (
            "billing_period",
            [OCTOBER, OCTOBER, "1 October"],
            r"row 2: column billing_period: Invalid isoformat",
        ),
    ],
)
def test_a_value_its_column_cannot_hold_is_refused_naming_the_row_and_the_column(
    tmp_path, column, values, message
):
    engine = create_engine(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    with engine.begin() as connection:
        ensure_tables(connection)
    results, lines = period_rows(OCTOBER, range(1, 4))
    results[column] = values

    with pytest.raises(ValueError, match=rf"^billing_reconciliation {message}"):
        write(engine, OCTOBER, results, lines)
    assert read(engine, OCTOBER)[0].empty
    engine.dispose()


def test_of_several_problems_the_first_in_reading_order_is_named(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    with engine.begin() as connection:
        ensure_tables(connection)
    results, lines = period_rows(OCTOBER, range(1, 5))
    results.index = [10, 11, 12, 13]
    results["tax_delta_cents"] = [0, 0, 0.5, 0.5]
    results["delta_cents"] = [0, 0, 0, 1.5]
    results.loc[11, "billing_period"] = SEPTEMBER

    with pytest.raises(
        ValueError, match=r"row 11 \(customer_id=2, partner_id=1002\) is for billing period 2026-09"
    ):
        write(engine, OCTOBER, results, lines)
    results.loc[11, "billing_period"] = OCTOBER
    with pytest.raises(ValueError, match=r"row 12: column tax_delta_cents: 0.5 is not"):
        write(engine, OCTOBER, results, lines)
    results["nexacloud_tax_cents"] = results["nexacloud_tax_cents"].astype(object)
    results.loc[12, "nexacloud_tax_cents"] = "x"  # left of tax_delta_cents in the same row
    with pytest.raises(ValueError, match=r"row 12: column nexacloud_tax_cents: "):
        write(engine, OCTOBER, results, lines)
    engine.dispose()


@pytest.mark.postgres
def test_the_copy_belongs_to_the_callers_transaction(postgres_database_url):
    engine = create_engine(postgres_database_url)
    with engine.begin() as connection:
        ensure_tables(connection)
    write(engine, OCTOBER, *period_rows(OCTOBER, range(1, 3)))
    try:
        with engine.connect() as connection:
            replace_period(connection, OCTOBER, *period_rows(OCTOBER, range(5, 9)))
            assert len(read_period(connection, OCTOBER)[0]) == 4  # its own rows, seen inside …
            assert read(engine, OCTOBER)[0]["customer_id"].tolist() == [1, 2]  # … and nowhere else
            connection.rollback()
        assert read(engine, OCTOBER)[0]["customer_id"].tolist() == [1, 2]

        results, lines = period_rows(OCTOBER, range(5, 9))
        lines.loc[3, "expected_tax_cents"] = None
        with pytest.raises(IntegrityError) as refused, engine.begin() as connection:
            replace_period(connection, OCTOBER, results, lines)
        # Raised as any other statement's error: by SQLAlchemy, naming the statement.
        assert refused.value.statement.startswith('COPY "billing_reconciliation_lines"')
        assert "expected_tax_cents" in str(refused.value.orig)
        assert read(engine, OCTOBER)[0]["customer_id"].tolist() == [1, 2]
    finally:
        engine.dispose()
