"""What a relay reports: how each attempt ended, the run's counts, a round's log event."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
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
    EXPIRED = "expired"  # not sent: its expiry came first, or the domain's re-check said so
    DEFERRED = "deferred"  # not sent yet: the re-check put it back until ``next_attempt_at``

    @property
    def level(self) -> str:
        """The level of its log event: a warning for what an operator should look at."""
        return "warning" if self in _WORTH_A_LOOK else "info"


_WORTH_A_LOOK = frozenset((AttemptOutcome.DEAD, AttemptOutcome.FENCED, AttemptOutcome.EXPIRED))


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
    offset_seconds: int | None = None  # the row's moment is subject_at minus this
    ready_at: datetime | None = None  # a message the domain held back: the instant it held to

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
        ready_at: datetime | None = None,
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
            claim.offset_seconds,
            ready_at,
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


def log_round(
    log: FilteringBoundLogger, attempts: Sequence[Attempt], channel: str, subject_key: str
) -> None:
    """Log a round's attempts in one call: a ``round`` event whose ``events`` are one
    ``delivery`` event per attempt, each with its own level.

    One call for the round rather than one per attempt, so that a log setup can write the
    round's lines together (the worker's writes each event as a line of its own, in a few
    writes). ``subject_key`` names the subject id, in the domain's words (``task_id``).
    """
    if not attempts:
        return
    events = [_delivery(attempt, channel, subject_key) for attempt in attempts]
    if any(event["level"] == "warning" for event in events):
        log.warning("round", events=events)
    else:
        log.info("round", events=events)


def _delivery(attempt: Attempt, channel: str, subject_key: str) -> dict[str, object]:
    elapsed, next_at = attempt.elapsed, attempt.next_attempt_at
    return {
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
        "event": "delivery",
        "level": attempt.outcome.level,
    }
