"""The lifecycle tables (docs/design.md §11): ``billing_lifecycle_drift`` replaced whole per
observation, every observation's drifts kept in ``billing_lifecycle_drift_history``, each
observation recorded, and a failed observation leaving the previous one in place — on SQLite and
on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from fusion_billing_assets.billing.lifecycle import DRIFT_COLUMNS
from fusion_billing_assets.warehouse import (
    LifecycleObservation,
    read_lifecycle_drift,
    read_lifecycle_history,
    read_lifecycle_observations,
    replace_lifecycle_drift,
)
from tests.test_warehouse import warehouse_engine  # noqa: F401 (the fixture)

FIRST = datetime(2026, 11, 15, 5, 0, tzinfo=UTC)


def judged(*rows: tuple[int, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "customer_id": 10 + deployment,
                "deployment_id": deployment,
                "partner_id": None if deployment == 3 else 20 + deployment,
                "subscription_id": 30 + deployment,
                "kind": kind,
                "nexacloud_state": "running",
                "odoo_state": "3_progress",
                "since": None if kind == "in_sync" else FIRST - timedelta(days=deployment),
                "amount_at_stake_cents": 0 if kind == "in_sync" else 4_900,
                "cause": "" if kind == "in_sync" else f"{kind} on {deployment}",
            }
            for deployment, kind in rows
        ],
        columns=DRIFT_COLUMNS,
    )


def observation(run_id: str, at: datetime, counts=None) -> LifecycleObservation:
    return LifecycleObservation(run_id, at, at, 7, counts or {}, 0)


def test_an_observation_replaces_the_current_view_and_keeps_its_drifts(warehouse_engine):  # noqa: F811
    with warehouse_engine.begin() as connection:
        replace_lifecycle_drift(
            connection,
            observation("one", FIRST),
            judged((1, "not_suspended"), (2, "in_sync"), (3, "paused_but_running")),
        )
    later = FIRST + timedelta(hours=1)
    with warehouse_engine.begin() as connection:
        replace_lifecycle_drift(
            connection, observation("two", later, {"in_sync": 2}), judged((1, "in_sync"), (2, "in_sync"))
        )

    with warehouse_engine.connect() as connection:
        current = read_lifecycle_drift(connection)
        history = read_lifecycle_history(connection)
        observations = read_lifecycle_observations(connection)
    assert current[["deployment_id", "kind", "run_id"]].values.tolist() == [
        [1, "in_sync", "two"],
        [2, "in_sync", "two"],
    ]
    # The first observation's drifts stay; the in-sync rows live in the current view only.
    assert history[["run_id", "deployment_id", "kind"]].values.tolist() == [
        ["one", 1, "not_suspended"],
        ["one", 3, "paused_but_running"],
    ]
    assert history.loc[history["deployment_id"] == 3, "partner_id"].isna().all()
    assert history["since"].tolist() == [FIRST - timedelta(days=1), FIRST - timedelta(days=3)]
    assert observations["run_id"].tolist() == ["one", "two"]
    assert observations["deployments"].tolist() == [3, 2]
    assert observations["counts_by_kind"].tolist() == [{}, {"in_sync": 2}]


def test_an_observation_written_again_by_its_run_replaces_its_own_rows(warehouse_engine):  # noqa: F811
    for _ in range(2):
        with warehouse_engine.begin() as connection:
            replace_lifecycle_drift(connection, observation("retried", FIRST), judged((1, "not_suspended")))
    with warehouse_engine.connect() as connection:
        assert len(read_lifecycle_history(connection)) == 1
        assert len(read_lifecycle_observations(connection)) == 1


def test_a_bad_row_is_named_and_leaves_the_previous_observation_in_place(warehouse_engine):  # noqa: F811
    with warehouse_engine.begin() as connection:
        replace_lifecycle_drift(connection, observation("good", FIRST), judged((1, "not_suspended")))
    bad = judged((1, "in_sync"), (2, "in_sync"))
    bad["subscription_id"] = bad["subscription_id"].astype(object)
    bad.loc[1, "subscription_id"] = "S00042"

    with (
        pytest.raises(
            ValueError, match=r"billing_lifecycle_drift row 'deployment 2': column subscription_id"
        ),
        warehouse_engine.begin() as connection,
    ):
        replace_lifecycle_drift(connection, observation("bad", FIRST + timedelta(hours=1)), bad)

    with warehouse_engine.connect() as connection:
        assert read_lifecycle_drift(connection)["run_id"].tolist() == ["good"]
        assert read_lifecycle_observations(connection)["run_id"].tolist() == ["good"]
