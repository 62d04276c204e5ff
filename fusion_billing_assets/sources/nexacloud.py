"""Everything that touches the NexaCloud database: the read-only engine and, later, its queries.

NexaCloud's database belongs to the platform team; we only ever read it. The engine makes a write
impossible rather than merely unlikely: PostgreSQL sessions start with
``default_transaction_read_only`` and a statement timeout, and a SQLite file is opened with
``mode=ro``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url


class NexaCloudUnavailable(RuntimeError):
    """The NexaCloud database cannot be opened as configured."""


def read_only_engine(url: str, *, statement_timeout_ms: int = 120_000) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        options = f"-c default_transaction_read_only=on -c statement_timeout={int(statement_timeout_ms)}"
        return create_engine(
            parsed,
            connect_args={"options": options, "application_name": "fusion_billing_assets"},
            pool_pre_ping=True,
        )
    if backend == "sqlite":
        return _read_only_sqlite_engine(parsed.database)
    raise NexaCloudUnavailable(f"NexaCloud on a {backend!r} database is not supported (postgresql or sqlite).")


def _read_only_sqlite_engine(database: str | None) -> Engine:
    if not database or database == ":memory:":
        raise NexaCloudUnavailable("NexaCloud on SQLite needs a database file, not an in-memory database.")
    path = Path(database).resolve()
    if not path.is_file():
        raise NexaCloudUnavailable(f"NexaCloud SQLite database {path} does not exist.")
    uri = f"{path.as_uri()}?mode=ro"
    return create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False))
