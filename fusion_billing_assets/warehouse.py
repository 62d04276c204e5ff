"""The results contract in the warehouse: ``billing_reconciliation`` and its per-deployment detail.

People and other tools read these tables (DESIGN §6), so their columns are written down once,
here. Amounts are integer cents; CPU-seconds keep their three decimals; ``delta_cents`` and every
component delta are Odoo minus NexaCloud.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
)

metadata = MetaData()

billing_reconciliation = Table(
    "billing_reconciliation",
    metadata,
    Column("billing_period", Date, nullable=False),
    # Null for the row of an Odoo partner that no NexaCloud customer maps to.
    Column("customer_id", BigInteger, nullable=True),
    # Null for a NexaCloud customer that maps to no Odoo partner.
    Column("partner_id", BigInteger, nullable=True),
    Column("customer_name", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("cause", Text, nullable=False),
    Column("nexacloud_invoice_count", Integer, nullable=False),
    Column("odoo_invoice_count", Integer, nullable=False),
    Column("nexacloud_currency", Text, nullable=True),
    Column("odoo_currency", Text, nullable=True),
    Column("nexacloud_subtotal_cents", BigInteger, nullable=False),
    Column("nexacloud_tax_cents", BigInteger, nullable=False),
    Column("nexacloud_total_cents", BigInteger, nullable=False),
    Column("odoo_subtotal_cents", BigInteger, nullable=False),
    Column("odoo_tax_cents", BigInteger, nullable=False),
    Column("odoo_total_cents", BigInteger, nullable=False),
    Column("expected_subtotal_cents", BigInteger, nullable=False),
    Column("expected_tax_cents", BigInteger, nullable=False),
    Column("expected_total_cents", BigInteger, nullable=False),
    Column("delta_cents", BigInteger, nullable=False),
    Column("plan_fee_delta_cents", BigInteger, nullable=False),
    Column("overage_delta_cents", BigInteger, nullable=False),
    Column("tax_delta_cents", BigInteger, nullable=False),
    Column("nexacloud_cpu_seconds", Numeric(18, 3), nullable=False),
    Column("odoo_cpu_seconds", Numeric(18, 3), nullable=False),
    Column("waiver_reason", Text, nullable=True),
    Column("waiver_approver", Text, nullable=True),
    Column("provisional", Boolean, nullable=False),
    Column("reconciled_at", DateTime(timezone=True), nullable=False),
    Index("billing_reconciliation_period_status", "billing_period", "status"),
)

billing_reconciliation_lines = Table(
    "billing_reconciliation_lines",
    metadata,
    Column("billing_period", Date, nullable=False),
    Column("customer_id", BigInteger, nullable=True),
    Column("partner_id", BigInteger, nullable=True),
    Column("deployment_id", BigInteger, nullable=True),
    Column("subscription_id", BigInteger, nullable=True),
    Column("plan_code", Text, nullable=True),
    Column("active_days", Integer, nullable=True),
    Column("nexacloud_cpu_seconds", Numeric(18, 3), nullable=False),
    Column("odoo_cpu_seconds", Numeric(18, 3), nullable=False),
    Column("nexacloud_plan_price_cents", BigInteger, nullable=True),
    Column("odoo_plan_price_cents", BigInteger, nullable=True),
    Column("nexacloud_overage_rate", Numeric(12, 4), nullable=True),
    Column("odoo_overage_rate", Numeric(12, 4), nullable=True),
    Column("nexacloud_base_cents", BigInteger, nullable=False),
    Column("nexacloud_overage_cents", BigInteger, nullable=False),
    Column("nexacloud_tax_cents", BigInteger, nullable=False),
    Column("odoo_plan_fee_cents", BigInteger, nullable=False),
    Column("odoo_overage_cents", BigInteger, nullable=False),
    Column("odoo_tax_cents", BigInteger, nullable=False),
    Column("expected_base_cents", BigInteger, nullable=False),
    Column("expected_overage_cents", BigInteger, nullable=False),
    Column("expected_tax_cents", BigInteger, nullable=False),
    Column("note", Text, nullable=True),
    Index("billing_reconciliation_lines_period", "billing_period", "customer_id"),
)

RESULT_COLUMNS = [column.name for column in billing_reconciliation.columns]
LINE_COLUMNS = [column.name for column in billing_reconciliation_lines.columns]
