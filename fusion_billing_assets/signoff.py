"""Signing off a closed billing period, and revoking a sign-off (docs/design.md §12).

One code path for the command line (``fusion-billing signoff``) and the UI's job
``sign_off_billing_period``: both hand over a warehouse connection, the period, who signs, and
whether the period's latest Dagster run failed (which only the instance knows). A sign-off names
the recorded run it accepts, so a later re-run can be compared with exactly those figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import Connection

from fusion_billing_assets import warehouse
from fusion_billing_assets.billing.audit import signoff_refusals
from fusion_billing_assets.billing.periods import PeriodWindow


class SignoffRefused(ValueError):
    """The period cannot be signed off as it stands; ``refusals`` says every reason."""

    def __init__(self, period: date, refusals: Sequence[str], action: str = "signed off"):
        self.refusals = tuple(refusals)
        super().__init__(f"billing period {period.isoformat()} cannot be {action}: " + "; ".join(refusals))


@dataclass(frozen=True)
class Signoff:
    signoff_id: int
    period: date
    run_id: str
    signed_by: str
    counts_by_status: dict[str, int] = field(default_factory=dict)


def sign_off(
    connection: Connection,
    window: PeriodWindow,
    *,
    signed_by: str,
    note: str | None,
    accept_unexplained: Sequence[str],
    latest_run_failed: bool,
    now: datetime,
) -> Signoff:
    """Record that ``signed_by`` accepts the period's current results; refuse with every reason."""
    if not signed_by.strip():
        raise SignoffRefused(window.period, ["a sign-off must say who signs (--by NAME)"])
    # Under the period's guard: the results and the run read are those of one committed write.
    warehouse.lock_period(connection, window.period)
    warehouse.ensure_tables(connection)
    results = warehouse.read_results(connection, [window.period])
    runs = warehouse.read_runs(connection, window.period)
    latest = runs.iloc[-1] if len(runs) else None
    refusals = signoff_refusals(
        period_closed=window.is_closed(now),
        run_provisional=bool(latest["provisional"]) if latest is not None else False,
        latest_run_failed=latest_run_failed,
        results=results,
        accepted_unexplained=accept_unexplained,
    )
    if latest is None and not results.empty:
        refusals.append(
            "the current results were written before runs were recorded: reconcile the period again"
        )
    if refusals:
        raise SignoffRefused(window.period, refusals)
    signoff_id = warehouse.record_signoff(
        connection,
        period=window.period,
        run_id=str(latest["run_id"]),
        signed_by=signed_by.strip(),
        signed_at=now,
        note=note,
        results=results,
        accepted_unexplained=accept_unexplained,
    )
    counts = results["status"].value_counts().sort_index().to_dict()
    return Signoff(
        signoff_id=signoff_id,
        period=window.period,
        run_id=str(latest["run_id"]),
        signed_by=signed_by.strip(),
        counts_by_status={str(status): int(count) for status, count in counts.items()},
    )


def revoke(
    connection: Connection, window: PeriodWindow, *, revoked_by: str, reason: str, now: datetime
) -> int:
    """Revoke the period's active sign-off, keeping it; its id. Refused without a reason."""
    problems = []
    if not revoked_by.strip():
        problems.append("a revocation must say who revokes (--by NAME)")
    if not reason.strip():
        problems.append("a revocation must say why (--reason TEXT)")
    warehouse.ensure_tables(connection)
    if not problems:
        revoked = warehouse.revoke_signoff(
            connection,
            period=window.period,
            revoked_by=revoked_by.strip(),
            revoked_at=now,
            reason=reason.strip(),
        )
        if revoked is not None:
            return revoked
        problems.append("the period has no active sign-off to revoke")
    raise SignoffRefused(window.period, problems, action="revoked")
