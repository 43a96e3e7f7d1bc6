"""The re-check's answers besides a message and a cancel: expire the row, or defer it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import structlog
from sqlalchemy.orm import Session, sessionmaker

from outbox.channels.base import Delivery
from outbox.relay import FIRST_CLAIM, Attempt, AttemptOutcome, Defer, Relay
from outbox.store import claim_due_rows, defer
from outbox.table import Status
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.unit.outbox.conftest import MAX_ATTEMPTS
from tests.unit.outbox.notes import Notes
from tests.unit.outbox.rows import add_rows, row

MakeRelay = Callable[..., Relay]
HOUR = timedelta(hours=1)


def test_an_expired_row_ends_expired_unsent_with_the_reason(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    notes: Notes,
) -> None:
    """An `Expire` answer ends the row expired with its reason; the others go out."""
    gone, sent = add_rows(sessions, 1, 2)
    notes.expired[1] = "past being useful"
    seen: list[Attempt] = []
    assert make_relay(on_attempt=seen.append).relay_until_idle().counts == {
        "expired": 1,
        "delivered": 1,
    }
    assert [m.recipient for m in channel.sent] == ["user2@example.com"]
    expired = row(sessions, gone)
    assert (expired.status, expired.last_error, expired.lease_owner) == (
        Status.EXPIRED,
        "past being useful",
        None,
    )
    assert [(a.outbox_id, a.outcome, a.detail) for a in seen] == [
        (gone, AttemptOutcome.EXPIRED, "past being useful"),
        (sent, AttemptOutcome.DELIVERED, None),
    ]
    assert row(sessions, sent).status == Status.DELIVERED
    assert make_relay().relay_until_idle().claimed == 0


def test_a_deferred_row_waits_until_its_instant_and_not_before(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
    notes: Notes,
) -> None:
    """A `Defer` puts the row back, pending, due at its instant: nothing claims it before,
    the report says when it is due, and at that instant it is sent."""
    [row_id] = add_rows(sessions, 1)
    until = T0 + HOUR
    notes.deferred[1] = until
    seen: list[Attempt] = []
    report = make_relay(on_attempt=seen.append).relay_until_idle()
    assert (report.counts, report.next_attempt_at) == ({"deferred": 1}, until)
    assert [(a.outcome, a.detail, a.next_attempt_at) for a in seen] == [
        (AttemptOutcome.DEFERRED, "not yet", until)
    ]
    waiting = row(sessions, row_id)
    assert (waiting.status, waiting.attempts, waiting.available_at, waiting.lease_owner) == (
        Status.PENDING,
        0,
        until,
        None,
    )
    assert channel.sent == []
    clock.set(until - timedelta(seconds=1))
    assert make_relay().relay_until_idle().claimed == 0
    clock.set(until)
    del notes.deferred[1]
    assert make_relay().relay_until_idle().counts == {"delivered": 1}
    delivered = row(sessions, row_id)
    assert (delivered.status, delivered.attempts, delivered.delivered_at) == (
        Status.DELIVERED,
        1,
        until,
    )


def test_deferrals_do_not_eat_the_attempt_budget(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    clock: ManualClock,
    notes: Notes,
) -> None:
    """More deferrals than the row has attempts, after a failed attempt: the row keeps its
    one counted attempt and its status, and still has the rest of its attempts to use."""
    [row_id] = add_rows(sessions, 1)
    channel.script = [Delivery.retry("451 busy")]
    assert make_relay().relay_until_idle().counts == {"retry": 1}
    failed = row(sessions, row_id)
    for _ in range(MAX_ATTEMPTS + 2):
        clock.set(row(sessions, row_id).available_at)
        notes.deferred[1] = clock.now() + HOUR
        assert make_relay().relay_until_idle().counts == {"deferred": 1}
        deferred = row(sessions, row_id)
        assert (deferred.status, deferred.attempts, deferred.last_error) == (
            Status.FAILED,
            failed.attempts,
            "451 busy",
        )
    clock.set(row(sessions, row_id).available_at)
    del notes.deferred[1]
    channel.script = [Delivery.retry("451 busy again"), Delivery.delivered()]
    assert make_relay().relay_until_idle().counts == {"retry": 1}
    clock.set(row(sessions, row_id).available_at)
    assert make_relay().relay_until_idle().counts == {"delivered": 1}
    assert row(sessions, row_id).attempts == 3


def test_a_row_deferred_past_its_expiry_ends_expired(
    sessions: sessionmaker[Session], make_relay: MakeRelay, notes: Notes
) -> None:
    """Deferred to its expiry or later, a row could never be sent: it is expired at once."""
    [row_id] = add_rows(sessions, 1, expires_at=T0 + HOUR)
    notes.deferred[1] = T0 + HOUR
    assert make_relay().relay_until_idle().counts == {"expired": 1}
    expired = row(sessions, row_id)
    assert (expired.status, expired.last_error) == (
        Status.EXPIRED,
        "deferred past its expiry: not yet",
    )


def test_a_deferral_to_a_past_instant_is_a_failed_recheck(
    sessions: sessionmaker[Session], make_relay: MakeRelay, notes: Notes
) -> None:
    """A `Defer` to the round's time or earlier would claim the row again at once: the row
    is retried as for a re-check that raised, its attempt counted."""
    [row_id] = add_rows(sessions, 1)
    notes.deferred[1] = T0
    with structlog.testing.capture_logs() as logged:
        assert make_relay().relay_until_idle().counts == {"retry": 1}
    assert "recheck_failed" in [entry["event"] for entry in logged]
    retried = row(sessions, row_id)
    assert (retried.status, retried.attempts) == (Status.FAILED, 1)
    assert "deferred to" in (retried.last_error or "")


def test_a_deferral_is_logged_as_such_not_as_a_failure(
    sessions: sessionmaker[Session], make_relay: MakeRelay, notes: Notes
) -> None:
    """A deferred row's delivery event is at info level, with when it is due again."""
    add_rows(sessions, 1)
    notes.deferred[1] = T0 + HOUR
    with structlog.testing.capture_logs() as logged:
        make_relay().relay_until_idle()
    [round_] = [entry for entry in logged if entry["event"] == "round"]
    assert round_["log_level"] == "info"
    [event] = round_["events"]
    assert (event["outcome"], event["level"], event["next_attempt_at"], event["error"]) == (
        "deferred",
        "info",
        (T0 + HOUR).isoformat(),
        "not yet",
    )


def test_a_deferral_is_fenced_by_the_lease(
    sessions: sessionmaker[Session], clock: ManualClock
) -> None:
    """A relay whose claim was taken over writes nothing back when it defers."""
    [row_id] = add_rows(sessions, 1)
    lease = timedelta(seconds=60)
    with sessions.begin() as session:
        [stale] = claim_due_rows(session, T0, T0 + lease, "relay-1", 10)
    with sessions.begin() as session:
        [current] = claim_due_rows(session, T0 + lease, T0 + 2 * lease, "relay-2", 10)
    with sessions.begin() as session:
        assert defer(session, [(stale, T0 + HOUR)], T0 + lease) == set()
    taken = row(sessions, row_id)
    assert (taken.status, taken.lease_owner, taken.available_at) == (
        Status.CLAIMED,
        "relay-2",
        T0 + 2 * lease,
    )
    with sessions.begin() as session:
        assert defer(session, [(current, T0 + HOUR)], T0 + lease) == {row_id}
    back = row(sessions, row_id)
    # Claimed twice, the first claim never finished: that one still counts, the deferred not.
    assert (back.status, back.attempts, back.available_at) == (Status.FAILED, 1, T0 + HOUR)


def test_a_deferral_must_be_an_aware_instant() -> None:
    """A naive instant is refused where the answer is made."""
    with pytest.raises(ValueError, match="naive"):
        Defer(datetime(2026, 11, 28, 13, 0), "not yet")
    assert Defer(T0 + HOUR, "not yet").until == T0 + HOUR


def test_a_claim_whose_rows_are_all_deferred_does_not_end_the_run(
    sessions: sessionmaker[Session],
    make_relay: MakeRelay,
    channel: RecordingChannel,
    notes: Notes,
) -> None:
    """A whole first claim held back is no reason to stop: the run claims on and sends the
    row due behind them."""
    held = list(range(1, FIRST_CLAIM + 2))
    add_rows(sessions, *held, 99)
    notes.deferred.update(dict.fromkeys(held, T0 + HOUR))
    assert make_relay().relay_until_idle().counts == {"deferred": len(held), "delivered": 1}
    assert [m.recipient for m in channel.sent] == ["user99@example.com"]
