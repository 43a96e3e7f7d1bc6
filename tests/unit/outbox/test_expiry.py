"""Rows that expire: never sent after ``expires_at``, retried until it instead of dying."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from outbox import relay as relay_module
from outbox.channels.base import Delivery
from outbox.relay import EXPIRE_EVERY, Attempt, AttemptOutcome, Relay
from outbox.retry import RetryPolicy
from outbox.store import Claim, claim_due_rows, expire_due_rows
from outbox.table import Status
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.unit.outbox.conftest import MAX_ATTEMPTS
from tests.unit.outbox.rows import add_rows, row, statuses

MakeRelay = Callable[..., Relay]
OUTAGE = timedelta(hours=6)
CAP = RetryPolicy().cap_until_expiry


def ride_out_an_outage(
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
    sessions: sessionmaker[Session],
    row_id: int,
    outage_ends: datetime,
) -> list[datetime]:
    """Relay the row at each of its next attempts, the receiver answering "try later" until
    ``outage_ends``; return when each send started. Ends once the row stops waiting."""
    sent_at: list[datetime] = []
    channel.on_send = lambda _message: sent_at.append(clock.now())
    while True:
        channel.script = (
            [Delivery.retry("421 4.3.2 try later")] if clock.now() < outage_ends else []
        )
        make_relay().relay_until_idle()
        current = row(sessions, row_id)
        if current.status != Status.FAILED:
            return sent_at
        assert current.available_at - clock.now() <= CAP  # the cap between attempts
        clock.set(current.available_at)


def test_a_six_hour_outage_leaves_a_useful_row_to_be_delivered_after_it(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """A row with an expiry a day ahead fails for 6 h of receiver outage, far more often than
    max_attempts, and is delivered within the cap once the receiver is back."""
    [row_id] = add_rows(sessions, 1, expires_at=T0 + timedelta(days=1))
    sent_at = ride_out_an_outage(make_relay, channel, clock, sessions, row_id, T0 + OUTAGE)
    delivered = row(sessions, row_id)
    assert delivered.status == Status.DELIVERED
    assert delivered.attempts == len(sent_at) > 4 * MAX_ATTEMPTS
    assert T0 + OUTAGE <= sent_at[-1] <= T0 + OUTAGE + CAP
    assert delivered.delivered_at == sent_at[-1]


def test_an_outage_that_outlasts_the_expiry_ends_the_row_expired_not_dead(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """A row expiring 2 h into a 6 h outage is retried past max_attempts, never sent at or
    after its expiry, and ends expired with the receiver's last answer."""
    expires = T0 + timedelta(hours=2)
    [row_id] = add_rows(sessions, 1, expires_at=expires)
    sent_at = ride_out_an_outage(make_relay, channel, clock, sessions, row_id, T0 + OUTAGE)
    ended = row(sessions, row_id)
    assert ended.status == Status.EXPIRED
    assert ended.attempts == len(sent_at) > MAX_ATTEMPTS
    assert all(at < expires for at in sent_at)
    assert ended.last_error == "expires before its next attempt; last error: 421 4.3.2 try later"
    assert make_relay().relay_until_idle().claimed == 0


def test_a_row_due_past_its_expiry_is_expired_by_the_claim_never_claimed(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """A row whose expiry has come is set expired at claim time, unsent, unclaimed, and
    reported; rows expiring later or never are delivered."""
    [gone] = add_rows(sessions, 1, expires_at=T0, last_error="451 busy")
    add_rows(sessions, 2, expires_at=T0 + timedelta(seconds=1))
    add_rows(sessions, 3)
    seen: list[Attempt] = []
    report = make_relay(on_attempt=seen.append).relay_until_idle()
    assert report.counts == {"expired": 1, "delivered": 2}
    assert [m.recipient for m in channel.sent] == ["user2@example.com", "user3@example.com"]
    expired = row(sessions, gone)
    assert (expired.status, expired.attempts, expired.lease_token) == (Status.EXPIRED, 0, 0)
    assert expired.last_error == "expired before it could be sent; last error: 451 busy"
    assert [(a.outbox_id, a.outcome) for a in seen if a.outcome == AttemptOutcome.EXPIRED] == [
        (gone, AttemptOutcome.EXPIRED)
    ]
    assert statuses(sessions) == [Status.EXPIRED, Status.DELIVERED, Status.DELIVERED]


def counted_expiries(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """Note the instant of each statement that ends the rows past their expiry."""
    calls: list[datetime] = []
    expire = expire_due_rows

    def counting(session: Session, now: datetime, limit: int) -> list[Claim]:
        calls.append(now)
        return expire(session, now, limit)

    monkeypatch.setattr(relay_module, "expire_due_rows", counting)
    return calls


@pytest.mark.parametrize("step", [timedelta(0), EXPIRE_EVERY])
def test_a_run_ends_expired_rows_at_its_first_claim_then_at_most_once_a_second(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    step: timedelta,
) -> None:
    """Six rows claimed two at a time: four claims. Each claim ends the rows past their
    expiry first only when a second passed since the run last did."""
    calls = counted_expiries(monkeypatch)
    add_rows(sessions, *range(1, 7))
    channel.on_send = lambda _message: clock.advance(step / 2)
    report = make_relay(batch_size=2).relay_until_idle()
    assert report.counts == {"delivered": 6}
    assert calls == ([T0] if not step else [T0 + i * step for i in range(4)])


def test_a_row_past_its_expiry_between_paced_claims_is_never_sent(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row that comes due at its expiry half a second into a run: the next claim, which
    does not expire rows, skips it; the claim a second in ends it expired, unsent."""
    calls = counted_expiries(monkeypatch)
    half = EXPIRE_EVERY / 2
    [late] = add_rows(sessions, 9, due=T0 + half, expires_at=T0 + half)
    add_rows(sessions, *range(1, 5))
    channel.on_send = lambda _message: clock.advance(half / 2)
    report = make_relay(batch_size=2).relay_until_idle()
    assert report.counts == {"delivered": 4, "expired": 1}
    assert calls == [T0, T0 + EXPIRE_EVERY]
    assert "user9@example.com" not in [m.recipient for m in channel.sent]
    assert row(sessions, late).status == Status.EXPIRED


def test_a_held_row_whose_expiry_passes_behind_a_slow_send_is_not_sent(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """Claimed in one batch, the second row's expiry passes while the first is on the wire:
    it ends expired, unsent."""
    add_rows(sessions, 1)
    add_rows(sessions, 2, expires_at=T0 + timedelta(seconds=5))
    channel.on_send = lambda _message: clock.advance(timedelta(seconds=6))
    assert make_relay().relay_until_idle().counts == {"delivered": 1, "expired": 1}
    assert [m.recipient for m in channel.sent] == ["user1@example.com"]
    assert statuses(sessions) == [Status.DELIVERED, Status.EXPIRED]


def test_a_live_lease_is_never_expired_by_another_relay(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """A row whose expiry passes under another relay's live lease is left to that relay;
    once the lease has run out unrecorded, the next claim expires it."""
    [row_id] = add_rows(sessions, 1, expires_at=T0 + timedelta(seconds=30))
    with sessions.begin() as session:
        [held] = claim_due_rows(session, T0, T0 + timedelta(seconds=60), "ghost", 10)
    clock.set(T0 + timedelta(seconds=40))
    assert make_relay().relay_until_idle().claimed == 0
    assert row(sessions, row_id).status == Status.CLAIMED
    clock.set(held.lease_expires_at)
    assert make_relay().relay_until_idle().counts == {"expired": 1}
    assert channel.sent == []


def ghost_claims(
    sessions: sessionmaker[Session], clock: ManualClock, lease: timedelta, n: int
) -> None:
    """``n`` claims by a relay that dies each time, each lease left to run out."""
    for _ in range(n):
        with sessions.begin() as session:
            assert claim_due_rows(session, clock.now(), clock.now() + lease, "ghost", 10)
        clock.advance(lease)


def test_only_claims_that_never_finish_end_a_row_with_an_expiry(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """Failed attempts beyond max_attempts, then one dead worker fewer than max_attempts,
    leave a row with an expiry to be delivered; max_attempts dead workers in a row end one
    dead, unsent."""
    expires = T0 + timedelta(days=1)
    [tried] = add_rows(sessions, 1, expires_at=expires)
    channel.script = [Delivery.retry("451 busy")] * (MAX_ATTEMPTS + 1)
    for _ in range(MAX_ATTEMPTS + 1):
        assert make_relay().relay_until_idle().counts == {"retry": 1}
        clock.set(row(sessions, tried).available_at)
    lease = make_relay().lease
    ghost_claims(sessions, clock, lease, MAX_ATTEMPTS - 1)
    assert make_relay().relay_until_idle().counts == {"delivered": 1}

    [poison] = add_rows(sessions, 2, due=clock.now(), expires_at=expires)
    ghost_claims(sessions, clock, lease, MAX_ATTEMPTS)
    assert make_relay().relay_until_idle().counts == {"dead": 1}
    dead = row(sessions, poison)
    assert dead.last_error == f"gave up after {MAX_ATTEMPTS} attempts: the last one never finished"
    assert len(channel.sent) == MAX_ATTEMPTS + 2
