"""The scan heartbeat as ``status`` and ``health`` read it, the record of a failed scan, and
the count of tasks that cannot be reminded.

The last successful scan writes the row (`worker.reminders.due`, ``record_scan``); a failed
scan only sets ``failed_at`` and ``failure`` on it. The scan is failing while the last
failure started after the last success did: both times are the scans' own start, on the
database server's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.reminders.schema import ScanHeartbeat


@dataclass(frozen=True)
class Heartbeat:
    """What the last scans left on record."""

    scanned_at: datetime  # the start of the last successful scan
    queued: int
    marked: int
    duration_ms: float
    clock_offset_ms: float | None
    failed_at: datetime | None  # the start of the last failed scan
    failure: str | None

    @property
    def failing(self) -> bool:
        """Whether the last scan that started failed."""
        return self.failed_at is not None and self.failed_at > self.scanned_at


def read_heartbeat(session: Session) -> Heartbeat | None:
    """The heartbeat row, or None before the first successful scan."""
    beat = ScanHeartbeat
    row = session.execute(
        select(
            beat.scanned_at,
            beat.queued,
            beat.marked,
            beat.duration_ms,
            beat.clock_offset_ms,
            beat.failed_at,
            beat.failure,
        ).where(beat.id == 1)
    ).first()
    return None if row is None else Heartbeat(*row)


def record_failure(session_factory: sessionmaker[Session], at: datetime, reason: str) -> bool:
    """Note that the scan started at ``at`` failed for ``reason``; False when it could not be
    noted (the database failing too, or no scan has succeeded yet to hold the row).

    Best effort: the caller has a failure to report already, and this must not replace it.
    """
    try:
        with session_factory.begin() as session:
            done = session.execute(
                update(ScanHeartbeat)
                .where(ScanHeartbeat.id == 1)
                .values(failed_at=at, failure=reason)
            )
    except Exception:  # the database is failing: the log line says why
        return False
    return bool(getattr(done, "rowcount", 0))


@dataclass(frozen=True)
class CountChange:
    """The count of tasks that cannot be reminded changed; ``before`` is None when it had
    never been counted."""

    before: int | None


def record_unremindable(session: Session, count: int) -> CountChange | None:
    """Store the count of tasks that cannot be reminded; say what it replaced when this call
    changed it, so that only one of several scanning processes logs the change. None when it
    was ``count`` already, another process changed it first, or no scan wrote the row yet.
    """
    beat = ScanHeartbeat
    stored = session.execute(select(beat.unremindable).where(beat.id == 1)).first()
    if stored is None or stored[0] == count:
        return None
    changed = session.execute(
        update(beat)
        .where(beat.id == 1, beat.unremindable.is_not_distinct_from(stored[0]))
        .values(unremindable=count)
    )
    return CountChange(stored[0]) if getattr(changed, "rowcount", 0) else None
