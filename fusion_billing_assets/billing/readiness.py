"""Flip readiness: may Nexa switch billing over to Odoo? (docs/design.md §6, §12)

Ready when the last N consecutive closed billing periods were each reconciled after they closed
and hold no unexplained difference (a status other than match, within_tolerance,
rounding_difference or waived). When sign-off is required, each of them must also be signed off,
with nothing moved since. When the control loop is judged too (docs/design.md §11), it must have
been observed within the last day and hold no lifecycle drift older than the suspension grace
period. Otherwise not ready, with every reason spelled out, each such drift named. The verdict
names the run each period's judgement rests on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pandas as pd

from fusion_billing_assets.billing.money import format_cents
from fusion_billing_assets.billing.statuses import unexplained

READY, NOT_READY = "ready", "not_ready"
# The control loop must have been observed this recently for its verdict to count.
LIFECYCLE_OBSERVATION_MAX_AGE = timedelta(days=1)


@dataclass(frozen=True)
class Readiness:
    verdict: str
    periods_judged: tuple[date, ...]
    reasons: tuple[str, ...]
    unexplained_by_period: dict[str, int]
    # Period key -> the reconciliation run its judgement rests on.
    runs_judged: dict[str, str] = field(default_factory=dict)
    # The drifts older than the grace period that hold the flip back (deployment ids).
    lifecycle_drifts_held_back: tuple[int, ...] = ()

    @property
    def ready(self) -> bool:
        return self.verdict == READY


@dataclass(frozen=True)
class PeriodSignoff:
    """A period's active sign-off, and how many result rows moved since the run it accepted."""

    run_id: str
    signed_by: str
    rows_moved: int = 0


@dataclass(frozen=True)
class LifecycleStanding:
    """The control loop's last observation as flip readiness judges it."""

    observed_at: datetime | None  # None: never observed
    grace_days: int
    # Its drifts older than the grace period (``billing.lifecycle.DRIFT_COLUMNS``).
    beyond_grace: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Its deployments whose states break a contract, so they could not be judged.
    not_judged: int = 0


def flip_readiness(
    results: pd.DataFrame,
    closed_periods: Sequence[date],
    required_periods: int,
    *,
    latest_runs: Mapping[date, str] | None = None,
    signoffs: Mapping[date, PeriodSignoff] | None = None,
    lifecycle: LifecycleStanding | None = None,
    now: datetime | None = None,
) -> Readiness:
    """Judge the last ``required_periods`` closed periods from the warehouse's results.

    ``results`` holds ``billing_reconciliation`` rows (any periods); ``closed_periods`` every
    period whose window has passed, in any order; ``latest_runs`` the run that wrote each
    period's current rows. With ``signoffs`` given, sign-off is required: a period counts only
    when it has an active sign-off and nothing moved since the run it accepted. With
    ``lifecycle`` given, the control loop is judged too, its observation's age against ``now``.
    """
    if required_periods < 1:
        raise ValueError(f"flip readiness needs at least one period, got {required_periods}")
    judged = tuple(sorted(closed_periods)[-required_periods:])
    reasons: list[str] = []
    unexplained_by_period: dict[str, int] = {}
    runs_judged: dict[str, str] = {}
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
        if latest_runs and period in latest_runs:
            runs_judged[period.isoformat()] = latest_runs[period]
        if signoffs is not None:
            signoff = signoffs.get(period)
            if signoff is None:
                reasons.append(f"{period:%Y-%m} is not signed off")
            elif signoff.rows_moved:
                reasons.append(
                    f"{period:%Y-%m} changed since {signoff.signed_by} signed off run {signoff.run_id} "
                    f"({signoff.rows_moved} row(s) moved): sign it off again or find out why"
                )
            else:
                runs_judged[period.isoformat()] = signoff.run_id
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
    held_back: tuple[int, ...] = ()
    if lifecycle is not None:
        held_back = tuple(int(d) for d in lifecycle.beyond_grace.get("deployment_id", ()))
        reasons.extend(_lifecycle_reasons(lifecycle, now))
    return Readiness(
        verdict=NOT_READY if reasons else READY,
        periods_judged=judged,
        reasons=tuple(reasons),
        unexplained_by_period=unexplained_by_period,
        runs_judged=runs_judged,
        lifecycle_drifts_held_back=held_back,
    )


def _lifecycle_reasons(lifecycle: LifecycleStanding, now: datetime | None) -> list[str]:
    if lifecycle.observed_at is None:
        return [
            "the control loop has never been observed: materialize billing/lifecycle_drift "
            "(its hourly schedule does)"
        ]
    reasons = []
    if now is not None and now - lifecycle.observed_at > LIFECYCLE_OBSERVATION_MAX_AGE:
        reasons.append(
            f"the control loop was last observed at {lifecycle.observed_at:%Y-%m-%d %H:%M}Z, more than a "
            "day ago: materialize billing/lifecycle_drift"
        )
    if lifecycle.not_judged:
        reasons.append(
            f"{lifecycle.not_judged} deployment(s) could not be judged, their states outside the "
            "contract: see billing_lifecycle_drift (kind not_judged)"
        )
    beyond = lifecycle.beyond_grace
    if beyond.empty:
        return reasons
    for row in beyond.sort_values(["since", "deployment_id"]).itertuples(index=False):
        reasons.append(
            f"deployment {int(row.deployment_id)} (customer {int(row.customer_id)}) has drifted from its Odoo "
            f"subscription for more than the {lifecycle.grace_days}-day grace period: {row.kind} since "
            f"{pd.Timestamp(row.since):%Y-%m-%d %H:%M}Z, {format_cents(int(row.amount_at_stake_cents))} at stake. "
            f"{row.cause}"
        )
    return reasons
