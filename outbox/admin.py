"""Operator queries on the outbox: counts, listings, replay and purge.

Plain functions over a `Session` (or a session factory, for purge), generic over what the
rows mean. Time is a parameter; nothing here reads the clock.

Replay puts a row back to ``pending`` as if it had just been queued: ``attempts`` is 0,
it is due at once, the lease owner and ``delivered_at`` are cleared, and its idempotency
key is untouched, so a receiver that saw it before can tell. Two things are kept on
purpose: ``last_error`` (why the row died is what the operator is acting on; the next
attempt overwrites it, and a delivery clears it) and ``lease_token`` (a fence counter
must never go backwards, or a relay holding a stale claim could write again).

Replay re-arms a row, never its usefulness: ``expires_at`` is kept, so a replayed row is
sent only before it, and a row whose expiry has passed (an expired row, or a dead one of a
task now due) is left alone, said so, since a claim would only expire it again unsent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Row,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from outbox.clock import require_utc
from outbox.table import FINISHED, WAITING, OutboxRow, Status

#: Statuses ``replay(status=...)`` accepts: rows that stopped without being delivered.
REPLAYABLE_BY_STATUS = (Status.DEAD, Status.FAILED)
#: Statuses a row named by id may be replayed from (never pending, never claimed).
REPLAYABLE_BY_ID = (
    Status.DEAD,
    Status.FAILED,
    Status.DELIVERED,
    Status.CANCELLED,
    Status.EXPIRED,
)
MAX_REPLAYED_BY = 200  # the column's width


@dataclass(frozen=True)
class ReplayChange:
    """What replay did (or, in a dry run, would do) to one row, and why not when it did not."""

    id: int
    key: str | None  # None when no row has this id
    status_before: str | None
    replayed: bool
    reason: str | None = None  # why the row was left alone
    past_expiry: bool = False  # left alone because its expiry has passed


def count_by_status(session: Session) -> dict[str, int]:
    """Rows per status, every status present (zero when none), in life-cycle order."""
    counts = {status.value: 0 for status in Status}
    stmt = select(OutboxRow.status, func.count()).group_by(OutboxRow.status)
    for status, count in session.execute(stmt):
        counts[status] = int(count)
    return counts


def count_with_status(session: Session, status: Status) -> int:
    """How many rows have ``status``."""
    stmt = select(func.count()).select_from(OutboxRow).where(OutboxRow.status == status)
    return int(session.execute(stmt).scalar_one())


def oldest_waiting(session: Session, now: datetime) -> timedelta | None:
    """Age of the oldest pending or failed row, or None when no row is waiting.

    A row's wait starts when it was created or, if replayed since, when it was replayed:
    replaying a week-old dead row must not make the queue look a week late. A pending row
    given a later time since (deferred by the domain, postponed by hand) waits from that
    time: before it, it is not late, it is not due.
    """
    since = func.coalesce(OutboxRow.replayed_at, OutboxRow.created_at)
    postponed = and_(OutboxRow.status == Status.PENDING, OutboxRow.available_at > since)
    start = case((postponed, OutboxRow.available_at), else_=since)
    stmt = (
        select(OutboxRow.created_at, OutboxRow.replayed_at, OutboxRow.available_at, postponed)
        .where(OutboxRow.status.in_(WAITING))
        .order_by(start)
        .limit(1)
    )
    found = session.execute(stmt).first()
    if found is None:
        return None
    created_at, replayed_at, available_at, later = found
    begun = replayed_at if replayed_at is not None and replayed_at > created_at else created_at
    return max(require_utc(now) - (available_at if later else begun), timedelta(0))


def list_rows(
    session: Session,
    *,
    status: Status | None = None,
    subject_id: int | None = None,
    older_than: timedelta | None = None,
    now: datetime,
    limit: int = 50,
) -> list[OutboxRow]:
    """Rows matching every filter given, newest first, at most ``limit`` of them.

    ``older_than`` keeps rows created at least that long before ``now``.
    """
    stmt = select(OutboxRow).order_by(OutboxRow.id.desc()).limit(limit)
    stmt = stmt.where(*_filters(status, subject_id, older_than, now))
    return list(session.scalars(stmt))


def count_rows(
    session: Session,
    *,
    status: Status | None = None,
    subject_id: int | None = None,
    older_than: timedelta | None = None,
    now: datetime,
    cap: int,
) -> int:
    """How many rows `list_rows` with the same filters could show, counted up to ``cap``.

    The cap bounds the cost on a large outbox: ``cap`` means "``cap`` or more".
    """
    matching = select(OutboxRow.id).where(*_filters(status, subject_id, older_than, now))
    counted = select(func.count()).select_from(matching.limit(cap).subquery())
    return int(session.scalar(counted) or 0)


def _filters(
    status: Status | None, subject_id: int | None, older_than: timedelta | None, now: datetime
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if status is not None:
        conditions.append(OutboxRow.status == status)
    if subject_id is not None:
        conditions.append(OutboxRow.subject_id == subject_id)
    if older_than is not None:
        conditions.append(OutboxRow.created_at <= require_utc(now) - older_than)
    return conditions


def get_row(session: Session, row_id: int) -> OutboxRow | None:
    """The row with this id, or None."""
    return session.get(OutboxRow, row_id)


def replay(
    session: Session,
    ids: Sequence[int] | None,
    status: Status | None,
    *,
    by: str,
    now: datetime,
    dry_run: bool = False,
) -> list[ReplayChange]:
    """Put rows back to pending, named by ``ids`` or by ``status`` (dead or failed), not both.

    By id, any row that is neither pending (nothing to do) nor claimed (in flight: its
    relay may be sending it right now) is replayed; unknown ids are reported. A row whose
    ``expires_at`` is at or before ``now`` is left alone (``past_expiry``). The caller
    commits; with ``dry_run`` nothing is written and the changes say what would happen.
    Raises ValueError when both or neither of ids and status are given, or status is not
    one of `REPLAYABLE_BY_STATUS`.
    """
    if (ids is None) == (status is None):
        raise ValueError("name the rows to replay by ids or by status, not both")
    now = require_utc(now)
    columns = (
        OutboxRow.id,
        OutboxRow.idempotency_key,
        OutboxRow.status,
        OutboxRow.lease_owner,
        OutboxRow.expires_at,
    )
    query = select(*columns).order_by(OutboxRow.id).with_for_update()
    if status is not None:
        if status not in REPLAYABLE_BY_STATUS:
            raise ValueError(f"only {' or '.join(REPLAYABLE_BY_STATUS)} rows replay by status")
        query = query.where(OutboxRow.status == status)
    else:
        assert ids is not None
        query = query.where(OutboxRow.id.in_(set(ids)))
    found = session.execute(query).all()
    rows = {row.id: row for row in found}
    changes = {
        row_id: _decide(row_id, rows.get(row_id), now)
        for row_id in dict.fromkeys(ids if ids is not None else rows)  # in order, no repeats
    }
    chosen = [change.id for change in changes.values() if change.replayed]
    if dry_run or not chosen:
        return list(changes.values())
    done = _put_back(session, chosen, by, now)
    for row_id in chosen:
        if row_id not in done:  # a relay claimed it between our read and our write
            before = changes[row_id]
            reason = "changed while replaying (claimed by a relay?): try again"
            changes[row_id] = ReplayChange(row_id, before.key, before.status_before, False, reason)
    return list(changes.values())


def _decide(
    row_id: int, row: Row[int, str, str, str | None, datetime | None] | None, now: datetime
) -> ReplayChange:
    """Whether replay puts the row with this id back, and why not when it does not."""
    if row is None:
        return ReplayChange(row_id, None, None, False, "no such row")
    key, status = row.idempotency_key, row.status
    if status == Status.CLAIMED:
        owner = row.lease_owner or "a relay"
        reason = f"claimed by {owner}: in flight, replay it once it is no longer claimed"
        return ReplayChange(row_id, key, status, False, reason)
    if status == Status.PENDING:
        return ReplayChange(row_id, key, status, False, "already pending")
    if row.expires_at is not None and row.expires_at <= now:
        reason = f"expired at {row.expires_at.isoformat()}: no longer useful, never sent again"
        return ReplayChange(row_id, key, status, False, reason, past_expiry=True)
    return ReplayChange(row_id, key, status, True)


def _put_back(session: Session, ids: list[int], by: str, now: datetime) -> set[int]:
    replayed: set[int] = set()
    for start in range(0, len(ids), 500):  # keep the IN list within every driver's limits
        stmt = (
            update(OutboxRow)
            .where(OutboxRow.id.in_(ids[start : start + 500]))
            .where(OutboxRow.status.in_(REPLAYABLE_BY_ID))
            .where(or_(OutboxRow.expires_at.is_(None), OutboxRow.expires_at > now))
            .values(
                status=Status.PENDING,
                attempts=0,
                unfinished_claims=0,
                available_at=now,
                lease_owner=None,
                delivered_at=None,
                updated_at=now,
                replayed_at=now,
                replayed_by=by[:MAX_REPLAYED_BY],
                replay_count=OutboxRow.replay_count + 1,
            )
            .returning(OutboxRow.id)
        )
        result = session.execute(stmt, execution_options={"synchronize_session": False})
        replayed.update(result.scalars())
    return replayed


def purge(
    session_factory: sessionmaker[Session],
    older_than: timedelta,
    now: datetime,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete delivered and cancelled rows last updated before ``now - older_than``.

    Deletes ``batch_size`` rows per transaction, so no lock is held for long and the
    relay keeps flowing; rows in any other status are never touched. ``progress`` gets
    the running total after each batch. Returns how many rows were deleted.

    On SQLite the row with the highest id is kept: SQLite gives a new row the highest id
    plus one, so deleting that row would hand its id to the next message, and ids are
    referred to after their row is gone (a digest's member links name their members' ids).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = require_utc(now) - older_than
    total = 0
    while True:
        batch = (
            select(OutboxRow.id)
            .where(OutboxRow.status.in_(FINISHED), OutboxRow.updated_at < cutoff)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        with session_factory.begin() as session:
            if session.get_bind().dialect.name == "sqlite":
                newest = select(func.max(OutboxRow.id)).scalar_subquery()
                batch = batch.where(OutboxRow.id < newest)
            stmt = delete(OutboxRow).where(
                OutboxRow.id.in_(batch.scalar_subquery()), OutboxRow.status.in_(FINISHED)
            )
            # A DELETE's result is a CursorResult, which has the rowcount; execute() is typed
            # as returning the Result base class.
            result = cast(
                CursorResult[Any],
                session.execute(stmt, execution_options={"synchronize_session": False}),
            )
            deleted = result.rowcount
        total += deleted
        if progress is not None and deleted:
            progress(total)
        if deleted < batch_size:
            return total


@dataclass(frozen=True)
class Postponed:
    """What `postpone` found: the row's status (None: no row has the key), whether it is
    postponed, and when it is due now."""

    status: str | None
    postponed: bool
    available_at: datetime | None = None


def postpone(session: Session, key: str, until: datetime, *, now: datetime) -> Postponed:
    """Make the waiting (pending or failed) row of ``key`` due no earlier than ``until``.

    A claimed row is being sent, a delivered, dead or cancelled one is over: they are left
    as they are. Postponing to a moment the row is already due after changes nothing but
    counts as postponed. The caller commits.
    """
    until, now = require_utc(until), require_utc(now)
    row = session.execute(
        select(OutboxRow.id, OutboxRow.status, OutboxRow.available_at)
        .where(OutboxRow.idempotency_key == key)
        .with_for_update()
    ).first()
    if row is None:
        return Postponed(None, postponed=False)
    if row.status not in WAITING:
        return Postponed(row.status, postponed=False, available_at=row.available_at)
    later = max(until, row.available_at)
    done = session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == row.id, OutboxRow.status.in_(WAITING))
        .values(available_at=later, updated_at=now)
        .returning(OutboxRow.id),
        execution_options={"synchronize_session": False},
    ).first()
    if done is None:  # claimed between the read and the write (SQLite has no row lock)
        return Postponed(Status.CLAIMED, postponed=False, available_at=row.available_at)
    return Postponed(row.status, postponed=True, available_at=later)


#: How a follow-up row's key extends the key of the row it follows: ``<key>~<seconds>``.
FOLLOW_UP_MARK = "~"


def follow_up_key(key: str, delay: timedelta) -> str:
    """The key of the follow-up of ``key`` ``delay`` later: the same click twice makes one."""
    return f"{key}{FOLLOW_UP_MARK}{int(delay.total_seconds())}"


def original_key(key: str) -> str:
    """The key a follow-up (of a follow-up...) was made from, or ``key`` itself."""
    return key.split(FOLLOW_UP_MARK, 1)[0]


def follow_up(
    session: Session, key: str, delay: timedelta, *, now: datetime, lifetime: timedelta
) -> Postponed:
    """Queue the delivered row of ``key`` again as a new row, due ``delay`` from ``now``
    under `follow_up_key` and worth sending for ``lifetime`` after that: the message went
    out, and its recipient asked to be told again later. The new row is re-checked like
    any other before its send. A follow-up queued already is left as it is; a key too long
    to extend (follow-ups of follow-ups) is refused (``postponed`` False). The caller
    commits.
    """
    now = require_utc(now)
    row = session.execute(
        select(OutboxRow).where(OutboxRow.idempotency_key == key)
    ).scalar_one_or_none()
    if row is None:
        return Postponed(None, postponed=False)
    if row.status != Status.DELIVERED:
        return Postponed(row.status, postponed=False, available_at=row.available_at)
    new_key = follow_up_key(key, delay)
    if len(new_key) > OutboxRow.idempotency_key.type.length:
        return Postponed(row.status, postponed=False, available_at=row.available_at)
    existing = session.execute(
        select(OutboxRow.available_at).where(OutboxRow.idempotency_key == new_key)
    ).first()
    if existing is not None:
        return Postponed(Status.PENDING, postponed=True, available_at=existing[0])
    at = now + delay
    session.add(
        OutboxRow(
            idempotency_key=new_key,
            kind=row.kind,
            subject_id=row.subject_id,
            subject_at=row.subject_at,
            recipient_id=row.recipient_id,
            offset_seconds=row.offset_seconds,
            status=Status.PENDING,
            attempts=0,
            available_at=at,
            expires_at=at + lifetime,
            lease_token=0,
            created_at=now,
            updated_at=now,
            replay_count=0,
        )
    )
    session.flush()
    return Postponed(Status.PENDING, postponed=True, available_at=at)
