"""The relay on its own, driven by a fake domain: send, retry, cancel, stop, fence."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import structlog
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from outbox.channels.base import Delivery, Message
from outbox.relay import Attempt, AttemptOutcome, Relay
from outbox.store import claim_due_rows
from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.unit.outbox.notes import Notes
from tests.unit.outbox.rows import add_rows, row, statuses

MakeRelay = Callable[..., Relay]


def test_due_rows_are_sent_in_order_once_and_marked_delivered(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """Each due row's message goes out once, oldest first; a row not yet due waits."""
    first, second = add_rows(sessions, 1, 2)
    later = add_rows(sessions, 3, due=T0 + timedelta(hours=1))
    seen: list[Attempt] = []
    report = make_relay(on_attempt=seen.append).relay_until_idle()
    assert report.counts == {"delivered": 2}
    assert [m.recipient for m in channel.sent] == ["user1@example.com", "user2@example.com"]
    assert [(a.outbox_id, a.outcome, a.recipient, a.subject_id) for a in seen] == [
        (first, AttemptOutcome.DELIVERED, "u***@example.com", 1),
        (second, AttemptOutcome.DELIVERED, "u***@example.com", 2),
    ]
    delivered = row(sessions, first)
    assert (delivered.status, delivered.attempts, delivered.delivered_at) == (
        Status.DELIVERED,
        1,
        T0,
    )
    assert delivered.lease_owner is None
    assert row(sessions, later[0]).status == Status.PENDING
    assert make_relay().relay_until_idle().claimed == 0
    assert channel.closed == 2  # once per run


def test_a_transient_failure_is_retried_until_the_attempts_run_out(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """Each failure reschedules the row for later, as the report says; the last one is dead."""
    [row_id] = add_rows(sessions, 1)
    channel.script = [Delivery.retry(f"451 busy {n}") for n in (1, 2, 3)]
    for attempt in (1, 2):
        report = make_relay().relay_until_idle()
        failed = row(sessions, row_id)
        assert report.counts == {"retry": 1}
        assert (failed.status, failed.attempts, failed.last_error) == (
            Status.FAILED,
            attempt,
            f"451 busy {attempt}",
        )
        assert report.next_attempt_at == failed.available_at > clock.now()
        assert make_relay().relay_until_idle().claimed == 0  # not before its time
        clock.set(failed.available_at)
    assert make_relay().relay_until_idle().counts == {"dead": 1}
    dead = row(sessions, row_id)
    assert (dead.status, dead.last_error) == (Status.DEAD, "gave up after 3 attempts: 451 busy 3")


def test_a_permanent_refusal_is_dead_at_once_with_the_address_masked(
    sessions: sessionmaker[Session], make_relay: MakeRelay, channel: RecordingChannel
) -> None:
    """A refusal for good ends the row on its first attempt, its error kept without the address."""
    [row_id] = add_rows(sessions, 1)
    channel.script = [Delivery.permanent("550 user1@example.com unknown")]
    assert make_relay().relay_until_idle().counts == {"dead": 1}
    dead = row(sessions, row_id)
    assert (dead.status, dead.attempts) == (Status.DEAD, 1)
    assert "user1@example.com" not in (dead.last_error or "")


def test_the_domain_cancels_rows_it_no_longer_wants(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    notes: Notes,
) -> None:
    """A row the re-check cancels, or says nothing of, is cancelled with a reason and not sent."""
    cancelled, forgotten, sent = add_rows(sessions, 1, 2, 3)
    notes.cancelled[1] = "note deleted"
    notes.forgotten.add(2)
    assert make_relay().relay_until_idle().counts == {"cancelled": 2, "delivered": 1}
    assert [m.recipient for m in channel.sent] == ["user3@example.com"]
    assert (row(sessions, cancelled).status, row(sessions, cancelled).last_error) == (
        Status.CANCELLED,
        "note deleted",
    )
    assert row(sessions, forgotten).last_error == "the re-check said nothing of this row"
    assert row(sessions, sent).status == Status.DELIVERED


def test_a_recheck_that_raises_holds_back_only_its_own_row(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
    notes: Notes,
) -> None:
    """A failing re-check is retried row by row: the others go out, the bad row is retried."""
    broken, *fine = add_rows(sessions, 1, 2, 3)
    notes.broken.add(1)
    with structlog.testing.capture_logs() as logged:
        assert make_relay().relay_until_idle().counts == {"retry": 1, "delivered": 2}
    assert [entry["event"] for entry in logged].count("recheck_failed") == 1
    assert [1, 2, 3] in notes.rechecked and [1] in notes.rechecked
    failed = row(sessions, broken)
    assert (failed.status, failed.last_error) == (
        Status.FAILED,
        "RuntimeError: the note store is down",
    )
    assert [row(sessions, row_id).status for row_id in fine] == [Status.DELIVERED] * 2
    notes.broken.clear()
    clock.set(failed.available_at)
    assert make_relay().relay_until_idle().counts == {"delivered": 1}
    assert len(channel.sent) == 3


def test_a_failing_database_is_raised_without_a_recheck_warning(
    sessions: sessionmaker[Session], make_relay: MakeRelay, notes: Notes
) -> None:
    """When the claim itself fails, the database's error is raised and nothing is said of a
    re-check that never ran (the caller logs the failure once)."""
    add_rows(sessions, 1)
    with sessions.begin() as session:
        # CASCADE on PostgreSQL: the digests' member links refer to the outbox.
        cascade = " CASCADE" if session.get_bind().dialect.name == "postgresql" else ""
        session.execute(text(f"DROP TABLE outbox{cascade}"))
    with structlog.testing.capture_logs() as logged, pytest.raises(DBAPIError):
        make_relay().relay_until_idle()
    assert logged == [] and notes.rechecked == []


def test_stopping_gives_back_the_rows_not_attempted(
    sessions: sessionmaker[Session], make_relay: MakeRelay, channel: RecordingChannel
) -> None:
    """Rows claimed but not sent when stop is set are released: pending again, uncounted."""
    _, *unsent = add_rows(sessions, 1, 2, 3)
    relay = make_relay()

    def stop_after_this_one(_message: Message) -> None:
        relay.stop.set()

    channel.on_send = stop_after_this_one
    assert relay.relay_until_idle().counts == {"delivered": 1, "released": 2}
    released = [row(sessions, row_id) for row_id in unsent]
    assert [(r.status, r.attempts, r.available_at, r.lease_owner) for r in released] == [
        (Status.PENDING, 0, T0, None)
    ] * 2


def test_a_budget_spent_before_the_first_claim_leaves_the_rows(
    sessions: sessionmaker[Session], make_relay: MakeRelay
) -> None:
    """With no budget left the relay claims nothing and says it stopped for lack of budget."""
    add_rows(sessions, 1)
    report = make_relay().relay_until_idle(budget=timedelta(0))
    assert (report.claimed, report.out_of_budget) == (0, True)
    assert statuses(sessions) == [Status.PENDING]


def test_a_relay_that_lost_its_leases_is_fenced_and_writes_nothing(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """Leases expire during a send and a second relay delivers the rows: the first writes none."""
    add_rows(sessions, 1, 2, 3)
    first, second = make_relay(window=timedelta(0)), make_relay(owner="relay-2")
    seen: list[Attempt] = []
    first.on_attempt = seen.append

    def stall(_message: Message) -> None:
        channel.on_send = None
        clock.advance(first.lease + timedelta(seconds=1))
        assert second.relay_until_idle().counts == {"delivered": 3}

    channel.on_send = stall
    channel.script = [Delivery.retry("timeout")]
    assert first.relay_until_idle().counts == {"fenced": 3}
    assert [a.detail for a in seen] == ["timeout"] + ["lease lost before sending"] * 2
    assert statuses(sessions) == [Status.DELIVERED] * 3
    with sessions() as session:
        tokens = session.scalars(select(OutboxRow.lease_token).order_by(OutboxRow.id)).all()
    assert tokens == [2, 2, 2]  # claimed once by each relay


def test_a_row_whose_relays_keep_dying_ends_dead_unsent(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """Every claim counts an attempt, so a row claimed max-attempts times is dead, never sent."""
    [row_id] = add_rows(sessions, 1)
    relay = make_relay()
    for _ in range(relay.policy.max_attempts):
        with sessions.begin() as session:
            claim_due_rows(session, clock.now(), clock.now() + relay.lease, "ghost", 10)
        clock.advance(relay.lease)
    assert relay.relay_until_idle().counts == {"dead": 1}
    assert channel.sent == []
    assert row(sessions, row_id).last_error == (
        "gave up after 3 attempts: the last one never finished"
    )


def test_a_long_batch_keeps_its_leases(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
) -> None:
    """Sends that outlast the lease are no loss: waiting rows' leases are renewed in time."""
    add_rows(sessions, 1, 2, 3, 4)
    relay = make_relay(lease=timedelta(seconds=30), send_timeout=timedelta(seconds=10))
    channel.on_send = lambda _message: clock.advance(timedelta(seconds=12))
    assert relay.relay_until_idle().counts == {"delivered": 4}


def test_a_round_logs_its_attempts_in_one_event(
    sessions: sessionmaker[Session], make_relay: MakeRelay, channel: RecordingChannel
) -> None:
    """One `round` event carries a `delivery` event per attempt, named in the domain's words."""
    add_rows(sessions, 1, 2)
    channel.script = [Delivery.delivered(), Delivery.permanent("550")]
    with structlog.testing.capture_logs() as logged:
        make_relay().relay_until_idle()
    [round_] = [entry for entry in logged if entry["event"] == "round"]
    assert round_["log_level"] == "warning"  # a row is dead
    assert [(e["event"], e["note_id"], e["outcome"], e["level"]) for e in round_["events"]] == [
        ("delivery", 1, "delivered", "info"),
        ("delivery", 2, "dead", "warning"),
    ]
