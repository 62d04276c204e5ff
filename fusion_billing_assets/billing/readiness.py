"""Flip readiness: may Nexa switch billing over to Odoo? (docs/design.md §6)

Ready when the last N consecutive closed billing periods were each reconciled after they closed
and hold no unexplained difference (a status other than match, within_tolerance,
rounding_difference or waived). Otherwise not ready, with every reason spelled out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import pandas as pd

from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.statuses import unexplained

READY, NOT_READY = "ready", "not_ready"


@dataclass(frozen=True)
class Readiness:
    verdict: str
    periods_judged: tuple[date, ...]
    reasons: tuple[str, ...]
    unexplained_by_period: dict[str, int]

    @property
    def ready(self) -> bool:
        return self.verdict == READY


def flip_readiness(results: pd.DataFrame, closed_periods: Sequence[date], required_periods: int) -> Readiness:
    """Judge the last ``required_periods`` closed periods from the warehouse's results.

    ``results`` holds ``billing_reconciliation`` rows (any periods); ``closed_periods`` every
    period whose window has passed, in any order.
    """
    if required_periods < 1:
        raise ValueError(f"flip readiness needs at least one period, got {required_periods}")
    judged = tuple(sorted(closed_periods)[-required_periods:])
    reasons: list[str] = []
    unexplained_by_period: dict[str, int] = {}
    if len(judged) < required_periods:
        reasons.append(
            f"only {len(judged)} closed period(s) exist; {required_periods} consecutive clean ones are required"
        )
    for period in judged:
        rows = results[(results["billing_period"] == period) & ~results["provisional"].astype(bool)]
        if rows.empty:
            provisional_only = not results[results["billing_period"] == period].empty
            reasons.append(
                f"{period:%Y-%m} has not been reconciled since it closed"
                + (" (only a provisional run exists)" if provisional_only else "")
            )
            continue
        held_back = unexplained(rows)
        unexplained_by_period[period.isoformat()] = len(held_back)
        if len(held_back):
            counts = held_back["status"].value_counts()
            listing = ", ".join(f"{count} {status}" for status, count in counts.sort_index().items())
            variance = int(held_back["delta_cents"].abs().sum())
            reasons.append(
                f"{period:%Y-%m} has {len(held_back)} unexplained difference(s) ({listing}), "
                f"{format_cents(variance)} of variance"
            )
    return Readiness(
        verdict=NOT_READY if reasons else READY,
        periods_judged=judged,
        reasons=tuple(reasons),
        unexplained_by_period=unexplained_by_period,
    )
