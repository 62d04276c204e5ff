"""The customers a person decided to leave out of the import, each with a reason (a CSV file).

Columns ``customer_id,reason,decided_by``; ``#`` starts a comment line. A customer left out keeps
no Odoo record from the import, and its deployments none either: the plan shows them ``excluded``
with the reason, so the reconciliation's ``unmapped`` rows for them are explained, not surprising.
"""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("customer_id", "reason", "decided_by")


class ExclusionsError(ValueError):
    """The exclusions file is malformed; the message names the file, the line and the field."""


def read_exclusions(path: Path | str | None) -> dict[int, str]:
    """Customer id → why it is left out (with who decided). No file configured: nobody."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ExclusionsError(f"{path}: the import exclusions file does not exist")
    lines = [
        (number, line)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        return {}
    header_line, header = lines[0]
    if tuple(name.strip() for name in next(csv.reader([header]))) != COLUMNS:
        raise ExclusionsError(f"{path}:{header_line}: the header must be {','.join(COLUMNS)}")
    exclusions: dict[int, str] = {}
    for number, line in lines[1:]:
        cells = [cell.strip() for cell in next(csv.reader([line]))]
        if len(cells) != len(COLUMNS):
            raise ExclusionsError(f"{path}:{number}: {len(cells)} fields, expected {len(COLUMNS)}")
        values = dict(zip(COLUMNS, cells, strict=True))
        try:
            customer_id = int(values["customer_id"])
        except ValueError:
            raise ExclusionsError(
                f"{path}:{number}: customer_id {values['customer_id']!r} is not a customer id"
            ) from None
        for name in ("reason", "decided_by"):
            if not values[name]:
                raise ExclusionsError(f"{path}:{number}: {name} is empty (customer {customer_id})")
        if customer_id in exclusions:
            raise ExclusionsError(f"{path}:{number}: customer {customer_id} is listed twice")
        exclusions[customer_id] = f"{values['reason']} (decided by {values['decided_by']})"
    return exclusions
