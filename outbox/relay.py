"""The relay: claim due rows, re-check them with the domain, send, record the outcomes.

No transaction stays open while a message is on the wire. The relay works in rounds: one
short transaction records what the last round sent, claims a batch when none is held, and
re-checks the rows about to be sent; then the round sends for at most ``window``. So a row
is re-checked at most one window before its send, and an accepted message is recorded at
most one window (plus one send) after it; ``window = 0`` re-checks and records around every
single send.
The re-check answers each row with its message, or says to cancel it, to expire it (past
being useful) or to defer it: back to waiting until a later instant, the claim's attempt
not counted, so that a row the domain holds back is neither a failure nor ever dead.
The row's lease and fencing token keep every write consistent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy.orm import Session, sessionmaker
from structlog.typing import FilteringBoundLogger

from outbox.channels.base import Channel, Delivery, Message
from outbox.clock import Clock, require_utc
from outbox.masking import mask_email
from outbox.report import Attempt, AttemptOutcome, RelayReport, log_round
from outbox.retry import RetryPolicy
from outbox.store import (
    EXPIRED_UNSENT,
    Claim,
    Verdict,
    claim_due_rows,
    defer,
    expire_due_rows,
    extend_leases,
    record,
    release,
)
from outbox.verdicts import (
    Judged,
    cancelled,
    describe,
    expired,
    judge,
    out_of_attempts,
    past_expiry,
)

__all__ = [
    "FIRST_CLAIM",
    "Answer",
    "Attempt",
    "AttemptOutcome",
    "Cancel",
    "Defer",
    "Expire",
    "Prepare",
    "Relay",
    "RelayReport",
]

#: Time kept in hand on a lease beyond one send's timeout before the next send starts
#: (at most a quarter of the lease, so that a short lease still covers several sends).
LEASE_MARGIN = timedelta(seconds=5)
#: Rows in a relay run's first claim; later claims follow what the rounds could send.
FIRST_CLAIM = 10
#: Most rows past their expiry one claim ends as expired (the rest, at the next claims).
EXPIRE_BATCH = 1000
#: How often a relay run ends the rows past their expiry: at its first claim, then before a
#: claim at most this often. The claim never takes such a row meanwhile; ending it is only
#: bookkeeping, which need not cost a statement per round.
EXPIRE_EVERY = timedelta(seconds=1)


@dataclass(frozen=True)
class Cancel:
    """The domain's answer when a row must not be sent any more, and why."""

    reason: str


@dataclass(frozen=True)
class Expire:
    """The domain's answer when a row is past being useful: it ends ``expired``, unsent,
    with ``reason``."""

    reason: str


@dataclass(frozen=True)
class Defer:
    """The domain's answer when a row must not be sent yet: it waits again, due at
    ``until`` (aware UTC, later than the round's time), the claim's attempt not counted.

    A row whose expiry comes at or before ``until`` could never be sent: it ends
    ``expired`` instead.
    """

    until: datetime
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "until", require_utc(self.until))


#: What the re-check says of one claimed row: send this message, or cancel, expire or
#: defer the row.
Answer = Message | Cancel | Expire | Defer

#: Re-checks claimed rows against the domain, in the caller's transaction, and renders
#: each one still wanted, or says why not to send it now (after undoing what it needs to).
Prepare = Callable[[Session, Sequence[Claim]], Mapping[int, Answer]]


@dataclass(frozen=True)
class _Deferred:
    """A row the re-check put back, not yet written."""

    claim: Claim
    until: datetime
    reason: str

    def attempt(self, held: bool) -> Attempt:
        """The attempt to report once the row is written back: deferred, or fenced."""
        if not held:
            return Attempt.of(self.claim, AttemptOutcome.FENCED, "lease lost before deferring")
        outcome = AttemptOutcome.DEFERRED
        return Attempt.of(self.claim, outcome, self.reason, next_attempt_at=self.until)


@dataclass
class _Sorted:
    """The re-check's answers for a group, as the round applies them."""

    settled: list[Judged] = field(default_factory=list)  # cancelled or expired, unsent
    deferred: list[_Deferred] = field(default_factory=list)
    ready: list[tuple[Claim, Message]] = field(default_factory=list)  # to send, in order

    def write(self, session: Session, now: datetime) -> tuple[set[int], set[int]]:
        """Record the settled rows and put the deferred ones back: the ids still held of
        each."""
        held = record(session, [item.verdict for item in self.settled], now)
        return held, defer(session, [(d.claim, d.until) for d in self.deferred], now)


@dataclass
class _Batch:
    """The claimed rows still to send, and the verdicts still to record."""

    waiting: list[Claim] = field(default_factory=list)
    unrecorded: list[Judged] = field(default_factory=list)
    group: int = 0  # how many rows the next round re-checks
    expired_at: datetime | None = None  # when this run last ended the rows past expiry

    def expiring(self, now: datetime) -> bool:
        """Whether the next claim ends the rows past their expiry first."""
        return self.expired_at is None or now - self.expired_at >= EXPIRE_EVERY


@dataclass
class _Round:
    """The rows one round holds, as its transaction found them, and what it reports."""

    kept: list[Claim]  # still held: the group, then the rows waiting behind it
    lost: list[Claim]  # leases lost before sending: another relay may hold them now
    spent: list[Judged]  # out of attempts (dead) or past their expiry (expired), unsent
    group: list[Claim]  # the head of `kept`, re-checked this round
    expired: list[Claim] = field(default_factory=list)  # expired by the claim, to report
    expired_at: datetime | None = None  # when the claim ended the rows past expiry, if it did
    ready: list[tuple[Claim, Message]] = field(default_factory=list)  # to send, in order
    attempts: list[Attempt] = field(default_factory=list)  # committed, to report


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
    #: Called for each verdict written, right after its commit, with whether the relay still
    #: held the row (False: fenced, nothing written); before any attempt is reported.
    on_record: Callable[[Verdict, bool], None] | None = None
    #: The log key under which the row's subject id appears (the domain's name for it).
    subject_key: str = "subject_id"
    #: Each relay its own logger, bound to the logging set up when it first logs.
    log: FilteringBoundLogger = field(
        default_factory=lambda: structlog.get_logger("outbox.relay"),
        init=False,
        repr=False,
        compare=False,
    )

    def relay_until_idle(self, budget: timedelta | None = None) -> RelayReport:
        """Relay round after round until nothing is due, the budget is spent, or stop is set."""
        report = RelayReport()
        deadline = None if budget is None else time.monotonic() + budget.total_seconds()
        batch = _Batch()
        try:
            while not self.stop.is_set():
                claiming = deadline is None or time.monotonic() < deadline
                ready, settled = self._start_round(batch, report, claiming=claiming)
                if not batch.waiting:
                    if settled and claiming:
                        # Its rows all ended or were deferred unsent: more may be due behind.
                        # Rows that end unsent take no receiver's time (a digest's members,
                        # cancellations), so the claims double up to the batch size.
                        batch.group = min(self.batch_size, 2 * max(batch.group, FIRST_CLAIM))
                        continue
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
    ) -> tuple[list[tuple[Claim, Message]], bool]:
        """Record the last round, hold this round's rows, re-check the ones it will send.

        Returns the rows to send, and whether the round settled any row without sending it
        (cancelled, expired, deferred, dead or failed in its re-check).
        """
        sent, batch.unrecorded = batch.unrecorded, []
        now = self.clock.now()
        try:
            round_ = self._begin(batch, sent, now, claiming=claiming, recheck=True)
        except Exception as error:
            # Without the re-check, a failure is the database's own: let it raise, with no
            # warning about a re-check that may never have run.
            round_ = self._begin(batch, sent, now, claiming=claiming, recheck=False)
            # One row the domain cannot re-check must not hold back the others.
            self.log.warning("recheck_failed", rows=len(batch.waiting), exc_info=error)
            batch.unrecorded = self._recheck_one_by_one(round_)
        self._report(report, round_.attempts)
        if round_.expired_at is not None:
            # A full batch of them: more may wait, ended at the next claim.
            full = len(round_.expired) >= EXPIRE_BATCH
            batch.expired_at = None if full else round_.expired_at
        settled = {c.id for c in round_.group} - {c.id for c, _ in round_.ready}
        batch.waiting = [claim for claim in round_.kept if claim.id not in settled]
        return round_.ready, bool(settled or round_.spent or round_.expired)

    def _begin(
        self, batch: _Batch, sent: list[Judged], now: datetime, *, claiming: bool, recheck: bool
    ) -> _Round:
        """The round's one transaction: hold its rows, re-check its group (``recheck``), and
        record what the last round sent with the rows this one settled without sending.

        The round comes back with what its commit reports: those verdicts, the lost rows.
        """
        with self.session_factory.begin() as session:
            round_ = self._hold(session, batch, now, claiming=claiming)
            answers = _Sorted(settled=sent + round_.spent)
            if recheck and round_.group:
                answers = _sort_answers(round_.group, self.prepare(session, round_.group), now)
                answers.settled[:0] = sent + round_.spent
                round_.ready = answers.ready
            held, put_back = answers.write(session, now)
        self._recorded(round_.attempts, answers.settled, held)
        round_.attempts += [d.attempt(d.claim.id in put_back) for d in answers.deferred]
        reason = "lease lost before sending"
        round_.attempts += [Attempt.of(c, AttemptOutcome.FENCED, reason) for c in round_.lost]
        gone = AttemptOutcome.EXPIRED
        round_.attempts += [Attempt.of(c, gone, EXPIRED_UNSENT) for c in round_.expired]
        return round_

    def _hold(self, session: Session, batch: _Batch, now: datetime, *, claiming: bool) -> _Round:
        """The rows this relay holds for the round.

        Waiting rows keep their leases (renewed when short); once none waits, a new batch is
        claimed, the rows due past their expiry expired first (`EXPIRE_EVERY`). A row out of
        claims (its worker died every time) is spent, dead, and one past its expiry expired,
        both unsent.
        """
        waiting, size = batch.waiting, batch.group
        lost: list[Claim] = []
        gone: list[Claim] = []
        expired_at = None
        if waiting and not self._lease_left(waiting[0], now):
            kept = extend_leases(session, waiting, now + self.lease)
            ids = {claim.id for claim in kept}
            lost = [claim for claim in waiting if claim.id not in ids]
        elif waiting or not claiming:
            kept = waiting
        else:
            if batch.expiring(now):
                gone, expired_at = expire_due_rows(session, now, EXPIRE_BATCH), now
            # About what the last round could send, so that a slow receiver's rows stay
            # free for other relays; a fast one's claims double up to the batch size.
            limit = min(self.batch_size, batch.group or FIRST_CLAIM)
            kept = claim_due_rows(session, now, now + self.lease, self.owner, limit)
            size = len(kept)
        spent: list[Judged] = []
        for claim in kept:
            if self.policy.out_of_claims(
                claim.attempts, claim.unfinished_claims, expiring=claim.expires_at is not None
            ):
                spent.append(Judged(out_of_attempts(claim)))
            elif past_expiry(claim, now):
                spent.append(Judged(expired(claim)))
        if spent:
            ended = {item.verdict.claim.id for item in spent}
            kept = [claim for claim in kept if claim.id not in ended]
        group = kept[:size]
        return _Round(kept, lost, spent, group, expired=gone, expired_at=expired_at)

    def _lease_left(self, claim: Claim, now: datetime) -> bool:
        margin = min(LEASE_MARGIN, self.lease / 4)
        return claim.lease_expires_at - now >= self.send_timeout + margin

    def _recheck_one_by_one(self, round_: _Round) -> list[Judged]:
        """Re-check each row of the group in a transaction of its own; return the rows that
        failed (retried, recorded with the next round) and add the others to the round."""
        failed: list[Judged] = []
        for claim in round_.group:
            try:
                with self.session_factory.begin() as session:
                    now = self.clock.now()
                    answers = _sort_answers([claim], self.prepare(session, [claim]), now)
                    held, put_back = answers.write(session, now)
            except Exception as exc:
                delivery = Delivery.retry(describe(exc))
                failed.append(Judged(judge(claim, delivery, self.policy, self.clock.now())))
                continue
            self._recorded(round_.attempts, answers.settled, held)
            round_.attempts += [d.attempt(d.claim.id in put_back) for d in answers.deferred]
            round_.ready += answers.ready
        return failed

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
            if past_expiry(claim, now):  # held past its expiry, behind slower sends
                batch.unrecorded.append(Judged(expired(claim)))
                continue
            batch.unrecorded.append(self._send(claim, message))
            sent += 1
        batch.group = max(1, 2 * sent)  # enough re-checked rows for the next round

    def _send(self, claim: Claim, message: Message) -> Judged:
        started = time.perf_counter()
        try:
            delivery = self.channel.send(message)
        except Exception as exc:  # channels classify errors; anything else is a bug: retry
            delivery = Delivery.retry(describe(exc))
        elapsed = time.perf_counter() - started
        verdict = judge(claim, delivery, self.policy, self.clock.now())
        return Judged(verdict, mask_email(message.recipient), elapsed, message.ready_at)

    def _end(self, batch: _Batch, report: RelayReport) -> None:
        """Record the last round and give back the rows not attempted (stop, or an error)."""
        if not batch.unrecorded and not batch.waiting:
            return
        now = self.clock.now()
        try:
            with self.session_factory.begin() as session:
                held = record(session, [item.verdict for item in batch.unrecorded], now)
                release(session, batch.waiting, now)
        except Exception:  # the leases expire on their own; say so and go on stopping
            self.log.error(
                "record_failed",
                sent=len(batch.unrecorded),
                unsent=len(batch.waiting),
                consequence="rows come back when their lease expires; sent ones are sent again",
                exc_info=True,
            )
            return
        attempts: list[Attempt] = []
        self._recorded(attempts, batch.unrecorded, held)
        reason = "stopping before this row was attempted"
        attempts += [Attempt.of(c, AttemptOutcome.RELEASED, reason) for c in batch.waiting]
        self._report(report, attempts)

    def _recorded(self, attempts: list[Attempt], judged: Sequence[Judged], held: set[int]) -> None:
        """Add committed verdicts to ``attempts``: each as it was written, or fenced."""
        if self.on_record is not None:
            for item in judged:
                self.on_record(item.verdict, item.verdict.claim.id in held)
        attempts += [item.attempt(item.verdict.claim.id in held) for item in judged]

    def _report(self, report: RelayReport, attempts: Sequence[Attempt]) -> None:
        """Log a round's attempts (in one call), count them and hand each to ``on_attempt``."""
        log_round(self.log, attempts, self.channel.name, self.subject_key)
        for attempt in attempts:
            report.add(attempt)
            if self.on_attempt is not None:
                self.on_attempt(attempt)


def _sort_answers(group: Sequence[Claim], answers: Mapping[int, Answer], now: datetime) -> _Sorted:
    """Split the re-check's answers into rows settled unsent, rows deferred and rows to send.

    Raises:
        ValueError: a `Defer` to ``now`` or earlier, which would claim the row again at
            once: the re-check is then taken as failed (`Relay._recheck_one_by_one`).
    """
    found = _Sorted()
    for claim in group:
        answer = answers.get(claim.id, Cancel("the re-check said nothing of this row"))
        if isinstance(answer, Cancel):
            found.settled.append(Judged(cancelled(claim, answer.reason)))
        elif isinstance(answer, Expire):
            found.settled.append(Judged(expired(claim, answer.reason)))
        elif isinstance(answer, Defer):
            if answer.until <= now:
                raise ValueError(f"row {claim.id} deferred to {answer.until}, not after {now}")
            if claim.expires_at is not None and answer.until >= claim.expires_at:
                reason = f"deferred past its expiry: {answer.reason}"
                found.settled.append(Judged(expired(claim, reason)))
            else:
                found.deferred.append(_Deferred(claim, answer.until, answer.reason))
        else:
            found.ready.append((claim, answer))
    return found
