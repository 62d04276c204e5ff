"""The importer's contract (docs/design.md §9), on two small frames and the Odoo test double.

Planning names each record's action and what differs; applying writes through ``load`` only what
is planned, by external id, in batches; a second apply finds nothing to do; an apply cut off half
way (no answer, or an answer lost after Odoo committed) and run again ends with exactly one Odoo
record per NexaCloud record; a record that already exists in Odoo without an external id is a
conflict, reported and never touched. Expected values are worked by hand from the frames below.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import delete, update

from fusion_billing_assets.importer.apply import Outcome, apply_plan, load_rows
from fusion_billing_assets.importer.exclusions import ExclusionsError, read_exclusions
from fusion_billing_assets.importer.odoo_side import read_odoo_side
from fusion_billing_assets.importer.plan import Planned, counts_by_action, plan_frame, plan_import
from fusion_billing_assets.importer.records import Action, Wanted, wanted_records
from fusion_billing_assets.sandbox.odoo_models import SANDBOX_DATABASE, SANDBOX_IMPORTER_API_KEY
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn
from fusion_billing_assets.sandbox.odoo_store import TABLES, load_models, open_store
from fusion_billing_assets.sources.odoo import OdooClient, RetryPolicy

TIMEZONE = "America/Toronto"

# Odoo's own records the imported ones point at, with the external ids Odoo's modules give them.
# Odoo has no state for New Brunswick here: customer 3's partner is imported without one.
ODOO_BEFORE_IMPORT = {
    "res.currency": [{"id": 1, "name": "CAD"}],
    "res.country.state": [
        {"id": 1, "name": "Ontario", "code": "ON"},
        {"id": 2, "name": "Quebec", "code": "QC"},
    ],
    "sale.subscription.plan": [{"id": 1, "name": "Monthly"}],
    "res.partner": [{"id": 1, "name": "Nexa Cloud Inc.", "active": True}],
    "ir.model.data": [
        {"id": 1, "module": "base", "name": "CAD", "model": "res.currency", "res_id": 1},
        {"id": 2, "module": "base", "name": "state_ca_on", "model": "res.country.state", "res_id": 1},
        {"id": 3, "module": "base", "name": "state_ca_qc", "model": "res.country.state", "res_id": 2},
        {
            "id": 4,
            "module": "sale_subscription",
            "name": "subscription_plan_month",
            "model": "sale.subscription.plan",
            "res_id": 1,
        },
    ],
}


def _utc(text: str | None) -> pd.Timestamp | None:
    return None if text is None else pd.Timestamp(text, tz=UTC)


def customers_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            (1, "Acme Robotics", "billing@acme.example", "ON"),
            (2, "Borealis Foods", "billing@borealis.example", "QC"),
            (3, "Cariboo Labs", "ap@cariboo.example", "NB"),
        ],
        columns=["customer_id", "name", "email", "province"],
    ).assign(currency="CAD", status="active", created_at=_utc("2025-06-01 12:00"))


def plans_frame(starter_cents: int = 1_499) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (1, "starter", "Starter", starter_cents, 360_000, Decimal("4.5000"), "CAD"),
            (2, "pro", "Pro", 19_900, 5_760_000, Decimal("2.8125"), "CAD"),
        ],
        columns=[
            "plan_id",
            "plan_code",
            "plan_name",
            "monthly_price_cents",
            "included_cpu_seconds",
            "overage_cents_per_cpu_hour",
            "currency",
        ],
    )


def deployments_frame() -> pd.DataFrame:
    rows = [
        # 03:00 UTC on March 1st is still February 28th in Toronto.
        (10, 1, 1, "acme-web", "2026-03-01 03:00", None),
        # Terminated at 23:30 on September 30th, Toronto time: its last local day.
        (11, 1, 2, "acme-batch", "2026-01-10 12:00", "2026-10-01 03:30"),
        (12, 2, 1, "borealis-shop", "2026-05-05 15:00", None),
        (13, 3, 1, "cariboo-lab", "2026-02-02 15:00", None),
    ]
    return pd.DataFrame(
        [
            (d, c, p, name, "ca-central", "terminated" if ended else "running", _utc(created), _utc(ended))
            for d, c, p, name, created, ended in rows
        ],
        columns=[
            "deployment_id",
            "customer_id",
            "plan_id",
            "name",
            "region",
            "status",
            "created_at",
            "terminated_at",
        ],
    )


def wanted(*, starter_cents: int = 1_499, exclusions: dict[int, str] | None = None) -> list[Wanted]:
    return wanted_records(
        customers_frame(),
        plans_frame(starter_cents),
        deployments_frame(),
        timezone=TIMEZONE,
        exclusions=exclusions,
    )


class Odoo:
    """The test double on a SQLite store of its own, and a client of the importer's user."""

    def __init__(self, path: Path, models: dict | None = None):
        self.url = f"sqlite:///{path / 'odoo.sqlite'}"
        load_models(self.url, models or ODOO_BEFORE_IMPORT).dispose()
        self.app = OdooStandIn.from_store(self.url, writable=True)

    @contextmanager
    def client(self, app=None, **options) -> Iterator[OdooClient]:
        transport = httpx.WSGITransport(app=app or self.app)
        with httpx.Client(base_url="http://odoo.test", transport=transport) as http:
            yield OdooClient(http, database=SANDBOX_DATABASE, api_key=SANDBOX_IMPORTER_API_KEY, **options)

    def plan(self, records: list[Wanted], **options) -> list[Planned]:
        with self.client(**options) as client:
            return plan_import(records, read_odoo_side(client, records))

    def apply(self, planned: list[Planned], app=None, **options):
        with self.client(app, retry=RetryPolicy(max_attempts=1)) as client:
            return apply_plan(client, planned, dry_run=False, **options)

    def read(self, model: str, fields: list[str], domain: list | None = None) -> list[dict]:
        with self.client() as client:
            return client.search_read_all(model, domain or [], fields)

    def external_ids(self) -> dict[str, tuple[str, int]]:
        rows = self.read(
            "ir.model.data", ["module", "name", "model", "res_id"], [["module", "=", "nexacloud"]]
        )
        return {f"{r['module']}.{r['name']}": (r["model"], r["res_id"]) for r in rows}

    def execute(self, statement) -> None:
        engine = open_store(self.url)
        try:
            with engine.begin() as connection:
                connection.execute(statement)
        finally:
            engine.dispose()


@pytest.fixture
def odoo(tmp_path) -> Iterator[Odoo]:
    double = Odoo(tmp_path)
    yield double
    double.app.close()


def actions(planned: list[Planned]) -> dict[str, str]:
    return {p.wanted.external_id: str(p.action) for p in planned}


# --- planning and applying ------------------------------------------------------------------------


def test_a_first_plan_creates_every_record_in_write_order_and_names_a_missing_province(odoo):
    planned = odoo.plan(wanted())
    # 3 products (overage, starter, pro), 3 partners, 4 subscriptions with 2 lines each.
    assert counts_by_action(planned) == {
        "create": 18,
        "update": 0,
        "unchanged": 0,
        "conflict": 0,
        "excluded": 0,
        "invalid": 0,
    }
    models = [p.wanted.model for p in planned]
    assert (
        models == ["product.product"] * 3 + ["res.partner"] * 3 + ["sale.order"] * 4 + ["sale.order.line"] * 8
    )
    cariboo = next(p for p in planned if p.wanted.external_id == "nexacloud.customer_3")
    assert cariboo.message == "Odoo has no record for state_id (base.state_ca_nb): left empty"
    assert "state_id" not in cariboo.columns


def test_apply_writes_the_records_of_design_9_and_their_external_ids(odoo):
    result = odoo.apply(odoo.plan(wanted()))
    assert result.complete
    assert result.written == {
        "product.product": {"create": 3, "update": 0},
        "res.partner": {"create": 3, "update": 0},
        "sale.order": {"create": 4, "update": 0},
        "sale.order.line": {"create": 8, "update": 0},
    }
    xids = odoo.external_ids()
    assert len(xids) == 18
    partners = {
        p["id"]: p for p in odoo.read("res.partner", ["name", "email", "ref", "is_company", "state_id"])
    }
    acme = partners[xids["nexacloud.customer_1"][1]]
    assert (acme["name"], acme["email"], acme["ref"], acme["is_company"]) == (
        "Acme Robotics",
        "billing@acme.example",
        "NC1",
        True,
    )
    assert acme["state_id"] == [1, "Ontario"]
    assert partners[xids["nexacloud.customer_3"][1]]["state_id"] is False
    orders = {
        o["id"]: o
        for o in odoo.read(
            "sale.order",
            [
                "partner_id",
                "plan_id",
                "is_subscription",
                "start_date",
                "end_date",
                "subscription_state",
                "currency_id",
            ],
        )
    }
    web = orders[xids["nexacloud.deployment_10"][1]]
    assert web["partner_id"][0] == acme["id"]
    assert (web["plan_id"], web["currency_id"], web["is_subscription"]) == ([1, "Monthly"], [1, "CAD"], True)
    assert (web["start_date"], web["end_date"], web["subscription_state"]) == (
        "2026-02-28",
        False,
        "3_progress",
    )
    batch = orders[xids["nexacloud.deployment_11"][1]]
    assert (batch["start_date"], batch["end_date"], batch["subscription_state"]) == (
        "2026-01-10",
        "2026-09-30",
        "6_churn",
    )
    lines = {
        line["id"]: line
        for line in odoo.read("sale.order.line", ["order_id", "product_id", "price_unit", "product_uom_qty"])
    }
    fee, overage = (
        lines[xids["nexacloud.deployment_10_plan_fee"][1]],
        lines[xids["nexacloud.deployment_10_cpu_overage"][1]],
    )
    assert (fee["order_id"][0], fee["product_id"][0], fee["price_unit"], fee["product_uom_qty"]) == (
        web["id"],
        xids["nexacloud.plan_starter"][1],
        14.99,
        1.0,
    )
    # $4.50 per CPU-hour in cents with four decimals is $0.045; Pro's 2.8125 cents is $0.028125.
    assert (overage["product_id"][0], overage["price_unit"], overage["product_uom_qty"]) == (
        xids["nexacloud.product_cpu_overage"][1],
        0.045,
        0.0,
    )
    assert lines[xids["nexacloud.deployment_11_cpu_overage"][1]]["price_unit"] == 0.028125


def test_a_second_plan_is_all_unchanged_and_its_apply_sends_nothing(odoo):
    assert odoo.apply(odoo.plan(wanted())).complete
    planned = odoo.plan(wanted())
    assert set(actions(planned).values()) == {"unchanged"}
    odoo.app.requests.clear()
    result = odoo.apply(planned)
    assert result.complete and result.log == []
    assert not [call for call in odoo.app.requests if call.endswith((".load", ".create", ".write"))]


def test_a_changed_plan_price_updates_the_product_and_every_subscription_line_that_carries_it(odoo):
    assert odoo.apply(odoo.plan(wanted())).complete
    planned = odoo.plan(wanted(starter_cents=1_599))
    updates = {
        p.wanted.external_id: [str(c) for c in p.changes] for p in planned if p.action is Action.UPDATE
    }
    # Deployments 10, 12 and 13 are on Starter; 11 is on Pro and its lines stay as they are.
    assert updates == {
        "nexacloud.plan_starter": ["list_price: 14.99 → 15.99"],
        "nexacloud.deployment_10_plan_fee": ["price_unit: 14.99 → 15.99"],
        "nexacloud.deployment_12_plan_fee": ["price_unit: 14.99 → 15.99"],
        "nexacloud.deployment_13_plan_fee": ["price_unit: 14.99 → 15.99"],
    }
    result = odoo.apply(planned)
    assert result.written == {
        "product.product": {"create": 0, "update": 1},
        "sale.order.line": {"create": 0, "update": 3},
    }
    assert set(actions(odoo.plan(wanted(starter_cents=1_599))).values()) == {"unchanged"}


def test_an_odoo_partner_with_the_same_ref_but_no_external_id_is_a_conflict_left_untouched(tmp_path):
    before = {
        **ODOO_BEFORE_IMPORT,
        "res.partner": [
            *ODOO_BEFORE_IMPORT["res.partner"],
            {
                "id": 40,
                "name": "Borealis (entered by hand)",
                "ref": "NC2",
                "email": "ap@borealis.example",
                "active": True,
            },
        ],
    }
    odoo = Odoo(tmp_path, before)
    planned = {p.wanted.external_id: p for p in odoo.plan(wanted())}
    borealis = planned["nexacloud.customer_2"]
    assert (borealis.action, borealis.odoo_id) == (Action.CONFLICT, 40)
    assert "res.partner 40 (Borealis (entered by hand)) has the same ref 'NC2'" in borealis.message
    # Its deployment and the deployment's lines wait for a person's decision.
    for xid in (
        "nexacloud.deployment_12",
        "nexacloud.deployment_12_plan_fee",
        "nexacloud.deployment_12_cpu_overage",
    ):
        assert planned[xid].action is Action.CONFLICT
        assert "waits for nexacloud." in planned[xid].message
    assert odoo.apply(list(planned.values())).complete
    (hand_made,) = odoo.read("res.partner", ["name", "ref", "email", "is_company"], [["id", "=", 40]])
    assert hand_made == {
        "id": 40,
        "name": "Borealis (entered by hand)",
        "ref": "NC2",
        "email": "ap@borealis.example",
        "is_company": False,
    }
    xids = odoo.external_ids()
    assert "nexacloud.customer_2" not in xids and "nexacloud.deployment_12" not in xids
    assert len(odoo.read("res.partner", ["id"], [["ref", "=", "NC2"]])) == 1
    odoo.app.close()


def test_the_same_email_in_another_case_is_a_conflict_too(tmp_path):
    before = {
        **ODOO_BEFORE_IMPORT,
        "res.partner": [{"id": 50, "name": "Cariboo", "email": "AP@Cariboo.Example", "active": True}],
    }
    odoo = Odoo(tmp_path, before)
    planned = {p.wanted.external_id: p for p in odoo.plan(wanted())}
    assert (planned["nexacloud.customer_3"].action, planned["nexacloud.customer_3"].odoo_id) == (
        Action.CONFLICT,
        50,
    )
    assert "same email 'ap@cariboo.example'" in planned["nexacloud.customer_3"].message
    odoo.app.close()


def test_an_external_id_on_an_archived_record_or_on_another_model_is_a_conflict(odoo):
    assert odoo.apply(odoo.plan(wanted())).complete
    xids = odoo.external_ids()
    partners = TABLES["res.partner"]
    odoo.execute(
        update(partners).where(partners.c.id == xids["nexacloud.customer_1"][1]).values(active=False)
    )
    links = TABLES["ir.model.data"]
    odoo.execute(update(links).where(links.c.name == "customer_3").values(model="res.currency", res_id=1))
    planned = {p.wanted.external_id: p for p in odoo.plan(wanted())}
    assert planned["nexacloud.customer_1"].action is Action.CONFLICT
    assert "which is archived" in planned["nexacloud.customer_1"].message
    assert planned["nexacloud.customer_3"].action is Action.CONFLICT
    assert (
        planned["nexacloud.customer_3"].message
        == "nexacloud.customer_3 names res.currency 1, not a res.partner"
    )
    assert planned["nexacloud.customer_2"].action is Action.UNCHANGED


def test_an_external_id_whose_record_was_deleted_gets_a_new_record(odoo):
    assert odoo.apply(odoo.plan(wanted())).complete
    xid = "nexacloud.deployment_10_cpu_overage"
    old_id = odoo.external_ids()[xid][1]
    lines = TABLES["sale.order.line"]
    # Someone deleted the overage line of the subscription in Odoo; its external id stayed.
    odoo.execute(delete(lines).where(lines.c.id == old_id))
    planned = {p.wanted.external_id: p for p in odoo.plan(wanted())}
    assert planned[xid].action is Action.CREATE
    assert f"named sale.order.line {old_id}, which no longer exists" in planned[xid].message
    assert odoo.apply(list(planned.values())).complete
    new_id = odoo.external_ids()[xid][1]
    assert new_id != old_id
    order_id = odoo.external_ids()["nexacloud.deployment_10"][1]
    assert len(odoo.read("sale.order.line", ["id"], [["order_id", "=", order_id]])) == 2


def test_excluded_and_invalid_customers_and_their_deployments_are_not_written(odoo):
    customers = customers_frame()
    customers["set_aside"] = [None, None, "email: not an e-mail address"]
    records = wanted_records(
        customers,
        plans_frame(),
        deployments_frame(),
        timezone=TIMEZONE,
        exclusions={1: "closing its account (decided by Dana)"},
    )
    planned = {p.wanted.external_id: p for p in odoo.plan(records)}
    assert planned["nexacloud.customer_1"].action is Action.EXCLUDED
    assert planned["nexacloud.customer_1"].message == (
        "customer 1 is left out of the import: closing its account (decided by Dana)"
    )
    assert planned["nexacloud.deployment_11_cpu_overage"].action is Action.EXCLUDED
    assert planned["nexacloud.customer_3"].action is Action.INVALID
    assert "email: not an e-mail address" in planned["nexacloud.customer_3"].message
    assert planned["nexacloud.deployment_13"].action is Action.INVALID
    assert odoo.apply(list(planned.values())).complete
    assert sorted(xid for xid in odoo.external_ids() if "customer" in xid) == ["nexacloud.customer_2"]


# --- faults ----------------------------------------------------------------------------------------


class FailingLoads:
    """The double behind a gateway that fails the nth ``load``: no answer at all, or (``after_commit``)
    Odoo commits and the answer is lost on the way back."""

    def __init__(self, app: OdooStandIn, nth: int, *, after_commit: bool = False):
        self.app, self.nth, self.after_commit, self.loads = app, nth, after_commit, 0

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").endswith("/load"):
            self.loads += 1
            if self.loads == self.nth:
                if self.after_commit:
                    self.app(environ, lambda *args: None)
                start_response("504 Gateway Timeout", [("Content-Type", "text/plain")])
                return [b"upstream timed out"]
        return self.app(environ, start_response)


@pytest.mark.parametrize("after_commit", [False, True], ids=["no-answer", "answer-lost-after-commit"])
def test_an_apply_cut_off_half_way_then_run_again_ends_with_one_record_per_nexacloud_record(
    odoo, after_commit
):
    planned = odoo.plan(wanted())
    # Batches of 2: products 2+1, partners 2+1, subscriptions 2+2, lines 2+2+2+2; the 4th load is
    # the second partner batch, customer 3 alone.
    interrupted = odoo.apply(planned, app=FailingLoads(odoo.app, 4, after_commit=after_commit), batch_size=2)
    assert not interrupted.complete
    assert "batch 4 of res.partner did not go through" in interrupted.stopped
    outcomes = interrupted.outcomes()
    assert (outcomes["nexacloud.customer_1"], outcomes["nexacloud.customer_3"]) == (
        Outcome.LOADED,
        Outcome.FAILED,
    )
    assert outcomes["nexacloud.deployment_13_cpu_overage"] is Outcome.SKIPPED
    assert not [xid for xid in odoo.external_ids() if "deployment" in xid]

    replanned = actions(odoo.plan(wanted()))
    # Lost after Odoo committed, the batch is there: planning sees it, nothing is created twice.
    assert replanned["nexacloud.customer_3"] == ("unchanged" if after_commit else "create")
    assert (replanned["nexacloud.customer_1"], replanned["nexacloud.plan_pro"]) == ("unchanged", "unchanged")
    assert replanned["nexacloud.deployment_13"] == "create"
    assert odoo.apply(odoo.plan(wanted()), batch_size=2).complete

    partners = odoo.read("res.partner", ["ref"], [["ref", "like", "NC"]])
    assert sorted(p["ref"] for p in partners) == ["NC1", "NC2", "NC3"]
    orders = odoo.read("sale.order", ["id"], [["is_subscription", "=", True]])
    assert len(orders) == 4
    assert len(odoo.read("sale.order.line", ["id"])) == 8
    assert len(odoo.external_ids()) == 18
    assert set(actions(odoo.plan(wanted())).values()) == {"unchanged"}


def test_a_row_odoo_refuses_costs_only_itself_and_what_points_at_it(odoo):
    records = wanted()
    bad = next(r for r in records if r.external_id == "nexacloud.deployment_12")
    records[records.index(bad)] = dataclasses.replace(bad, values={**bad.values, "start_date": "soon"})
    result = odoo.apply(odoo.plan(records))
    outcomes = result.outcomes()
    assert outcomes["nexacloud.deployment_12"] is Outcome.REFUSED
    refusal = next(
        e for e in result.log if e.external_id == "nexacloud.deployment_12" and e.outcome is Outcome.REFUSED
    )
    assert "start_date" in refusal.message
    # The other subscriptions of its batch were sent again without it, and loaded.
    assert {outcomes[f"nexacloud.deployment_{d}"] for d in (10, 11, 13)} == {Outcome.LOADED}
    assert outcomes["nexacloud.deployment_12_plan_fee"] is Outcome.SKIPPED
    assert not result.complete
    assert "nexacloud.deployment_12" not in odoo.external_ids()


# --- what planning costs, and the plan as the warehouse holds it ---------------------------------


def test_planning_reads_a_page_per_page_size_records_per_model_never_one_per_record(odoo):
    assert odoo.apply(odoo.plan(wanted())).complete
    with odoo.client(page_size=2) as client:
        side = read_odoo_side(client, wanted())
        calls = dict(client.stats.calls_by_method)
    # The 18 wanted external ids by name lists of 2 (a name is unique in its module, so a full
    # page ends its list), the 4 of Odoo's own records the import points at (currency, two
    # provinces, the plan) in pages of 2 and the empty page that tells the last was full, then each
    # model's records by id lists of 2: 3 products, 3 partners, 4 subscriptions, 8 lines. Every
    # record has its external id, so no look-alike is searched.
    assert calls == {
        "ir.model.data.search_read": math.ceil(18 / 2) + (math.ceil(4 / 2) + 1),
        "product.product.search_read": math.ceil(3 / 2),
        "res.partner.search_read": math.ceil(3 / 2),
        "sale.order.search_read": math.ceil(4 / 2),
        "sale.order.line.search_read": math.ceil(8 / 2),
    }
    assert len(side.records["sale.order.line"]) == 8


def test_the_plan_frame_has_the_columns_of_table_odoo_import_plan(odoo):
    planned = odoo.plan(wanted(exclusions={3: "test (decided by QA)"}))
    frame = plan_frame(planned, datetime(2026, 10, 1).date(), datetime(2026, 11, 2, tzinfo=UTC))
    assert list(frame.columns) == [
        "billing_period",
        "nexacloud_kind",
        "nexacloud_id",
        "odoo_model",
        "external_id",
        "action",
        "changes",
        "odoo_id",
        "message",
        "planned_at",
    ]
    row = frame.loc[frame["external_id"] == "nexacloud.deployment_13_plan_fee"].iloc[0]
    assert (row["nexacloud_kind"], row["nexacloud_id"], row["odoo_model"], row["action"]) == (
        "deployment",
        "13",
        "sale.order.line",
        "excluded",
    )


def test_load_rows_are_strings_as_a_csv_import_takes_them(odoo):
    planned = [p for p in odoo.plan(wanted()) if p.wanted.model == "sale.order"]
    fields, rows = load_rows(planned[:1])
    assert fields == [
        "id",
        "currency_id/id",
        "is_subscription",
        "partner_id/id",
        "plan_id/id",
        "start_date",
        "subscription_state",
    ]
    assert rows == [
        [
            "nexacloud.deployment_10",
            "base.CAD",
            "1",
            "nexacloud.customer_1",
            "sale_subscription.subscription_plan_month",
            "2026-02-28",
            "3_progress",
        ]
    ]
    assert json.dumps(rows)  # plain JSON strings


# --- the exclusions file ----------------------------------------------------------------------------


def test_the_exclusions_file_gives_each_customer_its_reason_and_who_decided(tmp_path):
    path = tmp_path / "exclusions.csv"
    path.write_text("# left out on purpose\ncustomer_id,reason,decided_by\n12,merged into 7,Dana Whitfield\n")
    assert read_exclusions(path) == {12: "merged into 7 (decided by Dana Whitfield)"}
    assert read_exclusions(None) == {}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("customer,reason\n1,x\n", r"exclusions.csv:1: the header must be customer_id,reason,decided_by"),
        (
            "customer_id,reason,decided_by\nabc,x,y\n",
            r"exclusions.csv:2: customer_id 'abc' is not a customer id",
        ),
        ("customer_id,reason,decided_by\n4,,Dana\n", r"exclusions.csv:2: reason is empty \(customer 4\)"),
        ("customer_id,reason,decided_by\n4,a,b\n4,c,d\n", r"exclusions.csv:3: customer 4 is listed twice"),
    ],
)
def test_a_malformed_exclusions_file_names_the_line_and_the_field(tmp_path, text, error):
    path = tmp_path / "exclusions.csv"
    path.write_text(text)
    with pytest.raises(ExclusionsError, match=error):
        read_exclusions(path)
