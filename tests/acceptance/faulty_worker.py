"""``dramatiq tests.acceptance.faulty_worker``: the real actors, dying at one exact step.

A test build only. It imports `worker.actors` unchanged (its broker, its actors, its
settings) and wraps seams the wiring offers before any actor runs, so that the worker process
can SIGKILL itself at a precise point of the pipeline:

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from outbox import relay as relaying
from outbox.channels.base import Channel, Delivery, Message, Outcome
from outbox.clock import Clock
from outbox.relay import Cancel, Prepare
from outbox.store import Claim
from outbox.table import Status
from worker import actors
from worker import bootstrap as wiring
from worker.reminders.due import Batch, PostgresDueQueries
from worker.settings import Settings

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


_channel_factory = wiring.channel_factory
# bootstrap imports the name without exporting it; the wiring offers no seam for the re-check.
_reminder_preparer = wiring.reminder_preparer  # type: ignore[attr-defined]
_queue_batch = PostgresDueQueries.queue_batch
_recorded = relaying.Relay._recorded


def faulty_channel_factory(settings: Settings, clock: Clock | None = None) -> Callable[[], Channel]:
    """The real factory, each channel wrapped."""
    make = _channel_factory(settings, clock)
    return lambda: FaultyChannel(make())


def faulty_preparer(renderer: Any) -> Prepare:
    """The real re-check, preceded by the ``recheck`` kill point."""
    prepare = _reminder_preparer(renderer)

    def prepare_or_die(session: Any, claims: Sequence[Claim]) -> Mapping[int, Message | Cancel]:
        for claim in claims:
            die_here("recheck", claim.key)
        return prepare(session, claims)

    return prepare_or_die


def faulty_queue(queries: PostgresDueQueries, session: Any, *args: Any) -> Batch:
    """The scan's one statement per batch, then the ``scan`` kill point (not committed).

    The acceptance suite runs on PostgreSQL, where a batch is `PostgresDueQueries.queue_batch`.
    """
    counts = _queue_batch(queries, session, *args)
    for _ in range(counts[0]):  # one chance per marked task, as for each inserted row
        die_here("scan", "*")
    return counts


def recorded_journaled(self: Any, report: Any, done: Sequence[Any], held: set[int]) -> None:
    """The relay's report of a committed round; say which deliveries it recorded."""
    for item in done:
        verdict = item.verdict
        if verdict.status is Status.DELIVERED:
            journal("recorded", verdict.claim.key, "held" if verdict.claim.id in held else "fenced")
    _recorded(self, report, done, held)


# Before the first actor runs: `services()` builds the channel and the relay's re-check
# from these module attributes, and the scan and the relay look theirs up at call time.
wiring.channel_factory = faulty_channel_factory
wiring.reminder_preparer = faulty_preparer  # type: ignore[attr-defined]
# mypy refuses assigning to a method; the scan offers no seam for its batch statement.
PostgresDueQueries.queue_batch = faulty_queue  # type: ignore[method-assign, assignment]
if JOURNAL:
    # mypy refuses assigning to a method; the journal needs the relay's own record of a round.
    relaying.Relay._recorded = recorded_journaled  # type: ignore[method-assign]
