"""Create or upgrade the worker's schema, respecting the host application's own.

``reminders migrate`` runs, in one transaction:

- the worker's own tables (the outbox, the scan heartbeat): the Alembic revisions shipped in
  this package, recorded in the worker's own version table, `VERSION_TABLE`, never in the
  host's ``alembic_version`` (a revision an earlier release left there moves over);
- on the host's tasks table, the columns the worker writes and its partial index, as the
  mapping says (`host_changes`), reconciled on every run: a mapping whose completion rule
  changed gets its index rebuilt. Nothing else of the host's is ever created, altered or
  dropped; only where no mapping is set, the reference schema's tables are created when
  absent.

``reminders migrate --sql`` prints the same statements (Alembic's offline mode for the
revisions) and runs none.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Engine, Index, Table, inspect, text
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.schema import CreateIndex, CreateTable, DropIndex

from outbox.types import UTCDateTime
from worker.db import long_statements
from worker.reminders.due_time import InstantDue
from worker.reminders.host import HostSchema, due_time_of, host_schema
from worker.reminders.mapping import REFERENCE, SchemaMapping
from worker.reminders.schema import Task, User

#: How long one migration statement may run: building an index on a large host table.
MIGRATION_STATEMENT_SECONDS = 3600
#: The worker's own Alembic version table.
VERSION_TABLE = "reminders_alembic_version"
#: Where releases that shared the host's version table kept the worker's revision.
SHARED_VERSION_TABLE = "alembic_version"
#: The comment on the worker's index: this, then a fingerprint of its definition.
INDEX_COMMENT = "reminders: "


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "worker:migrations")
    return config


def _our_revisions() -> set[str]:
    scripts = ScriptDirectory.from_config(_config())
    return {script.revision for script in scripts.walk_revisions()}


def head_revision() -> str | None:
    """The newest revision shipped with this version of the package."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as connection:
        return revision(connection)


def revision(connection: Connection) -> str | None:
    """The revision the database of ``connection`` is at, or None when it was never migrated."""
    return _current(connection) or _shared_revision(connection)


def _current(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _shared_revision(connection: Connection) -> str | None:
    """The worker's revision in the host's ``alembic_version``, where an earlier release kept
    it: one of this package's revisions, with the outbox beside it. None otherwise."""
    tables = set(inspect(connection).get_table_names())
    if SHARED_VERSION_TABLE not in tables or "outbox" not in tables:
        return None
    rows = connection.execute(text(f"SELECT version_num FROM {SHARED_VERSION_TABLE}"))
    ours = [revision for revision in rows.scalars() if revision in _our_revisions()]
    return ours[0] if len(ours) == 1 else None


@dataclass
class Migration:
    """What one ``migrate`` did: revisions from ``before`` to ``after``, and the statements
    it ran on the host's side (the version table moved, tables, columns, index)."""

    before: str | None
    after: str | None
    host: list[str] = field(default_factory=list)


def upgrade(engine: Engine, mapping: SchemaMapping = REFERENCE) -> tuple[str | None, str | None]:
    """Bring the database to the head revision; return (before, after). Idempotent."""
    migration = run(engine, mapping)
    return migration.before, migration.after


def run(engine: Engine, mapping: SchemaMapping = REFERENCE) -> Migration:
    """Migrate the worker's tables and its part of the host's tasks table; idempotent.

    Raises:
        MappingMismatch: the mapping does not fit the host's tables (nothing is changed).
    """
    config = _config()
    with engine.begin() as connection, long_statements(connection, MIGRATION_STATEMENT_SECONDS):
        before, statements = _before_revisions(connection, mapping)
        for statement in statements:
            connection.execute(text(statement))
        host = host_schema(mapping, due_time_of(connection, mapping))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        changes = host_changes(connection, host)
        for statement in changes:
            connection.execute(text(statement))
        return Migration(before, _current(connection), statements + changes)


def offline_sql(engine: Engine, mapping: SchemaMapping = REFERENCE) -> str:
    """The SQL ``migrate`` would run on this database now, for a DBA to read or run.

    Reads the database (its revision and the host's tables); changes nothing.

    Raises:
        MappingMismatch: the mapping does not fit the host's tables.
    """
    out = io.StringIO()
    with engine.connect() as connection:
        before, statements = _before_revisions(connection, mapping)
        fresh = any(statement.startswith("CREATE TABLE tasks") for statement in statements)
        _write(out, "the worker's revision and the reference tables", statements)
        if before != head_revision():
            config = _config()
            config.output_buffer = out
            config.attributes["dialect"] = connection.dialect.name
            out.write("-- the worker's own tables\n")
            command.upgrade(config, f"{before}:head" if before else "head", sql=True)
        due_time = InstantDue() if fresh else due_time_of(connection, mapping)
        host = host_schema(mapping, due_time)
        _write(out, f"the worker's part of {mapping.tasks.table}", host_changes(connection, host))
        connection.rollback()
    return out.getvalue()


def _write(out: io.StringIO, what: str, statements: list[str]) -> None:
    if statements:
        out.write(f"-- {what}\n")
        out.writelines(f"{statement};\n" for statement in statements)


def _before_revisions(
    connection: Connection, mapping: SchemaMapping
) -> tuple[str | None, list[str]]:
    """The revision the database is at, and what runs before the revisions: the version row
    moved out of the host's table, the reference tables created where no mapping is set."""
    statements: list[str] = []
    before = _current(connection)
    if before is None:
        shared = _shared_revision(connection)
        if shared is not None:
            statements += _adoption(connection, shared)
            before = shared
    if mapping.source is None:
        existing = set(inspect(connection).get_table_names())
        for table in (_table(User), _table(Task)):  # users first: tasks refers to it
            if table.name not in existing:
                statements.append(_ddl(connection, CreateTable(table)))
                statements += [_ddl(connection, CreateIndex(index)) for index in table.indexes]
    return before, statements


def _adoption(connection: Connection, revision: str) -> list[str]:
    """Move the worker's revision from the shared ``alembic_version`` to its own table; drop
    the shared table where the worker's row was its only one (an earlier release made it)."""
    assert revision in _our_revisions()  # a name of ours, not data
    others = connection.execute(
        text(f"SELECT count(*) FROM {SHARED_VERSION_TABLE} WHERE version_num <> :ours"),
        {"ours": revision},
    ).scalar_one()
    leave = (
        f"DELETE FROM {SHARED_VERSION_TABLE} WHERE version_num = '{revision}'"
        if others
        else f"DROP TABLE {SHARED_VERSION_TABLE}"
    )
    return [
        f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
        f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))",
        f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{revision}')",
        leave,
    ]


def host_changes(connection: Connection, host: HostSchema) -> list[str]:
    """The statements that give the host's tasks table the worker's columns and index as
    the mapping needs them now: none when it has them."""
    tasks = host.tasks
    table = tasks.table
    dialect = connection.dialect
    quote = dialect.identifier_preparer
    inspector = inspect(connection)
    try:
        found = inspector.get_columns(table.name, schema=table.schema)
    except NoSuchTableError:  # ``--sql`` on a database the migration would create it in
        found = []
    existing = {column["name"]: column["type"] for column in found}
    if not existing:  # the reference tables, created by this migration's first statements
        existing = {column.name: column.type for column in _table(Task).columns}
    statements: list[str] = []
    wanted = {
        "reminder_sent_at": UTCDateTime(),
        "reminder_due_at": tasks.due_time.stored_type,
    }
    for name, kind in wanted.items():
        column = Column(name, kind)
        spelled = kind.compile(dialect=dialect)
        if name not in existing:
            statements.append(
                f"ALTER TABLE {quote.format_table(table)} "
                f"ADD COLUMN {quote.format_column(column)} {spelled}"
            )
        elif dialect.name == "postgresql" and not _same_type(existing[name], spelled, dialect):
            # The due column changed type: the marks are of no use; the keys make a scan
            # that considers every task again harmless.
            statements.append(
                f"ALTER TABLE {quote.format_table(table)} ALTER COLUMN "
                f"{quote.format_column(column)} TYPE {spelled} USING NULL"
            )
    rebuilt = bool(statements)
    for index in host.indexes:
        statements += _index_changes(connection, host, index, rebuilt=rebuilt)
    return statements


def _same_type(found: object, spelled: str, dialect: object) -> bool:
    try:
        current = found.compile(dialect=dialect)  # type: ignore[attr-defined]
    except Exception:  # a reflected type that does not compile: take it as different
        return False
    return str(current).upper() == spelled.upper()


def _index_changes(
    connection: Connection, host: HostSchema, index: Index, *, rebuilt: bool
) -> list[str]:
    """Create one of the worker's partial indexes, or rebuild it where its definition
    changed; the comment on it (PostgreSQL) fingerprints the definition it was built with."""
    table = host.tasks.table
    create = _ddl(connection, CreateIndex(index))
    fingerprint = INDEX_COMMENT + hashlib.sha256(create.encode()).hexdigest()[:16]
    quote = connection.dialect.identifier_preparer
    name = quote.quote(str(index.name))
    if table.schema:
        name = f"{quote.quote_schema(table.schema)}.{name}"
    comment = [f"COMMENT ON INDEX {name} IS '{fingerprint}'"]
    if connection.dialect.name != "postgresql":
        comment = []
    found = _index_state(connection, host, index)
    if found is None:
        return [create, *comment]
    defined, noted = found
    if connection.dialect.name == "postgresql":
        if noted == fingerprint and not rebuilt:
            return []
        if noted is None and host.is_reference and index is host.index and not rebuilt:
            return comment  # built by a release before the comment, to the same definition
    elif defined == create and not rebuilt:
        return []
    return [_ddl(connection, DropIndex(index)), create, *comment]


def _index_state(
    connection: Connection, host: HostSchema, index: Index
) -> tuple[str, str | None] | None:
    """One of the worker's indexes as the database has it (definition, comment), or None."""
    table = host.tasks.table
    if connection.dialect.name == "postgresql":
        row = connection.execute(
            text(
                "SELECT pg_get_indexdef(c.oid), obj_description(c.oid, 'pg_class') "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = :name AND c.relkind = 'i' "
                "AND n.nspname = coalesce(:schema, current_schema())"
            ),
            {"name": index.name, "schema": table.schema},
        ).first()
    else:
        row = connection.execute(
            text("SELECT sql, NULL FROM sqlite_master WHERE type = 'index' AND name = :name"),
            {"name": index.name},
        ).first()
    return None if row is None else (row[0], row[1])


def _ddl(connection: Connection, element: CreateTable | CreateIndex | DropIndex) -> str:
    return str(element.compile(dialect=connection.dialect)).strip()


def _table(declared: type[User] | type[Task]) -> Table:
    table = declared.__table__
    assert isinstance(table, Table)
    return table
