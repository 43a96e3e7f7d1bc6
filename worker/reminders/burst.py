"""The burst rule at sending: the reminders a user still has queued, to count those one quiet
window held.

When a quiet window ends, its held reminders come back to the relay at once, but not in one
batch: several relays, or several rounds of one, claim them. So the re-check counts them
from the outbox itself: the recipient's rows still waiting or claimed (by any relay), by the
partial index ``ix_outbox_recipient``, whose moments fell in the window. A row deferred by
the window waits at its end; one claimed late was never deferred, and one claimed by another
relay waits at its lease's end: counting by moment takes them all. A reminder to a task's
owner names no recipient: those are found by the owner's tasks, through the outbox's
subject index.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session

from outbox.table import ACTIVE, OutboxRow
from worker.reminders.digest_slots import DIGEST_KIND
from worker.reminders.schema import TaskColumns


class Live(NamedTuple):
    """A reminder row still waiting or claimed: the attributes of a `Claim` its moment needs."""

    id: int
    key: str
    kind: str
    subject_id: int
    subject_at: datetime | None
    recipient_id: int | None
    offset_seconds: int | None


def live_reminders(
    session: Session, tasks: TaskColumns, user_id: int, besides: Collection[int]
) -> list[Live]:
    """The reminder rows to ``user_id`` still waiting or claimed, other than ``besides``
    (the re-check's own): those naming the user as recipient, and those to the owner (no
    recipient) of the user's tasks, by the outbox's subject index."""
    o = OutboxRow
    columns = (
        o.id,
        o.idempotency_key,
        o.kind,
        o.subject_id,
        o.subject_at,
        o.recipient_id,
        o.offset_seconds,
    )
    live = (o.status.in_(ACTIVE), o.kind != DIGEST_KIND)
    owned = select(tasks.id).where(tasks.owner_id == user_id)
    listed = select(*columns).where(o.recipient_id == user_id, *live)
    own = select(*columns).where(o.recipient_id.is_(None), o.subject_id.in_(owned), *live)
    skip = set(besides)
    found = session.execute(union_all(listed, own))
    return sorted(Live(*row) for row in found if row.id not in skip)


__all__ = ["Live", "live_reminders"]
