"""Billing domain: periods, money, charge math and reconciliation, with no Dagster import."""
