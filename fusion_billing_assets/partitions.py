"""The billing-period partitions, shared by identity by every partitioned asset.

Monthly, in the billing time zone, from ``BILLING_START_PERIOD``; ``end_offset=1`` adds the
current, unfinished month, whose results are provisional.
"""

from __future__ import annotations

from dagster import MonthlyPartitionsDefinition

from fusion_billing_assets.billing.periods import PeriodWindow, period_window
from fusion_billing_assets.settings import load_settings

_settings = load_settings()

BILLING_TIMEZONE = _settings.timezone

billing_periods = MonthlyPartitionsDefinition(
    start_date=_settings.start_period.isoformat(),
    timezone=BILLING_TIMEZONE,
    end_offset=1,
)


def window_of(partition_key: str) -> PeriodWindow:
    return period_window(partition_key, BILLING_TIMEZONE)
