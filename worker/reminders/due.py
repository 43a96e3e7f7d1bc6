"""The SQL that decides who is due for a reminder: every query of the scan, in one place.

A task is due for a reminder when it is open, dated within (now, now + lookahead], owned
by a user who wants notifications, and not yet reminded for the due date it has now.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    ScalarSelect,
    Select,
    SQLColumnExpression,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from outbox.table import WAITING, OutboxRow, Status
from outbox.types import UTCDateTime, at, instant
from worker.reminders.schema import ScanHeartbeat, Task, User

REMINDER_KIND = "due_soon"
SUPERSEDED = "superseded: the due date moved"


#: The scan's parameters, bound by name: its statements are built once, at import, and
#: each batch only binds values (building and caching the batch statement took most of a
#: no-op scan). ``now`` and ``until`` bound the due window (now, now + lookahead].
_NOW = bindparam("now", type_=UTCDateTime())
_UNTIL = bindparam("until", type_=UTCDateTime())
_LIMIT = bindparam("limit", type_=Integer())


def awaiting_reminder() -> ColumnElement[bool]:
    """Open tasks, due in (now, until], not yet reminded for this due date.

    The first three terms repeat the partial index's predicate so that the planner uses it.
    """
    due = instant(Task.due_date)
    return and_(
        Task.completed_at.is_(None),
        Task.due_date.is_not(None),
        Task.reminder_due_at.is_distinct_from(Task.due_date),  # a copy: same text, same value
        due > instant(_NOW),
        due <= instant(_UNTIL),
    )


def _due_ids() -> ScalarSelect[int]:
    """Up to ``limit`` due tasks, earliest first, locked; those another scanner holds skipped."""
    return (
        select(Task.id)
        .join(User, User.id == Task.owner_id)
        .where(awaiting_reminder(), User.notifications_enabled.is_(True))
        .order_by(Task.due_date)
        .limit(_LIMIT)
        .with_for_update(of=Task, skip_locked=True)
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
    .where(Task.id.in_(_due_ids()))
    .values(reminder_sent_at=_NOW, reminder_due_at=Task.due_date)
    .returning(Task.id, Task.due_date)
)


def reminder_key_sql(
    task_id: SQLColumnExpression[int], due_date: SQLColumnExpression[Any]
) -> ColumnElement[str]:
    """`reminder_key` in PostgreSQL: ``due_soon-YYYYMMDDTHHMMSS[.ffffff]Z-<id>``.

    UTC whatever the session's time zone; microseconds only when there are some; the year
    unpadded (``FM``), as ``strftime("%Y")`` writes it.
    """
    utc = func.timezone("UTC", due_date)
    micro = func.to_char(utc, "US")
    return (
        literal(f"{REMINDER_KIND}-")
        + func.to_char(utc, 'FMYYYYMMDD"T"HH24MISS')
        + case((micro == "000000", ""), else_="." + micro)
        + "Z-"
        + cast(task_id, String)
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
    # Per task, by ix_outbox_subject_id: a join with the batch could be planned as a
    # nested loop over every waiting row (the batch has no statistics).
    stale = (
        select(OutboxRow.id)
        .where(OutboxRow.subject_id == Task.id, OutboxRow.idempotency_key != key, _waiting())
        .correlate(Task)
        .scalar_subquery()
    )
    marked = (
        update(Task)
        .where(Task.id == any_(func.array(_due_ids())))
        .values(reminder_sent_at=_NOW, reminder_due_at=Task.due_date)
        .returning(Task.id, Task.due_date, key.label("key"), func.array(stale).label("stale"))
        .cte("marked")
    )
    row = {
        "idempotency_key": marked.c.key,
        "kind": literal(REMINDER_KIND),
        "subject_id": marked.c.id,
        "subject_at": marked.c.due_date,
        "status": literal(Status.PENDING.value),
        "attempts": literal(0),
        "available_at": _NOW,
        "lease_token": literal(0),
        "created_at": _NOW,
        "updated_at": _NOW,
        "replay_count": literal(0),
    }
    # In key order: consecutive rows land next to each other in the key's unique index.
    rows = select(*row.values()).order_by(marked.c.key)
    insert = postgresql.insert(OutboxRow).from_select(list(row), rows)
    queued = insert.on_conflict_do_update(**_rearm(_NOW)).returning(OutboxRow.id).cte("queued")
    stale_ids = select(func.unnest(marked.c.stale)).scalar_subquery()
    superseded = (
        update(OutboxRow)
        .where(OutboxRow.id == any_(func.array(stale_ids)), _waiting())  # still waiting?
        .values(status=Status.CANCELLED, last_error=SUPERSEDED, updated_at=_NOW)
        .returning(OutboxRow.id)
        .cte("superseded")
    )
    count = [
        select(func.count()).select_from(cte).scalar_subquery()
        for cte in (marked, queued, superseded)
    ]
    return select(*count)


def insert_reminders(session: Session, rows: list[dict[str, Any]]) -> int:
    """SQLite: insert outbox rows; a key already present is left alone unless cancelled.

    A cancelled row is armed again (its due date came back); a delivered, dead or pending
    one stays as it is, so a key can never be reminded twice. Returns rows now pending.
    """
    if not rows:
        return 0
    many = sqlite.insert(OutboxRow).on_conflict_do_update(**_rearm(rows[0]["available_at"]))
    return len(session.execute(many.returning(OutboxRow.id), rows).all())


def _rearm(now: Any) -> dict[str, Any]:
    """ON CONFLICT on the key: only a cancelled row is armed again, as of ``now``."""
    return {
        "index_elements": [OutboxRow.idempotency_key],
        "where": OutboxRow.status == Status.CANCELLED,
        "set_": {
            "status": Status.PENDING,
            "attempts": 0,
            "available_at": now,
            "updated_at": now,
            "last_error": null(),  # None here would make SQLAlchemy insert row by row
        },
    }


def cancel_superseded(session: Session, now: datetime, queued: dict[int, str]) -> int:
    """SQLite: cancel the waiting reminders of these tasks other than the ones just queued.

    ``queued`` maps each task of the batch to the key it was just reminded under; any other
    waiting row of that task is for a due date it no longer has.
    """
    stmt = (
        update(OutboxRow)
        .where(
            OutboxRow.subject_id.in_(_json_values(list(queued))),
            OutboxRow.idempotency_key.not_in(_json_values(list(queued.values()))),
            _waiting(),
        )
        .values(status=Status.CANCELLED, last_error=SUPERSEDED, updated_at=now)
    )
    result = session.execute(stmt, execution_options={"synchronize_session": False})
    return int(result.rowcount)  # type: ignore[attr-defined]


def _waiting() -> ColumnElement[bool]:
    """A reminder still waiting to be sent.

    Spelt ``status NOT IN`` the other statuses, so that it does not imply ix_outbox_due's
    predicate: read through that index, every waiting row of every task is checked against
    the batch, a cost that grows with the backlog (with a generic plan, once psycopg has
    prepared the statement: 5.4 s for a batch of 5,000 against 40,000 waiting rows, 0.2 s
    spelt this way); by ix_outbox_subject_id it is one probe per task.
    """
    others = [status for status in Status if status not in WAITING]
    return and_(OutboxRow.kind == REMINDER_KIND, OutboxRow.status.not_in(others))


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


def _json_values(values: list[Any]) -> ScalarSelect[Any]:
    """SQLite: ``values`` as one parameter however many there are (its variables are few)."""
    listed: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(json.dumps(values))
    )
    return listed.scalar_subquery()


_QUEUE = _queue_statement()
