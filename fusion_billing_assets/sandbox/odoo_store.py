"""The Odoo test double's records in an SQL database: SQLite by default, PostgreSQL at scale.

One table per model of ``odoo_models.MODELS`` (``res.partner`` → ``res_partner``) with an
integer primary key ``id``, a column per stored field and ``display_name`` (derived from ``name``
unless given). One2many fields are not stored: the double derives them from their inverse
many2one. Values go in and come out in the storage format that ``odoo_models`` documents (dates
``"YYYY-MM-DD"``, datetimes ``"YYYY-MM-DD HH:MM:SS"`` UTC, floats, ints, ``None``) and compare
as they do in Python: on PostgreSQL dates and datetimes are real ``date``/``timestamp`` columns
(so that a local day is one ``AT TIME ZONE`` away), numbers are ``NUMERIC`` (sums are exact,
0.1 + 0.2 is 0.3) and text is in the ``"C"`` collation (code point order); on SQLite they are
ISO text, REAL and TEXT, with functions registered on every connection for what SQLite lacks
(Odoo's LIKE, local-day buckets, exact sums).

Nothing here holds a table in memory: ``insert_rows`` streams (COPY on PostgreSQL), the checks
are anti-joins, and the double queries the tables with SQL. ``dump_models`` is the exception,
for tests and small exports. The double's write methods go through ``next_id``,
``insert_record``, ``update_record`` and ``delete_record``, in the connection's transaction.

A store made before a field joined the slice lacks its column: ``open_store`` adds it (NULL in
the existing records, as Odoo adds a column on a module update), ``open_store_read_only``
refuses the store and says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    TypeDecorator,
    create_engine,
    delete,
    event,
    exists,
    func,
    inspect,
    select,
    text,
    true,
    update,
)
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from fusion_billing_assets.sandbox.odoo_domain import LIKE_FUNCTION, sqlite_like
from fusion_billing_assets.sandbox.odoo_models import MODELS, Field

Record = dict[str, Any]

# One2many (and many2many) fields are read through their inverse many2one, never stored.
X2MANY_TYPES = frozenset({"one2many", "many2many"})
GRANULARITIES = frozenset({"day", "week", "month", "quarter", "year"})
_SQLITE_BATCH = 50_000


def table_name(model: str) -> str:
    return model.replace(".", "_")


# --- column types: the storage format in, the storage format out ---------------------------------


class _Text(TypeDecorator[str]):
    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        # The "C" collation orders and compares by code point, as Python compares str.
        return dialect.type_descriptor(Text(collation="C") if dialect.name == "postgresql" else Text())


class _Number(TypeDecorator[float]):
    """A float or monetary value: NUMERIC on PostgreSQL, so that sums are exact; REAL on SQLite."""

    impl = Float
    cache_ok = True
    postgresql_output = "CAST({} AS float8)"

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        return dialect.type_descriptor(Numeric(asdecimal=False) if dialect.name == "postgresql" else Float())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        # The decimal the float was written from (0.1, not 0.1000000000000000055...).
        if isinstance(value, float) and dialect.name == "postgresql":
            return Decimal(repr(value))
        return value

    def column_expression(self, column: Any) -> Any:
        return _AsStored(column)


class _Day(TypeDecorator[str]):
    """A date as ``"YYYY-MM-DD"``: a ``date`` column on PostgreSQL, ISO text on SQLite."""

    impl = Text
    cache_ok = True
    postgresql_output = "to_char({}, 'YYYY-MM-DD')"

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        return dialect.type_descriptor(Date() if dialect.name == "postgresql" else Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str) and dialect.name == "postgresql":
            return date.fromisoformat(value)
        return value

    def column_expression(self, column: Any) -> Any:
        return _AsStored(column)


class _Moment(TypeDecorator[str]):
    """A UTC datetime as ``"YYYY-MM-DD HH:MM:SS"``: ``timestamp`` on PostgreSQL, text on SQLite."""

    impl = Text
    cache_ok = True
    postgresql_output = "to_char({}, 'YYYY-MM-DD HH24:MI:SS')"

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        return dialect.type_descriptor(DateTime() if dialect.name == "postgresql" else Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str) and dialect.name == "postgresql":
            return datetime.fromisoformat(value)
        return value

    def column_expression(self, column: Any) -> Any:
        return _AsStored(column)


class _AsStored(FunctionElement[Any]):
    """A selected value in the storage format. SQLite holds it so; PostgreSQL writes it so (the
    type's ``postgresql_output``), which spares Python a datetime or a Decimal per value: a float8
    is exact for a value written from a float."""

    inherit_cache = True

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(_AsStored)
def _as_stored(element: _AsStored, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_AsStored, "postgresql")
def _as_stored_on_postgresql(element: _AsStored, compiler: SQLCompiler, **kw: Any) -> str:
    return element.type.postgresql_output.format(compiler.process(element.clauses, **kw))


def _column_type(field: Field) -> Any:
    if field.type in ("integer", "many2one"):
        return Integer()
    if field.type in ("float", "monetary"):
        return _Number()
    if field.type == "boolean":
        return Boolean()
    if field.type == "date":
        return _Day()
    if field.type == "datetime":
        return _Moment()
    return _Text()


# --- the schema -------------------------------------------------------------------------------

METADATA = MetaData()

STORED_FIELDS: dict[str, list[str]] = {
    model: ["id", *(name for name, field in fields.items() if field.type not in X2MANY_TYPES), "display_name"]
    for model, fields in MODELS.items()
}

# Composite indexes; a many2one that leads one of them needs no index of its own.
_COMPOSITE_INDEXES: dict[str, list[tuple[str, ...]]] = {
    "ir.model.data": [("model", "res_id"), ("module", "name")],
    # By subscription and time (the grouped reads), and by key (delivery checks, /usage pushes), as
    # Odoo's unique (subscription, metric, key) constraint indexes it.
    "fusion.billing.usage": [("subscription_id", "timestamp"), ("idempotency_key", "subscription_id")],
}


def _table(model: str, fields: dict[str, Field]) -> Table:
    name = table_name(model)
    columns = [Column("id", Integer, primary_key=True, autoincrement=False)]
    for field_name in STORED_FIELDS[model][1:-1]:
        field = fields[field_name]
        # Odoo's default for a record that never set ``active``: applies when a load omits it.
        default = true() if field_name == "active" else None
        columns.append(Column(field_name, _column_type(field), server_default=default))
    columns.append(Column("display_name", _Text()))
    composites = _COMPOSITE_INDEXES.get(model, [])
    indexes = [Index(f"ix_{name}_{'_'.join(names)}", *names) for names in composites]
    indexes += [
        Index(f"ix_{name}_{field_name}", field_name)
        for field_name, field in fields.items()
        if field.type == "many2one" and not any(names[0] == field_name for names in composites)
    ]
    return Table(name, METADATA, *columns, *indexes)


TABLES: dict[str, Table] = {model: _table(model, fields) for model, fields in MODELS.items()}


# --- engines ----------------------------------------------------------------------------------


def create_store(url: str) -> Engine:
    """An engine on a store at ``url`` whose every model table is dropped (if present) and created."""
    engine = _engine(url)
    METADATA.drop_all(engine)
    METADATA.create_all(engine)
    return engine


def open_store(url: str) -> Engine:
    """An engine on the existing store at ``url``; ``ValueError`` when it holds no model tables."""
    return _open(url, read_only=False)


def open_store_read_only(url: str) -> Engine:
    """``open_store`` for serving: a SQLite file opened read-only, PostgreSQL read-only transactions."""
    return _open(url, read_only=True)


def _open(url: str, *, read_only: bool) -> Engine:
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and not _is_memory(parsed) and not Path(database).is_file():
        raise ValueError(f"No Odoo store at {_shown(parsed)}: the file {database} does not exist")
    engine = _engine(url, read_only=read_only)
    missing = sorted({table.name for table in TABLES.values()} - set(inspect(engine).get_table_names()))
    if missing:
        engine.dispose()
        raise ValueError(
            f"No Odoo store at {_shown(parsed)}: tables {missing} are missing; create one with "
            "odoo_store.create_store or load_models"
        )
    columns = _missing_columns(engine)
    if columns and read_only:
        engine.dispose()
        raise ValueError(
            f"The Odoo store at {_shown(parsed)} predates the fields {[f'{t}.{c}' for t, c in columns]}: "
            "open it once writable (odoo_store.open_store) to add them, or generate it again"
        )
    if columns:
        _add_columns(engine, columns)
    return engine


def _missing_columns(engine: Engine) -> list[tuple[str, str]]:
    """(table, column) of the slice's stored fields that the store's tables lack."""
    inspector = inspect(engine)
    missing = []
    for table in TABLES.values():
        present = {column["name"] for column in inspector.get_columns(table.name)}
        missing += [(table.name, column.name) for column in table.columns if column.name not in present]
    return missing


def _add_columns(engine: Engine, columns: list[tuple[str, str]]) -> None:
    # NULL in the records already there, as Odoo leaves a column it adds without a default.
    preparer = engine.dialect.identifier_preparer
    tables = {table.name: table for table in TABLES.values()}
    with engine.begin() as connection:
        for table_name, column_name in columns:
            column = tables[table_name].c[column_name]
            kind = column.type.compile(dialect=engine.dialect)
            connection.execute(
                text(
                    f"ALTER TABLE {preparer.quote(table_name)} "
                    f"ADD COLUMN {preparer.quote(column_name)} {kind}"
                )
            )


def _engine(url: str, *, read_only: bool = False) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if _is_memory(parsed):
            # One connection, shared: every new in-memory connection would be an empty database.
            engine = create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            if read_only:
                query = {**parsed.query, "mode": "ro", "uri": "true"}
                parsed = parsed.set(database=f"file:{parsed.database}", query=query)
            engine = create_engine(parsed, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _register_sqlite_functions)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername != "postgresql+psycopg":
            raise ValueError(f"{_shown(parsed)}: the Odoo store speaks to PostgreSQL through psycopg 3 only")
        if read_only:
            return create_engine(parsed).execution_options(postgresql_readonly=True)
        # A store being written grows from empty: psycopg's prepared statements would keep the plans
        # PostgreSQL made for empty tables (sequential scans) long after they filled up.
        return create_engine(parsed, connect_args={"prepare_threshold": None})
    raise ValueError(f"{_shown(parsed)}: an Odoo store is a sqlite:// or postgresql+psycopg:// database")


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:")


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _engine_of(url_or_engine: str | Engine) -> tuple[Engine, bool]:
    """The engine to use, and whether it is ours to dispose of."""
    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    return open_store(url_or_engine), True


def serve_store(url: str, host: str = "127.0.0.1", port: int = 8069, **credentials: Any) -> None:
    """Serve the store at ``url`` with the Odoo test double until interrupted (``ValueError`` when
    there is no store there): ``odoo_standin.serve_store``, reachable from here too."""
    # Imported here: the double imports this module.
    from fusion_billing_assets.sandbox.odoo_standin import serve_store as serve

    serve(url, host, port, **credentials)


# --- loading ----------------------------------------------------------------------------------


def insert_rows(connection: Connection, model: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Insert ``rows`` (tuples in the storage format, in the order of ``columns``); the row count.

    The rows are streamed, never held as a whole: PostgreSQL takes them through ``COPY ... FROM
    STDIN``, SQLite through ``executemany`` in batches. Without ``display_name`` among ``columns``,
    each row's is derived as ``load_models`` derives it. Runs in the connection's transaction.
    """
    columns = list(columns)
    unknown = sorted(set(columns) - set(STORED_FIELDS.get(model, ())))
    if model not in TABLES or unknown or "id" not in columns or len(set(columns)) != len(columns):
        raise ValueError(
            f"Cannot insert {model} rows with columns {columns}: expected distinct stored fields of "
            f"the model, id among them (STORED_FIELDS[{model!r}])"
        )
    rows = _checked_rows(model, len(columns), rows)
    if "display_name" not in columns:
        rows = _with_display_names(model, columns, rows)
        columns.append("display_name")
    if not connection.in_transaction():
        connection.begin()  # the caller's commit() then commits the rows
    preparer = connection.dialect.identifier_preparer
    table = preparer.format_table(TABLES[model])
    names = ", ".join(preparer.quote(name) for name in columns)
    if connection.dialect.name == "postgresql":
        count = 0
        with (
            connection.connection.driver_connection.cursor() as cursor,
            cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    statement = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    count = 0
    while batch := list(islice(rows, _SQLITE_BATCH)):
        connection.exec_driver_sql(statement, batch)
        count += len(batch)
    return count


def _checked_rows(model: str, width: int, rows: Iterable[Sequence]) -> Iterable[Sequence]:
    for row in rows:
        if len(row) != width:
            raise ValueError(f"{model} row {row!r} has {len(row)} values for {width} columns")
        yield row


def _with_display_names(model: str, columns: list[str], rows: Iterable[Sequence]) -> Iterable[tuple]:
    positions = {name: index for index, name in enumerate(columns)}
    id_at, name_at, module_at = positions["id"], positions.get("name"), positions.get("module")
    for row in rows:
        record = {
            "id": row[id_at],
            "name": None if name_at is None else row[name_at],
            "module": None if module_at is None else row[module_at],
        }
        yield (*row, _display_name(model, record))


def load_models(url: str, models: dict[str, list[Record]]) -> Engine:
    """A new store at ``url`` holding ``models`` (model name → records), checked; its engine.

    Refuses (``ValueError``) a model outside the slice, a record with a field outside its model,
    without an integer id or with an id used twice, a one2many given (it is derived from its
    inverse), and a many2one that points at no record.
    """
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"Models outside the Odoo model slice (odoo_models.MODELS): {unknown}")
    engine = create_store(url)
    try:
        with engine.begin() as connection:
            for model, records in models.items():
                insert_rows(connection, model, STORED_FIELDS[model], _stored_rows(model, records))
        check_store(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _stored_rows(model: str, records: Iterable[Record]) -> Iterable[tuple]:
    row_of = itemgetter(*STORED_FIELDS[model])
    seen: set[int] = set()
    for record in records:
        stored = stored_record(model, record)
        if stored["id"] in seen:
            raise ValueError(f"{model}: record ids are not unique")
        seen.add(stored["id"])
        yield row_of(stored)


def stored_record(model: str, record: Record) -> Record:
    """``record`` with every stored field of its model, defaults and display name filled in."""
    if not _STORED_NAMES[model].issuperset(record):
        _refuse_fields(model, record)
    if isinstance(record.get("id"), bool) or not isinstance(record.get("id"), int):
        raise ValueError(f"{model} record without an integer id: {record!r}")
    stored = {**_EMPTY_RECORDS[model], **record}
    if not stored["display_name"]:
        stored["display_name"] = _display_name(model, stored)
    return stored


def _refuse_fields(model: str, record: Record) -> None:
    fields = MODELS[model]
    unknown = sorted(record.keys() - fields.keys() - {"id", "display_name"})
    if unknown:
        raise ValueError(f"{model} record {record.get('id')!r} has fields outside the model slice: {unknown}")
    derived = sorted(record.keys() - _STORED_NAMES[model])
    raise ValueError(
        f"{model} record {record.get('id')!r}: {derived} are derived from their inverse many2one, "
        "not stored: set that many2one on the related records instead"
    )


_STORED_NAMES = {model: frozenset(names) for model, names in STORED_FIELDS.items()}
# Odoo's default for a record that never set ``active`` is True.
_EMPTY_RECORDS = {
    model: {**dict.fromkeys(names), **({"active": True} if "active" in MODELS[model] else {})}
    for model, names in STORED_FIELDS.items()
}


def _display_name(model: str, record: Record) -> str:
    if model == "ir.model.data":
        return f"{record['module']}.{record['name']}"
    return record.get("name") or f"{model},{record['id']}"


def check_store(engine: Engine) -> None:
    """Refuse (``ValueError``) a many2one that points at no record; refresh the planner's statistics.

    One anti-join per many2one; the first broken record, in model and id order, is named.
    """
    with engine.begin() as connection:
        for model, fields in MODELS.items():
            table = TABLES[model]
            for name, field in fields.items():
                if field.type != "many2one":
                    continue
                related = TABLES[field.relation].alias("related")
                column = table.c[name]
                broken = connection.execute(
                    select(table.c.id, column)
                    .where(column.is_not(None), ~exists().where(related.c.id == column))
                    .order_by(table.c.id)
                    .limit(1)
                ).first()
                if broken is not None:
                    raise ValueError(
                        f"{model} {broken[0]}: {name} refers to missing {field.relation} [{broken[1]}]"
                    )
        if connection.dialect.name == "postgresql":
            # A bulk load leaves the tables without statistics; plans over millions of rows need them.
            connection.execute(text("ANALYZE"))


# --- reading and patching, for tests and small exports ------------------------------------------


def dump_models(url_or_engine: str | Engine) -> dict[str, list[Record]]:
    """Every record of every model, in id order and the storage format (one2many fields left out)."""
    engine, owned = _engine_of(url_or_engine)
    try:
        with engine.connect() as connection:
            return {
                model: [dict(row._mapping) for row in connection.execute(select(table).order_by(table.c.id))]
                for model, table in TABLES.items()
            }
    finally:
        if owned:
            engine.dispose()


def replace_records(url_or_engine: str | Engine, model: str, records: list[Record]) -> None:
    """Write these whole records, by id: replacing the stored ones, inserting the others. Unchecked."""
    if model not in TABLES:
        raise ValueError(f"Model outside the Odoo model slice (odoo_models.MODELS): {model!r}")
    stored = [stored_record(model, record) for record in records]
    if not stored:
        return
    table = TABLES[model]
    engine, owned = _engine_of(url_or_engine)
    try:
        with engine.begin() as connection:
            connection.execute(delete(table).where(table.c.id.in_([record["id"] for record in stored])))
            connection.execute(table.insert(), stored)
    finally:
        if owned:
            engine.dispose()


# --- writing one record at a time, for the double's write methods -------------------------------


def next_id(connection: Connection, model: str) -> int:
    """The id of the next new record of ``model``: one more than the highest, as a sequence would
    give it in a store that only grows (the double serializes its writes)."""
    table = TABLES[model]
    return (connection.scalar(select(func.max(table.c.id))) or 0) + 1


def insert_record(connection: Connection, model: str, record: Record) -> None:
    """Insert one record (storage format, id included), defaults and display name filled in."""
    connection.execute(TABLES[model].insert(), [stored_record(model, record)])


def update_record(connection: Connection, model: str, record_id: int, values: Record) -> None:
    """Write ``values`` (stored fields, storage format) on one record; its display name follows
    its name (and module, for ``ir.model.data``)."""
    table = TABLES[model]
    values = dict(values)
    naming = [name for name in ("name", "module") if name in table.c]
    if values and set(naming) & values.keys():
        current = connection.execute(
            select(table.c.id, *(table.c[name] for name in naming)).where(table.c.id == record_id)
        ).one()
        values["display_name"] = _display_name(model, {**current._asdict(), **values})
    if values:
        connection.execute(update(table).where(table.c.id == record_id).values(values))


def delete_record(connection: Connection, model: str, record_id: int) -> None:
    table = TABLES[model]
    connection.execute(delete(table).where(table.c.id == record_id))


# --- SQL for grouping: local-time buckets and exact aggregates ---------------------------------


class DateBucket(FunctionElement[str]):
    """The first day (``"YYYY-MM-DD"``) of a date's day/week/month/quarter/year."""

    type = _Day()
    name = "odoo_date_bucket"
    inherit_cache = True


class MomentBucket(FunctionElement[str]):
    """The first local day (``"YYYY-MM-DD"``) of the bucket of a UTC datetime, in a time zone."""

    type = _Day()
    name = "odoo_moment_bucket"
    inherit_cache = True


def date_bucket(column: Any, granularity: str) -> DateBucket:
    return DateBucket(column, _sql_literal(granularity))


def moment_bucket(column: Any, granularity: str, timezone: str) -> MomentBucket:
    return MomentBucket(column, _sql_literal(granularity), _sql_literal(timezone))


def _sql_literal(value: str) -> Any:
    # Inline, not a bound parameter: PostgreSQL only matches a SELECT expression to its GROUP BY
    # expression when they are written alike, and two parameters are two different expressions.
    if value not in GRANULARITIES and not re.fullmatch(r"[A-Za-z0-9_+\-/]+", value):
        raise ValueError(f"Not a granularity or time zone name: {value!r}")
    return text(f"'{value}'")


@compiles(DateBucket, "postgresql")
def _date_bucket_on_postgresql(element: DateBucket, compiler: SQLCompiler, **kw: Any) -> str:
    column, granularity = (compiler.process(clause, **kw) for clause in element.clauses.clauses)
    return f"CAST(date_trunc({granularity}, CAST({column} AS timestamp)) AS date)"


@compiles(MomentBucket, "postgresql")
def _moment_bucket_on_postgresql(element: MomentBucket, compiler: SQLCompiler, **kw: Any) -> str:
    column, granularity, timezone = (compiler.process(clause, **kw) for clause in element.clauses.clauses)
    local = f"timezone({timezone}, timezone('UTC', {column}))"
    return f"CAST(date_trunc({granularity}, {local}) AS date)"


@compiles(DateBucket)
@compiles(MomentBucket)
def _bucket_on_sqlite(element: FunctionElement[str], compiler: SQLCompiler, **kw: Any) -> str:
    return f"{element.name}({compiler.process(element.clauses, **kw)})"


class ExactSum(FunctionElement[float]):
    """The sum of floats as the decimals they were written from, as Odoo's NUMERIC columns sum."""

    type = _Number()
    name = "odoo_exact_sum"
    inherit_cache = True


class ExactAvg(FunctionElement[float]):
    """The mean of the decimals the floats were written from."""

    type = _Number()
    name = "odoo_exact_avg"
    inherit_cache = True


@compiles(ExactSum, "postgresql")
def _sum_on_postgresql(element: ExactSum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"sum({compiler.process(element.clauses, **kw)})"


@compiles(ExactAvg, "postgresql")
def _avg_on_postgresql(element: ExactAvg, compiler: SQLCompiler, **kw: Any) -> str:
    return f"avg({compiler.process(element.clauses, **kw)})"


@compiles(ExactSum)
@compiles(ExactAvg)
def _aggregate_on_sqlite(element: FunctionElement[float], compiler: SQLCompiler, **kw: Any) -> str:
    return f"{element.name}({compiler.process(element.clauses, **kw)})"


# --- what SQLite lacks, registered on each of its connections -----------------------------------


def _register_sqlite_functions(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.create_function(LIKE_FUNCTION, 3, sqlite_like, deterministic=True)
    dbapi_connection.create_function(DateBucket.name, 2, _sqlite_date_bucket, deterministic=True)
    dbapi_connection.create_function(MomentBucket.name, 3, _sqlite_moment_bucket, deterministic=True)
    dbapi_connection.create_aggregate(ExactSum.name, 1, _SQLiteExactSum)
    dbapi_connection.create_aggregate(ExactAvg.name, 1, _SQLiteExactAvg)


def _sqlite_date_bucket(stored: str | None, granularity: str) -> str | None:
    if stored is None:
        return None
    return truncate(date.fromisoformat(stored), granularity).isoformat()


def _sqlite_moment_bucket(stored: str | None, granularity: str, timezone: str) -> str | None:
    if stored is None:
        return None
    # Offsets are whole minutes: every UTC minute of a ledger is converted once.
    return _local_bucket(stored[:16], granularity, timezone)


@lru_cache(maxsize=1 << 16)
def _local_bucket(utc_minute: str, granularity: str, timezone: str) -> str:
    moment = datetime.fromisoformat(utc_minute).replace(tzinfo=UTC)
    return truncate(moment.astimezone(ZoneInfo(timezone)).date(), granularity).isoformat()


def truncate(day: date, granularity: str) -> date:
    """The first day of the bucket of ``day``; a week starts on Monday, as an ISO week."""
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    if granularity == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    if granularity == "year":
        return date(day.year, 1, 1)
    return day


@lru_cache(maxsize=1 << 16)
def _decimal(value: float | int) -> Decimal:
    # The decimal the float was written from: 0.1 + 0.2 is 0.3, as in a NUMERIC sum.
    return Decimal(repr(value))


class _SQLiteExactSum:
    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: float | int | None) -> None:
        if value is not None:
            self.total = _decimal(value) if self.total is None else self.total + _decimal(value)

    def finalize(self) -> float | None:
        return None if self.total is None else float(self.total)


class _SQLiteExactAvg:
    def __init__(self) -> None:
        self.total, self.count = Decimal(0), 0

    def step(self, value: float | int | None) -> None:
        if value is not None:
            self.total += _decimal(value)
            self.count += 1

    def finalize(self) -> float | None:
        return float(self.total / self.count) if self.count else None
