"""The two source systems: NexaCloud's database (read-only) and Odoo's JSON-2 / JSON-RPC API."""
