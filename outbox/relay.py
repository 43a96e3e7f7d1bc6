"""The relay: claim due rows, re-check them with the domain, send, record the outcomes.

No transaction stays open while a message is on the wire. The relay works in rounds: one
short transaction records what the last round sent, claims a batch when none is held, and
re-checks the rows about to be sent; then the round sends for at most ``window``. So a row
is re-checked at most one window before its send, and an accepted message is recorded at
most one window (plus one send) after it; ``window = 0`` re-checks and records around every
single send.
The row's lease and fencing token keep every write consistent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy.orm import Session, sessionmaker

from outbox.channels.base import Channel, Delivery, Message, Outcome
from outbox.clock import Clock
from outbox.masking import mask_email, mask_emails_in
from outbox.retry import RetryPolicy
from outbox.store import Claim, Verdict, claim_due_rows, extend_leases, record, release
from outbox.table import Status

log = structlog.get_logger("outbox.relay")

#: Time kept in hand on a lease beyond one send's timeout before the next send starts
#: (at most a quarter of the lease, so that a short lease still covers several sends).
LEASE_MARGIN = timedelta(seconds=5)
MAX_ERROR_LENGTH = 2000
#: Rows in a relay run's first claim; later claims follow what the rounds could send.
FIRST_CLAIM = 10


@dataclass(frozen=True)
class Cancel:
    """The domain's answer when a row must not be sent any more, and why."""

    reason: str


#: Re-checks claimed rows against the domain, in the caller's transaction, and renders
#: each one still wanted, or says why to cancel it (after undoing what it needs to).
Prepare = Callable[[Session, Sequence[Claim]], Mapping[int, Message | Cancel]]


@dataclass(frozen=True)
class Attempt:
    """What happened to one claimed row."""

    outbox_id: int
    key: str
    attempt: int
    outcome: str  # delivered, retry, dead, cancelled, fenced or released
    detail: str | None = None
    recipient: str | None = None  # masked
    subject_at: datetime | None = None
    created_at: datetime | None = None


@dataclass
class RelayReport:
    """Counts by outcome, and the earliest time a rescheduled row is due again."""

    counts: Counter[str] = field(default_factory=Counter)
    next_attempt_at: datetime | None = None
    out_of_budget: bool = False  # stopped with rows possibly still due

    def add(self, attempt: Attempt, next_at: datetime | None = None) -> None:
        """Count one attempt (and remember the soonest retry)."""
        self.counts[attempt.outcome] += 1
        if next_at is not None and (self.next_attempt_at is None or next_at < self.next_attempt_at):
            self.next_attempt_at = next_at

    @property
    def claimed(self) -> int:
        """How many rows were claimed in all."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class _Done:
    """A row's verdict, not yet recorded, with what the log line says about its send."""

    verdict: Verdict
    recipient: str | None = None  # masked
    elapsed: float | None = None


@dataclass
class _Batch:
    """The claimed rows still to send, and the verdicts still to record."""

    waiting: list[Claim] = field(default_factory=list)
    unrecorded: list[_Done] = field(default_factory=list)
    group: int = 0  # how many rows the next round re-checks


@dataclass
class Relay:
    """Delivers due outbox rows through one channel; safe to run in many threads and hosts."""

    session_factory: sessionmaker[Session]
    channel: Channel
    prepare: Prepare
    clock: Clock
    policy: RetryPolicy
    owner: str
    lease: timedelta = timedelta(seconds=60)
    batch_size: int = 100
    send_timeout: timedelta = timedelta(seconds=10)
    #: How long one round sends on one re-check before recording what it sent.
    window: timedelta = timedelta(milliseconds=500)
    stop: threading.Event = field(default_factory=threading.Event)
    on_attempt: Callable[[Attempt], None] | None = None
    #: The log key under which the row's subject id appears (the domain's name for it).
    subject_key: str = "subject_id"
    #: Wraps the report of a round, whose lines are all made at once: a block that writes
    #: them together (the worker's `worker.logs.lines_together`) saves a write per line.
    lines_together: Callable[[], AbstractContextManager[object]] = nullcontext

    def relay_until_idle(self, budget: timedelta | None = None) -> RelayReport:
        """Relay round after round until nothing is due, the budget is spent, or stop is set."""
        report = RelayReport()
        deadline = None if budget is None else time.monotonic() + budget.total_seconds()
        batch = _Batch()
        try:
            while not self.stop.is_set():
                claiming = deadline is None or time.monotonic() < deadline
                ready = self._start_round(batch, report, claiming=claiming)
                if not batch.waiting:
                    report.out_of_budget = not claiming
                    break
                self._send_round(batch, ready)
        finally:
            try:
                self._end(batch, report)
            finally:
                self.channel.close()  # one connection for the whole run, not one per batch
        return report

    def _start_round(
        self, batch: _Batch, report: RelayReport, *, claiming: bool
    ) -> list[tuple[Claim, Message]]:
        """One transaction: record the last round, keep the leases (or claim the next batch
        once the last one is sent), and re-check the rows this round will send."""
        done, batch.unrecorded = batch.unrecorded, []
        now = self.clock.now()
        try:
            with self.session_factory.begin() as session:
                kept, lost, spent, group = self._hold(session, batch, now, claiming=claiming)
                answers = self.prepare(session, group) if group else {}
                cancels, ready = _sort_answers(group, answers)
                held = record(session, [d.verdict for d in done + spent + cancels], now)
            done += spent + cancels
        except Exception:
            # One row the domain cannot re-check must not hold back the others.
            log.warning("recheck_failed", rows=len(batch.waiting), exc_info=True)
            with self.session_factory.begin() as session:  # the database itself: raise
                kept, lost, spent, group = self._hold(session, batch, now, claiming=claiming)
                held = record(session, [d.verdict for d in done + spent], now)
            done += spent
            batch.unrecorded, ready = self._prepare_one_by_one(group, report)
        self._recorded(report, done, held)
        for claim in lost:
            self._record(report, claim, "fenced", "lease lost before sending")
        settled = {c.id for c in group} - {c.id for c, _ in ready}
        batch.waiting = [claim for claim in kept if claim.id not in settled]
        return ready

    def _hold(
        self, session: Session, batch: _Batch, now: datetime, *, claiming: bool
    ) -> tuple[list[Claim], list[Claim], list[_Done], list[Claim]]:
        """The rows this relay holds for the round: (kept, lost, spent, group to re-check).

        Waiting rows keep their leases (renewed when short); once none waits, a new batch is
        claimed. A row out of attempts (its worker died every time) is spent: dead, unsent.
        """
        waiting, size = batch.waiting, batch.group
        if waiting and not self._lease_left(waiting[0], now):
            kept = extend_leases(session, waiting, now + self.lease)
            ids = {claim.id for claim in kept}
            lost = [claim for claim in waiting if claim.id not in ids]
        elif waiting or not claiming:
            kept, lost = waiting, []
        else:
            # About what the last round could send, so that a slow receiver's rows stay
            # free for other relays; a fast one's claims double up to the batch size.
            limit = min(self.batch_size, batch.group or FIRST_CLAIM)
            kept = claim_due_rows(session, now, now + self.lease, self.owner, limit)
            lost, size = [], len(kept)
        error = "gave up after {} attempts: the last one never finished"
        spent = [
            _Done(Verdict(claim, Status.DEAD, error.format(claim.attempts - 1)))
            for claim in kept
            if claim.attempts > self.policy.max_attempts
        ]
        if spent:
            kept = [claim for claim in kept if claim.attempts <= self.policy.max_attempts]
        return kept, lost, spent, kept[:size]

    def _lease_left(self, claim: Claim, now: datetime) -> bool:
        margin = min(LEASE_MARGIN, self.lease / 4)
        return claim.lease_expires_at - now >= self.send_timeout + margin

    def _prepare_one_by_one(
        self, group: Sequence[Claim], report: RelayReport
    ) -> tuple[list[_Done], list[tuple[Claim, Message]]]:
        """Re-check each row in a transaction of its own: (rows that failed, rows to send)."""
        failed: list[_Done] = []
        ready: list[tuple[Claim, Message]] = []
        for claim in group:
            try:
                with self.session_factory.begin() as session:
                    cancels, mine = _sort_answers([claim], self.prepare(session, [claim]))
                    held = record(session, [d.verdict for d in cancels], self.clock.now())
            except Exception as exc:
                failed.append(_Done(self._judge(claim, Delivery.retry(_describe(exc)))))
                continue
            self._recorded(report, cancels, held)
            ready += mine
        return failed, ready

    def _send_round(self, batch: _Batch, ready: list[tuple[Claim, Message]]) -> None:
        """Send until the window is spent, a lease runs short or stop is set."""
        started = self.clock.now()
        sent = 0
        for claim, message in ready:
            now = self.clock.now()
            if self.stop.is_set():
                break
            if sent and (now - started >= self.window or not self._lease_left(claim, now)):
                break
            batch.waiting.remove(claim)
            batch.unrecorded.append(self._send(claim, message))
            sent += 1
        batch.group = max(1, 2 * sent)  # enough re-checked rows for the next round

    def _send(self, claim: Claim, message: Message) -> _Done:
        started = time.perf_counter()
        try:
            delivery = self.channel.send(message)
        except Exception as exc:  # channels classify errors; anything else is a bug: retry
            delivery = Delivery.retry(_describe(exc))
        elapsed = time.perf_counter() - started
        return _Done(self._judge(claim, delivery), mask_email(message.recipient), elapsed)

    def _judge(self, claim: Claim, delivery: Delivery) -> Verdict:
        """What an attempt's answer means for its row: delivered, retried later, or dead."""
        if delivery.outcome is Outcome.DELIVERED:
            return Verdict(claim, Status.DELIVERED)
        error = mask_emails_in(delivery.error or "unknown error")[:MAX_ERROR_LENGTH]
        if delivery.outcome is Outcome.PERMANENT:
            return Verdict(claim, Status.DEAD, error)
        next_at = self.policy.next_attempt(claim.attempts, self.clock.now(), delivery.retry_after)
        if next_at is None:
            return Verdict(claim, Status.DEAD, f"gave up after {claim.attempts} attempts: {error}")
        return Verdict(claim, Status.FAILED, error, next_at)

    def _end(self, batch: _Batch, report: RelayReport) -> None:
        """Record the last round and give back the rows not attempted (stop, or an error)."""
        if not batch.unrecorded and not batch.waiting:
            return
        now = self.clock.now()
        try:
            with self.session_factory.begin() as session:
                held = record(session, [d.verdict for d in batch.unrecorded], now)
                release(session, batch.waiting, now)
        except Exception:  # the leases expire on their own; say so and go on stopping
            log.error(
                "record_failed",
                sent=len(batch.unrecorded),
                unsent=len(batch.waiting),
                consequence="rows come back when their lease expires; sent ones are sent again",
                exc_info=True,
            )
            return
        self._recorded(report, batch.unrecorded, held)
        for claim in batch.waiting:
            self._record(report, claim, "released", "stopping before this row was attempted")

    def _recorded(self, report: RelayReport, done: Sequence[_Done], held: set[int]) -> None:
        """Report verdicts once committed: each as it was written, or fenced."""
        with self.lines_together():
            self._report_each(report, done, held)

    def _report_each(self, report: RelayReport, done: Sequence[_Done], held: set[int]) -> None:
        for item in done:
            verdict = item.verdict
            if verdict.claim.id not in held:
                outcome = "fenced"
            elif verdict.status is Status.FAILED:
                outcome = "retry"
            else:
                outcome = verdict.status.value
            self._record(
                report,
                verdict.claim,
                outcome,
                verdict.error,
                recipient=item.recipient,
                elapsed=item.elapsed,
                next_at=verdict.retry_at if outcome == "retry" else None,
            )

    def _record(
        self,
        report: RelayReport,
        claim: Claim,
        outcome: str,
        detail: str | None = None,
        *,
        recipient: str | None = None,
        elapsed: float | None = None,
        next_at: datetime | None = None,
    ) -> None:
        attempt = Attempt(
            claim.id,
            claim.key,
            claim.attempts,
            outcome,
            detail,
            recipient,
            claim.subject_at,
            claim.created_at,
        )
        report.add(attempt, next_at)
        log.log(
            30 if outcome in ("fenced", "dead") else 20,
            "delivery",
            outbox_id=claim.id,
            key=claim.key,
            attempt=claim.attempts,
            outcome=outcome,
            error=detail,
            recipient=recipient,
            channel=self.channel.name,
            duration_ms=None if elapsed is None else round(elapsed * 1000, 1),
            next_attempt_at=None if next_at is None else next_at.isoformat(),
            **{self.subject_key: claim.subject_id},
        )
        if self.on_attempt is not None:
            self.on_attempt(attempt)


def _sort_answers(
    group: Sequence[Claim], answers: Mapping[int, Message | Cancel]
) -> tuple[list[_Done], list[tuple[Claim, Message]]]:
    """Split the re-check's answers: (cancelled rows, rows to send in order)."""
    cancels, ready = [], []
    for claim in group:
        answer = answers.get(claim.id, Cancel("the re-check said nothing of this row"))
        if isinstance(answer, Cancel):
            cancels.append(_Done(Verdict(claim, Status.CANCELLED, answer.reason)))
        else:
            ready.append((claim, answer))
    return cancels, ready


def _describe(exc: BaseException) -> str:
    return mask_emails_in(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_LENGTH]
