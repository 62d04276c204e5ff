"""Referential integrity between the frames of one billing period, as plain pandas.

Each function returns the ids of the offending records (empty when the period is sound), so a
blocking check can list them and stop everything downstream of a broken period.
"""

from __future__ import annotations

import pandas as pd


def deployments_with_unknown_customer_or_plan(
    deployments: pd.DataFrame, customers: pd.DataFrame, plans: pd.DataFrame
) -> pd.Series:
    orphans = ~deployments["customer_id"].isin(customers["customer_id"]) | ~deployments["plan_id"].isin(
        plans["plan_id"]
    )
    return deployments.loc[orphans, "deployment_id"]


def usage_of_unknown_deployments(usage: pd.DataFrame, deployments: pd.DataFrame) -> pd.Series:
    return usage.loc[
        ~usage["deployment_id"].isin(deployments["deployment_id"]), "deployment_id"
    ].drop_duplicates()


def invoices_whose_lines_disagree(invoices: pd.DataFrame, invoice_lines: pd.DataFrame) -> pd.Series:
    """Invoices whose lines do not add up to their subtotal and tax, and lines of unknown invoices."""
    sums = invoice_lines.groupby("invoice_id")[["amount_cents", "tax_cents"]].sum()
    joined = invoices.set_index("invoice_id")[["subtotal_cents", "tax_cents"]].join(
        sums, how="left", rsuffix="_of_lines"
    )
    joined = joined.fillna(0)
    disagreeing = joined.index[
        (joined["subtotal_cents"] != joined["amount_cents"])
        | (joined["tax_cents"] != joined["tax_cents_of_lines"])
    ]
    unknown = invoice_lines.loc[~invoice_lines["invoice_id"].isin(invoices["invoice_id"]), "invoice_id"]
    return pd.Series(sorted(set(disagreeing) | set(unknown)), dtype="int64", name="invoice_id")


def invoices_of_unknown_partners(invoices: pd.DataFrame, partners: pd.DataFrame) -> pd.Series:
    return invoices.loc[~invoices["partner_id"].isin(partners["partner_id"]), "move_id"]


def lines_of_unknown_moves(invoice_lines: pd.DataFrame, invoices: pd.DataFrame) -> pd.Series:
    return invoice_lines.loc[~invoice_lines["move_id"].isin(invoices["move_id"]), "line_id"]
