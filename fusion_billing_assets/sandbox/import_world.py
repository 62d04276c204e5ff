"""The sandbox's Odoo accounts, created the way a real dual-run creates them: by the importer.

Once NexaCloud's customers, plans and deployments are in its database, ``import_world`` runs the
production importer (``fusion_billing_assets.importer``) over every period of the world, reading
NexaCloud through the source queries and writing to the Odoo test double through ``load`` as the
importer's own Odoo user, leaving out the customers the ground truth says stay unmapped. What it
created is then read back by external id, for the ledger and the invoices to refer to. Someone
editing a price in Odoo afterwards is a write through the same API (``edit_plan_prices``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import httpx

from fusion_billing_assets.importer.apply import apply_plan
from fusion_billing_assets.importer.exclusions import COLUMNS as EXCLUSION_COLUMNS
from fusion_billing_assets.importer.nexacloud_side import wanted_for_periods
from fusion_billing_assets.importer.odoo_side import read_odoo_side
from fusion_billing_assets.importer.plan import counts_by_action, plan_import
from fusion_billing_assets.sandbox.nexacloud_billing import Progress
from fusion_billing_assets.sandbox.odoo_models import (
    SANDBOX_DATABASE,
    SANDBOX_IMPORTER_API_KEY,
)
from fusion_billing_assets.sandbox.odoo_standin import OdooStandIn
from fusion_billing_assets.sandbox.world import World
from fusion_billing_assets.sources.nexacloud import read_only_engine
from fusion_billing_assets.sources.odoo import OdooClient

SANDBOX_URL = "http://odoo.sandbox.invalid"
EXCLUDED_BY = "the sandbox's ground truth"


class ImportFailed(RuntimeError):
    """The importer could not write the sandbox's accounts; the message says which record and why."""


@dataclass(frozen=True)
class Imported:
    external_ids: dict[str, int]  # "nexacloud.customer_12" → partner id, …
    subscription_names: dict[int, str]  # subscription id → its Odoo name (S00001 …)
    counts: dict[str, int]  # the plan's counts per action


def exclusions_of(world: World) -> dict[int, str]:
    """The customers the ground truth says were never imported (each is ``unmapped``)."""
    return {
        customer.id: f"never imported: its Odoo partner was made by hand (decided by {EXCLUDED_BY})"
        for customer in world.customers
        if not world.imported(customer.id)
    }


def exclusions_csv(world: World) -> str:
    """The exclusions file a person would keep for this world (``BILLING_IMPORT_EXCLUSIONS_FILE``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXCLUSION_COLUMNS)
    for customer in world.customers:
        if not world.imported(customer.id):
            writer.writerow([customer.id, "never imported: its Odoo partner was made by hand", EXCLUDED_BY])
    return out.getvalue()


@contextmanager
def importer_client(odoo_url: str) -> Iterator[OdooClient]:
    """A client of the importer's Odoo user on the test double serving the store, in this process."""
    app = OdooStandIn.from_store(odoo_url, writable=True)
    try:
        with httpx.Client(base_url=SANDBOX_URL, transport=httpx.WSGITransport(app=app)) as http:
            yield OdooClient(http, database=SANDBOX_DATABASE, api_key=SANDBOX_IMPORTER_API_KEY)
    finally:
        app.close()


def import_world(world: World, nexacloud_url: str, odoo_url: str, report: Progress) -> Imported:
    """Plan and apply the import of every period's NexaCloud records; read back what it made."""
    engine = read_only_engine(nexacloud_url)
    try:
        with engine.connect() as connection:
            wanted = wanted_for_periods(connection, world.windows, exclusions=exclusions_of(world))
    finally:
        engine.dispose()
    with importer_client(odoo_url) as client:
        planned = plan_import(wanted, read_odoo_side(client, wanted))
        counts = counts_by_action(planned)
        report("odoo import plan: " + ", ".join(f"{n:,} {action}" for action, n in counts.items() if n))
        result = apply_plan(client, planned, dry_run=False)
        if not result.complete:
            first = next((e for e in result.log if e.external_id and e.outcome.value != "loaded"), None)
            raise ImportFailed(
                result.stopped
                or (f"{first.external_id}: {first.message}" if first else "the import did not finish")
            )
        report(
            "odoo import applied: "
            + ", ".join(
                f"{model} {written['create']:,} created" for model, written in sorted(result.written.items())
            )
            + f" in {client.stats.requests:,} requests"
        )
        external_ids = {
            f"{row['module']}.{row['name']}": int(row["res_id"])
            for page in client.search_read_pages(
                "ir.model.data", [["module", "=", "nexacloud"]], ["module", "name", "res_id"]
            )
            for row in page
        }
        subscription_names = {
            int(order["id"]): order["name"]
            for page in client.search_read_pages("sale.order", [["is_subscription", "=", True]], ["name"])
            for order in page
        }
    return Imported(external_ids, subscription_names, counts)


def edit_plan_prices(odoo_url: str, prices: Mapping[int, Decimal], product_of: Mapping[str, int]) -> int:
    """Set the plan fee line of these subscriptions to a price, as a person editing Odoo would."""
    if not prices:
        return 0
    plan_products = sorted(set(product_of.values()))
    edited = 0
    with importer_client(odoo_url) as client:
        for page in client.search_read_in(
            "sale.order.line",
            "order_id",
            list(prices),
            ["order_id", "product_id"],
            domain=[["product_id", "in", plan_products]],
        ):
            for line in page:
                client.call(
                    "sale.order.line",
                    "write",
                    ids=[line["id"]],
                    vals={"price_unit": float(prices[line["order_id"][0]])},
                )
                edited += 1
    return edited
