"""Planning from rules: each reminder at its moment, never before it, once, and only if useful."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from outbox.admin import follow_up
from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services, statuses
from tests.support.watchers import unwatch, watch, watched_services
from worker.bootstrap import Services
from worker.reminders.keys import reminder_key
from worker.reminders.rule_store import set_rule
from worker.reminders.rules import Rule
from worker.reminders.schema import Task, User

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def services(engine: Engine, clock: ManualClock, channel: RecordingChannel) -> Services:
    built = make_services(engine, clock, channel)
    add_user(built, 1)
    return built


def rule(services: Services, clock: ManualClock, user_id: int | None, **parts: object) -> None:
    with services.session_factory.begin() as session:
        set_rule(session, services.host, user_id, Rule(**parts), now=clock.now())  # type: ignore[arg-type]


def run_until(
    services: Services,
    clock: ManualClock,
    channel: RecordingChannel,
    end: timedelta,
    step: timedelta = MINUTE,
) -> dict[str, object]:
    """Scan and relay at every ``step`` up to ``end`` from now: when each key was sent."""
    sent: dict[str, object] = {}
    seen = len(channel.sent)
    stop = clock.now() + end
    while clock.now() <= stop:
        services.scan()
        services.relay().relay_until_idle()
        for message in channel.sent[seen:]:
            seen += 1
            assert message.key not in sent, f"{message.key} sent twice"
            sent[message.key] = clock.now()
        clock.advance(step)
    return sent


def test_without_a_rule_one_reminder_goes_out_a_day_ahead_at_its_moment(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """The built-in rule: 24 h before the due moment, under the key it always had."""
    due = clock.now() + DAY + 5 * MINUTE
    add_task(services, 1, 1, due)
    sent = run_until(services, clock, channel, 10 * MINUTE)
    assert sent == {reminder_key(1, due): due - DAY}


def test_each_lead_time_is_sent_at_its_moment_and_a_past_one_at_once(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """24h,1h,0m on a task due in 30 min: the 1 h reminder at once (the latest past one),
    the 24 h one never (superseded before it was planned), the 0 m one at the due moment."""
    rule(services, clock, None, before=(DAY, HOUR, timedelta(0)))
    start = clock.now()
    due = start + 30 * MINUTE
    add_task(services, 1, 1, due)
    sent = run_until(services, clock, channel, 40 * MINUTE)
    base = reminder_key(1, due)
    assert sent == {base + "-o3600": start, base + "-o0": due}


def test_overdue_nudges_follow_the_due_moment_while_the_task_stays_open(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """``1h x2``: one an hour after the due moment, one two hours after; none once done."""
    rule(services, clock, None, before=(), overdue_every=HOUR, overdue_count=2)
    due = clock.now() + 10 * MINUTE
    add_task(services, 1, 1, due)
    add_task(services, 2, 1, due)
    sent = run_until(services, clock, channel, 80 * MINUTE, step=5 * MINUTE)
    with services.session_factory.begin() as session:
        session.execute(update(Task).where(Task.id == 2).values(completed_at=clock.now()))
    sent |= run_until(services, clock, channel, 70 * MINUTE, step=5 * MINUTE)
    base1, base2 = reminder_key(1, due), reminder_key(2, due)
    assert all(message.subject.startswith("Overdue: ") for message in channel.sent)
    assert {message.document["type"] for message in channel.sent} == {"task.overdue"}
    assert sent == {
        base1 + "-o-3600": due + HOUR,
        base2 + "-o-3600": due + HOUR,
        base1 + "-o-7200": due + 2 * HOUR,
    }


def test_a_lead_time_removed_before_its_moment_is_not_sent(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A row planned for a lead time the rule no longer has is cancelled at its re-check."""
    rule(services, clock, None, before=(HOUR, timedelta(minutes=2)))
    due = clock.now() + HOUR + 3 * MINUTE
    add_task(services, 1, 1, due)
    first = run_until(services, clock, channel, 5 * MINUTE)
    rule(services, clock, None, before=(HOUR,))
    later = run_until(services, clock, channel, 10 * MINUTE)
    assert first == {reminder_key(1, due) + "-o3600": due - HOUR}
    assert later == {}


def test_a_reminder_no_longer_useful_is_never_planned(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """After an outage longer than the lead time, a before-due reminder of a task already due
    is not sent late."""
    rule(services, clock, None, before=(HOUR,))
    due = clock.now() + 2 * HOUR
    add_task(services, 1, 1, due)
    services.scan()  # marks the task; the 1 h moment is beyond the horizon
    clock.advance(3 * HOUR)  # nothing ran meanwhile: the task is due
    sent = run_until(services, clock, channel, 5 * MINUTE)
    assert sent == {}
    with services.session_factory() as session:
        assert session.scalars(select(OutboxRow.status)).all() in ([], [Status.CANCELLED])


def test_a_follow_up_of_a_sent_reminder_is_sent_at_its_time_once(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """ "Remind me again in 1 h": the follow-up passes the re-check of the key it follows."""
    due = clock.now() + 3 * HOUR
    add_task(services, 1, 1, due)
    first = run_until(services, clock, channel, MINUTE)
    key = reminder_key(1, due)
    assert list(first) == [key]
    with services.session_factory.begin() as session:
        follow_up(session, key, HOUR, now=clock.now(), lifetime=DAY)
    asked = clock.now()
    later = run_until(services, clock, channel, 70 * MINUTE)
    assert later == {key + "~3600": asked + HOUR}


def _opt(services: Services, user_id: int, enabled: bool) -> None:
    with services.session_factory.begin() as session:
        session.execute(
            update(User).where(User.id == user_id).values(notifications_enabled=enabled)
        )


#: (what makes the watcher's reminder stand no more, what makes it stand again)
_AWAY_AND_BACK: dict[str, tuple[Callable[[Services], None], Callable[[Services], None]]] = {
    "unwatched": (lambda s: unwatch(s, 1, 2), lambda s: watch(s, 1, 2)),
    "opted out": (lambda s: _opt(s, 2, False), lambda s: _opt(s, 2, True)),
}


@pytest.mark.parametrize("away", sorted(_AWAY_AND_BACK))
def test_a_reminder_that_stands_again_before_its_moment_is_sent(
    engine: Engine, clock: ManualClock, channel: RecordingChannel, tmp_path: Path, away: str
) -> None:
    """A watcher's reminder planned inside the horizon is cancelled when a re-plan of its
    task finds the watcher gone; back before the moment, it is planned again and sent at its
    moment, although the horizon had passed it."""
    services = watched_services(engine, clock, channel, tmp_path)
    add_user(services, 1)
    add_user(services, 2)
    rule(services, clock, None, before=(10 * MINUTE,))
    start = clock.now()
    due = start + 12 * MINUTE
    add_task(services, 1, 1, due)
    watch(services, 1, 2)
    services.scan()  # both reminders, at start + 2 min, are inside the horizon
    base = reminder_key(1, due) + "-o600"
    assert dict(statuses(services)) == {base: Status.PENDING, base + "-u2": Status.PENDING}
    leave, come_back = _AWAY_AND_BACK[away]
    leave(services)
    rule(services, clock, 1, before=(10 * MINUTE,))  # the owner's own rule: task 1 re-planned
    services.scan()
    assert dict(statuses(services))[base + "-u2"] == Status.CANCELLED
    clock.advance(MINUTE)
    come_back(services)
    sent = run_until(services, clock, channel, 5 * MINUTE)
    assert sent == {base: start + 2 * MINUTE, base + "-u2": start + 2 * MINUTE}


def test_a_listed_users_reminder_is_addressed_and_documented_as_theirs(
    engine: Engine, clock: ManualClock, channel: RecordingChannel, tmp_path: Path
) -> None:
    """A watcher's reminder goes to the watcher's address, and its document names the watcher
    as ``owner_id`` (the user it reminds), while the owner's names the owner."""
    services = watched_services(engine, clock, channel, tmp_path)
    add_user(services, 1, email="owner@example.com")
    add_user(services, 2, email="watcher@example.com")
    due = clock.now() + 2 * HOUR
    add_task(services, 1, 1, due)
    watch(services, 1, 2)
    run_until(services, clock, channel, MINUTE)
    sent = {(m.recipient, m.document["owner_id"], m.document["task_id"]) for m in channel.sent}
    assert sent == {("owner@example.com", 1, 1), ("watcher@example.com", 2, 1)}
