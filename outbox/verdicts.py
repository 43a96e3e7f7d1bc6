"""How an attempt's answer decides its row: delivered, retried later, dead, cancelled or
expired.

Pure decisions: time and the retry policy are parameters, nothing here reads the clock or
the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from outbox.channels.base import Delivery, Outcome
from outbox.masking import mask_emails_in
from outbox.report import Attempt, AttemptOutcome
from outbox.retry import RetryPolicy
from outbox.store import EXPIRED_UNSENT, Claim, Verdict
from outbox.table import Status

MAX_ERROR_LENGTH = 2000

#: What a row reports once its verdict is written (a verdict whose write found the lease
#: lost reports `AttemptOutcome.FENCED`).
_REPORTED_AS = {
    Status.DELIVERED: AttemptOutcome.DELIVERED,
    Status.FAILED: AttemptOutcome.RETRY,
    Status.DEAD: AttemptOutcome.DEAD,
    Status.CANCELLED: AttemptOutcome.CANCELLED,
    Status.EXPIRED: AttemptOutcome.EXPIRED,
}


@dataclass(frozen=True)
class Judged:
    """A row's verdict, not yet recorded, with what its report says about the send."""

    verdict: Verdict
    recipient: str | None = None  # masked
    elapsed: float | None = None
    ready_at: datetime | None = None  # the message's (`Message.ready_at`)

    def attempt(self, held: bool) -> Attempt:
        """The attempt to report once the verdict is committed: as written, or fenced."""
        verdict = self.verdict
        outcome = _REPORTED_AS[verdict.status] if held else AttemptOutcome.FENCED
        return Attempt.of(
            verdict.claim,
            outcome,
            verdict.error,
            recipient=self.recipient,
            elapsed=self.elapsed,
            next_attempt_at=verdict.retry_at if outcome is AttemptOutcome.RETRY else None,
            ready_at=self.ready_at,
        )


def judge(claim: Claim, delivery: Delivery, policy: RetryPolicy, now: datetime) -> Verdict:
    """What an attempt's answer means for its row: delivered, retried later, dead, or
    expired (a row with an expiry whose next attempt would start at or after it)."""
    if delivery.outcome is Outcome.DELIVERED:
        return Verdict(claim, Status.DELIVERED)
    error = mask_emails_in(delivery.error or "unknown error")[:MAX_ERROR_LENGTH]
    if delivery.outcome is Outcome.PERMANENT:
        return Verdict(claim, Status.DEAD, error)
    next_at = policy.next_attempt(claim.attempts, now, delivery.retry_after, claim.expires_at)
    if next_at is None and claim.expires_at is not None:
        return expired(claim, f"expires before its next attempt; last error: {error}")
    if next_at is None:
        return Verdict(claim, Status.DEAD, f"gave up after {claim.attempts} attempts: {error}")
    return Verdict(claim, Status.FAILED, error, next_at)


def out_of_attempts(claim: Claim) -> Verdict:
    """Dead unsent: the row was claimed once too often (its worker died every time)."""
    error = f"gave up after {claim.attempts - 1} attempts: the last one never finished"
    return Verdict(claim, Status.DEAD, error)


def expired(claim: Claim, reason: str = EXPIRED_UNSENT) -> Verdict:
    """Expired unsent: its expiry came before its send could start."""
    return Verdict(claim, Status.EXPIRED, reason[:MAX_ERROR_LENGTH])


def past_expiry(claim: Claim, now: datetime) -> bool:
    """Whether a send of ``claim`` starting at ``now`` would start too late to help."""
    return claim.expires_at is not None and now >= claim.expires_at


def cancelled(claim: Claim, reason: str) -> Verdict:
    """The domain said not to send the row any more."""
    return Verdict(claim, Status.CANCELLED, reason)


def describe(exc: BaseException) -> str:
    """An exception as a row's error: its type and message, addresses masked, bounded."""
    return mask_emails_in(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_LENGTH]
