"""The importer: the Odoo side of the mapping, created and kept from NexaCloud (docs/design.md §9).

``records`` says what must exist in Odoo for a period's customers, plans and deployments;
``odoo_side`` reads what Odoo holds of it; ``plan`` compares the two, record by record; ``apply``
writes a plan through Odoo's ``load``. No module here imports Dagster.
"""
