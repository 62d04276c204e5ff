"""The importer in the code location, on a copy of the generated sandbox (docs/design.md §9).

The sandbox's Odoo accounts were made by this importer, so planning a period again finds nothing
to do but the one price someone left at its old value in Odoo (the ground truth's rate case) and,
in the periods its deployment lived in, the subscription the ground truth's lifecycle case
``billed_after_termination`` set back in progress after NexaCloud terminated the deployment (the
importer wants it churned); the plan lands in ``odoo_import_plan``; ``apply_odoo_import`` is a dry run unless told otherwise,
logs to ``odoo_import_log`` and converges; a partner whose external id was lost is a conflict
left untouched; and nothing a schedule, a sensor or the default asset selection runs can write
to Odoo. Odoo's own client library reads what the importer wrote, over JSON-2 and /jsonrpc.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import odoolib
import pytest
from dagster import AssetKey, materialize
from sqlalchemy import delete

from fusion_billing_assets.definitions import apply_import_job_name, defs
from fusion_billing_assets.defs.importer import APPLY_JOB, odoo_import_plan
from fusion_billing_assets.defs.usage_repair import REPAIR_JOB
from fusion_billing_assets.importer.exclusions import read_exclusions
from fusion_billing_assets.sandbox import resources as sandbox_resources
from fusion_billing_assets.sandbox.odoo_models import (
    SANDBOX_DATABASE,
    SANDBOX_IMPORTER_API_KEY,
    SANDBOX_IMPORTER_LOGIN,
)
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn, serving
from fusion_billing_assets.sandbox.odoo_store import TABLES, open_store
from fusion_billing_assets.warehouse import read_import_log, read_import_plan
from tests.test_reconciliation_end_to_end import CodeLocation, copy_sandbox

PLAN = AssetKey(["importer", "odoo_import_plan"])


@pytest.fixture
def location(small_sandbox, tmp_path) -> CodeLocation:
    return CodeLocation.on(tmp_path, copy_sandbox(small_sandbox, tmp_path))


def rate_case(manifest) -> tuple[str, int, str, str]:
    """The period, deployment and both prices of the ground truth's old plan price, from its words."""
    case = next(d for d in manifest["differences"] if d["role"] == "old_plan_price")
    deployment, old, new = re.search(
        r"deployment (\d+) still carries the old \w+ price \$([\d.]+) instead of \$([\d.]+)",
        case["description"],
    ).groups()
    return case["period"], int(deployment), old, new


def reopened_subscription(manifest, plan) -> list[list[str]]:
    """[external id, changes] of the subscription the lifecycle case ``billed_after_termination``
    set back in progress, when its deployment lived in the plan's period: the importer wants it
    churned again, ending on the last local day the deployment ran. Empty otherwise."""
    (case,) = [c for c in manifest["lifecycle"]["cases"] if c["case"] == "billed_after_termination"]
    external_id = f"nexacloud.deployment_{case['deployment_id']}"
    if external_id not in set(plan["external_id"]):
        return []
    terminated_at = datetime.fromisoformat(case["since"]).replace(tzinfo=UTC)
    last_day = (terminated_at - timedelta(microseconds=1)).astimezone(ZoneInfo(manifest["timezone"])).date()
    return [
        [
            external_id,
            f"end_date: empty → {last_day.isoformat()}; subscription_state: '3_progress' → '6_churn'",
        ]
    ]


def excluded_customers(location: CodeLocation) -> set[int]:
    return set(read_exclusions(location.sandbox.out / "import_exclusions.csv"))


def plan_of(location: CodeLocation, period: str):
    with location.warehouse.begin() as connection:
        return read_import_plan(connection, date.fromisoformat(period))


def apply(location: CodeLocation, period: str, **config):
    return defs.resolve_job_def(apply_import_job_name).execute_in_process(
        run_config={"ops": {"apply_period_import": {"config": {"period": period, **config}}}},
        instance=location.instance,
        resources=location.resources(),
        raise_on_error=False,
    )


def test_planning_a_sandbox_period_finds_only_the_price_left_old_in_odoo(location):
    period, deployment, old, new = rate_case(location.sandbox.manifest)
    result = materialize(
        [odoo_import_plan], partition_key=period, resources=location.resources(), instance=location.instance
    )
    plan = plan_of(location, period)
    updates = plan.loc[plan["action"] == "update"]
    reopened = reopened_subscription(location.sandbox.manifest, plan)
    assert updates[["external_id", "changes"]].values.tolist() == [
        *reopened,
        [f"nexacloud.deployment_{deployment}_plan_fee", f"price_unit: {old} → {new}"],
    ]
    assert set(plan["action"]) == {"update", "unchanged", "excluded"}
    excluded = plan.loc[(plan["action"] == "excluded") & (plan["nexacloud_kind"] == "customer")]
    assert set(excluded["nexacloud_id"].astype(int)) == excluded_customers(location)
    assert (plan["billing_period"] == date.fromisoformat(period)).all()
    (event,) = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["counts_by_action"]["update"] == 1 + len(reopened)
    assert metadata["to_write"] == 1 + len(reopened)
    assert f"nexacloud.deployment_{deployment}_plan_fee" in metadata["sample"]


def test_the_apply_job_is_a_dry_run_by_default_then_writes_and_converges(location):
    period, deployment, old, new = rate_case(location.sandbox.manifest)
    dry = apply(location, period)
    assert dry.success
    reopened = reopened_subscription(location.sandbox.manifest, plan_of(location, period))
    assert dry.output_for_node("apply_period_import")["sent"]["dry_run"] == 1 + len(reopened)
    with location.warehouse.begin() as connection:
        log = read_import_log(connection, dry.run_id)
    assert log["dry_run"].all() and set(log["outcome"]) == {"dry_run"}
    # Nothing was written: the line still holds the old price.
    assert plan_of(location, period).query("action == 'update'")["changes"].tolist() == [
        *(changes for _, changes in reopened),
        f"price_unit: {old} → {new}",
    ]

    applied = apply(location, period, dry_run=False)
    assert applied.success
    assert applied.output_for_node("apply_period_import")["written"] == {
        "sale.order.line": {"create": 0, "update": 1},
        **({"sale.order": {"create": 0, "update": 1}} if reopened else {}),
    }
    with location.warehouse.begin() as connection:
        log = read_import_log(connection, applied.run_id)
    written = log.loc[log["external_id"].notna()]
    assert sorted(zip(written["external_id"], written["outcome"], written["dry_run"], strict=True)) == sorted(
        [
            (f"nexacloud.deployment_{deployment}_plan_fee", "loaded", False),
            *((external_id, "loaded", False) for external_id, _ in reopened),
        ]
    )
    again = apply(location, period, dry_run=False)
    summary = again.output_for_node("apply_period_import")
    assert summary["plan"]["update"] == summary["plan"]["create"] == 0
    assert summary["written"] == {}


def test_a_partner_whose_external_id_was_lost_is_a_conflict_and_stays_untouched(location):
    period = location.sandbox.closed_periods[-1]
    engine = open_store(location.sandbox.odoo_url)
    links, partners = TABLES["ir.model.data"], TABLES["res.partner"]
    with engine.begin() as connection:
        row = connection.execute(
            links.select().where(links.c.module == "nexacloud", links.c.model == "res.partner").limit(1)
        ).one()
        connection.execute(delete(links).where(links.c.id == row.id))
        before = connection.execute(partners.select().where(partners.c.id == row.res_id)).one()
    customer = row.name.removeprefix("customer_")
    result = apply(location, period, dry_run=False)
    assert result.success
    plan = plan_of(location, period).set_index("external_id")
    conflict = plan.loc[f"nexacloud.customer_{customer}"]
    assert (conflict["action"], conflict["odoo_id"]) == ("conflict", row.res_id)
    assert f"same ref 'NC{customer}'" in conflict["message"]
    waiting = plan.loc[plan["message"].fillna("").str.contains(f"waits for nexacloud.customer_{customer}")]
    assert len(waiting) and set(waiting["action"]) == {"conflict"}
    with engine.begin() as connection:
        after = connection.execute(partners.select().where(partners.c.id == row.res_id)).one()
        relinked = connection.execute(
            links.select().where(links.c.module == "nexacloud", links.c.name == row.name)
        ).all()
    engine.dispose()
    assert after == before
    assert relinked == []


def test_nothing_a_schedule_a_sensor_or_the_default_selection_runs_can_write_to_odoo(location):
    # Only the import and the usage repair write, and only a person launches them.
    # The two resources that write to Odoo: the importer's user and the usage endpoint's key.
    writing = {"odoo_importer", "odoo_usage"}
    writers = {
        job.name: sorted(
            node.name
            for node in job.nodes_in_topological_order
            if writing & set(node.definition.required_resource_keys)
        )
        for job in defs.resolve_all_job_defs()
    }
    assert {name: nodes for name, nodes in writers.items() if nodes} == {
        APPLY_JOB: ["apply_period_import"],
        REPAIR_JOB: ["repair_period_usage"],
    }
    repository = defs.get_repository_def()
    targeted = {schedule.job_name for schedule in repository.schedule_defs}
    for sensor in repository.sensor_defs:
        targeted |= {target.job_name for target in sensor.targets}
    assert targeted  # the schedules and the late-usage sensor launch the reconciliation
    assert not targeted & {APPLY_JOB, REPAIR_JOB}
    for name in (APPLY_JOB, REPAIR_JOB):
        assert defs.resolve_job_def(name).tags["dagster/max_retries"] == "0"
    # Run what the schedules run, and the plan, with the reconciliation's Odoo user swapped for a
    # double that would accept writes: none is attempted.
    resources = location.resources()
    resources["odoo"] = resources["odoo_importer"]
    period = location.sandbox.closed_periods[-1]
    sandbox_resources._standin.cache_clear()
    defs.resolve_job_def("reconcile_billing_period").execute_in_process(
        partition_key=period, instance=location.instance, resources=resources
    )
    materialize([odoo_import_plan], partition_key=period, resources=resources, instance=location.instance)
    served = sandbox_resources._standin(location.sandbox.odoo_url, True).requests
    assert served, "the runs read Odoo"
    assert not [
        call
        for call in served
        if call == "usage.push" or call.rsplit(".", 1)[1] in ("load", "create", "write", "unlink")
    ]


@pytest.mark.parametrize("protocol", ["json2", "jsonrpc"])
def test_odoos_own_client_library_reads_what_the_importer_wrote(small_sandbox, protocol):
    excluded = set(read_exclusions(small_sandbox.out / "import_exclusions.csv"))
    app = OdooStandIn.from_store(small_sandbox.odoo_url)
    with serving(app) as url:
        host, port = url.removeprefix("http://").split(":")
        connection = odoolib.get_connection(
            hostname=host,
            port=int(port),
            protocol=protocol,
            database=SANDBOX_DATABASE,
            login=SANDBOX_IMPORTER_LOGIN,
            password=SANDBOX_IMPORTER_API_KEY,
        )
        links = connection.get_model("ir.model.data").search_read(
            [["module", "=", "nexacloud"], ["model", "=", "res.partner"]], ["name", "res_id"]
        )
        partners = connection.get_model("res.partner").search_read(
            [["id", "in", [link["res_id"] for link in links]]], ["ref", "is_company"]
        )
    app.close()
    with closing(sqlite3.connect(small_sandbox.out / "nexacloud.sqlite")) as nexacloud:
        customers = {row[0] for row in nexacloud.execute("SELECT id FROM customers")} - excluded
    assert {int(link["name"].removeprefix("customer_")) for link in links} == customers
    assert sorted(p["ref"] for p in partners) == sorted(f"NC{c}" for c in customers)
    assert all(p["is_company"] for p in partners)
