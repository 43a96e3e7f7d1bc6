"""The reference schema the host application owns, the worker's columns, and the rules on them.

The ORM classes are the reference schema's tables, for the demo and the tests that write
into them as a host would. The rules (`task_open`, `owner_wants_reminders`,
`owner_has_address`, `awaiting_reminder`) are SQL expressions over the columns `TaskColumns`
and `UserColumns` name, whatever tables a mapping gives them (`worker.reminders.host`),
written once: the partial index, the scan's due query and the relay's re-check before each
send all use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    ForeignKey,
    FromClause,
    Index,
    MetaData,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.functions import FunctionElement

from outbox.table import NAMING
from outbox.types import UTCDateTime
from worker.reminders.due_time import DueTime


class Base(DeclarativeBase):
    """Declarative base of the host application's tables as the worker sees them."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A task owner; the only source of a reminder's recipient and time zone."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    email: Mapped[str] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text, server_default="UTC")
    notifications_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("TRUE"))


class Task(Base):
    """A task; the worker writes only ``reminder_sent_at`` and ``reminder_due_at``."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", name="tasks_owner_id_fkey")
    )
    title: Mapped[str] = mapped_column(Text)
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminder_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The due date the last reminder was queued for: a moved due date differs from it,
    # which re-arms the reminder without the host application doing anything.
    reminder_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_tasks_owner_id", "owner_id"),)


class ScanHeartbeat(Base):
    """The last scan's time, counts and clock offset, the last failed scan's time and reason,
    and the count of tasks that cannot be reminded (one row), for ``status`` and ``health``."""

    __tablename__ = "reminder_scan_heartbeat"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, default=1)
    scanned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    queued: Mapped[int]
    marked: Mapped[int]
    duration_ms: Mapped[float]
    # How far the database's clock was ahead of the scanning host's (None: not measured).
    clock_offset_ms: Mapped[float | None]
    # When the last failed scan started, and why it failed (None: none failed since the
    # row was written); the scan is failing while this is later than ``scanned_at``.
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failure: Mapped[str | None] = mapped_column(Text)
    # How many tasks the last scan found that cannot be reminded (None: not counted yet);
    # the process that changes it logs the change, so that it is logged once.
    unremindable: Mapped[int | None]
    # Every reminder whose moment is at or before this is planned (None: nothing yet): the
    # next scan plans the moments after it.
    planned_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


@dataclass(frozen=True, eq=False)
class TaskColumns:
    """Where the reminder domain reads and writes a task: the table and its columns.

    ``due`` is the host's column as it is (`due_time` says what it holds); ``open`` is the
    mapping's completion rule as an SQL expression on the task row.
    """

    table: Table
    id: ColumnElement[int]
    owner_id: ColumnElement[int]
    title: ColumnElement[str]
    due: ColumnElement[Any]
    due_time: DueTime
    open: ColumnElement[bool]
    reminder_sent_at: ColumnElement[datetime | None]
    # The due value the last reminder was queued for: a moved due date differs from it,
    # which re-arms the reminder without the host application doing anything.
    reminder_due_at: ColumnElement[Any]


@dataclass(frozen=True, eq=False)
class UserColumns:
    """Where the reminder domain reads a recipient: a subquery of the host's users table.

    A subquery under names of its own, so that the mapping's completion condition, written
    on the task row without qualifying its columns, can never name one of these.
    """

    table: FromClause
    id: ColumnElement[int]
    email: ColumnElement[str]
    timezone: ColumnElement[str]  # 'UTC' where the mapping names no zone column
    enabled: ColumnElement[bool]  # true where the mapping names no opt-in column
    locale: ColumnElement[str | None]


def task_open(tasks: TaskColumns) -> ColumnElement[bool]:
    """A task still to do: the only kind that is reminded, at the scan and at the send."""
    return tasks.open


def owner_wants_reminders(users: UserColumns) -> ColumnElement[bool]:
    """An owner who has reminders on (false for a missing owner row of an outer join)."""
    return users.enabled.is_(True)


def due_instant(tasks: TaskColumns, users: UserColumns) -> ColumnElement[datetime]:
    """The moment the task is due for this recipient: the instant its reminder is keyed by."""
    return tasks.due_time.instant(tasks.due, users.timezone)


def owner_has_address(users: UserColumns) -> ColumnElement[bool]:
    """An owner with an address to send to: not NULL, not blank."""
    return and_(users.email.is_not(None), func.trim(users.email) != "")


def awaiting_reminder(tasks: TaskColumns) -> ColumnElement[bool]:
    """Open, dated, and not yet reminded for the due date it has now.

    The predicate of the partial index, and the first terms of the due query, so that the
    planner uses the index: the rows outside it can never be due, so a scan costs what is
    still to remind, not the size of the table.
    """
    return and_(
        task_open(tasks),
        tasks.due.is_not(None),
        distinct_from(tasks.reminder_due_at, tasks.due),
    )


def planned_reminder(tasks: TaskColumns) -> ColumnElement[bool]:
    """Open and dated: a task whose reminders the scan plans as their moments come."""
    return and_(task_open(tasks), tasks.due.is_not(None))


def planned_reminder_index(tasks: TaskColumns) -> Index:
    """The partial index on the due date of the open, dated tasks (added to the table): the
    scan reads the tasks with a reminder moment in its window through it."""
    predicate = planned_reminder(tasks)
    name = f"ix_{tasks.table.name}_open_due"
    return Index(name, tasks.due, postgresql_where=predicate, sqlite_where=predicate)


def awaiting_reminder_index(tasks: TaskColumns) -> Index:
    """The partial index on the due date of the tasks `awaiting_reminder` (added to the table)."""
    predicate = awaiting_reminder(tasks)
    name = f"ix_{tasks.table.name}_awaiting_reminder"
    return Index(name, tasks.due, postgresql_where=predicate, sqlite_where=predicate)


def distinct_from(left: ColumnElement[Any], right: ColumnElement[Any]) -> ColumnElement[bool]:
    """``left IS DISTINCT FROM right``; SQLite spells it ``IS NOT``.

    SQLAlchemy's own `is_distinct_from` renders the same, but on SQLite it drops the
    compiler's options, so that in DDL the columns come out qualified (``tasks.due_date``)
    and the index would read differently from the one the migration created.
    """
    return _DistinctFrom(left, right).as_comparison(1, 2)


class _DistinctFrom(FunctionElement[bool]):
    type = Boolean()
    name = "distinct_from"
    inherit_cache = True


@compiles(_DistinctFrom)
def _distinct_from(element: _DistinctFrom, compiler: SQLCompiler, **kw: Any) -> str:
    left, right = element.clauses.clauses
    return compiler.process(left.is_distinct_from(right), **kw)


@compiles(_DistinctFrom, "sqlite")
def _distinct_from_sqlite(element: _DistinctFrom, compiler: SQLCompiler, **kw: Any) -> str:
    left, right = (compiler.process(clause, **kw) for clause in element.clauses.clauses)
    return f"{left} IS NOT {right}"


def among(column: ColumnElement[int], name: str) -> ColumnElement[bool]:
    """``column`` is one of the ids given as the list parameter ``name``.

    PostgreSQL gets one array parameter, ``= ANY(:name::BIGINT[])``: the statement reads the
    same for any number of ids, so it is prepared once, and nothing is rendered per id when
    it runs, which an expanding ``IN`` does (a placeholder and a cast per id, a new text per
    length). Elsewhere: ``IN (…)``.
    """
    return _Among(column, bindparam(name, expanding=True)).as_comparison(1, 2)


class _Among(FunctionElement[bool]):
    type = Boolean()
    name = "among"
    inherit_cache = True


@compiles(_Among)
def _among(element: _Among, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = element.clauses.clauses
    return compiler.process(column.in_(ids), **kw)


@compiles(_Among, "postgresql")
def _among_postgresql(element: _Among, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = element.clauses.clauses
    assert isinstance(ids, BindParameter)
    array = bindparam(ids.key, type_=ARRAY(BigInteger()))
    return compiler.process(column == any_(array), **kw)
