"""The one Definitions object of the ``fusion_billing_assets`` code location."""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from fusion_billing_assets.defs import nexacloud, odoo, reconciliation
from fusion_billing_assets.defs.resources import build_resources
from fusion_billing_assets.settings import load_settings

settings = load_settings()

billing_period_job_name = "reconcile_billing_period"
flip_readiness_job_name = "assess_flip_readiness"

flip_readiness_selection = AssetSelection.assets(reconciliation.flip_readiness)

reconcile_billing_period = define_asset_job(
    billing_period_job_name,
    selection=AssetSelection.all() - flip_readiness_selection,
    description="Everything one billing period needs: both systems' sources, then their reconciliation.",
)

assess_flip_readiness = define_asset_job(
    flip_readiness_job_name,
    selection=flip_readiness_selection,
    description="Judge, over the closed periods' results, whether billing can switch to Odoo.",
)

defs = Definitions(
    assets=[*nexacloud.assets, *odoo.assets, *reconciliation.assets],
    jobs=[reconcile_billing_period, assess_flip_readiness],
    resources=build_resources(settings),
    # A period's steps are small and share their sources; starting one interpreter per step would
    # cost more than the work (DESIGN §8). Periods still run in parallel as separate runs.
    executor=in_process_executor,
)
