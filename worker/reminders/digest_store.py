"""Digest rows and their members: one outbox row per (user, digest slot), and the reminders
it carries.

A digest user's reminder is not sent alone: the relay's re-check merges it into the digest
of its slot (`merge_into_digest`) and ends its own row cancelled, reason ``in digest <key>``,
both in the re-check's transaction. So a crash either leaves the reminder as it was (to be
claimed and merged again) or has it in exactly one digest: never both alone and in a digest.

The digest is an ordinary outbox row (kind `DIGEST_KIND`, key `digest_key`, subject and
recipient the user, available at the slot, no expiry), with its retries and leases. Its
members are rows of ``reminder_digest_members`` (revision 0008): the member's outbox id
(unique: a reminder is in one digest), the digest's outbox id, and the member's facts as
queued, which its re-check at send reads (`members_of`). A purged digest takes its members
with it (ON DELETE CASCADE).

A member joins a digest that is still waiting (pending, or failed and to be retried), or
one the same re-check holds and has yet to re-check. A digest already claimed by a relay,
sent, dead or expired takes no one more: the member goes to the next slot's digest. On
PostgreSQL the digest row is locked (FOR UPDATE) before the member is linked, and a relay's
claim skips locked rows, so no digest is re-checked while a member joins it; SQLite's single
writer gives the same.

A burst (more than a few reminders released by one quiet window) joins the digest at the
window's end and no other (`join`): when that digest has gone out, the reminder goes alone.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from outbox.enqueue import NewMessage, ValuesEnqueue
from outbox.relay import Cancel
from outbox.store import Claim
from outbox.table import WAITING, OutboxRow
from outbox.types import UTCDateTime
from worker.reminders.digest_slots import DIGEST_KIND, DigestSchedule, digest_key, next_slot
from worker.reminders.schema import Base

#: How many slots a merge looks at before giving up (the relay then retries the reminder):
#: past the first, each later slot's digest is still to come unless replays sent it early.
MAX_SLOTS = 8


class DigestMemberRow(Base):
    """One reminder in one digest, with the facts its re-check and its line need."""

    __tablename__ = "reminder_digest_members"

    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    digest_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey(OutboxRow.id, ondelete="CASCADE"), index=True
    )
    member_key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(50))
    task_id: Mapped[int] = mapped_column(BigInteger)
    subject_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recipient_id: Mapped[int | None] = mapped_column(BigInteger)
    offset_seconds: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


_members = cast(Table, DigestMemberRow.__table__)


class Member(NamedTuple):
    """A digest's member as queued: the attributes of a `Claim` the re-check reads."""

    id: int  # the member's outbox row
    digest_id: int
    key: str
    kind: str
    subject_id: int  # the task
    subject_at: datetime | None
    recipient_id: int | None
    offset_seconds: int | None
    created_at: datetime


class Merged(NamedTuple):
    """The digest a reminder is now in: its outbox id and key."""

    digest_id: int
    key: str


def in_digest(key: str) -> str:
    """The reason a member's own row ends cancelled with."""
    return f"in digest {key}"


class Request(NamedTuple):
    """A reminder to merge: the claim, its recipient, and the first slot it may join."""

    claim: Claim
    user_id: int
    slot: datetime
    schedule: DigestSchedule | None  # None: that slot's digest or none (a burst's)
    zone: ZoneInfo


def merge_into_digest(
    session: Session,
    claim: Claim,
    user_id: int,
    slot: datetime,
    *,
    schedule: DigestSchedule,
    zone: ZoneInfo,
    now: datetime,
    held: Mapping[int, Claim] | None = None,
) -> Cancel:
    """Put the reminder ``claim`` (to ``user_id``) in the user's digest at ``slot``, or the
    next slot that still takes members, in the session's transaction; the answer that ends
    the reminder's own row. ``held``: digest rows this re-check holds and has yet to
    re-check, by id (they take members too). See `merge`."""
    merged = merge(session, claim, user_id, slot, schedule=schedule, zone=zone, now=now, held=held)
    return Cancel(in_digest(merged.key))


def merge(
    session: Session,
    claim: Claim,
    user_id: int,
    slot: datetime,
    *,
    schedule: DigestSchedule,
    zone: ZoneInfo,
    now: datetime,
    held: Mapping[int, Claim] | None = None,
) -> Merged:
    """`merge_into_digest`, returning the digest: `merge_all` of one reminder."""
    request = Request(claim, user_id, slot, schedule, zone)
    return merge_all(session, [request], now=now, held=held)[claim.id]


def merge_all(
    session: Session,
    requests: Sequence[Request],
    *,
    now: datetime,
    held: Mapping[int, Claim] | None = None,
) -> dict[int, Merged]:
    """Merge a batch of reminders, each into its user's digest at its slot or the next slot
    that still takes members; the digest of each, by the reminder's outbox id. A handful of
    statements for the whole batch, whatever its size: the members' current digests, then
    per slot tried the digest rows (created when missing) and one insert of the links.

    Idempotent: a reminder already in a digest that takes members stays there; one in a
    digest that went out (its row armed again by a scan or a replay) moves to the slot's
    digest. Digest rows are locked in key order, so relays merging into the same digests
    lock them in the same order.

    Raises:
        RuntimeError: no digest of ``MAX_SLOTS`` slots takes a reminder (replays sent them
            early); the relay retries the batch.
    """
    taking = frozenset(held or ())
    merged: dict[int, Merged] = {}
    if not requests:
        return merged
    current = session.execute(
        select(
            _members.c.member_id, _members.c.digest_id, OutboxRow.idempotency_key, OutboxRow.status
        )
        .join(OutboxRow, OutboxRow.id == _members.c.digest_id)
        .where(_members.c.member_id.in_(sorted(r.claim.id for r in requests)))
        .order_by(OutboxRow.idempotency_key, _members.c.member_id)
        .with_for_update()
    ).all()
    linked = {row.member_id for row in current}
    for row in current:
        if _takes(row.digest_id, row.status, taking):
            merged[row.member_id] = Merged(row.digest_id, row.idempotency_key)
    waiting = [r for r in requests if r.claim.id not in merged]
    dialect = session.get_bind().dialect.name
    for _ in range(MAX_SLOTS):
        if not waiting:
            return merged
        found = _digest_rows(session, dialect, {(r.user_id, r.slot) for r in waiting}, now)
        joining: list[tuple[Request, _Found]] = []
        later: list[Request] = []
        for request in waiting:
            digest = found[digest_key(request.user_id, request.slot)]
            if _takes(digest.digest_id, digest.status, taking):
                joining.append((request, digest))
            elif request.schedule is not None:
                slot = next_slot(request.slot, request.schedule, request.zone)
                later.append(request._replace(slot=slot))
        _link(session, dialect, joining, now, moved=linked)
        merged.update({r.claim.id: Merged(d.digest_id, d.key) for r, d in joining})
        waiting = later
    if not waiting:
        return merged
    first = waiting[0]
    raise RuntimeError(
        f"no digest of user {first.user_id} takes members before {first.slot.isoformat()}"
    )


def join(
    session: Session,
    claim: Claim,
    user_id: int,
    at: datetime,
    *,
    now: datetime,
    held: Mapping[int, Claim] | None = None,
) -> Merged | None:
    """Put the reminder ``claim`` in the user's digest at ``at`` and no other (a burst's, at
    the end of a quiet window), created when missing, in the session's transaction; None
    when that digest no longer takes members (it went out): the reminder then goes alone.
    Idempotent as `merge` is."""
    request = Request(claim, user_id, at, None, ZoneInfo("UTC"))
    return merge_all(session, [request], now=now, held=held).get(claim.id)


def taking_digest(
    session: Session, key: str, held: Mapping[int, Claim] | None = None
) -> int | None:
    """The id of the digest row ``key`` when it still takes members (waiting, or among the
    rows this re-check ``held``); None when there is none or it went out."""
    row = session.execute(
        select(OutboxRow.id, OutboxRow.status).where(OutboxRow.idempotency_key == key)
    ).first()
    if row is None or not _takes(row.id, row.status, frozenset(held or ())):
        return None
    return int(row.id)


class _Found(NamedTuple):
    digest_id: int
    key: str
    status: str


def _takes(digest_id: int, status: str, held: frozenset[int]) -> bool:
    return status in WAITING or digest_id in held


def _digest_rows(
    session: Session, dialect: str, slots: set[tuple[int, datetime]], now: datetime
) -> dict[str, _Found]:
    """The digest rows of each (user, slot), created when missing (a cancelled one armed
    again), locked for this transaction in key order; by key."""
    messages = sorted(
        (
            NewMessage(
                digest_key(user_id, slot),
                DIGEST_KIND,
                subject_id=user_id,
                subject_at=slot,
                available_at=slot,
                recipient_id=user_id,
                offset_seconds=0,  # its moment is the slot itself
            )
            for user_id, slot in slots
        ),
        key=lambda message: message.key,
    )
    _enqueue(dialect).enqueue(session, messages, now)
    rows = session.execute(
        select(OutboxRow.id, OutboxRow.idempotency_key, OutboxRow.status)
        .where(OutboxRow.idempotency_key.in_([message.key for message in messages]))
        .order_by(OutboxRow.idempotency_key)
        .with_for_update()
    ).all()
    return {row.idempotency_key: _Found(row.id, row.idempotency_key, row.status) for row in rows}


def _link(
    session: Session,
    dialect: str,
    joining: Sequence[tuple[Request, _Found]],
    now: datetime,
    *,
    moved: set[int],
) -> None:
    """Link each reminder to its digest: one insert for the new members; an update for each
    member moving out of a digest that went out (rare: a replay armed it again)."""
    fresh: list[dict[str, Any]] = []
    for request, digest in joining:
        claim = request.claim
        values: dict[str, Any] = {
            "member_id": claim.id,
            "digest_id": digest.digest_id,
            "member_key": claim.key,
            "kind": claim.kind,
            "task_id": claim.subject_id,
            "subject_at": claim.subject_at,
            "recipient_id": claim.recipient_id,
            "offset_seconds": claim.offset_seconds,
            "created_at": now,
        }
        if claim.id in moved:
            session.execute(update(_members).where(_members.c.member_id == claim.id).values(values))
        else:
            fresh.append(values)
    if not fresh:
        return
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Another relay holding the same reminder (its lease ran out under this one) may link it
    # first; its link stands, and this relay's verdict on the row is fenced anyway.
    session.execute(insert(_members).on_conflict_do_nothing(), fresh)


@functools.cache
def _enqueue(dialect: str) -> ValuesEnqueue:
    return ValuesEnqueue.for_dialect(dialect)


def members_of(session: Session, digest_ids: Sequence[int]) -> dict[int, list[Member]]:
    """The members of each digest row, in the order they joined (one query)."""
    if not digest_ids:
        return {}
    m = _members.c
    rows = session.execute(
        select(
            m.member_id,
            m.digest_id,
            m.member_key,
            m.kind,
            m.task_id,
            m.subject_at,
            m.recipient_id,
            m.offset_seconds,
            m.created_at,
        )
        .where(m.digest_id.in_(sorted(set(digest_ids))))
        .order_by(m.member_id)
    )
    found: dict[int, list[Member]] = {}
    for row in rows:
        found.setdefault(row.digest_id, []).append(Member(*row))
    return found


def member_of(claim: Claim, digest_id: int, now: datetime) -> Member:
    """A reminder just merged, as a member of the digest ``digest_id``."""
    return Member(
        claim.id,
        digest_id,
        claim.key,
        claim.kind,
        claim.subject_id,
        claim.subject_at,
        claim.recipient_id,
        claim.offset_seconds,
        now,
    )


__all__ = [
    "MAX_SLOTS",
    "DigestMemberRow",
    "Member",
    "Merged",
    "Request",
    "in_digest",
    "join",
    "member_of",
    "members_of",
    "merge",
    "merge_all",
    "merge_into_digest",
    "taking_digest",
]
