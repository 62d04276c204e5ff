"""The one Definitions object of the ``fusion_billing_assets`` code location."""

from dagster import Definitions, in_process_executor

from fusion_billing_assets.defs import (
    delivery,
    importer,
    lifecycle,
    nexacloud,
    odoo,
    reconciliation,
    usage_repair,
)
from fusion_billing_assets.defs.io_managers import io_manager_for
from fusion_billing_assets.defs.jobs import (
    BILLING_PERIOD_JOB,
    FLIP_READINESS_JOB,
    assess_flip_readiness,
    reconcile_billing_period,
)
from fusion_billing_assets.defs.resources import production_resources
from fusion_billing_assets.defs.schedules import period_close_schedule, provisional_daily_schedule
from fusion_billing_assets.defs.sensors import sensors
from fusion_billing_assets.defs.signoff import sign_off_billing_period
from fusion_billing_assets.settings import Settings, load_settings


def build_resources(settings: Settings) -> dict:
    """The configured systems' resources, or the embedded sandbox's when none is configured.

    The only place that chooses: production code never imports the sandbox or its Odoo test double.
    """
    if settings.uses_sandbox:
        from fusion_billing_assets.sandbox.resources import sandbox_resources

        resources = sandbox_resources(settings)
    else:
        resources = production_resources(settings)
    # Both sets hand frames between steps through the same store: local disk, or BILLING_IO_STORE_URL.
    return {**resources, "io_manager": io_manager_for(settings)}


settings = load_settings()

# Names the command line and the tests refer to.
billing_period_job_name = BILLING_PERIOD_JOB
flip_readiness_job_name = FLIP_READINESS_JOB
apply_import_job_name = importer.APPLY_JOB
repair_usage_job_name = usage_repair.REPAIR_JOB
observe_lifecycle_job_name = lifecycle.OBSERVE_JOB

defs = Definitions(
    assets=[
        *nexacloud.assets,
        *odoo.assets,
        *reconciliation.assets,
        *delivery.assets,
        *lifecycle.assets,
        importer.odoo_import_plan,
    ],
    jobs=[
        reconcile_billing_period,
        assess_flip_readiness,
        sign_off_billing_period,
        importer.apply_odoo_import,
        usage_repair.repair_usage_delivery,
        usage_repair.check_usage_delivery,
        lifecycle.observe_lifecycle,
    ],
    schedules=[
        period_close_schedule(settings.alerts.close_day),
        provisional_daily_schedule,
        lifecycle.lifecycle_drift_hourly,
    ],
    sensors=[*sensors, usage_repair.usage_repair_followups, lifecycle.lifecycle_drift_alerts],
    resources=build_resources(settings),
    # A period's steps are small and share their sources; starting one interpreter per step would
    # cost more than the work (docs/design.md §8). Periods still run in parallel as separate runs.
    executor=in_process_executor,
)
