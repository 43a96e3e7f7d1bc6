"""Outbox rows written the plain way, as any producer's transaction would, and read back."""

from __future__ import annotations

from datetime import datetime
from itertools import count
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from outbox.table import OutboxRow, Status
from tests.support.clock import T0

_serial = count(1)


def add_rows(
    sessions: sessionmaker[Session],
    *subjects: int,
    due: datetime = T0,
    status: Status = Status.PENDING,
    **values: Any,
) -> list[int]:
    """Insert one row per subject, due at ``due``, created in order; return their ids."""
    ids = []
    with sessions.begin() as session:
        for subject in subjects:
            serial = next(_serial)
            row = OutboxRow(
                idempotency_key=f"note-{subject}-{serial}",
                kind="note",
                subject_id=subject,
                subject_at=None,
                status=status,
                attempts=0,
                available_at=due,
                lease_token=0,
                created_at=T0,
                updated_at=T0,
                replay_count=0,
            )
            for name, value in values.items():
                setattr(row, name, value)
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def row(sessions: sessionmaker[Session], row_id: int) -> OutboxRow:
    """One row, read afresh."""
    with sessions() as session:
        found = session.get(OutboxRow, row_id)
        assert found is not None
        return found


def statuses(sessions: sessionmaker[Session]) -> list[str]:
    """Every row's status, by id."""
    with sessions() as session:
        return list(session.scalars(select(OutboxRow.status).order_by(OutboxRow.id)))
