"""The relay's re-check before each send: the task and its owner as they are now.

A claimed reminder is sent only if its task still exists, is open, is due when the reminder
says, and its owner still wants reminders. "Open" and "wants reminders" are the rules the
due query uses (`worker.reminders.schema`), evaluated by the database, not rewritten here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from outbox.channels.base import Message
from outbox.relay import Cancel, Prepare
from outbox.store import Claim
from worker.reminders.due import forget_reminder
from worker.reminders.render import OwnerFacts, ReminderRenderer, TaskFacts
from worker.reminders.schema import (
    TASKS,
    USERS,
    TaskColumns,
    UserColumns,
    owner_wants_reminders,
    task_open,
)


def recheck_query(
    tasks: TaskColumns, users: UserColumns
) -> Select[int, str, datetime | None, bool, int, str, str | None, bool]:
    """The `TaskFacts` and `OwnerFacts` of the tasks whose ids are ``ids`` (no owner row:
    NULLs), the rules' verdicts as boolean columns.
    """
    return (
        select(
            tasks.id,
            tasks.title,
            tasks.due_date,
            task_open(tasks).label("task_open"),
            users.id,
            users.email,
            users.timezone,
            owner_wants_reminders(users).label("wants_reminders"),
        )
        .outerjoin(users.table, users.id == tasks.owner_id)
        .where(tasks.id.in_(bindparam("ids", expanding=True)))
    )


# Plain columns, not ORM objects: the re-check runs for every message the relay sends.
_RECHECK = recheck_query(TASKS, USERS)


def reminder_preparer(renderer: ReminderRenderer) -> Prepare:
    """The relay's re-check: cancel unless the task is still open, due then, owner opted in."""

    def prepare(session: Session, claims: Sequence[Claim]) -> dict[int, Message | Cancel]:
        ids = sorted({claim.subject_id for claim in claims})
        current: dict[int, tuple[TaskFacts, OwnerFacts | None]] = {}
        for row in session.connection().execute(_RECHECK, {"ids": ids}):
            owner = None if row[4] is None else OwnerFacts(*row[4:])  # no owner row joined
            current[row[0]] = (TaskFacts(*row[:4]), owner)
        return {claim.id: _recheck(session, renderer, claim, current) for claim in claims}

    return prepare


def _recheck(
    session: Session,
    renderer: ReminderRenderer,
    claim: Claim,
    current: Mapping[int, tuple[TaskFacts, OwnerFacts | None]],
) -> Message | Cancel:
    if claim.subject_id not in current:
        return Cancel("task deleted")
    task, owner = current[claim.subject_id]
    if owner is None:  # possible where the host's schema has no foreign key
        return Cancel("owner deleted")
    reason = None
    if not task.open:
        reason = "task completed"
    elif task.due_date != claim.subject_at:
        reason = "due date moved"
    elif not owner.wants_reminders:
        reason = "owner turned notifications off"
    if reason is None:
        return renderer.render(claim.key, task, owner)
    if claim.subject_at is not None:
        forget_reminder(session, task.id, claim.subject_at)
    return Cancel(reason)
