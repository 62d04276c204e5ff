"""What the import reads of NexaCloud: a period's customers, plans and deployments, validated.

The same queries and contracts as the source assets (``sources.nexacloud``, ``sources.validation``),
so a record the reconciliation sets aside is set aside by the import too (action ``invalid``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from sqlalchemy import Connection

from fusion_billing_assets.billing.expected import active_days_per_deployment
from fusion_billing_assets.billing.periods import PeriodWindow
from fusion_billing_assets.importer.records import Wanted, wanted_records
from fusion_billing_assets.sources import nexacloud as queries
from fusion_billing_assets.sources import validation as contracts


def wanted_for_periods(
    connection: Connection, windows: Sequence[PeriodWindow], *, exclusions: Mapping[int, str] | None = None
) -> list[Wanted]:
    """The Odoo records the periods' NexaCloud records need, each once, in write order.

    Of several periods, a record comes from the first that holds it: customers, plans and a
    deployment read the same in every period they are alive in.
    """
    frames: dict[str, list[pd.DataFrame]] = {"customers": [], "plans": [], "deployments": []}
    for window in windows:
        frames["customers"].append(
            contracts.validate(
                queries.fetch_customers(connection, window), contracts.nexacloud_customers(window)
            )
        )
        frames["plans"].append(
            contracts.validate(queries.fetch_plans(connection), contracts.nexacloud_plans())
        )
        deployments = queries.fetch_deployments(connection, window)
        deployments["active_days"] = active_days_per_deployment(deployments, window)
        frames["deployments"].append(contracts.validate(deployments, contracts.nexacloud_deployments(window)))
    # Each record once, as the first period that holds it has it: the records are built once.
    customers, plans, deployments = (
        pd.concat(frames[name], ignore_index=True).drop_duplicates(key, keep="first")
        for name, key in (
            ("customers", "customer_id"),
            ("plans", "plan_id"),
            ("deployments", "deployment_id"),
        )
    )
    return wanted_records(customers, plans, deployments, timezone=windows[0].timezone, exclusions=exclusions)
