"""Each source frame's pandera contract is shown as its column schema (through dagster-pandera).

Every materialization of a source asset carries ``dagster/column_schema``: the contract's columns
in order, their types and nullability, and its checks, including those that depend on the period
(a NexaCloud customer created before the period's end, in UTC).
"""

from __future__ import annotations

from dagster import AssetKey, TableSchema, materialize

from fusion_billing_assets.defs import nexacloud
from fusion_billing_assets.defs.resources import NexaCloudDatabase
from fusion_billing_assets.partitions import window_of
from fusion_billing_assets.sources import validation as contracts
from tests.conftest import GeneratedSandbox

FRAMES = [nexacloud.nexacloud_customers, nexacloud.nexacloud_plans, nexacloud.nexacloud_invoices]


def test_each_materialized_frame_carries_its_contract_as_column_schema(small_sandbox: GeneratedSandbox):
    period = max(small_sandbox.closed_periods)
    window = window_of(period)

    result = materialize(
        FRAMES,
        partition_key=period,
        resources={"nexacloud": NexaCloudDatabase(url=small_sandbox.nexacloud_url)},
    )

    schemas = {
        event.asset_key: event.materialization.metadata["dagster/column_schema"].value
        for event in result.get_asset_materialization_events()
    }
    expected = {
        AssetKey(["nexacloud", "customers"]): contracts.nexacloud_customers(window),
        AssetKey(["nexacloud", "plans"]): contracts.nexacloud_plans(),
        AssetKey(["nexacloud", "invoices"]): contracts.nexacloud_invoices(window),
    }
    assert set(schemas) == set(expected)
    for key, contract in expected.items():
        schema = schemas[key]
        assert isinstance(schema, TableSchema)
        assert [column.name for column in schema.columns] == list(contract.schema.columns), key
        for column in schema.columns:
            declared = contract.schema.columns[column.name]
            assert column.type == str(declared.dtype)
            assert column.constraints.nullable == declared.nullable

    customers = {column.name: column for column in schemas[AssetKey(["nexacloud", "customers"])].columns}
    assert customers["customer_id"].constraints.other == ["> 0"]
    assert customers["created_at"].constraints.other == [f"< {window.end_utc.isoformat(sep=' ')}"]
    invoices = schemas[AssetKey(["nexacloud", "invoices"])]
    assert "total_cents = subtotal_cents + tax_cents" in invoices.constraints.other
