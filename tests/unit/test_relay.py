"""The relay: re-check, send, record; retries owned by the row; leases and fencing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import structlog
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from outbox.channels.base import Delivery, Message
from outbox.relay import FIRST_CLAIM, RelayReport
from outbox.store import claim_due_rows
from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services, statuses
from worker.bootstrap import Services
from worker.reminders.schema import Task, User

HOUR = timedelta(hours=1)


@pytest.fixture
def services(engine: Engine, clock: ManualClock, channel: RecordingChannel) -> Services:
    """Services with max 3 attempts, on SQLite and PostgreSQL, and one owner."""
    built = make_services(engine, clock, channel, max_attempts=3)
    add_user(built, 1, email="ada@example.com", timezone="Europe/Paris")
    return built


def queue(services: Services, clock: ManualClock, *task_ids: int) -> None:
    """Add tasks due in an hour and scan."""
    for task_id in task_ids:
        add_task(services, task_id, 1, clock.now() + HOUR)
    services.scan()


def row(services: Services, outbox_id: int = 1) -> OutboxRow:
    """Read one outbox row afresh."""
    with services.session_factory() as session:
        found = session.get(OutboxRow, outbox_id)
        assert found is not None
        return found


def test_a_due_row_is_delivered_once_with_the_contract_headers(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """The relay sends the rendered reminder and marks the row delivered."""
    queue(services, clock, 7)
    report = services.relay().relay_until_idle()
    assert report.counts == {"delivered": 1}
    assert services.relay().relay_until_idle().claimed == 0
    [message] = channel.sent
    assert message.recipient == "ada@example.com"
    assert message.headers["Message-ID"] == f"<{message.key}@localhost>"
    assert message.headers["X-Reminder-Key"] == message.key
    assert message.headers["X-Task-Id"] == "7"
    assert message.document["type"] == "task.due_soon"
    assert message.document["due_date"] == "2026-11-28T13:00:00Z"
    assert row(services).status == Status.DELIVERED
    assert channel.closed >= 1  # the connection is closed when the run ends


def test_a_transient_failure_backs_off_then_delivers(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A 4xx-like failure reschedules the row; before its next attempt nothing is sent."""
    queue(services, clock, 1)
    channel.script = [Delivery.retry("451 try later")]
    assert services.relay().relay_until_idle().counts == {"retry": 1}
    failed = row(services)
    assert (failed.status, failed.attempts, failed.last_error) == (
        Status.FAILED,
        1,
        "451 try later",
    )
    assert failed.available_at > clock.now()
    assert services.relay().relay_until_idle().claimed == 0
    clock.set(failed.available_at)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert len(channel.sent) == 2


def test_a_failing_reminder_outlives_max_attempts_and_expires_with_its_last_error(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A reminder is retried past max_attempts while its task is not due; when its next
    attempt would come after the due time, it ends expired (not dead) with its last error."""
    queue(services, clock, 1)
    channel.script = [Delivery.retry(f"451 busy {n}") for n in range(1, 4)]
    channel.script.append(Delivery.retry("451 busy 4", retry_after=2 * HOUR))
    for _ in range(3):
        services.relay().relay_until_idle()
        clock.advance(timedelta(minutes=10))
    waiting = row(services)
    assert (waiting.status, waiting.attempts) == (Status.FAILED, 3)
    assert services.relay().relay_until_idle().counts == {"expired": 1}
    ended = row(services)
    assert (ended.status, ended.attempts) == (Status.EXPIRED, 4)
    assert ended.last_error == "expires before its next attempt; last error: 451 busy 4"
    assert services.relay().relay_until_idle().claimed == 0
    assert len(channel.sent) == 4


def test_a_reminder_not_delivered_before_its_task_fell_due_ends_expired(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A reminder whose receiver says "try later" until the task is due is retried at each
    next attempt, none at or after the due time, and ends expired, never delivered."""
    queue(services, clock, 1)
    due = clock.now() + HOUR
    while True:
        channel.script = [Delivery.retry("421 try later")]
        services.relay().relay_until_idle()
        current = row(services)
        if current.status != Status.FAILED:
            break
        clock.set(current.available_at)
    assert (current.status, current.expires_at) == (Status.EXPIRED, due)
    assert current.attempts == len(channel.sent) > services.settings.max_attempts
    assert clock.now() < due
    assert services.relay().relay_until_idle().claimed == 0


def test_a_reminder_first_relayed_once_its_task_is_due_is_never_sent(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Queued while its task was ahead, but relayed only once the task is due (the relays
    were down): the row expires at claim time, and nothing is sent."""
    queue(services, clock, 1)
    clock.advance(HOUR)
    assert services.relay().relay_until_idle().counts == {"expired": 1}
    assert channel.sent == []
    ended = row(services)
    assert (ended.status, ended.attempts) == (Status.EXPIRED, 0)


def test_a_permanent_refusal_is_dead_at_once(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A 5xx-like answer makes the row dead on the first attempt."""
    queue(services, clock, 1)
    channel.script = [Delivery.permanent("550 no such user")]
    assert services.relay().relay_until_idle().counts == {"dead": 1}
    assert (row(services).status, row(services).last_error) == (Status.DEAD, "550 no such user")


def test_retry_after_postpones_the_next_attempt(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A receiver's Retry-After is honoured."""
    queue(services, clock, 1)
    channel.script = [Delivery.retry("429", retry_after=timedelta(minutes=20))]
    services.relay().relay_until_idle()
    assert row(services).available_at >= clock.now() + timedelta(minutes=20)


def test_a_poison_row_does_not_block_the_others(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A row whose send raises is retried (past max_attempts, its task not yet due) and ends
    expired when its task falls due; every other row is delivered."""
    queue(services, clock, 1, 2, 3)

    def explode(message: Message) -> None:
        if message.key.endswith("-2"):
            raise RuntimeError("renderer bug")

    channel.on_send = explode
    for _ in range(4):
        services.relay().relay_until_idle()
        clock.advance(timedelta(minutes=10))
    clock.advance(HOUR)
    assert services.relay().relay_until_idle().counts == {"expired": 1}
    states = dict(statuses(services))
    assert sorted(states.values()) == [Status.DELIVERED, Status.DELIVERED, Status.EXPIRED]
    poison = row(services, 2)
    assert poison.attempts == 4
    assert "RuntimeError: renderer bug" in (poison.last_error or "")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s, c: s.execute(update(Task).values(completed_at=c.now())), "task completed"),
        (lambda s, c: s.execute(delete(Task)), "task deleted"),
        (
            lambda s, c: s.execute(update(Task).values(due_date=c.now() + 3 * HOUR)),
            "due date moved",
        ),
        (
            lambda s, c: s.execute(update(User).values(notifications_enabled=False)),
            "owner turned notifications off",
        ),
    ],
    ids=["completed", "deleted", "moved", "opted-out"],
)
def test_the_relay_rechecks_the_task_and_cancels(
    services: Services,
    clock: ManualClock,
    channel: RecordingChannel,
    change: Callable[[Session, ManualClock], object],
    reason: str,
) -> None:
    """A task completed, deleted, moved or whose owner opted out after the scan is not reminded."""
    queue(services, clock, 1)
    with services.session_factory.begin() as session:
        change(session, clock)
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    assert channel.sent == []
    assert (row(services).status, row(services).last_error) == (Status.CANCELLED, reason)


def test_the_recipient_is_the_current_owner(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A change of owner between scan and delivery is seen at send time."""
    add_user(services, 2, email="grace@example.org")
    queue(services, clock, 1)
    with services.session_factory.begin() as session:
        session.execute(update(Task).values(owner_id=2))
    services.relay().relay_until_idle()
    assert [m.recipient for m in channel.sent] == ["grace@example.org"]


def test_stopping_releases_rows_not_yet_attempted(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """When stop is set mid-batch, unsent rows go back to pending with their attempt uncounted."""
    queue(services, clock, 1, 2, 3)
    relay = services.relay()
    channel.on_send = lambda _message: relay.stop.set()
    report = relay.relay_until_idle()
    assert report.counts == {"delivered": 1, "released": 2}
    with services.session_factory() as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
    assert [(r.status, r.attempts) for r in rows][1:] == [(Status.PENDING, 0)] * 2
    assert all(r.lease_owner is None for r in rows)


def test_an_expired_lease_lets_another_relay_take_the_row_and_fences_the_first(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A relay whose lease expired mid-send cannot overwrite the new holder's result."""
    queue(services, clock, 1)
    second = services.relay()

    def lease_expires_during_send(_message: Message) -> None:
        channel.on_send = None
        clock.advance(services.settings.lease + timedelta(seconds=1))
        assert second.relay_until_idle().counts == {"delivered": 1}

    channel.on_send = lease_expires_during_send
    channel.script = [Delivery.retry("timeout")]
    first = services.relay().relay_until_idle()
    assert first.counts == {"fenced": 1}
    final = row(services)
    assert (final.status, final.attempts, final.lease_token) == (Status.DELIVERED, 2, 2)


def test_a_row_whose_worker_died_comes_back_after_its_lease(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A row claimed by a relay that never finished is retried once its lease expires."""
    queue(services, clock, 1)
    with services.session_factory.begin() as session:
        claim_due_rows(session, clock.now(), clock.now() + services.settings.lease, "ghost", 10)
    assert services.relay().relay_until_idle().claimed == 0
    clock.advance(services.settings.lease)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert row(services).attempts == 2


def test_a_row_that_always_kills_its_worker_ends_dead(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Claims count attempts, so a row whose worker dies every time is dead after max attempts."""
    queue(services, clock, 1)
    for _ in range(3):
        with services.session_factory.begin() as session:
            claim_due_rows(session, clock.now(), clock.now() + services.settings.lease, "ghost", 10)
        clock.advance(services.settings.lease)
    assert services.relay().relay_until_idle().counts == {"dead": 1}
    assert channel.sent == []
    assert "never finished" in (row(services).last_error or "")


def test_leases_are_extended_before_they_run_short(
    engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """In a long batch, the relay renews the leases of rows still waiting their turn."""
    services = make_services(engine, clock, channel, lease="30s", send_timeout="10s")
    add_user(services, 1)
    queue(services, clock, 1, 2, 3)
    channel.on_send = lambda _message: clock.advance(timedelta(seconds=12))
    assert services.relay().relay_until_idle().counts == {"delivered": 3}


def test_a_change_undone_after_the_cancel_rearms_the_reminder(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Completed, cancelled at send time, then reopened: the next scan reminds after all."""
    queue(services, clock, 1)
    with services.session_factory.begin() as session:
        session.execute(update(Task).values(completed_at=clock.now()))
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    with services.session_factory.begin() as session:
        session.execute(update(Task).values(completed_at=None))
    assert services.scan().queued == 1
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert len(channel.sent) == 1
    assert [status for _, status in statuses(services)] == [Status.DELIVERED]


@pytest.mark.parametrize(
    ("window", "send_takes", "recorded_before_next_send"),
    [
        ("0", timedelta(0), True),
        ("100ms", timedelta(milliseconds=100), True),
        ("100ms", timedelta(milliseconds=10), False),
    ],
    ids=["window-0", "window-spent-by-each-send", "sends-inside-the-window"],
)
def test_sends_are_recorded_once_their_window_is_spent(
    engine: Engine,
    clock: ManualClock,
    channel: RecordingChannel,
    window: str,
    send_takes: timedelta,
    recorded_before_next_send: bool,
) -> None:
    """A round records what it sent before sending again once REMINDERS_RELAY_WINDOW passed."""
    services = make_services(engine, clock, channel, relay_window=window)
    add_user(services, 1)
    queue(services, clock, 1, 2, 3)
    delivered_so_far: list[int] = []

    def look(_message: Message) -> None:
        delivered_so_far.append(sum(s == Status.DELIVERED for _, s in statuses(services)))
        clock.advance(send_takes)

    channel.on_send = look
    assert services.relay().relay_until_idle().counts == {"delivered": 3}
    assert delivered_so_far == ([0, 1, 2] if recorded_before_next_send else [0, 0, 0])
    assert [s for _, s in statuses(services)] == [Status.DELIVERED] * 3


def test_a_slow_receiver_leaves_rows_for_other_relays(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A relay claims about what it can send in a window, so a second relay finds work."""
    queue(services, clock, *range(1, 31))
    second: list[RelayReport] = []

    def slow(_message: Message) -> None:
        clock.advance(services.settings.relay_window)  # every send spends a whole window
        if not second:  # while the first relay's first send is on the wire
            second.append(RelayReport())
            second[0] = services.relay().relay_until_idle()

    channel.on_send = slow
    first = services.relay().relay_until_idle()
    assert first.counts == {"delivered": FIRST_CLAIM}
    assert second[0].counts == {"delivered": 30 - FIRST_CLAIM}
    assert len(channel.sent) == len({m.key for m in channel.sent}) == 30


def test_a_round_logs_its_rows_in_one_call(services: Services, clock: ManualClock) -> None:
    """The outcomes a round records are logged together (the worker writes their lines as
    one block): one `round` event holding a `delivery` event for each of the round's rows."""
    queue(services, clock, 1, 2, 3)
    with structlog.testing.capture_logs() as logged:
        assert services.relay().relay_until_idle().counts == {"delivered": 3}
    [round_] = [entry for entry in logged if entry["event"] == "round"]
    assert [(e["event"], e["outcome"], e["task_id"]) for e in round_["events"]] == [
        ("delivery", "delivered", task_id) for task_id in (1, 2, 3)
    ]
