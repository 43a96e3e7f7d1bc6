"""The host's tables as SQL, built from a mapping, and checked against the live database.

`host_schema` turns a `SchemaMapping` and the kind of its due column into the `TaskColumns`
and `UserColumns` every statement of the reminder domain is built on. `check_host` reads the
database's catalogue (and tries the mapped columns with the process's role) before anything
runs: a table, column or type that does not fit raises `MappingMismatch` naming it; the
worker's own columns missing raise `DatabaseNotReady` (run ``reminders migrate``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    inspect,
    literal,
    literal_column,
    select,
    text,
    true,
)
from sqlalchemy.exc import DBAPIError, NoSuchTableError
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeEngine

from outbox.types import UTCDateTime
from worker.errors import ConfigError, DatabaseNotReady
from worker.reminders.due_time import DateDue, DueTime, InstantDue, LocalDue
from worker.reminders.mapping import REFERENCE, SchemaMapping
from worker.reminders.schema import (
    TaskColumns,
    UserColumns,
    awaiting_reminder_index,
    planned_reminder_index,
)

#: The columns the worker adds to the host's tasks table, and writes.
WORKER_COLUMNS = ("reminder_sent_at", "reminder_due_at")


class MappingMismatch(ConfigError):
    """The schema mapping does not fit the database."""


@dataclass(frozen=True, eq=False)
class HostSchema:
    """A mapping made SQL: the tables every reminder statement reads and writes."""

    mapping: SchemaMapping
    tasks: TaskColumns
    users: UserColumns
    #: The partial index on the due column of the tasks awaiting a reminder.
    index: Index
    #: The partial index on the due column of the open, dated tasks.
    planned_index: Index
    #: The host's table of more recipients per task, columns ``task`` and ``user``.
    recipients: Table | None = None

    @property
    def indexes(self) -> tuple[Index, ...]:
        """The worker's indexes on the host's tasks table."""
        return (self.index, self.planned_index)

    @property
    def is_reference(self) -> bool:
        """Whether these are the reference schema's tables (which ``migrate`` may create)."""
        return self.mapping.source is None


def host_schema(mapping: SchemaMapping, due_time: DueTime) -> HostSchema:
    """The tables of ``mapping``, its due column holding what ``due_time`` says."""
    t, u = mapping.tasks, mapping.users
    stored = due_time.stored_type
    columns: list[Column[Any]] = [
        Column(t.id, BigInteger, key="id", primary_key=True),
        Column(t.owner, BigInteger, key="owner_id"),
        Column(t.title, Text, key="title"),
        Column(t.due, stored, key="due"),
        Column("reminder_sent_at", UTCDateTime, key="reminder_sent_at"),
        Column("reminder_due_at", stored, key="reminder_due_at"),
    ]
    if t.completed_at is not None:
        columns.append(Column(t.completed_at, DateTime, key="completed_at"))
    tasks_table = Table(t.table, MetaData(), *columns, schema=t.schema)
    c = tasks_table.c
    if t.completed_at is not None:
        open_rule = c.completed_at.is_(None)
    else:
        assert t.done is not None  # one of the two: checked by parse_mapping
        open_rule = literal_column(f"({t.done})", Boolean).is_not(True)
    tasks = TaskColumns(
        table=tasks_table,
        id=c.id,
        owner_id=c.owner_id,
        title=c.title,
        due=c.due,
        due_time=due_time,
        open=open_rule,
        reminder_sent_at=c.reminder_sent_at,
        reminder_due_at=c.reminder_due_at,
    )
    users_columns: list[Column[Any]] = [
        Column(u.id, BigInteger, key="id"),
        Column(u.email, Text, key="email"),
    ]
    users_columns += [Column(name, Text) for name in (u.timezone, u.locale) if name]
    if u.enabled:
        users_columns.append(Column(u.enabled, Boolean))
    users_table = Table(u.table, MetaData(), *users_columns, schema=u.schema)
    uc = users_table.c
    owner = select(
        uc.id.label("reminder_user_id"),
        uc.email.label("reminder_email"),
        (uc[u.timezone] if u.timezone else literal("UTC", Text)).label("reminder_timezone"),
        (uc[u.enabled] if u.enabled else true()).label("reminder_enabled"),
        (uc[u.locale] if u.locale else literal(None, Text)).label("reminder_locale"),
    ).subquery("reminder_recipient")
    users = UserColumns(
        table=owner,
        id=owner.c.reminder_user_id,
        email=owner.c.reminder_email,
        timezone=owner.c.reminder_timezone,
        enabled=owner.c.reminder_enabled,
        locale=owner.c.reminder_locale,
    )
    recipients = None
    if mapping.recipients is not None:
        r = mapping.recipients
        recipients = Table(
            r.table,
            MetaData(),
            Column(r.task, BigInteger, key="task"),
            Column(r.user, BigInteger, key="user"),
            schema=r.schema,
        )
    return HostSchema(
        mapping,
        tasks,
        users,
        awaiting_reminder_index(tasks),
        planned_reminder_index(tasks),
        recipients,
    )


#: The reference schema: the default mapping, its due column ``timestamp with time zone``.
REFERENCE_SCHEMA = host_schema(REFERENCE, InstantDue())


def check_host(connection: Connection, mapping: SchemaMapping) -> HostSchema:
    """The mapping's tables, once the database shows they fit it.

    Raises:
        MappingMismatch: a mapped table or column is missing, has a type that cannot be
            used, cannot be read by this role, or the completion condition is not valid
            SQL on the task row (one line naming the table and the column).
        DatabaseNotReady: the worker's columns on the tasks table are missing (or no longer
            fit the due column): ``reminders migrate`` has not run for this mapping.
    """
    check = _Checker(connection, mapping)
    due_time = check.tasks()
    check.users()
    check.recipients()
    host = host_schema(mapping, due_time)
    check.readable(host)
    check.worker_columns(host)
    return host


def due_time_of(connection: Connection, mapping: SchemaMapping) -> DueTime:
    """What the mapped due column holds, from its type (for ``migrate``: checks the host's
    tables, not the worker's columns)."""
    checker = _Checker(connection, mapping)
    due_time = checker.tasks()
    checker.users()
    checker.recipients()
    return due_time


_Kind = Callable[[TypeEngine[Any]], bool]


def _integer(kind: TypeEngine[Any]) -> bool:
    return isinstance(kind, Integer)


def _text(kind: TypeEngine[Any]) -> bool:
    return isinstance(kind, String)


def _boolean(kind: TypeEngine[Any]) -> bool:
    return isinstance(kind, Boolean)


def _moment(kind: TypeEngine[Any]) -> bool:
    return isinstance(kind, DateTime | Date)


_KIND_NAMES: dict[_Kind, str] = {
    _integer: "an integer",
    _text: "a text",
    _boolean: "a boolean",
    _moment: "a timestamp or date",
}


class _Checker:
    """One check of a mapping against one connection's view of the database."""

    def __init__(self, connection: Connection, mapping: SchemaMapping) -> None:
        self.connection = connection
        self.mapping = mapping
        self.inspector = inspect(connection)
        self.postgres = connection.dialect.name == "postgresql"

    def fail(self, detail: str) -> MappingMismatch:
        return MappingMismatch(f"{self.mapping.where}: {detail}")

    def columns(self, section: str, table: str, schema: str | None) -> dict[str, TypeEngine[Any]]:
        where = f"{schema}.{table}" if schema else table
        try:
            found = self.inspector.get_columns(table, schema=schema)
        except NoSuchTableError:
            found = []
        if not found:
            if self.mapping.source is None:  # the reference tables: migrate creates them
                raise DatabaseNotReady(f"table {where} not found: run `reminders migrate`")
            raise self.fail(f"[{section}] table: {where} not found")
        return {column["name"]: column["type"] for column in found}

    def column(  # noqa: PLR0917  (the section, the key, the table, what is found, what fits)
        self,
        section: str,
        key: str,
        table: str,
        name: str,
        types: dict[str, TypeEngine[Any]],
        kind: _Kind,
    ) -> TypeEngine[Any]:
        if name not in types:
            raise self.fail(f"[{section}] {key}: column {table}.{name} not found")
        found = types[name]
        if not kind(found):
            raise self.fail(
                f"[{section}] {key}: column {table}.{name} is {_type_name(found)}, "
                f"not {_KIND_NAMES[kind]} column"
            )
        return found

    def tasks(self) -> DueTime:
        t = self.mapping.tasks
        types = self.columns("tasks", t.table, t.schema)
        self.column("tasks", "id", t.table, t.id, types, _integer)
        self.column("tasks", "owner", t.table, t.owner, types, _integer)
        self.column("tasks", "title", t.table, t.title, types, _text)
        if t.completed_at:
            self.column("tasks", "completed_at", t.table, t.completed_at, types, _moment)
        due = self.column("tasks", "due", t.table, t.due, types, _moment)
        return self.due_time(due)

    def due_time(self, due: TypeEngine[Any]) -> DueTime:
        t = self.mapping.tasks
        where = f"[tasks] due: column {t.table}.{t.due}"
        if isinstance(due, DateTime) and (due.timezone or not self.postgres):
            # SQLite has no zones: its timestamps are the UTC text UTCDateTime writes.
            if t.due_timezone is not None and (self.postgres or t.due_timezone != "UTC"):
                raise self.fail(
                    f"[tasks] due_timezone: {where} holds instants"
                    + ("" if self.postgres else " on SQLite (UTC)")
                    + "; leave due_timezone out"
                )
            return InstantDue()
        if not self.postgres:
            raise self.fail(f"{where} is a date: all-day tasks need PostgreSQL")
        if isinstance(due, DateTime):
            if t.due_timezone is None:
                raise self.fail(
                    f"{where} is timestamp without time zone: set due_timezone to the zone "
                    'its values are in (e.g. "UTC")'
                )
            self.known_zone(t.due_timezone)
            return LocalDue(t.due_timezone)
        if t.due_timezone is not None:
            raise self.fail(f"[tasks] due_timezone: {where} is a date; leave due_timezone out")
        return DateDue()

    def known_zone(self, zone: str) -> None:
        query = text("SELECT count(*) FROM pg_timezone_names WHERE name = :zone")
        if not self.connection.execute(query, {"zone": zone}).scalar_one():
            raise self.fail(
                f"[tasks] due_timezone: {zone[:64]!r} is not a time zone PostgreSQL knows"
            )

    def users(self) -> None:
        u = self.mapping.users
        types = self.columns("users", u.table, u.schema)
        self.column("users", "id", u.table, u.id, types, _integer)
        self.column("users", "email", u.table, u.email, types, _text)
        for key, name in (("timezone", u.timezone), ("locale", u.locale)):
            if name:
                self.column("users", key, u.table, name, types, _text)
        if u.enabled:
            self.column("users", "enabled", u.table, u.enabled, types, _boolean)

    def recipients(self) -> None:
        r = self.mapping.recipients
        if r is None:
            return
        types = self.columns("recipients", r.table, r.schema)
        self.column("recipients", "task", r.table, r.task, types, _integer)
        self.column("recipients", "user", r.table, r.user, types, _integer)

    def readable(self, host: HostSchema) -> None:
        """Run what the scan reads, with no rows: privileges and the completion condition."""
        tasks, users = host.tasks, host.users
        none: BindParameter[int] = bindparam(
            "none", 0
        )  # a bound value: one statement, never a script
        probes = {
            "[tasks] table": select(tasks.id, tasks.owner_id, tasks.title, tasks.due).limit(none),
            "[users] table": select(
                users.id, users.email, users.timezone, users.enabled, users.locale
            ).limit(none),
            "[tasks] done": select(literal(1))
            .select_from(tasks.table)
            .join(users.table, users.id == tasks.owner_id)
            .where(tasks.open)
            .limit(none),
        }
        if self.mapping.tasks.done is None:
            del probes["[tasks] done"]
        for what, probe in probes.items():
            try:
                with self.connection.begin_nested():
                    self.connection.execute(probe)
            except DBAPIError as error:
                if _is_unreachable(error):
                    raise
                reason = _first_line(error.orig)
                raise self.fail(f"{what}: {reason}") from None

    def worker_columns(self, host: HostSchema) -> None:
        t = self.mapping.tasks
        types = self.columns("tasks", t.table, t.schema)
        expected = {
            "reminder_sent_at": InstantDue().stored_type,
            "reminder_due_at": host.tasks.due_time.stored_type,
        }
        for name, wanted in expected.items():
            found = types.get(name)
            if found is None:
                raise DatabaseNotReady(
                    f"{t.table}.{name} is missing: run `reminders migrate`"
                    + (f" with {self.mapping.where}" if self.mapping.source else "")
                )
            if not _same_kind(found, wanted, self.postgres):
                raise DatabaseNotReady(
                    f"{t.table}.{name} is {_type_name(found)} but {t.table}.{t.due} is "
                    f"{host.tasks.due_time.kind}: run `reminders migrate`"
                )


def _same_kind(found: TypeEngine[Any], wanted: TypeEngine[Any], postgres: bool) -> bool:
    if isinstance(wanted, Date) and not isinstance(wanted, DateTime):
        return isinstance(found, Date) and not isinstance(found, DateTime)
    if not isinstance(found, DateTime):
        return False
    wanted_zone = isinstance(wanted, UTCDateTime) or getattr(wanted, "timezone", False)
    return not postgres or bool(found.timezone) == bool(wanted_zone)


def _type_name(kind: TypeEngine[Any]) -> str:
    try:
        return str(kind).lower()
    except Exception:  # a reflected type SQLAlchemy cannot print
        return type(kind).__name__.lower()


def _first_line(error: BaseException | None) -> str:
    lines = str(error or "").strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _is_unreachable(error: DBAPIError) -> bool:
    return bool(error.connection_invalidated) or type(error).__name__ == "OperationalError"
