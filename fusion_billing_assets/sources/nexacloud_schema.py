"""The NexaCloud source contract (v1, docs/design.md §4) as SQLAlchemy Core tables.

The extractors read these tables and the sandbox generator creates them, so the contract is
written down once. Adapting to the real NexaCloud schema means changing this module and the
queries in ``sources.nexacloud``.
"""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    MetaData,
    Numeric,
    Table,
    Text,
)

metadata = MetaData()

customers = Table(
    "customers",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("province", CHAR(2), nullable=False),
    Column("currency", CHAR(3), nullable=False, server_default="CAD"),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

plans = Table(
    "plans",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("monthly_price_cents", BigInteger, nullable=False),
    Column("included_cpu_seconds", BigInteger, nullable=False),
    Column("overage_cents_per_cpu_hour", Numeric(12, 4), nullable=False),
    Column("currency", CHAR(3), nullable=False),
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("plan_id", BigInteger, ForeignKey("plans.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("region", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("terminated_at", DateTime(timezone=True), nullable=True),
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id"), nullable=False),
    Column("metric", Text, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("quantity", Numeric(18, 3), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("idempotency_key", Text, nullable=True, unique=True),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("customer_id", BigInteger, ForeignKey("customers.id"), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("subtotal_cents", BigInteger, nullable=False),
    Column("tax_cents", BigInteger, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("stripe_invoice_id", Text, nullable=True),
    Column("issued_at", DateTime(timezone=True), nullable=True),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id"), nullable=False),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id"), nullable=True),
    Column("kind", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("quantity", Numeric(18, 3), nullable=False),
    Column("unit_price_cents", Numeric(12, 4), nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("tax_cents", BigInteger, nullable=False),
)
