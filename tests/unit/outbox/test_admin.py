"""The operator's functions on rows a relay left behind: counts, listing, replay, purge."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from outbox import admin
from outbox.channels.base import Delivery
from outbox.relay import Relay
from outbox.table import Status
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.unit.outbox.rows import add_rows, row

MakeRelay = Callable[..., Relay]
HOUR = timedelta(hours=1)


def test_counts_and_listings_follow_what_the_relay_did(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """After a run, counts, the oldest waiting row and a listing by status say what happened."""
    _, failed, dead = add_rows(sessions, 1, 2, 3)
    channel.script = [Delivery.delivered(), Delivery.retry("451"), Delivery.permanent("550")]
    make_relay().relay_until_idle()
    now = clock.advance(HOUR)
    with sessions() as session:
        counts = admin.count_by_status(session)
        oldest = admin.oldest_waiting(session, now)
        listed = [r.id for r in admin.list_rows(session, status=Status.DEAD, now=now)]
    assert {status: n for status, n in counts.items() if n} == {
        "delivered": 1,
        "failed": 1,
        "dead": 1,
    }
    assert oldest == now - row(sessions, failed).created_at
    assert listed == [dead]


def test_a_replayed_row_is_relayed_again_under_its_key(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """A dead row put back by replay is sent again with the same key and ends delivered."""
    [row_id] = add_rows(sessions, 1)
    channel.script = [Delivery.permanent("550 mailbox unavailable")]
    assert make_relay().relay_until_idle().counts == {"dead": 1}
    with sessions.begin() as session:
        [change] = admin.replay(session, [row_id], None, by="ops", now=clock.advance(HOUR))
    assert (change.replayed, change.status_before) == (True, "dead")
    assert make_relay().relay_until_idle().counts == {"delivered": 1}
    assert channel.keys == [change.key, change.key]
    delivered = row(sessions, row_id)
    assert (delivered.status, delivered.attempts, delivered.replay_count) == (
        Status.DELIVERED,
        1,
        1,
    )
    assert delivered.last_error is None


def test_replay_by_status_failed_leaves_dead_rows(sessions: sessionmaker[Session]) -> None:
    """Replaying the failed rows puts each back to pending and leaves the dead ones dead."""
    failed = add_rows(sessions, 1, 2, status=Status.FAILED, attempts=2, due=T0 + HOUR)
    [dead] = add_rows(sessions, 3, status=Status.DEAD)
    with sessions.begin() as session:
        changes = admin.replay(session, None, Status.FAILED, by="ops", now=T0)
    assert [c.id for c in changes if c.replayed] == failed
    assert [(row(sessions, n).status, row(sessions, n).available_at) for n in failed] == [
        (Status.PENDING, T0)
    ] * 2
    assert row(sessions, dead).status == Status.DEAD


def test_purge_refuses_an_empty_batch(sessions: sessionmaker[Session]) -> None:
    """A batch size below one is an error, not an endless loop."""
    with pytest.raises(ValueError, match="batch_size"):
        admin.purge(sessions, timedelta(days=1), T0, batch_size=0)


def test_replay_keeps_the_expiry_and_leaves_rows_past_it(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
) -> None:
    """A dead row still before its expiry is replayed, its expiry kept, and delivered; an
    expired row, or a dead one past its expiry, is left alone with the reason, unchanged."""
    useful_until = T0 + 2 * HOUR
    [useful] = add_rows(sessions, 1, status=Status.DEAD, expires_at=useful_until)
    [expired] = add_rows(sessions, 2, status=Status.EXPIRED, expires_at=T0 - HOUR)
    [late] = add_rows(sessions, 3, status=Status.DEAD, expires_at=T0 + HOUR)
    now = T0 + HOUR
    with sessions.begin() as session:
        by_id = admin.replay(session, [useful, expired, late], None, by="ops", now=now)
    assert [(c.id, c.replayed, c.past_expiry) for c in by_id] == [
        (useful, True, False),
        (expired, False, True),
        (late, False, True),
    ]
    assert (
        by_id[1].reason
        == f"expired at {(T0 - HOUR).isoformat()}: no longer useful, never sent again"
    )
    replayed = row(sessions, useful)
    assert (replayed.status, replayed.expires_at) == (Status.PENDING, useful_until)
    assert (row(sessions, expired).status, row(sessions, late).status) == (
        Status.EXPIRED,
        Status.DEAD,
    )
    assert row(sessions, expired).replay_count == 0
    with sessions.begin() as session:
        [by_status] = admin.replay(session, None, Status.DEAD, by="ops", now=now)
    assert (by_status.id, by_status.replayed, by_status.past_expiry) == (late, False, True)
    assert make_relay(clock=ManualClock(now)).relay_until_idle().counts == {"delivered": 1}
    assert [m.recipient for m in channel.sent] == ["user1@example.com"]
