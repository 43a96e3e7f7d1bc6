"""When to try a failed row again: exponential backoff with jitter, for as long as it helps.

A row without an expiry has a number of attempts; a row with one (``expires_at``) is tried
until it expires, however many attempts that takes, with a shorter cap between them, so that
a receiver's outage of hours delays it by minutes once the receiver is back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: The longest a receiver's Retry-After may postpone a row.
MAX_RETRY_AFTER = timedelta(days=1)
#: Doubling stops here: the cap is reached long before, and a timedelta would overflow.
_MAX_DOUBLINGS = 32


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n waits about base * 2**(n-1), capped, with half of it random ("equal jitter").

    Jitter spreads the retries of rows that failed together (a receiver outage), so they do
    not come back as one burst. ``max_attempts`` and ``cap`` hold for a row without an
    expiry; a row with one is retried until it expires, waiting at most ``cap_until_expiry``
    (and never more than ``cap``) between attempts.
    """

    max_attempts: int = 8
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)
    rng: random.Random = field(default_factory=random.Random, compare=False)
    cap_until_expiry: timedelta = timedelta(minutes=15)

    def delay(self, attempts: int, *, expiring: bool = False) -> timedelta:
        """The wait after the ``attempts``-th failed attempt (1-based); ``expiring`` for a
        row with an expiry."""
        cap = min(self.cap, self.cap_until_expiry) if expiring else self.cap
        doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
        ceiling = min(cap, self.base * (1 << doublings))
        jitter: float = self.rng.random() / 2
        return ceiling / 2 + ceiling * jitter

    def next_attempt(
        self,
        attempts: int,
        now: datetime,
        retry_after: timedelta | None = None,
        expires_at: datetime | None = None,
    ) -> datetime | None:
        """When to try again after ``attempts`` failed attempts, or None when the row ends:
        dead (no expiry, attempts used up) or expired (the next attempt would start at or
        after ``expires_at``)."""
        expiring = expires_at is not None
        if not expiring and attempts >= self.max_attempts:
            return None
        wait = self.delay(attempts, expiring=expiring)
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
        next_at = now + wait
        if expires_at is not None and next_at >= expires_at:
            return None
        return next_at

    def out_of_claims(self, attempts: int, unfinished_claims: int, *, expiring: bool) -> bool:
        """Whether a claimed row must end unsent: its worker died on it too often.

        ``attempts`` counts this claim; ``unfinished_claims`` the claims in a row before it
        that never recorded an outcome. A row without an expiry has ``max_attempts`` claims
        in all; one with an expiry, ``max_attempts`` unfinished ones in a row (its failed
        attempts do not count: they are what its retries are for).
        """
        if expiring:
            return unfinished_claims >= self.max_attempts
        return attempts > self.max_attempts
