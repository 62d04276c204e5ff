"""The jobs people launch: one billing period end to end, and the flip-readiness verdict."""

from dagster import AssetSelection, define_asset_job

from fusion_billing_assets.defs.reconciliation import flip_readiness

BILLING_PERIOD_JOB = "reconcile_billing_period"
FLIP_READINESS_JOB = "assess_flip_readiness"
# Why a schedule or sensor launched a run, in words, on the run itself.
REASON_TAG = "fusion/reason"

flip_readiness_selection = AssetSelection.assets(flip_readiness)

# The import plan is the importer's, materialized when a person previews an import.
importer_selection = AssetSelection.groups("importer")
# The control loop judges the current state, not a period: its own schedule and job.
lifecycle_selection = AssetSelection.groups("lifecycle")

reconcile_billing_period = define_asset_job(
    BILLING_PERIOD_JOB,
    selection=AssetSelection.all() - flip_readiness_selection - importer_selection - lifecycle_selection,
    description="Everything one billing period needs: both systems' sources, then their reconciliation.",
)

assess_flip_readiness = define_asset_job(
    FLIP_READINESS_JOB,
    selection=flip_readiness_selection,
    description="Judge, over the closed periods' results, whether billing can switch to Odoo.",
)
