"""The relay: claim due rows, re-check each with the domain, send, record the outcome.

No transaction stays open while a message is on the wire: claim, send and record are
three short steps, and the row's lease and fencing token keep them consistent.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy.orm import Session, sessionmaker

from outbox.channels.base import Channel, Delivery, Message, Outcome
from outbox.clock import Clock
from outbox.masking import mask_email, mask_emails_in
from outbox.retry import RetryPolicy
from outbox.store import Claim, claim_due_rows, extend_leases, finish, release, reschedule
from outbox.table import Status

log = structlog.get_logger("outbox.relay")

#: Time kept in hand on a lease beyond one send's timeout before the next send starts.
LEASE_MARGIN = timedelta(seconds=5)
MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class Cancel:
    """The domain's answer when a row must not be sent any more, and why."""

    reason: str


#: Re-checks a claimed row against the domain and renders it, or says why to cancel it.
Prepare = Callable[[Session, Claim], Message | Cancel]


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
    batch_size: int = 50
    send_timeout: timedelta = timedelta(seconds=10)
    stop: threading.Event = field(default_factory=threading.Event)
    on_attempt: Callable[[Attempt], None] | None = None
    #: The log key under which the row's subject id appears (the domain's name for it).
    subject_key: str = "subject_id"

    def relay_until_idle(self, budget: timedelta | None = None) -> RelayReport:
        """Relay batch after batch until nothing is due, the budget is spent, or stop is set."""
        report = RelayReport()
        deadline = None if budget is None else time.monotonic() + budget.total_seconds()
        try:
            while not self.stop.is_set():
                if not self.relay_batch(report):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    report.out_of_budget = True
                    break
        finally:
            self.channel.close()  # one connection for the whole run, not one per batch
        return report

    def relay_batch(self, report: RelayReport) -> int:
        """Claim one batch and attempt each row; return how many rows were claimed."""
        now = self.clock.now()
        with self.session_factory.begin() as session:
            claims = claim_due_rows(session, now, now + self.lease, self.owner, self.batch_size)
        waiting = list(claims)
        try:
            while waiting and not self.stop.is_set():
                waiting = self._keep_leases(waiting, report)
                if waiting:
                    self._attempt(waiting.pop(0), report)
        finally:
            if waiting:
                self._release(waiting, report)
        return len(claims)

    def _keep_leases(self, waiting: list[Claim], report: RelayReport) -> list[Claim]:
        now = self.clock.now()
        if waiting[0].lease_expires_at - now >= self.send_timeout + LEASE_MARGIN:
            return waiting
        with self.session_factory.begin() as session:
            held = extend_leases(session, waiting, now + self.lease)
        kept = {claim.id for claim in held}
        for lost in (claim for claim in waiting if claim.id not in kept):
            self._record(report, lost, "fenced", "lease lost before sending")
        return held

    def _attempt(self, claim: Claim, report: RelayReport) -> None:
        if claim.attempts > self.policy.max_attempts:
            error = f"gave up after {claim.attempts - 1} attempts: the last one never finished"
            self._write(report, claim, Status.DEAD, error)
            return
        try:
            with self.session_factory.begin() as session:
                prepared = self.prepare(session, claim)
        except Exception as exc:  # a row the domain cannot render must not stop the batch
            self._fail(report, claim, Delivery.retry(_describe(exc)))
            return
        if isinstance(prepared, Cancel):
            self._write(report, claim, Status.CANCELLED, prepared.reason)
            return
        started = time.perf_counter()
        try:
            delivery = self.channel.send(prepared)
        except Exception as exc:  # channels classify errors; anything else is a bug: retry
            delivery = Delivery.retry(_describe(exc))
        elapsed = time.perf_counter() - started
        recipient = mask_email(prepared.recipient)
        if delivery.outcome is Outcome.DELIVERED:
            self._write(report, claim, Status.DELIVERED, None, recipient=recipient, elapsed=elapsed)
        else:
            self._fail(report, claim, delivery, recipient=recipient, elapsed=elapsed)

    def _fail(
        self,
        report: RelayReport,
        claim: Claim,
        delivery: Delivery,
        *,
        recipient: str | None = None,
        elapsed: float | None = None,
    ) -> None:
        error = mask_emails_in(delivery.error or "unknown error")[:MAX_ERROR_LENGTH]
        if delivery.outcome is Outcome.PERMANENT:
            self._write(report, claim, Status.DEAD, error, recipient=recipient, elapsed=elapsed)
            return
        now = self.clock.now()
        next_at = self.policy.next_attempt(claim.attempts, now, delivery.retry_after)
        if next_at is None:
            error = f"gave up after {claim.attempts} attempts: {error}"
            self._write(report, claim, Status.DEAD, error, recipient=recipient, elapsed=elapsed)
            return
        with self.session_factory.begin() as session:
            held = reschedule(session, claim, now, next_at, error)
        outcome = "retry" if held else "fenced"
        self._record(
            report, claim, outcome, error, recipient=recipient, elapsed=elapsed, next_at=next_at
        )

    def _write(
        self,
        report: RelayReport,
        claim: Claim,
        status: Status,
        detail: str | None,
        *,
        recipient: str | None = None,
        elapsed: float | None = None,
    ) -> None:
        with self.session_factory.begin() as session:
            held = finish(session, claim, self.clock.now(), status, detail)
        outcome = status.value if held else "fenced"
        self._record(report, claim, outcome, detail, recipient=recipient, elapsed=elapsed)

    def _release(self, waiting: list[Claim], report: RelayReport) -> None:
        try:
            with self.session_factory.begin() as session:
                release(session, waiting, self.clock.now())
        except Exception:  # the leases expire on their own; say so and go on stopping
            log.warning("release_failed", rows=len(waiting), exc_info=True)
            return
        for claim in waiting:
            self._record(report, claim, "released", "stopping before this row was attempted")

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


def _describe(exc: BaseException) -> str:
    return mask_emails_in(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_LENGTH]
