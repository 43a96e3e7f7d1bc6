"""Every query the relay runs on the outbox: claim under a lease, then record, fenced.

A claim bumps the row's ``lease_token``; every later write names the token it holds, so a
relay whose lease expired (and whose row another relay re-claimed) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    String,
    Text,
    bindparam,
    case,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

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


def claim_due_rows(
    session: Session, now: datetime, lease_until: datetime, owner: str, limit: int
) -> list[Claim]:
    """Claim up to ``limit`` rows whose next attempt (or expired lease) is due, oldest first.

    PostgreSQL skips rows another relay is claiming; SQLite runs the statement under its
    single writer lock, which gives the same guarantee. Claiming counts an attempt, so a
    row that kills its worker every time still ends dead instead of looping forever.
    """
    due = (
        select(OutboxRow.id)
        .where(OutboxRow.status.in_(ACTIVE), OutboxRow.available_at <= now)
        .order_by(OutboxRow.available_at, OutboxRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(OutboxRow)
        .where(OutboxRow.id.in_(due.scalar_subquery()))
        .values(
            status=Status.CLAIMED,
            attempts=OutboxRow.attempts + 1,
            lease_token=OutboxRow.lease_token + 1,
            lease_owner=owner,
            available_at=lease_until,
            last_attempt_at=now,
            updated_at=now,
        )
        .returning(
            OutboxRow.id,
            OutboxRow.idempotency_key,
            OutboxRow.kind,
            OutboxRow.subject_id,
            OutboxRow.subject_at,
            OutboxRow.attempts,
            OutboxRow.lease_token,
            OutboxRow.available_at,
            OutboxRow.created_at,
        )
    )
    rows = session.execute(stmt, execution_options={"synchronize_session": False}).all()
    return sorted((Claim(*row) for row in rows), key=lambda c: (c.created_at, c.id))


@dataclass(frozen=True)
class Verdict:
    """How a claimed row ends this attempt: delivered, failed (retried at ``retry_at``),
    dead or cancelled, with the error or reason to keep."""

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
    # One statement for the whole round: each column as one array parameter.
    given = (
        func.unnest(
            _array([v.claim.id for v in verdicts], BigInteger()),
            _array([v.claim.lease_token for v in verdicts], BigInteger()),
            _array([str(v.status) for v in verdicts], String()),
            _array([v.error for v in verdicts], Text()),
            _array([v.retry_at for v in verdicts], UTCDateTime()),
        )
        .table_valued("id", "token", "status", "error", "retry_at")
        .render_derived()
    )
    stmt = (
        update(OutboxRow)
        .where(
            OutboxRow.id == given.c.id,
            OutboxRow.lease_token == given.c.token,
            OutboxRow.status == Status.CLAIMED,
        )
        .values(
            status=given.c.status,
            last_error=given.c.error,
            available_at=func.coalesce(given.c.retry_at, OutboxRow.available_at),
            delivered_at=case(
                (given.c.status == Status.DELIVERED.value, literal(now, UTCDateTime())),
                else_=OutboxRow.delivered_at,
            ),
            updated_at=now,
            lease_owner=None,
        )
        .returning(OutboxRow.id)
    )
    return set(session.scalars(stmt, execution_options={"synchronize_session": False}))


def release(session: Session, claims: Sequence[Claim], now: datetime) -> int:
    """Give back claimed rows that were not attempted: due now, the attempt not counted."""
    released = 0
    for claim in claims:
        values: dict[str, object] = {
            "status": case((OutboxRow.attempts <= 1, Status.PENDING), else_=Status.FAILED),
            "attempts": OutboxRow.attempts - 1,
            "available_at": now,
            "updated_at": now,
            "lease_owner": None,
        }
        released += _write_fenced(session, claim, values)
    return released


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


def _array(values: list[Any], item: TypeEngine[Any]) -> BindParameter[Any]:
    return bindparam(None, values, ARRAY(item))


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
    result = session.execute(stmt, execution_options={"synchronize_session": False})
    return bool(result.rowcount)  # type: ignore[attr-defined]
