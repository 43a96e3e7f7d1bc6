"""``dramatiq tests.acceptance.faulty_worker``: the real actors, dying at one exact step.

A test build only. It imports `worker.actors` unchanged (its broker, its actors, its
settings) and, before any actor runs, hands it `worker.seams.Seams` that wrap the channel, the
re-check and the scan's statements, so that the worker process can SIGKILL itself at a precise
point of the pipeline:

- ``scan``: the scan has marked the tasks and inserted their outbox rows, not committed;
- ``recheck``: inside a relay round's transaction (which may have just claimed the batch), as
  the row is about to be re-checked: nothing of that transaction is committed;
- ``before-send``: the row is rendered, the receiver has not been contacted;
- ``after-accept``: the receiver accepted the message, the relay has not recorded it.

``REMINDERS_TEST_FAULT=STEP:KEY`` kills at STEP for reminder KEY (``*``: the first one), once:
the first process to get there creates the file ``REMINDERS_TEST_FAULT_MARK`` (exclusively)
with "STEP KEY", then kills itself; any process finding the file goes on normally.
``REMINDERS_TEST_FAULT=random:P`` (the chaos soak) kills at any step with probability P.

``REMINDERS_TEST_JOURNAL=DIR`` makes each process append to ``DIR/<pid>.journal`` one line
per event, written before the next step so that it survives a SIGKILL: ``accepted KEY T``
(the receiver said yes), ``recorded KEY held|fenced T`` (the delivered status committed, or
the lease had been lost), ``killed STEP KEY T``. The soak explains each duplicate with them.
Without these variables nothing changes.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from outbox.channels.base import Channel, Delivery, Message, Outcome
from outbox.relay import Answer, Prepare
from outbox.store import Claim, Verdict
from outbox.table import Status
from worker import actors
from worker.reminders.due import Batch, DueQueries
from worker.seams import Seams

broker = actors.broker  # what `dramatiq tests.acceptance.faulty_worker` runs

STEPS = ("scan", "recheck", "before-send", "after-accept")
FAULT = os.environ.get("REMINDERS_TEST_FAULT", "")
MARK = os.environ.get("REMINDERS_TEST_FAULT_MARK", "")
JOURNAL = os.environ.get("REMINDERS_TEST_JOURNAL", "")


def _parse(fault: str) -> tuple[str, str, float]:
    step, _, target = fault.partition(":")
    if step == "random":
        return step, "*", float(target)
    if step not in STEPS or not target or not MARK:
        raise SystemExit(f"faulty_worker: bad REMINDERS_TEST_FAULT {fault!r} (or no MARK)")
    return step, target, 1.0


STEP, TARGET, PROBABILITY = _parse(FAULT) if FAULT else ("", "", 0.0)
_rng = random.Random()


def journal(*words: str) -> None:
    """Append one event line to this process's journal (one write: it survives a SIGKILL)."""
    if not JOURNAL:
        return
    line = " ".join((*words, f"{time.time():.6f}")) + "\n"
    path = os.path.join(JOURNAL, f"{os.getpid()}.journal")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def die_here(step: str, key: str) -> None:
    """SIGKILL this process if the fault names this step and key (and has not fired yet)."""
    if not STEP:
        return
    if STEP == "random":
        if _rng.random() >= PROBABILITY:
            return
    else:
        if step != STEP or TARGET not in ("*", key):
            return
        try:
            descriptor = os.open(MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return  # fired already, in this process or another
        os.write(descriptor, f"{step} {key}\n".encode())
        os.close(descriptor)
    journal("killed", step, key)
    os.kill(os.getpid(), signal.SIGKILL)


class FaultyChannel:
    """The configured channel, with the two kill points around the receiver's answer."""

    def __init__(self, inner: Channel) -> None:
        self.inner = inner
        self.name = inner.name

    def send(self, message: Message) -> Delivery:
        """Maybe die before contacting the receiver, or after it accepted."""
        die_here("before-send", message.key)
        delivery = self.inner.send(message)
        if delivery.outcome is Outcome.DELIVERED:
            journal("accepted", message.key)
            die_here("after-accept", message.key)
        return delivery

    def close(self) -> None:
        """Close the real channel."""
        self.inner.close()


def faulty_preparer(prepare: Prepare) -> Prepare:
    """The real re-check, preceded by the ``recheck`` kill point."""

    def prepare_or_die(session: Session, claims: Sequence[Claim]) -> Mapping[int, Answer]:
        for claim in claims:
            die_here("recheck", claim.key)
        return prepare(session, claims)

    return prepare_or_die


@dataclass(frozen=True)
class FaultyDueQueries:
    """The scan's statements, each batch followed by the ``scan`` kill point (not committed)."""

    inner: DueQueries

    @property
    def parallel(self) -> bool:
        """As the real statements."""
        return self.inner.parallel

    def queue_batch(
        self, session: Session, now: datetime, lookahead: timedelta, limit: int
    ) -> Batch:
        """The real batch, then one chance to die per marked task, as for each inserted row."""
        counts = self.inner.queue_batch(session, now, lookahead, limit)
        for _ in range(counts.marked):
            die_here("scan", "*")
        return counts

    def plan_window(self, session: Session, now: datetime, ahead: timedelta) -> int:
        """The real window, then one chance to die per planned row."""
        queued = self.inner.plan_window(session, now, ahead)
        for _ in range(queued):
            die_here("scan", "*")
        return queued

    def record_scan(
        self,
        session: Session,
        at: datetime,
        queued: int,
        marked: int,
        duration_ms: float,
        *,
        clock_offset_ms: float | None = None,
    ) -> None:
        """The real heartbeat."""
        self.inner.record_scan(
            session, at, queued, marked, duration_ms, clock_offset_ms=clock_offset_ms
        )


def journal_recorded(verdict: Verdict, held: bool) -> None:
    """Say which deliveries a relay's committed round recorded (or found fenced)."""
    if verdict.status is Status.DELIVERED:
        journal("recorded", verdict.claim.key, "held" if held else "fenced")


# Before the first actor runs: `actors.services()` wires the process with these.
actors.configure_services(
    Seams(
        wrap_channel=FaultyChannel,
        wrap_prepare=faulty_preparer,
        wrap_due_queries=FaultyDueQueries,
        on_record=journal_recorded if JOURNAL else None,
    )
)
