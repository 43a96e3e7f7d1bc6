"""What a relay reports: how each attempt ended, the run's counts, its log lines."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from structlog.typing import FilteringBoundLogger

from outbox.store import Claim


class AttemptOutcome(StrEnum):
    """How one attempt at a claimed row ended: the word reports, logs and metrics use."""

    DELIVERED = "delivered"
    RETRY = "retry"  # failed for now: tried again at the attempt's ``next_attempt_at``
    DEAD = "dead"  # refused for good, or out of attempts
    CANCELLED = "cancelled"  # the domain's re-check said not to send it
    FENCED = "fenced"  # the lease was lost: nothing written, the row is another relay's
    RELEASED = "released"  # given back unattempted, the relay stopping

    @property
    def level(self) -> str:
        """The level of its log event: a warning for what an operator should look at."""
        return "warning" if self in _WORTH_A_LOOK else "info"


_WORTH_A_LOOK = frozenset((AttemptOutcome.DEAD, AttemptOutcome.FENCED))


@dataclass(frozen=True)
class Attempt:
    """What happened to one claimed row."""

    outbox_id: int
    key: str
    attempt: int
    outcome: AttemptOutcome
    detail: str | None = None
    recipient: str | None = None  # masked
    subject_at: datetime | None = None
    created_at: datetime | None = None
    subject_id: int | None = None
    elapsed: float | None = None  # seconds the send took
    next_attempt_at: datetime | None = None  # for a retry

    @classmethod
    def of(
        cls,
        claim: Claim,
        outcome: AttemptOutcome,
        detail: str | None = None,
        *,
        recipient: str | None = None,
        elapsed: float | None = None,
        next_attempt_at: datetime | None = None,
    ) -> Attempt:
        """The attempt at ``claim`` that ended with ``outcome``."""
        return cls(
            claim.id,
            claim.key,
            claim.attempts,
            outcome,
            detail,
            recipient,
            claim.subject_at,
            claim.created_at,
            claim.subject_id,
            elapsed,
            next_attempt_at,
        )


@dataclass
class RelayReport:
    """Counts by outcome, and the earliest time a rescheduled row is due again."""

    counts: Counter[str] = field(default_factory=Counter)
    next_attempt_at: datetime | None = None
    out_of_budget: bool = False  # stopped with rows possibly still due

    def add(self, attempt: Attempt) -> None:
        """Count one attempt (and remember the soonest retry)."""
        self.counts[attempt.outcome.value] += 1  # plain str keys: callers print the counts
        next_at = attempt.next_attempt_at
        if next_at is not None and (self.next_attempt_at is None or next_at < self.next_attempt_at):
            self.next_attempt_at = next_at

    @property
    def claimed(self) -> int:
        """How many rows were claimed in all."""
        return sum(self.counts.values())


def log_attempt(
    log: FilteringBoundLogger, attempt: Attempt, channel: str, subject_key: str
) -> None:
    """Log one ``delivery`` event; ``subject_key`` names the subject id in the domain's words."""
    elapsed, next_at = attempt.elapsed, attempt.next_attempt_at
    fields = {
        "outbox_id": attempt.outbox_id,
        "key": attempt.key,
        "attempt": attempt.attempt,
        "outcome": attempt.outcome,
        "error": attempt.detail,
        "recipient": attempt.recipient,
        "channel": channel,
        "duration_ms": None if elapsed is None else round(elapsed * 1000, 1),
        "next_attempt_at": None if next_at is None else next_at.isoformat(),
        subject_key: attempt.subject_id,
    }
    if attempt.outcome.level == "warning":
        log.warning("delivery", **fields)
    else:
        log.info("delivery", **fields)
