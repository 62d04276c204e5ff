"""Setting aside what breaks a source's contract, and finding the customers it concerns
(docs/design.md §6.10).

A record that breaks its own frame's contract arrives already marked (``set_aside``, from
``sources.validation``). The rules here are the ones between frames: a deployment whose customer
or plan is unknown, usage or invoice lines of unknown records, invoices whose lines do not add
up, and an expected leg that cannot be formed (a customer billed in another currency than its
plan, a province without a tax rate). Each set-aside record is attributed to the customers it
concerns through the ids it carries, so those customers get ``source_data_error`` and every other
customer of the period reconciles as usual. Nothing is dropped unseen: every record of every frame
is either used or listed here.

Plain pandas, no Dagster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from fusion_billing_assets.billing.periods import PeriodWindow
from fusion_billing_assets.billing.tax import tax_rule

# The column of a source frame that says why a record breaks its source's contract
# ("field: problem (got value)", several joined by "; "), or None for a record that keeps it.
SET_ASIDE = "set_aside"
SET_ASIDE_COLUMNS = ("source", "record", "problem", "customer_id", "partner_id")
# The ids a set-aside record may carry, in the order they are used to find its customers.
ID_COLUMNS = (
    "customer_id",
    "deployment_id",
    "plan_id",
    "invoice_id",
    "partner_id",
    "commercial_partner_id",
    "subscription_id",
    "move_id",
    # Not used to find customers, but they name lines in the checks' metadata.
    "invoice_line_id",
    "line_id",
)


@dataclass(frozen=True)
class ExpectedGap:
    """Why a customer's expected leg cannot be formed; the customer is still judged on both bills."""

    customer_id: int
    reason: str


def empty_set_aside() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in SET_ASIDE_COLUMNS[:3]})
    for column in SET_ASIDE_COLUMNS[3:]:
        frame[column] = pd.Series(dtype="Int64")
    return frame


def referential_set_aside(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Records of usable frames that reference what the period does not hold, or do not add up.

    ``frames`` maps source names (``nexacloud/deployments`` …) to their usable records; a frame
    that is absent is not judged. The result has the columns of ``describe_records``: source,
    record, problem and the record's ids.
    """
    found = []
    customers, plans = frames.get("nexacloud/customers"), frames.get("nexacloud/plans")
    deployments = frames.get("nexacloud/deployments")
    if deployments is not None and customers is not None and plans is not None:
        unknown_customer = ~deployments["customer_id"].isin(customers["customer_id"])
        unknown_plan = ~deployments["plan_id"].isin(plans["plan_id"])
        found.append(
            _described(
                deployments[unknown_customer | unknown_plan],
                "nexacloud/deployments",
                ["deployment_id"],
                lambda row: "; ".join(
                    problem
                    for problem, broken in (
                        (
                            f"customer_id: customer {row.customer_id} is not a customer of the period",
                            row.customer_missing,
                        ),
                        (f"plan_id: plan {row.plan_id} is not a usable plan", row.plan_missing),
                    )
                    if broken
                ),
                customer_missing=unknown_customer,
                plan_missing=unknown_plan,
            )
        )
    usage = frames.get("nexacloud/usage")
    if usage is not None and deployments is not None:
        found.append(
            _described(
                usage[~usage["deployment_id"].isin(deployments["deployment_id"])],
                "nexacloud/usage",
                ["deployment_id"],
                lambda row: (
                    f"deployment_id: deployment {row.deployment_id} is not a deployment alive in the period"
                ),
            )
        )
    invoices, lines = frames.get("nexacloud/invoices"), frames.get("nexacloud/invoice_lines")
    if invoices is not None and customers is not None:
        found.append(
            _described(
                invoices[~invoices["customer_id"].isin(customers["customer_id"])],
                "nexacloud/invoices",
                ["invoice_id"],
                lambda row: f"customer_id: customer {row.customer_id} is not a customer of the period",
            )
        )
    if invoices is not None and lines is not None:
        orphan_lines = lines[~lines["invoice_id"].isin(invoices["invoice_id"])]
        found.append(
            _described(
                orphan_lines,
                "nexacloud/invoice_lines",
                ["invoice_line_id"],
                lambda row: f"invoice_id: invoice {row.invoice_id} is not an invoice of the period",
            )
        )
        sums = lines.groupby("invoice_id")[["amount_cents", "tax_cents"]].sum()
        joined = invoices.join(sums, on="invoice_id", rsuffix="_of_lines")
        joined[["amount_cents", "tax_cents_of_lines"]] = joined[
            ["amount_cents", "tax_cents_of_lines"]
        ].fillna(0)
        disagreeing = joined[
            (joined["subtotal_cents"] != joined["amount_cents"])
            | (joined["tax_cents"] != joined["tax_cents_of_lines"])
        ]
        found.append(
            _described(
                disagreeing,
                "nexacloud/invoices",
                ["invoice_id"],
                lambda row: (
                    f"subtotal_cents/tax_cents: the invoice says {int(row.subtotal_cents)} + {int(row.tax_cents)} "
                    f"but its lines add up to {int(row.amount_cents)} + {int(row.tax_cents_of_lines)}"
                ),
            )
        )
    partners, odoo_invoices = frames.get("odoo/partners"), frames.get("odoo/invoices")
    if partners is not None and odoo_invoices is not None:
        found.append(
            _described(
                odoo_invoices[~odoo_invoices["partner_id"].isin(partners["partner_id"])],
                "odoo/invoices",
                ["move_id"],
                lambda row: f"partner_id: partner {row.partner_id} cannot be read",
            )
        )
    odoo_lines = frames.get("odoo/invoice_lines")
    if odoo_lines is not None and odoo_invoices is not None:
        found.append(
            _described(
                odoo_lines[~odoo_lines["move_id"].isin(odoo_invoices["move_id"])],
                "odoo/invoice_lines",
                ["line_id"],
                lambda row: f"move_id: invoice {row.move_id} is not a usable invoice of the period",
            )
        )
    found = [frame for frame in found if len(frame)]
    return pd.concat(found, ignore_index=True) if found else describe_records(pd.DataFrame(), "", [], [])


def expected_gaps(
    customers: pd.DataFrame, plans: pd.DataFrame, deployments: pd.DataFrame, window: PeriodWindow
) -> list[ExpectedGap]:
    """Customers whose expected charges cannot be computed, with the reason (one per customer).

    A plan priced in another currency than its customer is billed in, or a province without a tax
    rate on the period's first day, is no broken record: the two systems' bills can still be
    compared, only our third opinion is missing.
    """
    gaps: dict[int, list[str]] = {}
    plan_currency = dict(zip(plans["plan_id"], plans["currency"], strict=True))
    plan_code = dict(zip(plans["plan_id"], plans["plan_code"], strict=True))
    currency_of = dict(zip(customers["customer_id"], customers["currency"], strict=True))
    for row in deployments.itertuples(index=False):
        customer_currency, currency = currency_of.get(row.customer_id), plan_currency.get(row.plan_id)
        if customer_currency is not None and currency is not None and customer_currency != currency:
            gaps.setdefault(int(row.customer_id), []).append(
                f"deployment {row.deployment_id}'s plan {plan_code[row.plan_id]} is priced in {currency} "
                f"but the customer is billed in {customer_currency}"
            )
    for row in customers.itertuples(index=False):
        try:
            tax_rule(row.province, window.period)
        except ValueError as error:
            gaps.setdefault(int(row.customer_id), []).append(f"province {row.province!r}: {error}")
    return [ExpectedGap(customer_id, "; ".join(reasons)) for customer_id, reasons in sorted(gaps.items())]


def concerned_customers(
    set_aside: pd.DataFrame,
    *,
    deployments: pd.DataFrame,
    nexacloud_invoices: pd.DataFrame,
    odoo_invoices: pd.DataFrame,
    mapping: pd.DataFrame,
    odoo_invoice_lines: pd.DataFrame | None = None,
    partners: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Each set-aside record with the customer (or orphan partner) it concerns, one row per pair.

    ``set_aside`` holds records with their ids (``describe_records``). A record is attributed
    through every id it carries: its customer, its deployment's customer, the customers of its
    plan, its invoice's customer, the customers mapped to its partner or subscription, its Odoo
    invoice's partner, and the customers of the subscriptions its Odoo invoice's lines bill (so an
    invoice addressed to a contact that cannot be read still finds its customer). ``deployments``, ``nexacloud_invoices`` and ``odoo_invoices`` may hold set-aside
    records too: attribution uses whatever ids could be read. A record no id leads to is kept with
    both ``customer_id`` and ``partner_id`` missing, so it is still listed.
    """
    if set_aside.empty:
        return empty_set_aside()
    customer_of_deployment = _lookup(deployments, "deployment_id", "customer_id")
    customers_of_plan: dict[int, set[int]] = {}
    for plan_id, customer_id in zip(
        deployments.get("plan_id", []), deployments.get("customer_id", []), strict=True
    ):
        if not pd.isna(plan_id) and not pd.isna(customer_id):
            customers_of_plan.setdefault(int(plan_id), set()).add(int(customer_id))
    customer_of_invoice = _lookup(nexacloud_invoices, "invoice_id", "customer_id")
    partner_of_move = _lookup(odoo_invoices, "move_id", "partner_id")
    # An invoice addressed to a contact belongs to the contact's company, as the ledger folds it.
    company_of = _lookup(partners, "partner_id", "commercial_partner_id") if partners is not None else {}
    subscriptions_of_move: dict[int, set[int]] = {}
    lines = odoo_invoice_lines if odoo_invoice_lines is not None else pd.DataFrame()
    if {"move_id", "subscription_id"} <= set(lines.columns):
        for move_id, subscription_id in zip(lines["move_id"], lines["subscription_id"], strict=True):
            if not pd.isna(move_id) and not pd.isna(subscription_id):
                subscriptions_of_move.setdefault(int(move_id), set()).add(int(subscription_id))
    customer_links = mapping[mapping["link_kind"] == "customer"]
    customers_of_partner: dict[int, set[int]] = {}
    for customer_id, partner_id in zip(
        customer_links["nexacloud_id"], customer_links["odoo_id"], strict=True
    ):
        if not pd.isna(customer_id) and not pd.isna(partner_id):
            customers_of_partner.setdefault(int(partner_id), set()).add(int(customer_id))
    deployment_links = mapping[mapping["link_kind"] == "deployment"]
    customers_of_subscription: dict[int, set[int]] = {}
    for deployment_id, subscription_id in zip(
        deployment_links["nexacloud_id"], deployment_links["odoo_id"], strict=True
    ):
        customer = customer_of_deployment.get(int(deployment_id)) if not pd.isna(deployment_id) else None
        if customer is not None and not pd.isna(subscription_id):
            customers_of_subscription.setdefault(int(subscription_id), set()).add(customer)

    rows = []
    for record in set_aside.itertuples(index=False):
        customers: set[int] = set()
        partners: set[int] = set()
        ids = {column: _id(getattr(record, column, None)) for column in ID_COLUMNS}
        if ids["customer_id"] is not None:
            customers.add(ids["customer_id"])
        if ids["deployment_id"] is not None and ids["deployment_id"] in customer_of_deployment:
            customers.add(customer_of_deployment[ids["deployment_id"]])
        # A plan concerns every customer on it; any other record only names the plan it uses.
        if ids["plan_id"] is not None and record.source == "nexacloud/plans":
            customers |= customers_of_plan.get(ids["plan_id"], set())
        if ids["invoice_id"] is not None and ids["invoice_id"] in customer_of_invoice:
            customers.add(customer_of_invoice[ids["invoice_id"]])
        subscriptions = {ids["subscription_id"]} - {None}
        if ids["move_id"] is not None:
            subscriptions |= subscriptions_of_move.get(ids["move_id"], set())
        for subscription in subscriptions:
            customers |= customers_of_subscription.get(subscription, set())
        odoo_partners = {ids["partner_id"], ids["commercial_partner_id"]}
        if ids["move_id"] is not None and ids["move_id"] in partner_of_move:
            odoo_partners.add(partner_of_move[ids["move_id"]])
        for partner in odoo_partners - {None}:
            mapped = customers_of_partner.get(partner, set()) | customers_of_partner.get(
                company_of.get(partner, partner), set()
            )
            customers |= mapped
            if not mapped:
                partners.add(partner)
        base = {"source": record.source, "record": record.record, "problem": record.problem}
        pairs = [{**base, "customer_id": c, "partner_id": pd.NA} for c in sorted(customers)]
        pairs += [{**base, "customer_id": pd.NA, "partner_id": p} for p in sorted(partners)]
        rows += pairs or [{**base, "customer_id": pd.NA, "partner_id": pd.NA}]
    frame = pd.DataFrame(rows, columns=list(SET_ASIDE_COLUMNS))
    for column in ("customer_id", "partner_id"):
        frame[column] = frame[column].astype("Int64")
    return frame


def mapping_conflicts(mapping: pd.DataFrame, deployments: pd.DataFrame) -> pd.DataFrame:
    """The mapping's conflicts (``account_mapping``'s ``conflict``) as set-aside rows, attributed:
    a customer link to its customer, a deployment link to its deployment's customer, an Odoo
    partner in conflict to its own row."""
    if "conflict" not in mapping.columns:
        return empty_set_aside()
    customer_of_deployment = _lookup(deployments, "deployment_id", "customer_id")
    rows = []
    for kind, nexacloud_id, odoo_id, conflict in zip(
        mapping["link_kind"], mapping["nexacloud_id"], mapping["odoo_id"], mapping["conflict"], strict=True
    ):
        if conflict is None or (pd.api.types.is_scalar(conflict) and pd.isna(conflict)):
            continue
        if pd.isna(nexacloud_id):
            record, customer, partner = f"partner {int(odoo_id)}", pd.NA, int(odoo_id)
        elif kind == "customer":
            record, customer, partner = f"nexacloud.customer_{int(nexacloud_id)}", int(nexacloud_id), pd.NA
        else:
            customer = customer_of_deployment.get(int(nexacloud_id), pd.NA)
            record, partner = f"nexacloud.deployment_{int(nexacloud_id)}", pd.NA
        rows.append(
            {
                "source": "odoo/account_links",
                "record": record,
                "problem": conflict,
                "customer_id": customer,
                "partner_id": partner,
            }
        )
    frame = pd.DataFrame(rows, columns=list(SET_ASIDE_COLUMNS))
    for column in ("customer_id", "partner_id"):
        frame[column] = frame[column].astype("Int64")
    return frame


def refused_waivers(refused) -> pd.DataFrame:
    """Refused rows of the waiver file (``billing.waivers.RefusedWaiver``) as set-aside rows: each
    sets aside the customer it names, in its period (or in every period when its period is unreadable)."""
    frame = pd.DataFrame(
        [
            {
                "source": "waivers",
                "record": f"line {row.line}",
                "problem": str(row.error),
                "customer_id": pd.NA if row.customer_id is None else row.customer_id,
                "partner_id": pd.NA,
            }
            for row in refused
        ],
        columns=list(SET_ASIDE_COLUMNS),
    )
    for column in ("customer_id", "partner_id"):
        frame[column] = frame[column].astype("Int64")
    return frame


def describe_records(frame: pd.DataFrame, source: str, key: list[str], problems) -> pd.DataFrame:
    """Records as set-aside rows: source, ``record`` (its key, e.g. ``invoice_id=12``), problem, ids."""
    described = pd.DataFrame(
        {
            "source": pd.Series([source] * len(frame), index=frame.index, dtype=object),
            "record": record_names(frame, key),
            "problem": pd.Series(list(problems), index=frame.index, dtype=object),
        }
    )
    for column in ID_COLUMNS:
        values = frame[column] if column in frame.columns else pd.Series(pd.NA, index=frame.index)
        described[column] = pd.to_numeric(values, errors="coerce").astype("Int64")
    return described.reset_index(drop=True)


def record_names(frame: pd.DataFrame, key: list[str]) -> pd.Series:
    """Each record's name by its key, e.g. ``invoice_id=12`` (a key of several columns joined by ", ")."""
    present = [column for column in key if column in frame.columns]
    names = [
        ", ".join(f"{column}={_shown(value)}" for column, value in zip(present, values, strict=True))
        for values in zip(*(frame[column].tolist() for column in present), strict=True)
    ]
    return pd.Series(names if present else [""] * len(frame), index=frame.index, dtype=object)


def _described(frame: pd.DataFrame, source: str, key: list[str], problem, **flags: pd.Series) -> pd.DataFrame:
    annotated = frame.assign(**{name: flag.loc[frame.index] for name, flag in flags.items()})
    problems = [problem(row) for row in annotated.itertuples(index=False)]
    return describe_records(frame, source, key, problems)


def _lookup(frame: pd.DataFrame, key: str, value: str) -> dict[int, int]:
    if key not in frame.columns or value not in frame.columns:
        return {}
    return {
        int(k): int(v)
        for k, v in zip(frame[key], frame[value], strict=True)
        if not pd.isna(k) and not pd.isna(v)
    }


def _id(value) -> int | None:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return int(value)


def _shown(value) -> str:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return "?"
    return str(value)
