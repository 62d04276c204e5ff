"""The one Definitions object of the ``fusion_billing_assets`` code location."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from fusion_billing_assets.defs.resources import build_resources
from fusion_billing_assets.settings import load_settings

settings = load_settings()

defs = Definitions(
    resources=build_resources(settings),
    # A period's steps are small and share their sources; starting one interpreter per step would
    # cost more than the work (DESIGN §8). Periods still run in parallel as separate runs.
    executor=in_process_executor,
)
