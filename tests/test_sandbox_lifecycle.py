"""The sandbox's lifecycle states (docs/design.md §7, §11): the ground truth's cases are in the data.

The manifest's ``lifecycle`` section is what the lifecycle classifier's end-to-end test compares
with; here it is checked against both systems' data, read with SQL (never through the project's
classifier): each case has the states it claims; the rules of §11, applied here to every mapped
deployment, give each case's deployments the kind and ``since`` the manifest says and every other
one ``in_sync``; the baseline leaves no other open invoice overdue; and the stage changes nothing
but the few lifecycle columns of the records the cases name, so the reconciliation's ground truth
and every figure the charge math reads stay as they were without it. The Odoo test double serves
the new payment fields and filters on them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, select

from fusion_billing_assets.billing.periods import period_window
from fusion_billing_assets.sandbox import generator
from fusion_billing_assets.sandbox.generator import SandboxScale, generate
from fusion_billing_assets.sandbox.odoo_store import TABLES, open_store
from fusion_billing_assets.sandbox.resources import sandbox_odoo
from fusion_billing_assets.sources import nexacloud_schema as schema
from fusion_billing_assets.sources.odoo_frames import (
    OdooModels,
    fetch_invoices_and_lines,
    fetch_subscriptions,
)
from tests.conftest import SMALL_SCALE_OPTIONS

TIMEZONE = "America/Toronto"
ZONE = ZoneInfo(TIMEZONE)
# Closed October and November 2026, provisional December: "now" is 2026-12-15 00:00 local.
END_PERIOD = date(2026, 12, 1)
SEED = 11
GRACE = timedelta(days=7)
BILLING_STATES = {"3_progress", "7_upsell"}
OPEN_PAYMENT_STATES = {"not_paid", "partial"}
# Written out rather than imported, so a case dropped from the stage fails here.
CASE_KINDS = {
    "not_suspended": "not_suspended",
    "suspended_but_paid": "suspended_but_paid",
    "not_deprovisioned": "not_deprovisioned",
    "billed_after_termination": "billed_after_termination",
    "paused_but_running": "paused_but_running",
    "in_grace": "in_sync",
    "suspended_and_overdue": "in_sync",
    "terminated_and_churned_same_day": "in_sync",
}
INVOICE_CASES = ("not_suspended", "suspended_and_overdue", "in_grace")


@dataclass
class Built:
    """One generated sandbox, both systems read back with SQL."""

    out: Path
    manifest: dict[str, Any]
    nexacloud: dict[str, list[dict[str, Any]]]
    odoo: dict[str, list[dict[str, Any]]]

    @property
    def lifecycle(self) -> dict[str, Any]:
        return self.manifest["lifecycle"]

    @property
    def as_of(self) -> datetime:
        return datetime.fromisoformat(self.lifecycle["as_of"]).replace(tzinfo=UTC)

    @property
    def today(self) -> date:
        return self.as_of.astimezone(ZONE).date()

    def cases(self, case: str) -> list[dict[str, Any]]:
        return [entry for entry in self.lifecycle["cases"] if entry["case"] == case]

    def subject(self, case: str) -> dict[str, Any]:
        """The deployment a case is built on: the one of its kind (a look-alike's only running one)."""
        entries = self.cases(case)
        if CASE_KINDS[case] != "in_sync":
            (entry,) = [e for e in entries if e["kind"] == CASE_KINDS[case]]
            return entry
        (entry,) = [
            e for e in entries if self.deployment(e["deployment_id"])["terminated_at"] is None
        ] or entries
        return entry

    def deployment(self, deployment_id: int) -> dict[str, Any]:
        return next(d for d in self.nexacloud["deployments"] if d["id"] == deployment_id)

    def customer(self, customer_id: int) -> dict[str, Any]:
        return next(c for c in self.nexacloud["customers"] if c["id"] == customer_id)

    def subscription(self, subscription_id: int) -> dict[str, Any]:
        return next(s for s in self.odoo["sale.order"] if s["id"] == subscription_id)

    def mapped(self) -> dict[int, int]:
        """Deployment id → its subscription, from Odoo's external ids."""
        return {
            int(row["name"].removeprefix("deployment_")): row["res_id"]
            for row in self.odoo["ir.model.data"]
            if row["module"] == "nexacloud" and row["model"] == "sale.order"
        }

    def product_lines(self) -> dict[int, list[dict[str, Any]]]:
        """Move id → its product lines."""
        lines = defaultdict(list)
        for line in self.odoo["account.move.line"]:
            if line["display_type"] == "product":
                lines[line["move_id"]].append(line)
        return lines

    def open_invoices(self, subscription_id: int) -> list[dict[str, Any]]:
        """Posted customer invoices, unpaid or partly paid, with a product line on the subscription."""
        lines = self.product_lines()
        return [
            move
            for move in self.odoo["account.move"]
            if move["move_type"] == "out_invoice"
            and move["state"] == "posted"
            and move["payment_state"] in OPEN_PAYMENT_STATES
            and any(line["subscription_id"] == subscription_id for line in lines[move["id"]])
        ]


def _generate(out: Path, *, seed: int = SEED) -> Built:
    url = f"sqlite:///{out / 'nexacloud.sqlite'}"
    generate(url, out, seed=seed, scale=SandboxScale(**SMALL_SCALE_OPTIONS), end_period=END_PERIOD)
    return _read(out, url)


def _read(out: Path, url: str) -> Built:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            nexacloud = {
                table.name: [
                    dict(row._mapping) for row in connection.execute(select(table).order_by(table.c.id))
                ]
                for table in schema.metadata.sorted_tables
            }
    finally:
        engine.dispose()
    store = open_store(f"sqlite:///{out / 'odoo.sqlite'}")
    try:
        with store.connect() as connection:
            odoo = {
                model: [dict(row._mapping) for row in connection.execute(select(table).order_by(table.c.id))]
                for model, table in TABLES.items()
            }
    finally:
        store.dispose()
    return Built(out, json.loads((out / "manifest.json").read_text()), nexacloud, odoo)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return _generate(tmp_path_factory.mktemp("lifecycle"))


@pytest.fixture(scope="module")
def without_stage(tmp_path_factory) -> Built:
    """The same world generated with the lifecycle stage's writes left out."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generator, "apply_lifecycle", lambda *arguments: None)
        return _generate(tmp_path_factory.mktemp("lifecycle_without_stage"))


# --- the rules of docs/design.md §11, applied to the data as read ----------------------------------


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite hands back NexaCloud's timestamps naive, in UTC.
    return None if moment is None else moment.replace(tzinfo=UTC)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=ZONE).astimezone(UTC)


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def judge(built: Built) -> dict[int, tuple[str, str | None]]:
    """Every mapped deployment's drift kind and since, by the rules of §11, from the data alone."""
    today = built.today
    moves = {move["id"]: move for move in built.odoo["account.move"]}
    lines_of_subscription = defaultdict(list)
    for move_id, lines in built.product_lines().items():
        for line in lines:
            lines_of_subscription[line["subscription_id"]].append((moves[move_id], line))
    judged = {}
    for deployment_id, subscription_id in built.mapped().items():
        deployment = built.deployment(deployment_id)
        customer = built.customer(deployment["customer_id"])
        terminated_at = _utc(deployment["terminated_at"])
        if deployment["status"] == "terminated" or terminated_at or customer["status"] == "closed":
            nexacloud = "terminated"
        elif deployment["status"] == "suspended" or customer["status"] == "suspended":
            nexacloud = "suspended"
        else:
            nexacloud = "running"
        subscription = built.subscription(subscription_id)
        state = subscription["subscription_state"]
        open_invoices = built.open_invoices(subscription_id)
        overdue = [m for m in open_invoices if date.fromisoformat(m["invoice_date_due"]) < today]
        beyond = [m for m in open_invoices if today > date.fromisoformat(m["invoice_date_due"]) + GRACE]
        kind, since = "in_sync", None
        if nexacloud == "terminated":
            ended = terminated_at.astimezone(ZONE).date()
            later = [
                line
                for move, line in lines_of_subscription[subscription_id]
                if move["move_type"] == "out_invoice"
                and move["state"] != "cancel"
                and date.fromisoformat(line["deferred_start_date"] or move["invoice_date"]) > ended
            ]
            if state in BILLING_STATES or later:
                kind, since = "billed_after_termination", terminated_at
        elif (
            state == "6_churn"
            and subscription["end_date"]
            and today > date.fromisoformat(subscription["end_date"])
        ):
            kind = "not_deprovisioned"
            since = _midnight(date.fromisoformat(subscription["end_date"]) + timedelta(days=1))
        elif state == "4_paused" and nexacloud == "running":
            kind = "paused_but_running"
        elif state in BILLING_STATES and nexacloud == "running" and beyond:
            earliest = min(date.fromisoformat(m["invoice_date_due"]) for m in beyond)
            kind, since = "not_suspended", _midnight(earliest + GRACE + timedelta(days=1))
        elif state in BILLING_STATES and nexacloud == "suspended" and not overdue:
            kind = "suspended_but_paid"
        judged[deployment_id] = (kind, _text(since))
    return judged


def expected(built: Built) -> dict[int, tuple[str, str | None]]:
    """The manifest's word: each case's deployments as listed, every other mapped one in sync."""
    truth = {deployment_id: ("in_sync", None) for deployment_id in built.mapped()}
    for entry in built.lifecycle["cases"]:
        truth[entry["deployment_id"]] = (entry["kind"], entry["since"])
    return truth


# --- the manifest's section --------------------------------------------------------------------


def test_the_manifest_lists_every_case_once_with_its_kind_on_mapped_deployments(built):
    lifecycle = built.lifecycle
    assert lifecycle["as_of"] == "2026-12-15 05:00:00" == built.manifest["provisional_usage_cutoff"]
    assert (lifecycle["grace_days"], lifecycle["timezone"]) == (7, TIMEZONE)
    assert {entry["case"] for entry in lifecycle["cases"]} == set(CASE_KINDS)
    assert lifecycle["not_built"] == []
    for case, kind in CASE_KINDS.items():
        kinds = [entry["kind"] for entry in built.cases(case)]
        assert kind in kinds and set(kinds) <= {kind, "in_sync"}, case
    deployments = [entry["deployment_id"] for entry in lifecycle["cases"]]
    assert len(deployments) == len(set(deployments))
    mapped = built.mapped()
    customer_of = {d["id"]: d["customer_id"] for d in built.nexacloud["deployments"]}
    for entry in lifecycle["cases"]:
        assert mapped[entry["deployment_id"]] == entry["subscription_id"]
        assert customer_of[entry["deployment_id"]] == entry["customer_id"]
        assert entry["description"].endswith(".") and str(entry["deployment_id"]) in entry["description"]
    # Each case on a customer of its own.
    subjects = [built.subject(case)["customer_id"] for case in CASE_KINDS]
    assert len(subjects) == len(set(subjects))


# --- each case has the states it claims --------------------------------------------------------


def test_each_case_has_the_states_it_claims(built):
    today = built.today

    def states(case: str) -> tuple[dict, dict, list[dict]]:
        entry = built.subject(case)
        deployment = built.deployment(entry["deployment_id"])
        assert built.customer(entry["customer_id"])["status"] == "active"
        return (
            deployment,
            built.subscription(entry["subscription_id"]),
            built.open_invoices(entry["subscription_id"]),
        )

    def due(move: dict) -> date:
        return date.fromisoformat(move["invoice_date_due"])

    deployment, subscription, open_invoices = states("not_suspended")
    assert (deployment["status"], deployment["terminated_at"]) == ("running", None)
    assert (subscription["subscription_state"], subscription["end_date"]) == ("3_progress", None)
    (unpaid,) = [m for m in open_invoices if today > due(m) + GRACE]
    assert unpaid["payment_state"] == "not_paid" and unpaid["amount_residual"] == unpaid["amount_total"] > 0
    assert due(unpaid) == date.fromisoformat(unpaid["invoice_date"]) + timedelta(days=30)
    assert built.subject("not_suspended")["since"] == _text(_midnight(due(unpaid) + timedelta(days=8)))

    deployment, subscription, open_invoices = states("suspended_but_paid")
    assert deployment["status"] == "suspended" and deployment["terminated_at"] is None
    assert subscription["subscription_state"] == "3_progress"
    assert not [m for m in open_invoices if due(m) < today]
    assert built.subject("suspended_but_paid")["since"] is None

    deployment, subscription, _ = states("not_deprovisioned")
    assert (deployment["status"], deployment["terminated_at"]) == ("running", None)
    assert subscription["subscription_state"] == "6_churn"
    assert subscription["end_date"] == (today - timedelta(days=5)).isoformat()
    assert subscription["start_date"] <= subscription["end_date"]
    assert built.subject("not_deprovisioned")["since"] == _text(_midnight(today - timedelta(days=4)))

    entry = built.subject("billed_after_termination")
    deployment, subscription, _ = states("billed_after_termination")
    assert deployment["status"] == "terminated" and _utc(deployment["terminated_at"]) < built.as_of
    assert (subscription["subscription_state"], subscription["end_date"]) == ("3_progress", None)
    assert entry["since"] == _text(_utc(deployment["terminated_at"]))

    deployment, subscription, _ = states("paused_but_running")
    assert deployment["status"] == "running" and subscription["subscription_state"] == "4_paused"
    assert built.subject("paused_but_running")["since"] is None

    deployment, subscription, open_invoices = states("in_grace")
    assert (deployment["status"], subscription["subscription_state"]) == ("running", "3_progress")
    (late,) = [m for m in open_invoices if due(m) < today]
    assert due(late) == today - timedelta(days=3) and late["payment_state"] == "not_paid"

    deployment, subscription, open_invoices = states("suspended_and_overdue")
    assert (deployment["status"], subscription["subscription_state"]) == ("suspended", "3_progress")
    assert [m for m in open_invoices if today > due(m) + GRACE]

    deployment, subscription, _ = states("terminated_and_churned_same_day")
    terminated_at = _utc(deployment["terminated_at"])
    assert deployment["status"] == "terminated" and terminated_at < built.as_of
    assert subscription["subscription_state"] == "6_churn"
    assert subscription["end_date"] == terminated_at.astimezone(ZONE).date().isoformat()
    # This world has an evening termination, whose UTC date is the next day: the one taken.
    assert terminated_at.date() > terminated_at.astimezone(ZONE).date()


def test_an_invoice_case_lists_every_deployment_its_invoice_bills(built):
    lines = built.product_lines()
    deployment_of = {s: d for d, s in built.mapped().items()}
    for case in INVOICE_CASES:
        subject = built.subject(case)
        (invoice,) = [
            m
            for m in built.open_invoices(subject["subscription_id"])
            if date.fromisoformat(m["invoice_date_due"]) < built.today
        ]
        billed = {
            deployment_of[line["subscription_id"]] for line in lines[invoice["id"]] if line["subscription_id"]
        }
        assert billed == {entry["deployment_id"] for entry in built.cases(case)}, case
        alive = [d for d in billed if built.deployment(d)["terminated_at"] is None]
        assert alive == [subject["deployment_id"]], case


# --- the ground truth is what the rules read off the data ---------------------------------------


def test_the_rules_read_off_the_data_give_every_mapped_deployment_its_manifest_kind(built):
    assert judge(built) == expected(built)


@pytest.mark.parametrize("seed", [3, 29])
def test_other_seeds_build_every_case_and_the_rules_agree(tmp_path, seed):
    other = _generate(tmp_path, seed=seed)
    assert {entry["case"] for entry in other.lifecycle["cases"]} == set(CASE_KINDS)
    assert other.lifecycle["not_built"] == []
    assert judge(other) == expected(other)


def test_a_world_without_terminated_deployments_to_spare_still_generates_and_says_what_is_missing(tmp_path):
    # Seed 2 at the sandbox's smallest scale: one terminated deployment to go round, which the
    # drift kind takes before its look-alike.
    scale = SandboxScale(customers=39, max_deployments_per_customer=3, usage_window_minutes=360, periods=3)
    generate(f"sqlite:///{tmp_path / 'n.sqlite'}", tmp_path, seed=2, scale=scale, end_period=END_PERIOD)
    lifecycle = json.loads((tmp_path / "manifest.json").read_text())["lifecycle"]
    missing = {entry["case"]: entry["why"] for entry in lifecycle["not_built"]}
    assert set(missing) == {"terminated_and_churned_same_day"}
    assert "needs a terminated deployment" in missing["terminated_and_churned_same_day"]
    assert {entry["case"] for entry in lifecycle["cases"]} == set(CASE_KINDS) - set(missing)


# --- the baseline: net-30 terms, paid when due, nobody overdue -----------------------------------


def test_the_baseline_pays_every_invoice_due_before_now_and_leaves_no_other_open_invoice_overdue(built):
    today = built.today
    cases = {built.subject(case)["customer_id"] for case in INVOICE_CASES}
    partner_of = {
        int(row["name"].removeprefix("customer_")): row["res_id"]
        for row in built.odoo["ir.model.data"]
        if row["module"] == "nexacloud" and row["model"] == "res.partner"
    }
    case_partners = {partner_of[customer] for customer in cases}
    overdue = []
    for move in built.odoo["account.move"]:
        due = date.fromisoformat(move["invoice_date_due"])
        in_case = move["partner_id"] in case_partners
        if not (in_case and due < today):
            assert due == date.fromisoformat(move["invoice_date"]) + timedelta(days=30), move["name"]
        if move["move_type"] == "out_refund":
            assert (move["payment_state"], move["amount_residual"]) == ("paid", 0.0)
        elif move["state"] == "posted" and due < today and not in_case:
            assert (move["payment_state"], move["amount_residual"]) == ("paid", 0.0), move["name"]
        else:
            assert move["payment_state"] == "not_paid" and move["amount_residual"] == move["amount_total"]
        if move["state"] == "posted" and move["payment_state"] in OPEN_PAYMENT_STATES and due < today:
            overdue.append(move["partner_id"])
    # The only open invoices overdue are the invoice cases', one each.
    assert sorted(overdue) == sorted(case_partners)


# --- the stage changes nothing a figure is made of ---------------------------------------------


def _differences(before: dict[str, list[dict]], after: dict[str, list[dict]]) -> set[tuple[str, int, str]]:
    changed = set()
    for name, rows in before.items():
        assert [row["id"] for row in rows] == [row["id"] for row in after[name]], name
        for old, new in zip(rows, after[name], strict=True):
            changed |= {(name, old["id"], column) for column in old if old[column] != new[column]}
    return changed


def test_the_ground_truth_is_the_same_without_the_stage(built, without_stage):
    for section in ("differences", "edge_cases", "expected", "delivery_faults", "lifecycle"):
        assert built.manifest[section] == without_stage.manifest[section], section
    assert built.manifest == without_stage.manifest
    for name in ("waivers.csv", "import_exclusions.csv"):
        assert (built.out / name).read_bytes() == (without_stage.out / name).read_bytes()


def test_the_stage_changes_only_the_lifecycle_columns_of_the_records_its_cases_name(built, without_stage):
    subject = {case: built.subject(case) for case in CASE_KINDS}
    suspended = {subject[case]["deployment_id"] for case in ("suspended_but_paid", "suspended_and_overdue")}
    assert _differences(without_stage.nexacloud, built.nexacloud) == {
        ("deployments", deployment_id, "status") for deployment_id in suspended
    }
    changed = _differences(without_stage.odoo, built.odoo)
    subscriptions = {
        ("sale.order", subject["billed_after_termination"]["subscription_id"], "subscription_state"),
        ("sale.order", subject["billed_after_termination"]["subscription_id"], "end_date"),
        ("sale.order", subject["not_deprovisioned"]["subscription_id"], "subscription_state"),
        ("sale.order", subject["not_deprovisioned"]["subscription_id"], "end_date"),
        ("sale.order", subject["paused_but_running"]["subscription_id"], "subscription_state"),
    }
    assert {c for c in changed if c[0] != "account.move"} == subscriptions
    moves = {move["id"]: move for move in without_stage.odoo["account.move"]}
    invoices = defaultdict(set)
    for _model, move_id, column in changed - subscriptions:
        invoices[move_id].add(column)
    payment = {"payment_state", "amount_residual"}
    assert sorted(invoices.values(), key=len) == [payment, payment, {*payment, "invoice_date_due"}]
    partners = {moves[move_id]["partner_id"] for move_id in invoices}
    customer_partner = {
        int(row["name"].removeprefix("customer_")): row["res_id"]
        for row in built.odoo["ir.model.data"]
        if row["module"] == "nexacloud" and row["model"] == "res.partner"
    }
    assert partners == {customer_partner[subject[case]["customer_id"]] for case in INVOICE_CASES}


def test_the_odoo_frames_the_charge_math_reads_differ_only_in_the_lifecycle_columns(built, without_stage):
    """The subscriptions' prices and every invoice and line read for each period are the same;
    the subscription set back in progress is read after its termination too, with no line there."""
    reopened = built.subject("billed_after_termination")
    terminated_at = _utc(built.deployment(reopened["deployment_id"])["terminated_at"])
    models = OdooModels()
    for period in [p["period"] for p in built.manifest["periods"]]:
        window = period_window(period, TIMEZONE)
        frames = {}
        for side, sandbox in (("with", built), ("without", without_stage)):
            with sandbox_odoo(f"sqlite:///{sandbox.out / 'odoo.sqlite'}").get_client() as client:
                frames[side] = (
                    fetch_subscriptions(client, models, window),
                    *fetch_invoices_and_lines(client, models, window),
                )
        (subscriptions, invoices, lines), (before, invoices_before, lines_before) = (
            frames["with"],
            frames["without"],
        )
        assert invoices.equals(invoices_before) and lines.equals(lines_before), period
        if terminated_at < window.start_utc:
            extra = subscriptions["subscription_id"] == reopened["subscription_id"]
            assert extra.sum() == 1 and reopened["subscription_id"] not in set(lines["subscription_id"])
            subscriptions = subscriptions.loc[~extra].reset_index(drop=True)
        kept = [c for c in subscriptions.columns if c not in ("state", "end_date")]
        assert subscriptions[kept].equals(before[kept]), period


# --- the Odoo test double serves the payment fields -------------------------------------------


def test_the_odoo_double_serves_and_filters_the_payment_fields(built):
    subject = built.subject("not_suspended")
    with sandbox_odoo(f"sqlite:///{built.out / 'odoo.sqlite'}").get_client() as client:
        described = client.call("account.move", "fields_get", attributes=["type"])
        assert {
            name: described[name]["type"] for name in ("payment_state", "invoice_date_due", "amount_residual")
        } == {
            "payment_state": "selection",
            "invoice_date_due": "date",
            "amount_residual": "monetary",
        }
        overdue = client.call(
            "account.move",
            "search_read",
            domain=[
                ["move_type", "=", "out_invoice"],
                ["state", "=", "posted"],
                ["payment_state", "in", ["not_paid", "partial"]],
                ["invoice_date_due", "<", (built.today - GRACE).isoformat()],
                ["invoice_line_ids.subscription_id", "=", subject["subscription_id"]],
            ],
            fields=["payment_state", "invoice_date_due", "amount_residual", "amount_total"],
        )
    (move,) = overdue
    assert move["payment_state"] == "not_paid" and move["amount_residual"] == move["amount_total"] > 0
    assert date.fromisoformat(move["invoice_date_due"]) < built.today - GRACE
