"""The relay's re-check before each send: the task and its owner as they are now.

A claimed reminder is sent only if its task still exists, is open, is due when the reminder
says, its owner still wants reminders, and has not unsubscribed from its kind (the worker's
preferences, `worker.reminders.preference_store.screens`, read once per batch; they also give
the owner's own channel URL). "Open" and "wants reminders" are the rules the due query uses
(`worker.reminders.schema`), evaluated by the database, not rewritten here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from outbox.channels.base import Message
from outbox.relay import Cancel, Prepare
from outbox.store import Claim
from worker.reminders import preference_store
from worker.reminders.due import forget_reminder
from worker.reminders.host import REFERENCE_SCHEMA, HostSchema
from worker.reminders.render import OwnerFacts, ReminderRenderer, TaskFacts
from worker.reminders.schema import (
    TaskColumns,
    due_instant,
    owner_wants_reminders,
    task_open,
)

#: Where a row of `recheck_query` splits: the task's facts, its marker, the owner's facts.
_MARKER, _OWNER = 4, 5


def recheck_query(host: HostSchema) -> Select[Any]:
    """The `TaskFacts`, the ``reminder_due_at`` and the `OwnerFacts` of the tasks whose ids
    are ``ids`` (no owner row: NULLs), the rules' verdicts as boolean columns.
    """
    tasks, users = host.tasks, host.users
    return (
        select(
            tasks.id,
            tasks.title,
            due_instant(tasks, users).label("due_at"),
            task_open(tasks).label("task_open"),
            tasks.reminder_due_at,
            users.id,
            users.email,
            users.timezone,
            owner_wants_reminders(users).label("wants_reminders"),
            users.locale,
        )
        .outerjoin(users.table, users.id == tasks.owner_id)
        .where(tasks.id.in_(bindparam("ids", expanding=True)))
    )


class _Current(NamedTuple):
    """A claimed reminder's task and owner as they are now."""

    task: TaskFacts
    marker: Any  # the task's reminder_due_at
    owner: OwnerFacts | None


def reminder_preparer(renderer: ReminderRenderer, host: HostSchema = REFERENCE_SCHEMA) -> Prepare:
    """The relay's re-check: cancel unless the task is still open, due then, owner opted in."""
    # Plain columns, not ORM objects: the re-check runs for every message the relay sends.
    query = recheck_query(host)

    def prepare(session: Session, claims: Sequence[Claim]) -> dict[int, Message | Cancel]:
        ids = sorted({claim.subject_id for claim in claims})
        current: dict[int, _Current] = {}
        for row in session.connection().execute(query, {"ids": ids}):
            # No owner row joined: NULLs.
            owner = None if row[_OWNER] is None else OwnerFacts(*row[_OWNER:])
            current[row[0]] = _Current(TaskFacts(*row[:_MARKER]), row[_MARKER], owner)
        owners = (facts.owner.id for facts in current.values() if facts.owner is not None)
        wanted = preference_store.screens(session, owners)
        return {
            claim.id: _recheck(session, renderer, host.tasks, claim, current, wanted=wanted)
            for claim in claims
        }

    return prepare


def _recheck(
    session: Session,
    renderer: ReminderRenderer,
    tasks: TaskColumns,
    claim: Claim,
    current: Mapping[int, _Current],
    *,
    wanted: preference_store.Screens,
) -> Message | Cancel:
    if claim.subject_id not in current:
        return Cancel("task deleted")
    task, marker, owner = current[claim.subject_id]
    if owner is None:  # possible where the host's schema has no foreign key
        return Cancel("owner deleted")
    screen = wanted.screen(owner.id, claim.kind)
    reason = None
    if not task.open:
        reason = "task completed"
    elif task.due_date != claim.subject_at:
        reason = "due date moved"
    elif not owner.wants_reminders:
        reason = "owner turned notifications off"
    elif screen.refusal is not None:
        reason = screen.refusal
    if reason is None:
        return screen.addressed(renderer.render(claim.key, task, owner))
    forget_reminder(session, tasks, task.id, marker)
    return Cancel(reason)
