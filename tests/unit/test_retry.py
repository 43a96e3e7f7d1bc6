"""The retry policy: exponential, jittered, capped, bounded."""

from __future__ import annotations

import random
from datetime import timedelta

from outbox.retry import MAX_RETRY_AFTER, RetryPolicy
from tests.support.clock import T0


def test_delays_grow_exponentially_with_jitter_inside_bounds() -> None:
    """Attempt n waits between half and all of base * 2**(n-1), never above the cap."""
    policy = RetryPolicy(8, timedelta(seconds=30), timedelta(minutes=10), random.Random(1))
    for attempts in range(1, 8):
        ceiling = min(timedelta(minutes=10), timedelta(seconds=30) * 2 ** (attempts - 1))
        for _ in range(50):
            delay = policy.delay(attempts)
            assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_rows_that_failed_together() -> None:
    """Rows failing at the same moment come back at different times."""
    policy = RetryPolicy(8, timedelta(seconds=30), timedelta(hours=1), random.Random(7))
    assert len({policy.next_attempt(3, T0) for _ in range(20)}) > 15


def test_the_last_attempt_makes_the_row_dead() -> None:
    """After max_attempts failed attempts there is no next attempt."""
    policy = RetryPolicy(3)
    assert policy.next_attempt(2, T0) is not None
    assert policy.next_attempt(3, T0) is None


def test_retry_after_is_honoured_but_bounded() -> None:
    """A receiver's Retry-After postpones the row, up to one day."""
    policy = RetryPolicy(8, timedelta(seconds=1), timedelta(seconds=2))
    assert policy.next_attempt(1, T0, timedelta(minutes=5)) == T0 + timedelta(minutes=5)
    assert policy.next_attempt(1, T0, timedelta(days=30)) == T0 + MAX_RETRY_AFTER
