"""When to try a failed row again: exponential backoff with jitter, bounded attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: The longest a receiver's Retry-After may postpone a row.
MAX_RETRY_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n waits about base * 2**(n-1), capped, with half of it random ("equal jitter").

    Jitter spreads the retries of rows that failed together (a receiver outage), so they do
    not come back as one burst.
    """

    max_attempts: int = 8
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed attempt (1-based)."""
        ceiling = min(self.cap, self.base * (1 << max(attempts - 1, 0)))
        jitter: float = self.rng.random() / 2
        return ceiling / 2 + ceiling * jitter

    def next_attempt(
        self, attempts: int, now: datetime, retry_after: timedelta | None = None
    ) -> datetime | None:
        """When to try again after ``attempts`` failed attempts, or None when the row is dead."""
        if attempts >= self.max_attempts:
            return None
        wait = self.delay(attempts)
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
        return now + wait
