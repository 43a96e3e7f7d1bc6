"""Tasks that will not be reminded because of their owner row: missing, or without an address.

The due query takes only tasks whose owner row exists and, on the e-mail channel, has an
address (`worker.reminders.due`): a task whose owner row is gone (possible where the host's
schema has no foreign key) or whose owner's address is NULL or blank stays unreminded until
that is fixed (a webhook's document carries the owner's id and needs no address). These are
counted where the scan looks: tasks awaiting a reminder and due within the lookahead,
(now, now + lookahead]. A task that falls due unreminded leaves the count (no reminder is sent
for a task already due), so the count says what can still be fixed. An owner who turned
reminders off is not counted: that task is not reminded by choice.

One set-based statement over `TaskColumns` and `UserColumns`, whatever tables they map; it
starts from the tasks `awaiting_reminder` in the window, so the planner reads that range of a
partial index of open tasks, never the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    false,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy.orm import Session

from outbox.types import UTCDateTime
from worker.reminders.due import due_within
from worker.reminders.host import REFERENCE_SCHEMA, HostSchema
from worker.reminders.schema import (
    TaskColumns,
    UserColumns,
    owner_has_address,
    owner_wants_reminders,
)

_NOW = bindparam("now", type_=UTCDateTime())
_UNTIL = bindparam("until", type_=UTCDateTime())
_LIMIT = bindparam("limit", type_=Integer())


@dataclass(frozen=True)
class Unremindable:
    """How many tasks due within the lookahead cannot be reminded, by reason."""

    missing_owner: int  # no row for the task's owner
    no_address: int  # the owner wants reminders but has a NULL or blank address

    @property
    def total(self) -> int:
        """All of them."""
        return self.missing_owner + self.no_address


def _reasons(
    users: UserColumns, needs_address: bool
) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The two conditions, on a task outer-joined to its owner; without an e-mail channel an
    owner needs no address (a webhook's document carries the owner's id)."""
    missing = users.id.is_(None)
    if not needs_address:
        return missing, false()
    no_address = not_(owner_has_address(users))
    return missing, and_(users.id.is_not(None), owner_wants_reminders(users), no_address)


@cache
def counting_query(
    tasks: TaskColumns, users: UserColumns, needs_address: bool = True
) -> Select[int, int]:
    """The counts by reason of the tasks in (``now``, ``until``] that cannot be reminded."""
    missing, no_address = _reasons(users, needs_address)
    return (
        select(func.count().filter(missing), func.count().filter(no_address))
        .select_from(tasks.table.outerjoin(users.table, users.id == tasks.owner_id))
        .where(due_within(tasks, users, _NOW, _UNTIL), or_(missing, no_address))
    )


@cache
def listing_query(
    tasks: TaskColumns, users: UserColumns, needs_address: bool = True
) -> Select[int]:
    """The ids of up to ``limit`` of those tasks, the first due first."""
    missing, no_address = _reasons(users, needs_address)
    return (
        select(tasks.id)
        .select_from(tasks.table.outerjoin(users.table, users.id == tasks.owner_id))
        .where(due_within(tasks, users, _NOW, _UNTIL), or_(missing, no_address))
        .order_by(tasks.due, tasks.id)
        .limit(_LIMIT)
    )


def count_unremindable(
    session: Session,
    now: datetime,
    lookahead: timedelta,
    *,
    host: HostSchema = REFERENCE_SCHEMA,
    needs_address: bool = True,
) -> Unremindable:
    """The tasks due in (now, now + lookahead] that cannot be reminded, counted by reason;
    ``needs_address``: the channel sends to the owner's e-mail address."""
    window = {"now": now, "until": now + lookahead}
    query = counting_query(host.tasks, host.users, needs_address)
    missing, no_address = session.execute(query, window).one()
    return Unremindable(int(missing), int(no_address))


def some_unremindable(
    session: Session,
    now: datetime,
    lookahead: timedelta,
    *,
    limit: int,
    host: HostSchema = REFERENCE_SCHEMA,
    needs_address: bool = True,
) -> list[int]:
    """The ids of up to ``limit`` of them, the first due first (for a log line)."""
    values = {"now": now, "until": now + lookahead, "limit": limit}
    query = listing_query(host.tasks, host.users, needs_address)
    return [int(task_id) for task_id in session.execute(query, values).scalars()]
