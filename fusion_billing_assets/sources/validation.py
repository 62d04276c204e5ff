"""Data-quality contracts of the source frames, as pandera schemas, and what breaking one means.

A record that breaks its frame's contract is **set aside**, not fatal: ``validate`` marks it in the
frame's ``set_aside`` column with its field and the check it failed, the record is left out of
every sum downstream, and the customers it concerns get ``source_data_error`` (docs/design.md
§6.10). Only a frame that breaks the contract as a whole (a column missing, a column of the wrong
type) stops its asset, with an error naming the source, the column and the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from fusion_billing_assets.billing.charges import ChargeKind
from fusion_billing_assets.billing.isolation import SET_ASIDE, describe_records
from fusion_billing_assets.billing.periods import PeriodWindow
from fusion_billing_assets.sources.frames import add_problem

ISO_CURRENCY = r"^[A-Z]{3}$"
MAX_REPORTED_FAILURES = 50


@dataclass(frozen=True)
class FrameContract:
    """A frame's schema and the columns that identify one of its records."""

    name: str
    schema: pa.DataFrameSchema
    key: Sequence[str]


class DataQualityError(ValueError):
    """A source frame broke its contract; ``failures`` lists every failing record and field."""

    def __init__(self, contract_name: str, failures: pd.DataFrame):
        self.contract_name = contract_name
        self.failures = failures
        shown = "; ".join(failures["record"] + ": " + failures["field"] + " " + failures["problem"])
        more = len(failures) - min(len(failures), 5)
        lines = "; ".join(shown.split("; ")[:5]) + (f"; and {more} more" if more > 0 else "")
        super().__init__(f"{contract_name}: {len(failures)} failing check(s): {lines}")


def validate(frame: pd.DataFrame, contract: FrameContract) -> pd.DataFrame:
    """The frame, every record that breaks the contract marked in ``SET_ASIDE``.

    Raises ``DataQualityError`` when the frame as a whole breaks it (a missing or unexpected
    column, a column of the wrong type): then no record of it can be trusted.
    """
    problems = (
        frame[SET_ASIDE].copy()
        if SET_ASIDE in frame.columns
        else pd.Series([None] * len(frame), index=frame.index, dtype=object)
    )
    readable = as_declared(frame.loc[problems.isna()].drop(columns=[SET_ASIDE], errors="ignore"), contract)
    try:
        contract.schema.validate(readable, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        whole_frame = cases[cases["index"].isna()]
        if len(whole_frame):
            raise DataQualityError(contract.name, _failures(readable, contract, whole_frame)) from None
        for index, problem in _problems_by_record(cases):
            problems[index] = add_problem(problems[index], problem)
    checked = frame.copy()
    checked[SET_ASIDE] = problems
    return checked


def _problems_by_record(cases: pd.DataFrame) -> list[tuple]:
    """One problem per record and failed check.

    A column's check names its field and value. A check across the record (``total = subtotal +
    tax``) is reported by pandera once per column; it is one problem of the record, named once. A
    uniqueness check names its key columns and their values.
    """
    problems = []
    across = cases["schema_context"] == "DataFrameSchema"
    for case in cases[~across].itertuples(index=False):
        problems.append((case.index, f"{case.column}: {case.check} (got {case.failure_case!r})"))
    for (index, check), group in cases[across].groupby(["index", "check"], sort=False):
        if check == "multiple_fields_uniqueness":
            values = ", ".join(
                f"{column}={value!r}"
                for column, value in zip(group["column"], group["failure_case"], strict=True)
            )
            problems.append((index, f"{', '.join(map(str, group['column']))}: not unique ({values})"))
        else:
            problems.append((index, f"(record): {check}"))
    return problems


def usable(frame: pd.DataFrame, contract: FrameContract) -> pd.DataFrame:
    """The records that keep the contract, typed as it declares, without the ``SET_ASIDE`` column."""
    if SET_ASIDE not in frame.columns:
        return as_declared(frame, contract)
    return as_declared(frame.loc[frame[SET_ASIDE].isna()].drop(columns=[SET_ASIDE]), contract)


def set_aside_records(frame: pd.DataFrame, contract: FrameContract) -> pd.DataFrame:
    """The records that break the contract: source, record (its key), problem, and their ids."""
    broken = frame.loc[frame[SET_ASIDE].notna()] if SET_ASIDE in frame.columns else frame.iloc[0:0]
    problems = broken[SET_ASIDE] if SET_ASIDE in broken.columns else []
    return describe_records(broken, contract.name, list(contract.key), problems)


def as_declared(frame: pd.DataFrame, contract: FrameContract) -> pd.DataFrame:
    """Whole-number columns back to ``int64`` where the contract declares it (they become nullable
    while a frame still holds records whose value could not be read)."""
    typed = frame.copy()
    for name, column in contract.schema.columns.items():
        declared_whole = str(column.dtype) == "int64"
        if (
            name in typed.columns
            and declared_whole
            and str(typed[name].dtype) == "Int64"
            and typed[name].notna().all()
        ):
            typed[name] = typed[name].astype("int64")
    return typed


def _failures(frame: pd.DataFrame, contract: FrameContract, cases: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for case in cases.head(MAX_REPORTED_FAILURES).itertuples(index=False):
        index = case.index
        if index is not None and not pd.isna(index) and index in frame.index:
            record = ", ".join(f"{column}={frame.at[index, column]}" for column in contract.key)
        else:
            record = "(frame)"
        field = str(case.column) if case.column is not None else "(row)"
        rows.append(
            {"record": record, "field": field, "problem": f"{case.check} (got {case.failure_case!r})"}
        )
    return pd.DataFrame(rows, columns=["record", "field", "problem"])


def _ids(*columns: str, nullable: Sequence[str] = ()) -> dict[str, pa.Column]:
    return {
        column: pa.Column(
            "Int64" if column in nullable else "int64", pa.Check.gt(0), nullable=column in nullable
        )
        for column in columns
    }


def _cents(*columns: str) -> dict[str, pa.Column]:
    return {column: pa.Column("int64") for column in columns}


def _text(*columns: str, nullable: Sequence[str] = ()) -> dict[str, pa.Column]:
    return {column: pa.Column(str, nullable=column in nullable) for column in columns}


def _utc(column: str, *, nullable: bool = False, before=None) -> pa.Column:
    checks = [pa.Check.lt(pd.Timestamp(before))] if before is not None else []
    return pa.Column(pd.DatetimeTZDtype(tz="UTC"), checks, nullable=nullable)


def nexacloud_customers(window: PeriodWindow) -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("customer_id"),
            **_text("name", "email", "status"),
            "province": pa.Column(str, pa.Check.str_matches(r"^[A-Z]{2}$")),
            "currency": pa.Column(str, pa.Check.str_matches(ISO_CURRENCY)),
            "created_at": _utc("created_at", before=window.end_utc),
        },
        unique=["customer_id"],
        strict=True,
    )
    return FrameContract("nexacloud/customers", schema, ["customer_id"])


def nexacloud_plans() -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("plan_id"),
            **_text("plan_code", "plan_name"),
            "monthly_price_cents": pa.Column("int64", pa.Check.ge(0)),
            "included_cpu_seconds": pa.Column("int64", pa.Check.ge(0)),
            "overage_cents_per_cpu_hour": pa.Column(object, pa.Check(lambda rates: rates.map(_non_negative))),
            "currency": pa.Column(str, pa.Check.str_matches(ISO_CURRENCY)),
        },
        unique=["plan_id"],
        strict=True,
    )
    return FrameContract("nexacloud/plans", schema, ["plan_id"])


def nexacloud_deployments(window: PeriodWindow) -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("deployment_id", "customer_id", "plan_id"),
            **_text("name", "region", "status"),
            "created_at": _utc("created_at", before=window.end_utc),
            "terminated_at": _utc("terminated_at", nullable=True),
            "active_days": pa.Column("int64", [pa.Check.ge(1), pa.Check.le(window.days)]),
        },
        checks=pa.Check(
            lambda frame: frame["terminated_at"].isna() | (frame["terminated_at"] > frame["created_at"]),
            error="terminated_at after created_at",
        ),
        unique=["deployment_id"],
        strict=True,
    )
    return FrameContract("nexacloud/deployments", schema, ["deployment_id"])


def nexacloud_usage() -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("deployment_id"),
            "cpu_milliseconds": pa.Column("int64", pa.Check.ge(0, error="quantity >= 0")),
            "records": pa.Column("int64", pa.Check.gt(0)),
            "late_cpu_milliseconds": pa.Column("int64", pa.Check.ge(0, error="quantity >= 0")),
            "late_records": pa.Column("int64", pa.Check.ge(0)),
            "negative_records": pa.Column(
                "int64", pa.Check.eq(0, error="quantity >= 0 on every usage record")
            ),
            "keyless_records": pa.Column(
                "int64", pa.Check.eq(0, error="an idempotency_key on every usage record")
            ),
        },
        unique=["deployment_id"],
        strict=True,
    )
    return FrameContract("nexacloud/usage", schema, ["deployment_id"])


def nexacloud_invoices(window: PeriodWindow) -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("invoice_id", "customer_id"),
            "period_start": pa.Column(
                object, pa.Check.isin(window.local_days(), error="period_start inside the period")
            ),
            "period_end": pa.Column(object),
            "currency": pa.Column(str, pa.Check.str_matches(ISO_CURRENCY)),
            **_cents("subtotal_cents", "tax_cents", "total_cents"),
            "status": pa.Column(str, pa.Check.isin(["draft", "open", "paid", "uncollectible"])),
            "stripe_invoice_id": pa.Column(str, nullable=True),
            "issued_at": _utc("issued_at", nullable=True),
        },
        checks=[
            pa.Check(
                lambda frame: frame["total_cents"] == frame["subtotal_cents"] + frame["tax_cents"],
                error="total_cents = subtotal_cents + tax_cents",
            ),
            pa.Check(
                lambda frame: frame["period_end"] >= frame["period_start"], error="period_end >= period_start"
            ),
        ],
        unique=["invoice_id"],
        strict=True,
    )
    return FrameContract("nexacloud/invoices", schema, ["invoice_id"])


def nexacloud_invoice_lines() -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("invoice_line_id", "invoice_id"),
            **_ids("deployment_id", nullable=["deployment_id"]),
            "kind": pa.Column(str, pa.Check.isin([kind.value for kind in ChargeKind])),
            "description": pa.Column(str),
            "quantity": pa.Column(object),
            "unit_price_cents": pa.Column(object),
            **_cents("amount_cents", "tax_cents"),
        },
        unique=["invoice_line_id"],
        strict=True,
    )
    return FrameContract("nexacloud/invoice_lines", schema, ["invoice_line_id"])


def _non_negative(value) -> bool:
    return value is not None and value >= 0


def odoo_account_links() -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            "link_kind": pa.Column(str, pa.Check.isin(["customer", "deployment"])),
            **_ids("nexacloud_id", "odoo_id"),
            "odoo_model": pa.Column(str),
            "xml_id": pa.Column(str),
        },
        # One NexaCloud record maps to one Odoo record: two would make every total ambiguous.
        unique=["link_kind", "nexacloud_id"],
        strict=True,
    )
    return FrameContract("odoo/account_links", schema, ["xml_id"])


def odoo_partners() -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("partner_id"),
            **_ids("commercial_partner_id", nullable=["commercial_partner_id"]),
            "name": pa.Column(str),
            **_text("ref", "email", nullable=["ref", "email"]),
            "active": pa.Column(bool),
        },
        unique=["partner_id"],
        strict=True,
    )
    return FrameContract("odoo/partners", schema, ["partner_id"])


def odoo_subscriptions() -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("subscription_id", "partner_id"),
            "name": pa.Column(str),
            **_text(
                "plan_name",
                "state",
                "plan_product_code",
                nullable=["plan_name", "state", "plan_product_code"],
            ),
            "start_date": pa.Column(object),
            "end_date": pa.Column(object, nullable=True),
            "currency": pa.Column(str, pa.Check.str_matches(ISO_CURRENCY)),
            "plan_fee_cents": pa.Column("Int64", pa.Check.ge(0), nullable=True),
            "overage_cents_per_cpu_hour": pa.Column(
                object, pa.Check(lambda rates: rates.map(lambda r: r is None or r >= 0)), nullable=True
            ),
        },
        unique=["subscription_id"],
        strict=True,
    )
    return FrameContract("odoo/subscriptions", schema, ["subscription_id"])


def odoo_usage() -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("subscription_id"),
            "cpu_milliseconds": pa.Column("int64", pa.Check.ge(0, error="quantity >= 0")),
            "records": pa.Column("int64", pa.Check.gt(0)),
        },
        unique=["subscription_id"],
        strict=True,
    )
    return FrameContract("odoo/usage", schema, ["subscription_id"])


def odoo_invoices(window: PeriodWindow) -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("move_id", "partner_id"),
            "name": pa.Column(str, nullable=True),
            "move_type": pa.Column(str, pa.Check.isin(["out_invoice", "out_refund"])),
            "state": pa.Column(str, pa.Check.isin(["draft", "posted"])),
            "currency": pa.Column(str, pa.Check.str_matches(ISO_CURRENCY)),
            "invoice_date": pa.Column(object),
            "invoice_origin": pa.Column(str, nullable=True),
            **_cents("untaxed_cents", "tax_cents", "total_cents", "lines_untaxed_cents"),
        },
        checks=[
            pa.Check(
                lambda frame: frame["total_cents"] == frame["untaxed_cents"] + frame["tax_cents"],
                error="total = untaxed + tax",
            ),
            pa.Check(
                lambda frame: frame["untaxed_cents"] == frame["lines_untaxed_cents"],
                error="untaxed amount = the sum of its product lines",
            ),
        ],
        unique=["move_id"],
        strict=True,
    )
    return FrameContract("odoo/invoices", schema, ["move_id"])


def odoo_invoice_lines(window: PeriodWindow) -> FrameContract:
    schema = pa.DataFrameSchema(
        {
            **_ids("line_id", "move_id"),
            **_ids("subscription_id", nullable=["subscription_id"]),
            "product_code": pa.Column(str, nullable=False),
            **_text("description", nullable=["description"]),
            "quantity": pa.Column(object),
            "price_unit": pa.Column(object),
            **_cents("subtotal_cents", "tax_cents", "total_cents"),
            "deferred_start_date": pa.Column(object, nullable=True),
            "deferred_end_date": pa.Column(object, nullable=True),
            "line_period": pa.Column(object, pa.Check.eq(window.period, error="line belongs to the period")),
        },
        unique=["line_id"],
        strict=True,
    )
    return FrameContract("odoo/invoice_lines", schema, ["line_id"])
