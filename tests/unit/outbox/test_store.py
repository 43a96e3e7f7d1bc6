"""The outbox's queries on their own: claim under a lease, record and release fenced."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from outbox.store import (
    Claim,
    Verdict,
    claim_due_rows,
    earliest_due,
    extend_leases,
    record,
    release,
)
from outbox.table import Status
from tests.support.clock import T0
from tests.unit.outbox.rows import add_rows, row

LEASE = timedelta(seconds=60)


def claim(
    sessions: sessionmaker[Session], owner: str, *, at: timedelta = timedelta(0)
) -> list[Claim]:
    """Claim due rows at ``T0 + at`` for ``owner``, in a transaction of its own."""
    now = T0 + at
    with sessions.begin() as session:
        return claim_due_rows(session, now, now + LEASE, owner, 10)


def test_a_claim_takes_due_rows_oldest_first_under_a_lease(sessions: sessionmaker[Session]) -> None:
    """Due rows are claimed in order, each counting an attempt and bumping its fence."""
    first, second = add_rows(sessions, 1, 2)
    add_rows(sessions, 3, due=T0 + timedelta(minutes=5))
    claims = claim(sessions, "relay-1")
    assert [(c.id, c.attempts, c.lease_token, c.lease_expires_at) for c in claims] == [
        (first, 1, 1, T0 + LEASE),
        (second, 1, 1, T0 + LEASE),
    ]
    held = row(sessions, first)
    assert (held.status, held.lease_owner, held.available_at, held.last_attempt_at) == (
        Status.CLAIMED,
        "relay-1",
        T0 + LEASE,
        T0,
    )


def test_a_held_row_is_claimed_again_only_once_its_lease_expires(
    sessions: sessionmaker[Session],
) -> None:
    """While the lease runs nobody else gets the row; after it, the next claim fences the first."""
    [row_id] = add_rows(sessions, 1)
    [first] = claim(sessions, "relay-1")
    assert claim(sessions, "relay-2", at=LEASE - timedelta(seconds=1)) == []
    [second] = claim(sessions, "relay-2", at=LEASE)
    assert (second.id, second.attempts, second.lease_token) == (row_id, 2, first.lease_token + 1)
    assert row(sessions, row_id).lease_owner == "relay-2"


def test_record_writes_each_verdict_and_nothing_twice(sessions: sessionmaker[Session]) -> None:
    """Delivered, failed, dead and cancelled verdicts land on their rows, once, fenced by status."""
    add_rows(sessions, 1, 2, 3, 4)
    delivered, failed, dead, cancelled = claim(sessions, "relay-1")
    retry_at = T0 + timedelta(minutes=10)
    verdicts = [
        Verdict(delivered, Status.DELIVERED),
        Verdict(failed, Status.FAILED, "451 later", retry_at),
        Verdict(dead, Status.DEAD, "550 no"),
        Verdict(cancelled, Status.CANCELLED, "note deleted"),
    ]
    now = T0 + timedelta(seconds=5)
    with sessions.begin() as session:
        assert record(session, verdicts, now) == {delivered.id, failed.id, dead.id, cancelled.id}
    rows = [row(sessions, c.id) for c in (delivered, failed, dead, cancelled)]
    assert [(r.status, r.last_error, r.lease_owner, r.updated_at) for r in rows] == [
        (Status.DELIVERED, None, None, now),
        (Status.FAILED, "451 later", None, now),
        (Status.DEAD, "550 no", None, now),
        (Status.CANCELLED, "note deleted", None, now),
    ]
    assert rows[0].delivered_at == now
    assert rows[1].available_at == retry_at
    with sessions.begin() as session:
        assert record(session, verdicts, now) == set()  # no longer claimed: left alone


def test_a_writer_whose_lease_was_taken_over_changes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    """Record, release and extend with a stale fencing token leave the new holder's row as is."""
    [row_id] = add_rows(sessions, 1)
    [stale] = claim(sessions, "relay-1")
    [fresh] = claim(sessions, "relay-2", at=LEASE)
    later = T0 + 2 * LEASE
    with sessions.begin() as session:
        assert record(session, [Verdict(stale, Status.DEAD, "boom")], later) == set()
        assert release(session, [stale], later) == 0
        assert extend_leases(session, [stale], later) == []
    held = row(sessions, row_id)
    assert (held.status, held.lease_owner, held.lease_token, held.attempts) == (
        Status.CLAIMED,
        "relay-2",
        fresh.lease_token,
        2,
    )


def test_extend_leases_keeps_the_rows_still_held(sessions: sessionmaker[Session]) -> None:
    """Held rows get the new expiry; a row another relay took over is left out of the answer."""
    add_rows(sessions, 1)
    [taken_over] = claim(sessions, "relay-1")
    add_rows(sessions, 2)
    [still_held] = claim(sessions, "relay-1", at=timedelta(seconds=30))
    claim(sessions, "relay-2", at=LEASE)  # the first row's lease has expired, not the second's
    until = T0 + 3 * LEASE
    with sessions.begin() as session:
        [extended] = extend_leases(session, [taken_over, still_held], until)
    assert (extended.id, extended.lease_expires_at) == (still_held.id, until)
    assert row(sessions, still_held.id).available_at == until
    assert row(sessions, taken_over.id).lease_owner == "relay-2"


def test_release_gives_rows_back_due_now_with_the_attempt_uncounted(
    sessions: sessionmaker[Session],
) -> None:
    """A first attempt goes back to pending, a later one to failed, both due at once and unowned."""
    add_rows(sessions, 1)
    add_rows(sessions, 2, status=Status.FAILED, attempts=2)
    fresh, retried = claim(sessions, "relay-1")
    now = T0 + timedelta(seconds=1)
    with sessions.begin() as session:
        assert release(session, [fresh, retried], now) == 2
    rows = [row(sessions, c.id) for c in (fresh, retried)]
    assert [(r.status, r.attempts, r.available_at, r.lease_owner) for r in rows] == [
        (Status.PENDING, 0, now, None),
        (Status.FAILED, 2, now, None),
    ]


def test_earliest_due_is_the_next_attempt_or_lease_expiry(sessions: sessionmaker[Session]) -> None:
    """The soonest time a row may be claimed, over waiting and claimed rows only."""
    with sessions() as session:
        assert earliest_due(session) is None
    add_rows(sessions, 1, status=Status.DELIVERED, due=T0 - timedelta(days=1))
    add_rows(sessions, 2, due=T0 + timedelta(hours=2))
    add_rows(sessions, 3)
    claim(sessions, "relay-1")  # row 3: due again when its lease expires
    with sessions() as session:
        assert earliest_due(session) == T0 + LEASE


def test_concurrent_claims_on_postgresql_skip_each_others_rows(postgres_engine: Engine) -> None:
    """A claim that is not committed yet hides its rows from another relay, which takes the rest."""
    sessions = sessionmaker(postgres_engine, expire_on_commit=False)
    add_rows(sessions, 1, 2, 3, 4)
    with sessions.begin() as first:
        mine = claim_due_rows(first, T0, T0 + LEASE, "relay-1", 2)
        theirs = claim(sessions, "relay-2")
    assert {c.subject_id for c in mine} == {1, 2}
    assert {c.subject_id for c in theirs} == {3, 4}
