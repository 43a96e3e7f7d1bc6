"""The SQL that decides who is due for a reminder: every query of the scan, in one place.

A task is due for a reminder when it is open, dated within (now, now + lookahead], owned
by a user who wants notifications, and not yet reminded for the due date it has now.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
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

from outbox.enqueue import NewRows, cancel_selected, insert_selected, superseded_ids
from outbox.types import UTCDateTime, at, instant
from worker.reminders.keys import REMINDER_KIND, reminder_key_sql
from worker.reminders.schema import (
    TASKS,
    USERS,
    ScanHeartbeat,
    Task,
    TaskColumns,
    UserColumns,
    awaiting_reminder,
    owner_wants_reminders,
)

SUPERSEDED = "superseded: the due date moved"


#: The scan's parameters, bound by name: its statements are built once, at import, and
#: each batch only binds values (building and caching the batch statement took most of a
#: no-op scan). ``now`` and ``until`` bound the due window (now, now + lookahead].
_NOW = bindparam("now", type_=UTCDateTime())
_UNTIL = bindparam("until", type_=UTCDateTime())
_LIMIT = bindparam("limit", type_=Integer())


def due_within(tasks: TaskColumns, after: Any, until: Any) -> ColumnElement[bool]:
    """Tasks `awaiting_reminder` whose due date lies in (after, until]."""
    due = instant(tasks.due_date)
    return and_(awaiting_reminder(tasks), due > instant(after), due <= instant(until))


def due_ids(tasks: TaskColumns, users: UserColumns) -> ScalarSelect[int]:
    """Up to ``limit`` due tasks, earliest first, locked; those another scanner holds skipped."""
    return (
        select(tasks.id)
        .join(users.table, users.id == tasks.owner_id)
        .where(due_within(tasks, _NOW, _UNTIL), owner_wants_reminders(users))
        .order_by(tasks.due_date)
        .limit(_LIMIT)
        .with_for_update(of=tasks.table, skip_locked=True)
        .scalar_subquery()
    )


def _window(now: datetime, lookahead: timedelta, limit: int) -> dict[str, Any]:
    """The values of one batch's parameters."""
    return {"now": now, "until": now + lookahead, "limit": limit}


def claim_due_tasks(
    session: Session, now: datetime, lookahead: timedelta, limit: int
) -> Sequence[Row[int, datetime | None]]:
    """SQLite: mark up to ``limit`` due tasks as reminded for their due date; return (id,
    due date). PostgreSQL does this inside `queue_due_reminders`.

    SQLite runs the batch under its single writer lock, which keeps scanners apart.
    """
    return session.connection().execute(_MARK, _window(now, lookahead, limit)).all()


_MARK = (
    update(Task)
    .where(Task.id.in_(due_ids(TASKS, USERS)))
    .values(reminder_sent_at=_NOW, reminder_due_at=Task.due_date)
    .returning(Task.id, Task.due_date)
)


def queue_due_reminders(
    session: Session, now: datetime, lookahead: timedelta, limit: int
) -> tuple[int, int, int]:
    """PostgreSQL: `claim_due_tasks`, `insert_reminders` and `cancel_superseded` for one
    batch in one statement (`_queue_statement`), the keys built in SQL: no row goes
    through Python. Returns (tasks marked, rows now pending, rows superseded).
    """
    found = session.connection().execute(_QUEUE, _window(now, lookahead, limit)).one()
    return int(found[0]), int(found[1]), int(found[2])


def _queue_statement() -> Select[int, int, int]:
    """The batch statement: mark the due tasks, insert their rows, cancel superseded ones.

    All parts of the statement see the rows as they were before it: ``stale`` (each
    marked task's waiting rows under another key) cannot include the rows ``queued``
    inserts or re-arms.
    """
    key = reminder_key_sql(Task.id, Task.due_date)
    stale = superseded_ids(Task.id, key, kind=REMINDER_KIND)
    marked = (
        update(Task)
        .where(Task.id == any_(func.array(due_ids(TASKS, USERS))))
        .values(reminder_sent_at=_NOW, reminder_due_at=Task.due_date)
        .returning(Task.id, Task.due_date, key.label("key"), func.array(stale).label("stale"))
        .cte("marked")
    )
    rows = NewRows(
        key=marked.c.key,
        kind=literal(REMINDER_KIND),
        subject_id=marked.c.id,
        subject_at=marked.c.due_date,
        available_at=_NOW,
    )
    queued = insert_selected(rows, _NOW, dialect="postgresql").cte("queued")
    stale_ids = select(func.unnest(marked.c.stale)).scalar_subquery()
    superseded = cancel_selected(stale_ids, kind=REMINDER_KIND, reason=SUPERSEDED, now=_NOW).cte(
        "superseded"
    )
    count = [
        select(func.count()).select_from(cte).scalar_subquery()
        for cte in (marked, queued, superseded)
    ]
    return select(*count)


def forget_reminder(session: Session, task_id: int, due_date: datetime) -> None:
    """Let the scan consider the task again for ``due_date``: its reminder was cancelled.

    Without this, a task completed and then reopened (or an owner who opted out and back
    in, or a due date moved away and back) would look reminded for a date it never was.
    """
    stmt = (
        update(Task)
        .where(Task.id == task_id, instant(Task.reminder_due_at) == at(due_date))
        .values(reminder_due_at=None)
    )
    session.execute(stmt, execution_options={"synchronize_session": False})


def record_scan(
    session: Session, at: datetime, queued: int, marked: int, duration_ms: float
) -> None:
    """Remember when the last scan ran and what it did (one row, last writer wins)."""
    values = {"scanned_at": at, "queued": queued, "marked": marked, "duration_ms": duration_ms}
    upsert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
    stmt = upsert(ScanHeartbeat).values(id=1, **values)
    session.execute(stmt.on_conflict_do_update(index_elements=[ScanHeartbeat.id], set_=values))


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


_QUEUE = _queue_statement()
