"""The scan: queue one reminder per due task, in the same transaction that marks the task."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from outbox.clock import require_utc
from outbox.table import Status
from worker.due import (
    REMINDER_KIND,
    cancel_superseded,
    claim_due_tasks,
    insert_reminders,
    queue_due_reminders,
    record_scan,
)


def reminder_key(task_id: int, due_date: datetime, kind: str = REMINDER_KIND) -> str:
    """The idempotency key of a reminder: the same (task, due date, kind) always gives it.

    Usable as the local part of a Message-ID and as a webhook id.
    """
    due = require_utc(due_date)
    stamp = due.strftime("%Y%m%dT%H%M%S") + (f".{due.microsecond:06d}" if due.microsecond else "")
    return f"{kind}-{task_id}-{stamp}Z"


@dataclass(frozen=True)
class ScanResult:
    """What one scan did."""

    queued: int  # outbox rows now pending that were not before
    marked: int  # tasks whose reminder_sent_at was set
    superseded: int  # waiting rows cancelled because their task's due date moved
    batches: int
    duration: timedelta


def scan_due_tasks(
    session_factory: sessionmaker[Session], now: datetime, lookahead: timedelta, batch_size: int
) -> ScanResult:
    """Queue reminders for every task due in (now, now + lookahead], batch by batch.

    Each batch is one transaction: the tasks' ``reminder_sent_at`` and their outbox rows
    commit together or not at all, so a crash at any point loses or duplicates nothing.
    On PostgreSQL a batch is one statement (`queue_due_reminders`); SQLite has no INSERT or
    UPDATE inside WITH, so there the same steps run one by one from Python.
    """
    now = require_utc(now)
    started = time.perf_counter()
    queued = marked = superseded = batches = 0
    while True:
        with session_factory.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                counts = queue_due_reminders(session, now, lookahead, batch_size)
            else:
                counts = _queue_step_by_step(session, now, lookahead, batch_size)
        batch_marked = counts[0]
        marked += batch_marked
        queued += counts[1]
        superseded += counts[2]
        batches += 1
        if batch_marked < batch_size:
            break
    duration = timedelta(seconds=time.perf_counter() - started)
    with session_factory.begin() as session:
        record_scan(session, now, queued, marked, duration.total_seconds() * 1000)
    return ScanResult(queued, marked, superseded, batches, duration)


def _queue_step_by_step(
    session: Session, now: datetime, lookahead: timedelta, batch_size: int
) -> tuple[int, int, int]:
    """One batch from Python: (tasks marked, rows now pending, rows superseded)."""
    tasks = claim_due_tasks(session, now, lookahead, batch_size)
    # The due query only returns dated tasks.
    keys = {task_id: reminder_key(task_id, due) for task_id, due in tasks if due}
    rows = [
        {
            "idempotency_key": keys[task_id],
            "kind": REMINDER_KIND,
            "subject_id": task_id,
            "subject_at": due_date,
            "status": Status.PENDING,
            "attempts": 0,
            "available_at": now,
            "lease_token": 0,
            "created_at": now,
            "updated_at": now,
            "replay_count": 0,
        }
        for task_id, due_date in tasks
        if task_id in keys
    ]
    queued = insert_reminders(session, rows)
    return len(tasks), queued, cancel_superseded(session, now, keys) if keys else 0
