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


def test_a_row_with_an_expiry_has_no_attempt_limit_and_a_shorter_cap() -> None:
    """With an expiry, attempt 100 still has a next attempt, at most cap_until_expiry away
    (15 minutes by default), and the wait never overflows however many attempts came before."""
    policy = RetryPolicy(3, timedelta(seconds=30), timedelta(hours=1), random.Random(3))
    expires = T0 + timedelta(days=1)
    assert policy.cap_until_expiry == timedelta(minutes=15)
    assert policy.next_attempt(3, T0, expires_at=expires) is not None
    for attempts in (8, 100, 10_000):  # 30 s doubled 7 times and more: past the cap
        next_at = policy.next_attempt(attempts, T0, expires_at=expires)
        assert next_at is not None
        assert T0 + timedelta(minutes=7.5) <= next_at <= T0 + timedelta(minutes=15)
    assert policy.next_attempt(3, T0) is None  # without an expiry: the attempt limit


def test_the_expiry_cap_never_exceeds_the_general_cap() -> None:
    """A general cap below cap_until_expiry bounds rows with an expiry too."""
    policy = RetryPolicy(3, timedelta(seconds=30), timedelta(minutes=2), random.Random(5))
    assert policy.delay(20, expiring=True) <= timedelta(minutes=2)


def test_a_next_attempt_at_or_after_the_expiry_ends_the_row() -> None:
    """No next attempt when the backoff or the receiver's Retry-After reaches the expiry."""
    policy = RetryPolicy(3, timedelta(seconds=30), timedelta(hours=1), random.Random(1))
    soon = T0 + timedelta(seconds=10)  # below the first wait's least (15 s)
    assert policy.next_attempt(1, T0, expires_at=soon) is None
    later = T0 + timedelta(hours=1)
    assert policy.next_attempt(1, T0, expires_at=later) is not None
    assert policy.next_attempt(1, T0, timedelta(hours=1), expires_at=later) is None


def test_only_unfinished_claims_end_a_row_with_an_expiry() -> None:
    """A row without an expiry ends after max_attempts claims in all; one with an expiry
    after max_attempts claims in a row whose attempts never finished."""
    policy = RetryPolicy(3)
    assert not policy.out_of_claims(3, 2, expiring=False)
    assert policy.out_of_claims(4, 0, expiring=False)
    assert not policy.out_of_claims(40, 2, expiring=True)
    assert policy.out_of_claims(4, 3, expiring=True)
