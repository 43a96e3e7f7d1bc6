"""Operator functions on the outbox: counts, listings, replay and purge (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import count
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from outbox import admin
from outbox.channels.base import Delivery
from outbox.store import claim_due_rows
from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.db import make_session_factory

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_keys = count(1)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions on this test's database."""
    return make_session_factory(engine)


def put(
    sessions: sessionmaker[Session],
    status: Status,
    *,
    created: datetime = T0,
    updated: datetime | None = None,
    subject: int = 1,
    **extra: Any,
) -> int:
    """Insert one outbox row as the relay would have left it; return its id."""
    values: dict[str, Any] = {
        "idempotency_key": f"k-{next(_keys)}",
        "kind": "test",
        "subject_id": subject,
        "subject_at": None,
        "status": status,
        "attempts": 0,
        "available_at": created,
        "lease_token": 0,
        "created_at": created,
        "updated_at": updated or created,
        "replay_count": 0,
    }
    with sessions.begin() as session:
        row = OutboxRow(**(values | extra))
        session.add(row)
        session.flush()
        return row.id


def read(sessions: sessionmaker[Session], row_id: int) -> OutboxRow:
    """One row read afresh."""
    with sessions() as session:
        row = admin.get_row(session, row_id)
        assert row is not None
        return row


def test_counts_name_every_status(sessions: sessionmaker[Session]) -> None:
    """Counts list all seven statuses, zero where no row has it."""
    put(sessions, Status.DEAD)
    put(sessions, Status.DEAD)
    put(sessions, Status.PENDING)
    with sessions() as session:
        counts = admin.count_by_status(session)
    assert counts == {
        "pending": 1,
        "claimed": 0,
        "failed": 0,
        "delivered": 0,
        "dead": 2,
        "cancelled": 0,
        "expired": 0,
    }


def test_oldest_waiting_counts_pending_and_failed_rows_only(
    sessions: sessionmaker[Session],
) -> None:
    """The age is the oldest pending or failed row's; finished, dead or claimed rows don't count."""
    with sessions() as session:
        assert admin.oldest_waiting(session, T0) is None
    for status in (Status.DELIVERED, Status.DEAD, Status.CANCELLED, Status.CLAIMED):
        put(sessions, status, created=T0 - 10 * DAY)
    put(sessions, Status.PENDING, created=T0 - HOUR)
    put(sessions, Status.FAILED, created=T0 - 2 * HOUR)
    with sessions() as session:
        assert admin.oldest_waiting(session, T0) == 2 * HOUR


def test_a_replayed_row_waits_from_its_replay(sessions: sessionmaker[Session]) -> None:
    """A week-old row replayed a minute ago has waited a minute, not a week."""
    put(sessions, Status.PENDING, created=T0 - 7 * DAY, replayed_at=T0 - timedelta(minutes=1))
    with sessions() as session:
        assert admin.oldest_waiting(session, T0) == timedelta(minutes=1)


def test_a_row_deferred_or_postponed_waits_from_its_new_time(
    sessions: sessionmaker[Session],
) -> None:
    """A pending row created hours ago but held back until later (quiet hours, a snooze) is
    not waiting before that time, and waits from it; a failed row still waits from its
    creation."""
    put(sessions, Status.PENDING, created=T0 - 9 * HOUR, available_at=T0 + HOUR)
    with sessions() as session:
        assert admin.oldest_waiting(session, T0) == timedelta(0)
        assert admin.oldest_waiting(session, T0 + HOUR + timedelta(seconds=5)) == timedelta(
            seconds=5
        )
    put(sessions, Status.FAILED, created=T0 - 2 * HOUR, available_at=T0 + HOUR)
    with sessions() as session:
        assert admin.oldest_waiting(session, T0) == 2 * HOUR


def test_list_filters_and_orders_newest_first(sessions: sessionmaker[Session]) -> None:
    """Status, subject, age and limit filters combine; rows come newest first."""
    old_dead = put(sessions, Status.DEAD, created=T0 - 3 * HOUR, subject=7)
    new_dead = put(sessions, Status.DEAD, created=T0 - HOUR, subject=7)
    other = put(sessions, Status.DEAD, created=T0 - 3 * HOUR, subject=8)
    pending = put(sessions, Status.PENDING, created=T0 - 3 * HOUR, subject=7)

    def ids(**filters: Any) -> list[int]:
        with sessions() as session:
            return [row.id for row in admin.list_rows(session, now=T0, **filters)]

    assert ids() == [pending, other, new_dead, old_dead]
    assert ids(status=Status.DEAD) == [other, new_dead, old_dead]
    assert ids(status=Status.DEAD, subject_id=7) == [new_dead, old_dead]
    assert ids(status=Status.DEAD, older_than=2 * HOUR) == [other, old_dead]
    assert ids(limit=1) == [pending]
    with sessions() as session:
        assert admin.get_row(session, 999) is None


def test_count_applies_the_list_filters_up_to_a_cap(sessions: sessionmaker[Session]) -> None:
    """`count_rows` counts what `list_rows` would show without a limit, stopping at ``cap``."""
    for _ in range(3):
        put(sessions, Status.DEAD, created=T0 - 3 * HOUR, subject=7)
    put(sessions, Status.DEAD, created=T0 - HOUR, subject=8)
    put(sessions, Status.PENDING, created=T0 - 3 * HOUR, subject=7)

    def total(cap: int = 100, **filters: Any) -> int:
        with sessions() as session:
            return admin.count_rows(session, now=T0, cap=cap, **filters)

    assert total() == 5
    assert total(status=Status.DEAD) == 4
    assert total(status=Status.DEAD, subject_id=7) == 3
    assert total(older_than=2 * HOUR) == 4
    assert total(status=Status.CANCELLED) == 0
    assert total(cap=2) == 2


def test_replay_puts_rows_back_to_pending_with_the_same_key(
    sessions: sessionmaker[Session],
) -> None:
    """Dead, failed, delivered and cancelled rows named by id become pending, due now, counted."""
    dead = put(
        sessions,
        Status.DEAD,
        attempts=8,
        last_error="550 no such user",
        lease_token=8,
        replay_count=1,
    )
    failed = put(sessions, Status.FAILED, attempts=3, available_at=T0 + DAY)
    delivered = put(sessions, Status.DELIVERED, attempts=1, delivered_at=T0)
    cancelled = put(sessions, Status.CANCELLED)
    key = read(sessions, dead).idempotency_key
    now = T0 + HOUR
    with sessions.begin() as session:
        changes = admin.replay(
            session, [dead, failed, delivered, cancelled], None, by="ops", now=now
        )
    assert [(c.id, c.status_before, c.replayed) for c in changes] == [
        (dead, "dead", True),
        (failed, "failed", True),
        (delivered, "delivered", True),
        (cancelled, "cancelled", True),
    ]
    row = read(sessions, dead)
    assert (row.status, row.attempts, row.available_at, row.idempotency_key) == (
        Status.PENDING,
        0,
        now,
        key,
    )
    assert (row.replayed_at, row.replayed_by, row.replay_count) == (now, "ops", 2)
    assert row.last_error == "550 no such user"  # kept until the next attempt overwrites it
    assert row.lease_token == 8  # a fence never goes backwards
    assert read(sessions, failed).available_at == now
    assert read(sessions, delivered).delivered_at is None


def test_replay_leaves_claimed_pending_and_unknown_rows_alone(
    sessions: sessionmaker[Session],
) -> None:
    """A claimed row is refused naming its owner, a pending one is a no-op, unknown ids reported."""
    pending = put(sessions, Status.PENDING)
    with sessions.begin() as session:
        [claim] = claim_due_rows(session, T0, T0 + HOUR, "host:1:2", 10)
    dead = put(sessions, Status.DEAD)
    with sessions.begin() as session:
        changes = admin.replay(session, [999, claim.id, dead, dead], None, by="ops", now=T0)
    assert [(c.id, c.replayed) for c in changes] == [(999, False), (pending, False), (dead, True)]
    assert changes[0].reason == "no such row" and changes[0].key is None
    assert "claimed by host:1:2" in (changes[1].reason or "")
    assert read(sessions, claim.id).status == Status.CLAIMED
    with sessions.begin() as session:
        [again] = admin.replay(session, [dead], None, by="ops", now=T0)
    assert (again.replayed, again.reason) == (False, "already pending")


def test_replay_by_status_takes_only_that_status(sessions: sessionmaker[Session]) -> None:
    """--status dead replays every dead row and nothing else."""
    dead = [put(sessions, Status.DEAD), put(sessions, Status.DEAD)]
    failed = put(sessions, Status.FAILED)
    with sessions.begin() as session:
        changes = admin.replay(session, None, Status.DEAD, by="ops", now=T0)
    assert [c.id for c in changes if c.replayed] == dead
    assert read(sessions, failed).status == Status.FAILED


@pytest.mark.parametrize(
    ("ids", "status"),
    [(None, None), ([1], Status.DEAD), (None, Status.DELIVERED), (None, Status.CLAIMED)],
)
def test_replay_refuses_bad_selections(
    sessions: sessionmaker[Session], ids: list[int] | None, status: Status | None
) -> None:
    """Neither or both of ids and status, or a status other than dead or failed, is an error."""
    with sessions.begin() as session, pytest.raises(ValueError, match="replay"):
        admin.replay(session, ids, status, by="ops", now=T0)


def test_a_dry_run_changes_nothing(sessions: sessionmaker[Session]) -> None:
    """A dry run reports what it would replay and writes nothing."""
    dead = put(sessions, Status.DEAD)
    with sessions.begin() as session:
        [change] = admin.replay(session, None, Status.DEAD, by="ops", now=T0, dry_run=True)
    assert change.replayed and change.id == dead
    assert read(sessions, dead).status == Status.DEAD
    assert read(sessions, dead).replay_count == 0


def test_a_replayed_dead_reminder_is_delivered_again_with_its_key(engine: Engine) -> None:
    """A reminder refused for good, once replayed, goes out on the next relay under the same key."""
    clock = ManualClock()
    channel = RecordingChannel(script=[Delivery.permanent("550 mailbox unavailable")])
    services = make_services(engine, clock, channel)
    add_user(services, 1)
    add_task(services, 7, 1, clock.now() + HOUR)
    services.scan()
    assert services.relay().relay_until_idle().counts == {"dead": 1}
    with services.session_factory.begin() as session:
        [change] = admin.replay(session, None, Status.DEAD, by="ops", now=clock.advance(HOUR / 2))
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert channel.keys == [change.key, change.key]
    row = read(services.session_factory, change.id)
    assert (row.status, row.attempts, row.replay_count, row.last_error) == (
        Status.DELIVERED,
        1,
        1,
        None,
    )


def test_purge_deletes_only_old_finished_rows_in_batches(sessions: sessionmaker[Session]) -> None:
    """Old delivered and cancelled rows go, batch by batch; every other row stays."""
    old = T0 - 2 * DAY
    gone = [put(sessions, Status.DELIVERED, updated=old) for _ in range(4)]
    gone.append(put(sessions, Status.CANCELLED, updated=old))
    kept = [
        put(sessions, status, updated=old)
        for status in (Status.PENDING, Status.FAILED, Status.CLAIMED, Status.DEAD)
    ]
    kept.append(put(sessions, Status.DELIVERED, created=old, updated=T0 - HOUR))
    progress: list[int] = []
    assert admin.purge(sessions, DAY, T0, batch_size=2, progress=progress.append) == 5
    assert progress == [2, 4, 5]
    with sessions() as session:
        assert sorted(session.scalars(select(OutboxRow.id))) == sorted(kept)
    assert admin.purge(sessions, DAY, T0, batch_size=2) == 0


def test_a_relay_skips_rows_a_replay_holds(postgres_engine: Engine) -> None:
    """On PostgreSQL a relay claiming while a replay is open skips the rows being replayed."""
    sessions = make_session_factory(postgres_engine)
    failed = put(sessions, Status.FAILED, attempts=3)
    with sessions.begin() as replaying:
        admin.replay(replaying, [failed], None, by="ops", now=T0)
        with sessions.begin() as relaying:
            assert claim_due_rows(relaying, T0, T0 + HOUR, "relay", 10) == []
    with sessions.begin() as relaying:
        [claim] = claim_due_rows(relaying, T0, T0 + HOUR, "relay", 10)
    assert (claim.id, claim.attempts) == (failed, 1)
