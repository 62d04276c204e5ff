"""The embedded sandbox: a generated NexaCloud database and a test double of Odoo 19."""
