"""The statements that decide who is due for a reminder and queue it: one set per dialect.

A task is due for a reminder when it is `awaiting_reminder` (open, dated, not yet reminded for
the due date it has now), due within (now, now + lookahead], and its owner exists, wants
reminders and, on the e-mail channel, has an address (the others are counted by
`worker.reminders.unremindable`).
`due_queries` picks the set for a dialect once, at bootstrap: on PostgreSQL a batch is one
statement; SQLite, which has no INSERT or UPDATE inside WITH, runs the same steps one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    ColumnElement,
    Integer,
    ScalarSelect,
    Select,
    and_,
    any_,
    bindparam,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, ReturningUpdate

from outbox.enqueue import (
    NewMessage,
    NewRows,
    ValuesEnqueue,
    cancel_selected,
    insert_selected,
    superseded_ids,
)
from outbox.types import UTCDateTime, instant
from worker.reminders.host import REFERENCE_SCHEMA, HostSchema
from worker.reminders.keys import REMINDER_KIND, reminder_key, reminder_key_sql
from worker.reminders.schema import (
    ScanHeartbeat,
    TaskColumns,
    UserColumns,
    awaiting_reminder,
    due_instant,
    owner_has_address,
    owner_wants_reminders,
)

SUPERSEDED = "superseded: the due date moved"

#: The scan's parameters, bound by name: its statements are built once, at bootstrap, and
#: each batch only binds values (building and caching the batch statement anew would cost
#: more than the rest of a no-op scan). ``now`` and ``until`` bound the due window
#: (now, now + lookahead].
_NOW = bindparam("now", type_=UTCDateTime())
_UNTIL = bindparam("until", type_=UTCDateTime())
_LIMIT = bindparam("limit", type_=Integer())


def due_within(
    tasks: TaskColumns, users: UserColumns, after: Any, until: Any
) -> ColumnElement[bool]:
    """Tasks `awaiting_reminder` whose due moment lies in (after, until]: first a range on
    the due column (the partial index's), then, where that is wider, the exact moment."""
    due_time = tasks.due_time
    window = and_(awaiting_reminder(tasks), due_time.window(tasks.due, after, until))
    if due_time.exact:
        return window
    moment = due_instant(tasks, users)
    return and_(window, moment > instant(after), moment <= instant(until))


def due_ids(
    tasks: TaskColumns, users: UserColumns, *, needs_address: bool = False
) -> ScalarSelect[int]:
    """Up to ``limit`` due tasks, earliest first, locked; those another scanner holds skipped.

    ``needs_address``: the channel sends to the owner's e-mail address, so a task whose owner
    has none waits (counted by `worker.reminders.unremindable`) until the owner has one.
    """
    wanted = [owner_wants_reminders(users)]
    if needs_address:
        wanted.append(owner_has_address(users))
    return (
        select(tasks.id)
        .join(users.table, users.id == tasks.owner_id)
        .where(due_within(tasks, users, _NOW, _UNTIL), *wanted)
        .order_by(tasks.due)
        .limit(_LIMIT)
        .with_for_update(of=tasks.table, skip_locked=True)
        .scalar_subquery()
    )


class Batch(NamedTuple):
    """What one batch did."""

    marked: int  # tasks whose reminder_sent_at was set
    queued: int  # outbox rows now pending that were not before
    superseded: int  # waiting rows cancelled because their task's due date moved


class DueQueries(Protocol):
    """The scan's statements on one dialect, built once."""

    @property
    def parallel(self) -> bool:
        """Whether batches may run on several connections at once."""
        ...

    def queue_batch(
        self, session: Session, now: datetime, lookahead: timedelta, limit: int
    ) -> Batch:
        """Mark up to ``limit`` tasks due in (now, now + lookahead] as reminded for their due
        date and queue their reminders, cancelling the ones they supersede, in the session's
        transaction.
        """
        ...

    def record_scan(
        self,
        session: Session,
        at: datetime,
        queued: int,
        marked: int,
        duration_ms: float,
        *,
        clock_offset_ms: float | None = None,
    ) -> None:
        """Remember when the last scan ran, what it did and how far its host's clock was from
        the database's (one row, last writer wins)."""
        ...


class _RecordsScans:
    """Writes the scan heartbeat through the dialect's own upsert, ``heartbeat``."""

    heartbeat: Insert

    def record_scan(
        self,
        session: Session,
        at: datetime,
        queued: int,
        marked: int,
        duration_ms: float,
        *,
        clock_offset_ms: float | None = None,
    ) -> None:
        """Remember when the last scan ran, what it did and how far its host's clock was from
        the database's (one row, last writer wins)."""
        beat = _beat(at, queued, marked, duration_ms, clock_offset_ms)
        session.connection().execute(self.heartbeat, beat)


@dataclass(frozen=True, eq=False)
class PostgresDueQueries(_RecordsScans):
    """PostgreSQL: a batch is one statement, no row goes through Python; ``SKIP LOCKED``
    keeps batches on several connections (and several scanners) apart.
    """

    batch: Select[int, int, int]
    heartbeat: Insert
    parallel: bool = field(default=True, init=False)

    @classmethod
    def build(
        cls, host: HostSchema = REFERENCE_SCHEMA, *, needs_address: bool = False
    ) -> PostgresDueQueries:
        """The statements for the host's tables."""
        batch = _queue_statement(host.tasks, host.users, needs_address=needs_address)
        return cls(batch, _heartbeat(postgresql.insert))

    def queue_batch(
        self, session: Session, now: datetime, lookahead: timedelta, limit: int
    ) -> Batch:
        """Mark, queue and supersede for one batch in one statement, the keys built in SQL."""
        found = session.connection().execute(self.batch, _window(now, lookahead, limit)).one()
        return Batch(int(found[0]), int(found[1]), int(found[2]))


@dataclass(frozen=True, eq=False)
class SqliteDueQueries(_RecordsScans):
    """SQLite: a batch is three statements from Python (mark, enqueue, supersede), under its
    single writer lock, which keeps scanners apart; one writer, so batches run one at a time.
    """

    mark: ReturningUpdate[int, datetime | None]
    outbox: ValuesEnqueue
    heartbeat: Insert
    parallel: bool = field(default=False, init=False)

    @classmethod
    def build(
        cls, host: HostSchema = REFERENCE_SCHEMA, *, needs_address: bool = False
    ) -> SqliteDueQueries:
        """The statements for the host's tables (on SQLite, due columns hold instants)."""
        tasks, users = host.tasks, host.users
        if tasks.due_time.per_recipient:
            raise ValueError("on SQLite a due column holds instants")
        mark = (
            update(tasks.table)
            .where(tasks.id.in_(due_ids(tasks, users, needs_address=needs_address)))
            .values({tasks.reminder_sent_at: _NOW, tasks.reminder_due_at: tasks.due})
            .returning(tasks.id, tasks.due_time.instant(tasks.due, literal("UTC")))
        )
        return cls(mark, ValuesEnqueue.for_dialect("sqlite"), _heartbeat(sqlite.insert))

    def queue_batch(
        self, session: Session, now: datetime, lookahead: timedelta, limit: int
    ) -> Batch:
        """Mark the batch's tasks, then enqueue their reminders under keys built in Python."""
        tasks = session.connection().execute(self.mark, _window(now, lookahead, limit)).all()
        # The due query only returns dated tasks.
        keys = {task_id: reminder_key(task_id, due) for task_id, due in tasks if due}
        messages = [
            NewMessage(
                keys[task_id],
                REMINDER_KIND,
                task_id,
                due_date,
                available_at=now,
                expires_at=due_date,
            )
            for task_id, due_date in tasks
            if task_id in keys
        ]
        queued = self.outbox.enqueue(session, messages, now)
        superseded = self.outbox.cancel_superseded(
            session, keys, kind=REMINDER_KIND, reason=SUPERSEDED, now=now
        )
        return Batch(len(tasks), queued, superseded)


def due_queries(
    dialect: str, host: HostSchema = REFERENCE_SCHEMA, *, needs_address: bool = False
) -> DueQueries:
    """The query set for the host's tables on ``dialect`` (``postgresql`` or ``sqlite``);
    ``needs_address`` for a channel that sends to the owner's e-mail address."""
    if dialect == "postgresql":
        return PostgresDueQueries.build(host, needs_address=needs_address)
    if dialect == "sqlite":
        return SqliteDueQueries.build(host, needs_address=needs_address)
    raise ValueError(f"no due queries for the {dialect!r} dialect")


def _window(now: datetime, lookahead: timedelta, limit: int) -> dict[str, Any]:
    """The values of one batch's parameters."""
    return {"now": now, "until": now + lookahead, "limit": limit}


def _queue_statement(
    tasks: TaskColumns, users: UserColumns, *, needs_address: bool
) -> Select[int, int, int]:
    """The batch statement: mark the due tasks, insert their rows, cancel superseded ones.

    All parts of the statement see the rows as they were before it: ``stale`` (each
    marked task's waiting rows under another key) cannot include the rows ``queued``
    inserts or re-arms. ``id = ANY(ARRAY(…))`` probes the primary key for the batch; as
    ``id IN (…)`` PostgreSQL plans a hash join over the whole table.
    """
    due_time = tasks.due_time
    if due_time.per_recipient:
        moment = due_instant(tasks, users)
    else:
        moment = due_time.instant(tasks.due, literal("UTC"))
    key = reminder_key_sql(tasks.id, moment)
    stale = superseded_ids(tasks.id, key, kind=REMINDER_KIND)
    ids = due_ids(tasks, users, needs_address=needs_address)
    marking = update(tasks.table).where(tasks.id == any_(func.array(ids)))
    if due_time.per_recipient:
        # UPDATE … FROM the recipient: the moment depends on the recipient's zone.
        marking = marking.where(users.id == tasks.owner_id)
    marked = (
        marking.values({tasks.reminder_sent_at: _NOW, tasks.reminder_due_at: tasks.due})
        .returning(
            tasks.id,
            moment.label("due_at"),
            key.label("key"),
            func.array(stale).label("stale"),
        )
        .cte("marked")
    )
    rows = NewRows(
        key=marked.c.key,
        kind=literal(REMINDER_KIND),
        subject_id=marked.c.id,
        subject_at=marked.c.due_at,
        available_at=_NOW,
        expires_at=marked.c.due_at,  # a reminder of a task already due helps no one
    )
    queued = insert_selected(rows, _NOW, dialect="postgresql").cte("queued")
    stale_ids = select(func.unnest(marked.c.stale)).scalar_subquery()
    cancel = cancel_selected(stale_ids, kind=REMINDER_KIND, reason=SUPERSEDED, now=_NOW)
    superseded = cancel.cte("superseded")
    count = [
        select(func.count()).select_from(cte).scalar_subquery()
        for cte in (marked, queued, superseded)
    ]
    return select(*count)


def _heartbeat(insert: Callable[[type[ScanHeartbeat]], Any]) -> Insert:
    """The heartbeat's upsert: its one row takes the values of the last scan."""
    upsert = insert(ScanHeartbeat)
    columns = ("scanned_at", "queued", "marked", "duration_ms", "clock_offset_ms")
    latest = {name: upsert.excluded[name] for name in columns}
    statement: Insert = upsert.on_conflict_do_update(index_elements=[ScanHeartbeat.id], set_=latest)
    return statement


def _beat(
    at: datetime, queued: int, marked: int, duration_ms: float, clock_offset_ms: float | None
) -> dict[str, Any]:
    """The heartbeat row's values."""
    return {
        "id": 1,
        "scanned_at": at,
        "queued": queued,
        "marked": marked,
        "duration_ms": duration_ms,
        "clock_offset_ms": clock_offset_ms,
    }


def forget_reminder(session: Session, tasks: TaskColumns, task_id: int, marker: Any) -> None:
    """Let the scan consider the task again: a reminder of it was cancelled. ``marker`` is
    the task's ``reminder_due_at`` as read in this transaction (it is cleared only if it
    still holds that: a scan may have marked the task anew since).

    Without this, a task completed and then reopened (or an owner who opted out and back
    in, or a due date moved away and back) would look reminded for a date it never was.
    A scan that considers a task again can never send a reminder twice: its key is taken.
    """
    if marker is None:
        return
    stmt = (
        update(tasks.table)
        .where(tasks.id == task_id, tasks.due_time.same(tasks.reminder_due_at, marker))
        .values({tasks.reminder_due_at: None})
    )
    session.connection().execute(stmt)
