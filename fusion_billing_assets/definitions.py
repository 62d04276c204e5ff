"""The one Definitions object of the ``fusion_billing_assets`` code location."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from fusion_billing_assets.defs import nexacloud, odoo
from fusion_billing_assets.defs.resources import build_resources
from fusion_billing_assets.settings import load_settings

settings = load_settings()

billing_period_job_name = "reconcile_billing_period"

reconcile_billing_period = define_asset_job(
    billing_period_job_name,
    selection=AssetSelection.all(),
    description="Everything one billing period needs: the sources of both systems, then their reconciliation.",
)

defs = Definitions(
    assets=[*nexacloud.assets, *odoo.assets],
    jobs=[reconcile_billing_period],
    resources=build_resources(settings),
    # A period's steps are small and share their sources; starting one interpreter per step would
    # cost more than the work (DESIGN §8). Periods still run in parallel as separate runs.
    executor=in_process_executor,
)
