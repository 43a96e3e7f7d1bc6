"""The scan: queue one reminder per due task, in the same transaction that marks the task."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from outbox.clock import require_utc
from outbox.enqueue import NewMessage, ValuesEnqueue
from worker.reminders.due import (
    SUPERSEDED,
    claim_due_tasks,
    queue_due_reminders,
    record_scan,
)
from worker.reminders.keys import REMINDER_KIND, reminder_key


@dataclass(frozen=True)
class ScanResult:
    """What one scan did."""

    queued: int  # outbox rows now pending that were not before
    marked: int  # tasks whose reminder_sent_at was set
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
    now: datetime
    lookahead: timedelta
    size: int
    postgresql: bool

    def queue_one(self) -> _Tally:
        """One batch in one transaction: the tasks' marks and their outbox rows together."""
        with self.session_factory.begin() as session:
            if self.postgresql:
                counts = queue_due_reminders(session, self.now, self.lookahead, self.size)
            else:
                counts = _queue_step_by_step(session, self.now, self.lookahead, self.size)
        return _Tally(*counts, batches=1)

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
    now: datetime,
    lookahead: timedelta,
    batch_size: int,
    connections: int = 1,
) -> ScanResult:
    """Queue reminders for every task due in (now, now + lookahead], batch by batch.

    Each batch is one transaction: the tasks' ``reminder_sent_at`` and their outbox rows
    commit together or not at all, so a crash at any point loses or duplicates nothing.
    On PostgreSQL a batch is one statement (`queue_due_reminders`); SQLite has no INSERT or
    UPDATE inside WITH, so there the same steps run one by one from Python.

    A full first batch means a backlog: on PostgreSQL the rest is then drained on
    ``connections`` connections at once. ``SKIP LOCKED`` keeps their batches apart, as it
    keeps separate scanners apart. A loop that comes back short has skipped only tasks
    that a sibling loop or another scanner holds: their batch commits them, or, if it
    fails, the next scan takes them. SQLite has one writer: there the loop stays single.
    """
    with session_factory() as session:  # no connection yet: only the dialect is read
        postgresql = session.get_bind().dialect.name == "postgresql"
    batches = _Batches(session_factory, require_utc(now), lookahead, batch_size, postgresql)
    started = time.perf_counter()
    total = batches.queue_one()
    if total.marked == batch_size:
        if postgresql and connections > 1:
            total += batches.drain_side_by_side(connections)
        else:
            total += batches.drain(threading.Event())
    duration = timedelta(seconds=time.perf_counter() - started)
    with session_factory.begin() as session:
        milliseconds = duration.total_seconds() * 1000
        record_scan(session, batches.now, total.queued, total.marked, milliseconds)
    return ScanResult(total.queued, total.marked, total.superseded, total.batches, duration)


def _queue_step_by_step(
    session: Session, now: datetime, lookahead: timedelta, batch_size: int
) -> tuple[int, int, int]:
    """One batch from Python: (tasks marked, rows now pending, rows superseded)."""
    tasks = claim_due_tasks(session, now, lookahead, batch_size)
    # The due query only returns dated tasks.
    keys = {task_id: reminder_key(task_id, due) for task_id, due in tasks if due}
    messages = [
        NewMessage(keys[task_id], REMINDER_KIND, task_id, due_date, available_at=now)
        for task_id, due_date in tasks
        if task_id in keys
    ]
    queued = _OUTBOX.enqueue(session, messages, now)
    superseded = _OUTBOX.cancel_superseded(
        session, keys, kind=REMINDER_KIND, reason=SUPERSEDED, now=now
    )
    return len(tasks), queued, superseded


_OUTBOX = ValuesEnqueue.for_dialect("sqlite")
