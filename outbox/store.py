"""Every query the relay runs on the outbox: claim under a lease, then record, fenced.

A claim bumps the row's ``lease_token``; every later write names the token it holds, so a
relay whose lease expired (and whose row another relay re-claimed) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from outbox.table import ACTIVE, OutboxRow, Status


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


def finish(
    session: Session, claim: Claim, now: datetime, status: Status, error: str | None
) -> bool:
    """Record a final outcome (delivered, dead or cancelled); False when the lease was lost."""
    values: dict[str, object] = {"status": status, "updated_at": now, "lease_owner": None}
    if status is Status.DELIVERED:
        values["delivered_at"] = now
    if error is not None or status is Status.DELIVERED:
        values["last_error"] = error
    return _write_fenced(session, claim, values)


def reschedule(session: Session, claim: Claim, now: datetime, at: datetime, error: str) -> bool:
    """Record a transient failure and the next attempt time; False when the lease was lost."""
    values: dict[str, object] = {
        "status": Status.FAILED,
        "available_at": at,
        "last_error": error,
        "updated_at": now,
        "lease_owner": None,
    }
    return _write_fenced(session, claim, values)


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
