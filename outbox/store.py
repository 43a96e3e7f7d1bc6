"""Every query the relay runs on the outbox: claim under a lease, then record, fenced.

A claim bumps the row's ``lease_token``; every later write names the token it holds, so a
relay whose lease expired (and whose row another relay re-claimed) changes nothing. A row
whose ``expires_at`` has passed is never claimed: `expire_due_rows` ends it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CursorResult,
    Integer,
    String,
    Text,
    any_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement, Grouping
from sqlalchemy.types import TypeEngine

from outbox.clock import require_utc
from outbox.table import ACTIVE, OutboxRow, Status
from outbox.types import UTCDateTime


@dataclass(frozen=True)
class Claim:
    """A row held by one relay until ``lease_expires_at``, proven by ``lease_token``."""

    id: int
    key: str
    kind: str
    subject_id: int
    subject_at: datetime | None
    attempts: int
    lease_token: int
    lease_expires_at: datetime
    created_at: datetime
    expires_at: datetime | None = None  # never sent at or after it; None: never expires
    unfinished_claims: int = 0  # claims in a row before this one that recorded no outcome
    recipient_id: int | None = None
    offset_seconds: int | None = None


_NOW = bindparam("now", type_=UTCDateTime())

#: A row's columns as a `Claim` has them, in its fields' order.
CLAIM_COLUMNS = (
    OutboxRow.id,
    OutboxRow.idempotency_key,
    OutboxRow.kind,
    OutboxRow.subject_id,
    OutboxRow.subject_at,
    OutboxRow.attempts,
    OutboxRow.lease_token,
    OutboxRow.available_at,
    OutboxRow.created_at,
    OutboxRow.expires_at,
    OutboxRow.unfinished_claims,
    OutboxRow.recipient_id,
    OutboxRow.offset_seconds,
)

#: Built once (its cache key too): a relay claims every round. Parameters: now,
#: lease_until, owner, limit.
_CLAIM = (
    update(OutboxRow)
    .where(
        OutboxRow.id.in_(
            select(OutboxRow.id)
            .where(
                OutboxRow.status.in_(ACTIVE),
                OutboxRow.available_at <= _NOW,
                or_(OutboxRow.expires_at.is_(None), OutboxRow.expires_at > _NOW),
            )
            .order_by(OutboxRow.available_at, OutboxRow.id)
            .limit(bindparam("limit", type_=Integer()))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(
        status=Status.CLAIMED,
        attempts=OutboxRow.attempts + 1,
        # Still claimed when claimed again: the last attempt's lease ran out unrecorded.
        unfinished_claims=case(
            (OutboxRow.status == Status.CLAIMED, OutboxRow.unfinished_claims + 1), else_=0
        ),
        lease_token=OutboxRow.lease_token + 1,
        lease_owner=bindparam("owner", type_=String()),
        available_at=bindparam("lease_until", type_=UTCDateTime()),
        last_attempt_at=_NOW,
        updated_at=_NOW,
    )
    .returning(*CLAIM_COLUMNS)
)

#: Why a row expired unsent, before its last error, if any.
EXPIRED_UNSENT = "expired before it could be sent"

#: Parameters: now, limit. The rows a claim would take but whose expiry has passed: by
#: ix_outbox_expiring, so the cost follows the expired rows, not the backlog. Only what a
#: claim could take (available_at <= now): a live lease is never touched.
_EXPIRE = (
    update(OutboxRow)
    .where(
        OutboxRow.id.in_(
            select(OutboxRow.id)
            .where(
                OutboxRow.status.in_(ACTIVE),
                OutboxRow.expires_at <= _NOW,
                OutboxRow.available_at <= _NOW,
            )
            .limit(bindparam("limit", type_=Integer()))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(
        status=Status.EXPIRED,
        last_error=literal(EXPIRED_UNSENT, Text())
        + func.coalesce(literal("; last error: ", Text()) + OutboxRow.last_error, ""),
        lease_owner=None,
        updated_at=_NOW,
    )
    .returning(*CLAIM_COLUMNS)
)


def claim_due_rows(
    session: Session, now: datetime, lease_until: datetime, owner: str, limit: int
) -> list[Claim]:
    """Claim up to ``limit`` rows whose next attempt (or expired lease) is due, oldest first.

    PostgreSQL skips rows another relay is claiming; SQLite runs the statement under its
    single writer lock, which gives the same guarantee. Claiming counts an attempt, so a
    row that kills its worker every time still ends dead instead of looping forever.
    """
    values = {"now": now, "lease_until": lease_until, "owner": owner, "limit": limit}
    rows = session.connection().execute(_CLAIM, values)  # Core: no ORM bookkeeping per round
    return sorted((Claim(*row) for row in rows), key=lambda c: (c.created_at, c.id))


def expire_due_rows(session: Session, now: datetime, limit: int) -> list[Claim]:
    """End as ``expired``, unsent, up to ``limit`` rows a claim at ``now`` could take whose
    ``expires_at`` is at or before ``now``; return them as they now are, to report.

    ``now`` is the time the claims use (the database server's, as the caller's clock tells
    it), so a host whose clock is off expires nothing early; rows under a live lease are
    left to their relay, which checks the expiry itself before each send.
    """
    rows = session.connection().execute(_EXPIRE, {"now": now, "limit": limit})
    return sorted((Claim(*row) for row in rows), key=lambda c: (c.created_at, c.id))


@dataclass(frozen=True)
class Verdict:
    """How a claimed row ends this attempt: delivered, failed (retried at ``retry_at``),
    dead, cancelled or expired, with the error or reason to keep."""

    claim: Claim
    status: Status
    error: str | None = None
    retry_at: datetime | None = None


def record(session: Session, verdicts: Sequence[Verdict], now: datetime) -> set[int]:
    """Write each verdict to its row, fenced by the row's lease; return the rows still held.

    A row whose lease was lost (another relay re-claimed it) is left as it is.
    """
    if not verdicts:
        return set()
    if _dialect(session) != "postgresql":
        held = set()
        for verdict in verdicts:
            values: dict[str, object] = {
                "status": verdict.status,
                "last_error": verdict.error,
                "updated_at": now,
                "lease_owner": None,
            }
            if verdict.retry_at is not None:
                values["available_at"] = verdict.retry_at
            if verdict.status is Status.DELIVERED:
                values["delivered_at"] = now
            if _write_fenced(session, verdict.claim, values):
                held.add(verdict.claim.id)
        return held
    given = {
        "ids": [v.claim.id for v in verdicts],
        "tokens": [v.claim.lease_token for v in verdicts],
        "statuses": [str(v.status) for v in verdicts],
        "errors": [v.error for v in verdicts],
        "retry_ats": [v.retry_at for v in verdicts],
        "now": now,
    }
    return set(session.connection().execute(_RECORD, given).scalars())


# PostgreSQL: one statement records a whole round, each column as one array parameter read
# at the row's place in ``ids``. The rows are found by primary key: joined to the arrays
# unnested instead, they were read once per array element, the planner taking the claimed
# rows for a handful.
_IDS = bindparam("ids", type_=ARRAY(BigInteger()))
_AT = func.array_position(_IDS, OutboxRow.id)


def _given(name: str, item: TypeEngine[Any]) -> ColumnElement[Any]:
    """The element of array parameter ``name`` for the row being written."""
    array = ARRAY(item)
    return type_coerce(Grouping(bindparam(name, type_=array)), array)[_AT]


_verdict_status = _given("statuses", String())
_RECORD = (
    update(OutboxRow)
    .where(
        OutboxRow.id == any_(_IDS),
        OutboxRow.lease_token == _given("tokens", BigInteger()),
        OutboxRow.status == Status.CLAIMED,
    )
    .values(
        status=_verdict_status,
        last_error=_given("errors", Text()),
        available_at=func.coalesce(_given("retry_ats", UTCDateTime()), OutboxRow.available_at),
        delivered_at=case(
            (_verdict_status == Status.DELIVERED.value, _NOW), else_=OutboxRow.delivered_at
        ),
        updated_at=_NOW,
        lease_owner=None,
    )
    .returning(OutboxRow.id)
)


def release(session: Session, claims: Sequence[Claim], now: datetime) -> int:
    """Give back claimed rows that were not attempted: due now, the attempt not counted."""
    return len(defer(session, [(claim, now) for claim in claims], now))


def defer(session: Session, deferrals: Sequence[tuple[Claim, datetime]], now: datetime) -> set[int]:
    """Give back each claimed row unattempted, due again at its instant (aware UTC), the
    claim's attempt not counted; return the rows still held (fenced as `record`)."""
    held = set()
    for claim, until in deferrals:
        values: dict[str, object] = {
            "status": case((OutboxRow.attempts <= 1, Status.PENDING), else_=Status.FAILED),
            "attempts": OutboxRow.attempts - 1,
            "available_at": require_utc(until),
            "updated_at": now,
            "lease_owner": None,
        }
        if _write_fenced(session, claim, values):
            held.add(claim.id)
    return held


def extend_leases(session: Session, claims: Sequence[Claim], until: datetime) -> list[Claim]:
    """Push the lease of still-held rows to ``until``; return the claims still held."""
    held = []
    for claim in claims:
        if _write_fenced(session, claim, {"available_at": until}):
            held.append(replace(claim, lease_expires_at=until))
    return held


def earliest_due(session: Session) -> datetime | None:
    """When the next row becomes due: a next attempt, or a lease that expires."""
    return session.scalar(
        select(func.min(OutboxRow.available_at)).where(OutboxRow.status.in_(ACTIVE))
    )


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _write_fenced(session: Session, claim: Claim, values: dict[str, object]) -> bool:
    stmt = (
        update(OutboxRow)
        .where(
            OutboxRow.id == claim.id,
            OutboxRow.lease_token == claim.lease_token,
            OutboxRow.status == Status.CLAIMED,
        )
        .values(**values)
    )
    # An UPDATE's result is a CursorResult, which has the rowcount; execute() is typed as
    # returning the Result base class.
    result = cast(
        CursorResult[Any], session.execute(stmt, execution_options={"synchronize_session": False})
    )
    return bool(result.rowcount)
