"""The scan: plan the reminders that come due, each batch in one transaction with its marks."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from outbox.clock import require_utc
from worker.reminders.due import DueQueries


@dataclass(frozen=True)
class ScanResult:
    """What one scan did."""

    queued: int  # outbox rows now pending that were not before
    marked: int  # tasks marked as planned for their due date
    superseded: int  # waiting rows cancelled because their task's due date moved
    batches: int
    duration: timedelta


@dataclass(frozen=True)
class _Tally:
    """What some batches did, added up."""

    marked: int = 0
    queued: int = 0
    superseded: int = 0
    batches: int = 0

    def __add__(self, other: _Tally) -> _Tally:
        return _Tally(
            self.marked + other.marked,
            self.queued + other.queued,
            self.superseded + other.superseded,
            self.batches + other.batches,
        )


@dataclass(frozen=True)
class _Batches:
    """One scan's fixed arguments, and its batch loops."""

    session_factory: sessionmaker[Session]
    queries: DueQueries
    now: datetime
    ahead: timedelta
    size: int

    def queue_one(self) -> _Tally:
        """One batch in one transaction: the tasks' marks and their outbox rows together."""
        with self.session_factory.begin() as session:
            batch = self.queries.queue_batch(session, self.now, self.ahead, self.size)
        return _Tally(*batch, batches=1)

    def drain(self, stop: threading.Event) -> _Tally:
        """Queue batch after batch until one comes back short (or a sibling loop failed)."""
        total = _Tally()
        try:
            while not stop.is_set():
                batch = self.queue_one()
                total += batch
                if batch.marked < self.size:
                    break
        except BaseException:
            stop.set()  # the sibling loops end after their current batch
            raise
        return total

    def drain_side_by_side(self, connections: int) -> _Tally:
        """`drain` on ``connections`` connections at once; the first failure is raised."""
        stop = threading.Event()
        with ThreadPoolExecutor(connections, thread_name_prefix="scan") as pool:
            loops = [pool.submit(self.drain, stop) for _ in range(connections)]
            try:
                return sum((loop.result() for loop in loops), _Tally())
            finally:
                stop.set()  # however the wait ends (an error, a time limit), no loop goes on


def scan_due_tasks(
    session_factory: sessionmaker[Session],
    queries: DueQueries,
    now: datetime,
    ahead: timedelta,
    batch_size: int,
    *,
    connections: int = 1,
    clock_offset: timedelta | None = None,
) -> ScanResult:
    """Queue reminders for every task due in (now, now + lookahead], batch by batch.

    Each batch is one transaction: the tasks' ``reminder_sent_at`` and their outbox rows
    commit together or not at all, so a crash at any point loses or duplicates nothing.
    ``queries`` are the dialect's statements (`worker.reminders.due`).

    A full first batch means a backlog: where batches may run side by side (PostgreSQL) the
    rest is then drained on ``connections`` connections at once. ``SKIP LOCKED`` keeps their
    batches apart, as it keeps separate scanners apart. A loop that comes back short has
    skipped only tasks that a sibling loop or another scanner holds: their batch commits
    them, or, if it fails, the next scan takes them. SQLite has one writer: there the loop
    stays single.

    The heartbeat records ``clock_offset``, how far the database's clock is ahead of the
    scanning host's (None: unknown), for ``reminders status`` and ``health``.
    """
    batches = _Batches(session_factory, queries, require_utc(now), ahead, batch_size)
    started = time.perf_counter()
    total = batches.queue_one()
    if total.marked == batch_size:
        if queries.parallel and connections > 1:
            total += batches.drain_side_by_side(connections)
        else:
            total += batches.drain(threading.Event())
    with session_factory.begin() as session:
        total += _Tally(queued=queries.plan_window(session, batches.now, ahead))
    duration = timedelta(seconds=time.perf_counter() - started)
    with session_factory.begin() as session:
        milliseconds = duration.total_seconds() * 1000
        offset_ms = None if clock_offset is None else clock_offset.total_seconds() * 1000
        queries.record_scan(
            session,
            batches.now,
            total.queued,
            total.marked,
            milliseconds,
            clock_offset_ms=offset_ms,
        )
    return ScanResult(total.queued, total.marked, total.superseded, total.batches, duration)
