"""Expected charges: our own third opinion of every bill of a period (docs/design.md §6).

From NexaCloud's customers, plans, deployments (with their active local days) and metered usage,
each deployment alive in the period is billed two lines, its prorated plan fee and its CPU overage
(written even when zero, as NexaCloud writes it), taxed at the customer's province's rate on the
period's first day. The invoices are those lines summed per customer.

The arithmetic is ``billing.charges``'s, computed for whole columns at once in exact whole
numbers: every rate is a ratio of integers (``Decimal.as_integer_ratio``), every amount an integer
of cents or milliseconds, and each half-up rounding of ``n / d`` is ``(2|n| + d) // 2d`` with the
sign put back, on Python integers (NumPy object arrays), so nothing overflows and nothing is a
float. The results are ``billing.charges``'s to the cent (its ``Decimal`` quotients are exact or
far from a half cent). Active days are counted against the period's local day boundaries,
computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pandas as pd

from fusion_billing_assets.billing.charges import (
    SECONDS_PER_HOUR,
    TaxRounding,
    base_charge_cents,
    line_taxes_cents,
)
from fusion_billing_assets.billing.money import to_decimal
from fusion_billing_assets.billing.periods import PeriodWindow, local_midnight_utc
from fusion_billing_assets.billing.tax import TaxRule, tax_rule

EXPECTED_CHARGE_COLUMNS = (
    "billing_period",
    "customer_id",
    "deployment_id",
    "plan_id",
    "plan_code",
    "province",
    "currency",
    "active_days",
    "days_in_period",
    "cpu_milliseconds",
    "included_cpu_seconds",
    "overage_cents_per_cpu_hour",
    "monthly_price_cents",
    "base_cents",
    "overage_cents",
    "tax_rate",
    "tax_label",
    "base_tax_cents",
    "overage_tax_cents",
    "subtotal_cents",
    "tax_cents",
    "total_cents",
)
EXPECTED_INVOICE_COLUMNS = (
    "billing_period",
    "customer_id",
    "currency",
    "line_count",
    "subtotal_cents",
    "tax_cents",
    "total_cents",
)
_INT_COLUMNS = (
    "customer_id",
    "deployment_id",
    "plan_id",
    "active_days",
    "days_in_period",
    "cpu_milliseconds",
    "included_cpu_seconds",
    "monthly_price_cents",
    "base_cents",
    "overage_cents",
    "base_tax_cents",
    "overage_tax_cents",
    "subtotal_cents",
    "tax_cents",
    "total_cents",
    "line_count",
)
MILLIS_PER_SECOND = 1000

# The keys of ``tax_under_other_rounding``.
PER_LINE_HALF_UP = "per_line_half_up"
GLOBAL_HALF_UP = "global_half_up"
PER_LINE_HALF_EVEN = "per_line_half_even"

# How many offending ids an error message names before it says "and N more".
_NAMED_IN_ERRORS = 10


def active_days_per_deployment(deployments: pd.DataFrame, window: PeriodWindow) -> pd.Series:
    """Each deployment's active local days in the period (``charges.active_days``), from its
    ``created_at``/``terminated_at`` (0 for one whose creation time could not be read: it is set aside).

    A local day counts when it starts before the termination and ends after the creation. The
    days' boundaries increase, so the days that count are those after the last one to end by the
    creation and before the first one to start at or after the termination.
    """
    days = window.local_days()
    starts = [local_midnight_utc(day, window.timezone) for day in days]
    ends = [*starts[1:], local_midnight_utc(days[-1] + timedelta(days=1), window.timezone)]
    created, terminated = (_nanoseconds(deployments[column]) for column in ("created_at", "terminated_at"))
    begun = np.searchsorted(_nanoseconds(pd.Series(ends)), created, side="right")
    ended = np.searchsorted(_nanoseconds(pd.Series(starts)), terminated, side="left")
    ended = np.where(terminated == _NOT_A_TIME, len(days), ended)
    counted = np.where(created == _NOT_A_TIME, 0, np.maximum(ended - begun, 0))
    return pd.Series(counted, index=deployments.index, dtype="int64")


# How a missing moment reads as integer nanoseconds.
_NOT_A_TIME = np.iinfo("int64").min


def _nanoseconds(moments: pd.Series) -> np.ndarray:
    """UTC moments as integer nanoseconds since the epoch, ``_NOT_A_TIME`` where missing."""
    utc = pd.to_datetime(moments, utc=True)
    return utc.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").view("int64")


def expected_charges(
    customers: pd.DataFrame,
    plans: pd.DataFrame,
    deployments: pd.DataFrame,
    usage: pd.DataFrame,
    window: PeriodWindow,
    *,
    rounding: TaxRounding = TaxRounding.PER_LINE,
) -> pd.DataFrame:
    """One row per deployment of ``deployments`` (those alive in the period): what it should be billed.

    ``deployments`` carries ``active_days`` (local calendar days of the period it was alive);
    ``usage`` holds CPU milliseconds per deployment (``nexacloud/usage``, one row each; several rows
    of one deployment are summed). With ``rounding`` global, each
    line's tax is its share of the invoice's once-rounded tax (``charges.line_taxes_cents``), so
    the line taxes of a customer still add up to the invoice's. Raises ``ValueError`` naming the
    deployment or customer when a plan or customer is missing, a province has no rate, a plan is
    priced in another currency than its customer is billed in, or usage belongs to no deployment.
    """
    _require_columns(customers, "customers", ("customer_id", "province", "currency"))
    _require_columns(
        plans,
        "plans",
        (
            "plan_id",
            "plan_code",
            "monthly_price_cents",
            "included_cpu_seconds",
            "overage_cents_per_cpu_hour",
            "currency",
        ),
    )
    _require_columns(deployments, "deployments", ("deployment_id", "customer_id", "plan_id", "active_days"))
    _require_columns(usage, "usage", ("deployment_id", "cpu_milliseconds"))

    charges = (
        deployments[["deployment_id", "customer_id", "plan_id", "active_days"]]
        .merge(
            plans[
                [
                    "plan_id",
                    "plan_code",
                    "monthly_price_cents",
                    "included_cpu_seconds",
                    "overage_cents_per_cpu_hour",
                    "currency",
                ]
            ].rename(columns={"currency": "plan_currency"}),
            on="plan_id",
            how="left",
            validate="many_to_one",
            indicator="plan_found",
        )
        .merge(
            customers[["customer_id", "province", "currency"]],
            on="customer_id",
            how="left",
            validate="many_to_one",
            indicator="customer_found",
        )
        .sort_values(["customer_id", "deployment_id"], kind="stable")
        .reset_index(drop=True)
    )
    _refuse_missing(charges, "plan_found", "plan_id", "is not in the plans frame", window)
    _refuse_missing(charges, "customer_found", "customer_id", "is not in the customers frame", window)
    _refuse_currency_differences(charges, window)
    rules = _tax_rules(charges, window)

    cpu = _cpu_milliseconds_per_deployment(usage, deployments, window)
    charges["billing_period"] = window.period
    charges["days_in_period"] = window.days
    # reindex, not map: a deployment without usage must not turn the column into floats.
    charges["cpu_milliseconds"] = cpu.reindex(charges["deployment_id"], fill_value=0).to_numpy(dtype="int64")
    charges["base_cents"] = _base_cents(charges["monthly_price_cents"], charges["active_days"], window.days)
    charges["overage_cents"] = _overage_cents(
        charges["cpu_milliseconds"], charges["included_cpu_seconds"], charges["overage_cents_per_cpu_hour"]
    )
    charges["tax_rate"] = charges["customer_id"].map(
        {customer: rule.rate for customer, rule in rules.items()}
    )
    charges["tax_label"] = charges["customer_id"].map(
        {customer: rule.label for customer, rule in rules.items()}
    )
    charges["base_tax_cents"], charges["overage_tax_cents"] = _line_taxes(charges, rounding)
    charges["subtotal_cents"] = charges["base_cents"] + charges["overage_cents"]
    charges["tax_cents"] = charges["base_tax_cents"] + charges["overage_tax_cents"]
    charges["total_cents"] = charges["subtotal_cents"] + charges["tax_cents"]
    return _typed(charges, EXPECTED_CHARGE_COLUMNS)


def expected_invoices(
    expected_lines: pd.DataFrame, *, rounding: TaxRounding = TaxRounding.PER_LINE
) -> pd.DataFrame:
    """One row per billing period and customer: the invoice ``expected_lines`` add up to.

    The tax is recomputed from the line amounts under ``rounding``: per line, the sum of each
    line's half-up tax; globally, the exact sum of the lines' taxes rounded half-up once (Odoo's
    ``round_globally``). It equals the sum of the lines' ``tax_cents`` when the lines were computed
    with the same rounding.
    """
    _require_columns(
        expected_lines,
        "expected lines",
        ("billing_period", "customer_id", "currency", "base_cents", "overage_cents", "tax_rate"),
    )
    keys = ["billing_period", "customer_id"]
    lines = expected_lines[[*keys, "currency", "tax_rate", "base_cents", "overage_cents"]]
    lines = lines.astype({"customer_id": "int64"})
    _refuse_disagreeing_lines(lines, keys)
    numerators, denominators = _ratios(lines["tax_rate"])
    base, overage = _whole_numbers(lines["base_cents"]), _whole_numbers(lines["overage_cents"])
    if rounding is TaxRounding.PER_LINE:
        tax = _half_up(base * numerators, denominators) + _half_up(overage * numerators, denominators)
    else:
        tax = (base + overage) * numerators  # the lines' exact tax, times the rate's denominator
    figures = pd.DataFrame(
        {"subtotal_cents": base + overage, "tax_cents": tax, "line_count": 2, "denominator": denominators},
        index=lines.index,
    )
    grouped = figures.groupby([lines[key] for key in keys], sort=True)
    invoices = grouped[["subtotal_cents", "tax_cents", "line_count"]].sum()
    if rounding is TaxRounding.GLOBALLY:
        # One rate per invoice (refused otherwise): its exact tax rounded once.
        invoices["tax_cents"] = _half_up(
            invoices["tax_cents"].to_numpy(dtype=object),
            grouped["denominator"].first().to_numpy(dtype=object),
        )
    invoices["currency"] = lines.groupby(keys, sort=True)["currency"].first()
    invoices = invoices.reset_index()
    invoices["total_cents"] = invoices["subtotal_cents"] + invoices["tax_cents"]
    return _typed(invoices.reindex(columns=list(EXPECTED_INVOICE_COLUMNS)), EXPECTED_INVOICE_COLUMNS)


def _refuse_disagreeing_lines(lines: pd.DataFrame, keys: list[str]) -> None:
    """An invoice's lines share one currency and one tax rate: the first invoice whose do not is named."""
    grouped = lines.groupby(keys, sort=True)
    disagreeing = (grouped["currency"].nunique(dropna=False) != 1) | (
        grouped["tax_rate"].nunique(dropna=False) != 1
    )
    if disagreeing.any():
        period, customer_id = disagreeing.index[disagreeing.to_numpy()][0]
        invoice = lines[(lines["billing_period"] == period) & (lines["customer_id"] == customer_id)]
        raise ValueError(
            f"expected invoice of customer {customer_id} for {period}: its lines disagree on "
            f"currency ({', '.join(sorted(map(str, set(invoice['currency']))))}) or "
            f"tax_rate ({', '.join(sorted(map(str, set(invoice['tax_rate']))))})"
        )


def tax_under_other_rounding(line_amounts_cents: Sequence[int], rate: Decimal) -> dict[str, int]:
    """An invoice's tax under each rounding a billing system might use, to explain a tax difference.

    Keys: ``per_line_half_up`` (NexaCloud, Odoo's default ``round_per_line``), ``global_half_up``
    (Odoo's ``round_globally``) and ``per_line_half_even`` (a float ``round()`` or banker's
    rounding somewhere). A difference equal to the gap between two of them is a rounding difference.
    """
    amounts = [int(amount) for amount in line_amounts_cents]
    exact_rate = to_decimal(rate)
    return {
        PER_LINE_HALF_UP: sum(line_taxes_cents(amounts, exact_rate, TaxRounding.PER_LINE)),
        GLOBAL_HALF_UP: sum(line_taxes_cents(amounts, exact_rate, TaxRounding.GLOBALLY)),
        PER_LINE_HALF_EVEN: sum(
            int((Decimal(amount) * exact_rate).to_integral_value(rounding=ROUND_HALF_EVEN))
            for amount in amounts
        ),
    }


def _cpu_milliseconds_per_deployment(
    usage: pd.DataFrame, deployments: pd.DataFrame, window: PeriodWindow
) -> pd.Series:
    """The period's CPU milliseconds per deployment; usage of a deployment not billed is refused."""
    totals = usage.groupby("deployment_id")["cpu_milliseconds"].sum()
    unbilled = totals.index[~totals.index.isin(deployments["deployment_id"])]
    if len(unbilled):
        raise ValueError(
            f"expected charges for {window.key}: usage of deployment(s) {_named(unbilled)} "
            f"(field deployment_id) that are not in the period's deployments frame would go unbilled"
        )
    return totals


def _refuse_missing(
    charges: pd.DataFrame, indicator: str, field: str, problem: str, window: PeriodWindow
) -> None:
    missing = charges[charges[indicator] != "both"]
    if len(missing):
        offenders = [
            f"deployment {deployment_id}: {field} {reference}"
            for deployment_id, reference in zip(missing["deployment_id"], missing[field], strict=True)
        ]
        raise ValueError(f"expected charges for {window.key}: {_named(offenders, separator='; ')} {problem}")


def _refuse_currency_differences(charges: pd.DataFrame, window: PeriodWindow) -> None:
    different = charges[charges["plan_currency"] != charges["currency"]]
    if len(different):
        offenders = [
            f"deployment {row.deployment_id} (customer {row.customer_id} in {row.currency}, "
            f"plan {row.plan_code} in {row.plan_currency})"
            for row in different.itertuples(index=False)
        ]
        raise ValueError(
            f"expected charges for {window.key}: field currency differs between customer and plan for "
            f"{_named(offenders, separator='; ')}"
        )


def _tax_rules(charges: pd.DataFrame, window: PeriodWindow) -> dict[int, TaxRule]:
    """The tax rule of each billed customer on the period's first day, as NexaCloud dates its tax."""
    rules, refused = {}, []
    for customer_id, province in (
        charges[["customer_id", "province"]].drop_duplicates().itertuples(index=False)
    ):
        try:
            rules[customer_id] = tax_rule(province, window.period)
        except ValueError as error:
            refused.append(f"customer {customer_id}: field province {province!r}: {error}")
    if refused:
        raise ValueError(f"expected charges for {window.key}: {_named(refused, separator='; ')}")
    return rules


def _base_cents(prices: pd.Series, days: pd.Series, days_in_period: int) -> np.ndarray:
    """``charges.base_charge_cents`` of every deployment: the plan fee × active days / days in the
    period, half-up."""
    outside = ~days.between(0, days_in_period)
    if days_in_period <= 0 or outside.any():
        # The charge function says what is wrong, in its own words.
        first = outside.idxmax() if outside.any() else days.index[0]
        base_charge_cents(int(prices[first]), int(days[first]), days_in_period)
    return _half_up(_whole_numbers(prices) * _whole_numbers(days), days_in_period)


def _overage_cents(milliseconds: pd.Series, included_seconds: pd.Series, rates: pd.Series) -> np.ndarray:
    """``charges.overage_charge_cents`` of every deployment: the CPU beyond the quota, at the rate
    per CPU-hour, half-up."""
    excess = np.maximum(_whole_numbers(milliseconds) - _whole_numbers(included_seconds) * 1000, 0)
    numerators, denominators = _ratios(rates)
    return _half_up(excess * numerators, denominators * SECONDS_PER_HOUR * 1000)


def _line_taxes(charges: pd.DataFrame, rounding: TaxRounding) -> tuple[np.ndarray, np.ndarray]:
    """Each deployment's plan-fee and overage tax (``charges.line_taxes_cents``), rounded per line,
    or per line and then spread from the invoice's once-rounded tax."""
    numerators, denominators = _ratios(charges["tax_rate"])
    base, overage = _whole_numbers(charges["base_cents"]), _whole_numbers(charges["overage_cents"])
    base_tax = _half_up(base * numerators, denominators)
    overage_tax = _half_up(overage * numerators, denominators)
    if rounding is TaxRounding.PER_LINE:
        return base_tax, overage_tax
    # Every line, in each customer's invoice order (charges are sorted by customer, deployment):
    # each deployment's plan fee, then its overage.
    amounts, taxes = _interleaved(base, overage), _interleaved(base_tax, overage_tax)
    lines = pd.DataFrame(
        {
            "customer_id": np.repeat(charges["customer_id"].to_numpy(), 2),
            "position": np.arange(len(amounts)),
            "tax": taxes,
            "exact": amounts * np.repeat(numerators, 2),  # the exact tax, times the denominator
            "denominator": np.repeat(denominators, 2),
        }
    )
    invoices = lines.groupby("customer_id", sort=False)
    rounded_once = _half_up(
        invoices["exact"].sum().to_numpy(dtype=object), invoices["denominator"].first().to_numpy(dtype=object)
    )
    difference = rounded_once - invoices["tax"].sum().to_numpy(dtype=object)
    lines["difference"] = (
        pd.Series(difference, index=invoices["tax"].sum().index).reindex(lines["customer_id"]).to_numpy()
    )
    lines = lines[lines["difference"] != 0]
    step = np.where(lines["difference"] > 0, 1, -1).astype(object)
    # The lines per-line rounding pushed furthest from the direction to move in go first.
    lines = lines.assign(step=step, distance=step * (lines["tax"] * lines["denominator"] - lines["exact"]))
    lines = lines.sort_values(["customer_id", "distance", "position"], kind="stable")
    rank = lines.groupby("customer_id", sort=False).cumcount().to_numpy()
    moved = lines[rank < np.abs(lines["difference"].to_numpy(dtype=object))]
    taxes[moved["position"].to_numpy(dtype="int64")] += moved["step"].to_numpy(dtype=object)
    return taxes[0::2], taxes[1::2]


def _interleaved(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``first[0], second[0], first[1], second[1], …``"""
    return np.stack([first, second], axis=1).reshape(-1)


def _ratios(rates: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each rate as its exact numerator and denominator (Python integers), computed once per rate."""
    distinct = pd.Index(pd.unique(rates.to_numpy(dtype=object)))
    ratios = [to_decimal(rate).as_integer_ratio() for rate in distinct]
    positions = distinct.get_indexer(rates.to_numpy(dtype=object))
    numerators = np.array([numerator for numerator, _ in ratios], dtype=object)
    denominators = np.array([denominator for _, denominator in ratios], dtype=object)
    return numerators[positions], denominators[positions]


def _whole_numbers(values: pd.Series) -> np.ndarray:
    """Whole numbers as Python integers, so that no product of them overflows."""
    return values.to_numpy(dtype="int64").astype(object)


def _half_up(numerators: np.ndarray, denominators) -> np.ndarray:
    """``round_half_up(n / d)`` for whole n and d > 0, exactly: half a cent rounds away from zero."""
    magnitudes = (2 * np.abs(numerators) + denominators) // (2 * denominators)
    return np.where(numerators < 0, -magnitudes, magnitudes)


def _require_columns(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"the {name} frame lacks column(s) {', '.join(missing)}")


def _typed(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    typed = frame[list(columns)].copy()
    for column in columns:
        if column in _INT_COLUMNS:
            typed[column] = typed[column].astype("int64")
        else:
            typed[column] = typed[column].astype(object)
    return typed


def _named(items: Sequence, *, separator: str = ", ") -> str:
    items = list(items)
    shown = separator.join(str(item) for item in items[:_NAMED_IN_ERRORS])
    more = len(items) - _NAMED_IN_ERRORS
    return shown + (f"{separator}and {more} more" if more > 0 else "")
