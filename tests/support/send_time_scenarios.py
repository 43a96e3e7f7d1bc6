"""Quiet hours and pauses through the real scan, relay and re-check, on a test's database.

Each scenario is a function of an engine and the test's clock, run on SQLite by
``tests/unit/test_send_time_relay.py`` and on PostgreSQL by
``tests/integration/test_send_time_postgres.py``. User 1 lives in Europe/Berlin (UTC+1 in
November); the clock moves by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import Services
from worker.reminders import preference_store
from worker.reminders.preferences import PreferenceEdit
from worker.reminders.send_time import FELL_IN_PAUSE

SECOND = timedelta(seconds=1)


def _edit(services: Services, change: PreferenceEdit) -> None:
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, services.host, 1, change, now=services.clock.now()
        )


def _rows(services: Services) -> list[tuple[int, str, datetime, str | None]]:
    """(task, status, available_at, last_error) of every row, by id."""
    with services.session_factory() as session:
        found = session.execute(
            select(
                OutboxRow.subject_id,
                OutboxRow.status,
                OutboxRow.available_at,
                OutboxRow.last_error,
            ).order_by(OutboxRow.id)
        )
        return [(row[0], row[1], row[2], row[3]) for row in found]


def held_until_the_window_ends(engine: Engine, clock: ManualClock) -> None:
    """A reminder at 03:00 local, quiet 22:00-07:00 set after it was planned: deferred at
    03:00, not sent at 06:59:59, delivered at 07:00; its attempt budget untouched."""
    channel = RecordingChannel()
    services = make_services(engine, clock, channel)
    add_user(services, 1, timezone="Europe/Berlin")
    moment = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # Sat 03:00 in Berlin
    add_task(services, 10, 1, moment + timedelta(hours=24))
    clock.set(moment - timedelta(minutes=1))
    assert services.scan().queued == 1
    _edit(services, PreferenceEdit(quiet="22:00-07:00"))  # after planning: still applies
    clock.set(moment)
    assert services.relay().relay_until_idle().counts == {"deferred": 1}
    seven = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
    [(_, status, available_at, _)] = _rows(services)
    assert (status, available_at) == (Status.PENDING, seven)
    clock.set(seven - SECOND)
    assert services.relay().relay_until_idle().claimed == 0
    assert channel.sent == []
    clock.set(seven)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert [(m.recipient, m.ready_at) for m in channel.sent] == [("user1@example.com", seven)]
    with services.session_factory() as session:
        sent = session.execute(select(OutboxRow.delivered_at, OutboxRow.attempts)).one()
    assert tuple(sent) == (seven, 1)


def pulled_forward_before_the_window(
    engine: Engine, clock: ManualClock, *, scan_ahead: timedelta = timedelta(minutes=2)
) -> None:
    """1 h before a task due at 23:00 local, inside quiet 22:00-07:00: delivered at 21:59,
    before the window, once, though its moment (22:00) is planned by a later scan too.

    ``scan_ahead``: how long before 21:59 the scan that pulls it runs; 30 s: so late that its
    own window plans the moment first (the row is then moved earlier, not written anew)."""
    channel = RecordingChannel()
    services = make_services(engine, clock, channel, lookahead="1h")
    add_user(services, 1, timezone="Europe/Berlin")
    _edit(services, PreferenceEdit(quiet="22:00-07:00"))
    due = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)  # 23:00 in Berlin
    add_task(services, 10, 1, due)
    window_starts = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)  # 22:00 in Berlin
    pulled = window_starts - timedelta(minutes=1)
    assert clock.now() == T0
    assert services.scan().queued == 0  # pulled to 21:59: not within this scan's horizon
    clock.set(pulled - scan_ahead)
    assert services.scan().queued >= 1
    [(_, status, available_at, _)] = _rows(services)
    assert (status, available_at) == (Status.PENDING, pulled)
    clock.set(pulled - SECOND)
    services.scan()
    assert services.relay().relay_until_idle().claimed == 0
    clock.set(pulled)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    for moment in (window_starts - timedelta(seconds=30), window_starts, due):
        clock.set(moment)
        services.scan()
        services.relay().relay_until_idle()
    assert [m.recipient for m in channel.sent] == ["user1@example.com"]
    [(_, status, _, _)] = _rows(services)
    assert status == Status.DELIVERED


def expired_in_the_pause(engine: Engine, clock: ManualClock) -> None:
    """Paused until 30 Nov (Berlin): the reminders whose moments fall before it expire and are
    not sent after the pause; the first one after it is delivered."""
    channel = RecordingChannel()
    services = make_services(engine, clock, channel)
    add_user(services, 1, timezone="Europe/Berlin")
    _edit(services, PreferenceEdit(pause_until="2026-11-30"))
    day = timedelta(days=1)
    pause_ends = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)  # 30 Nov 00:00 in Berlin
    first, second = T0, datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    after = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    for task, moment in ((10, first), (11, second), (12, after)):
        add_task(services, task, 1, moment + day)
    assert services.scan().queued == 1
    assert services.relay().relay_until_idle().counts == {"expired": 1}
    clock.set(second - timedelta(minutes=1))
    services.scan()
    clock.set(second)
    assert services.relay().relay_until_idle().counts == {"expired": 1}
    clock.set(pause_ends)
    services.scan()
    assert services.relay().relay_until_idle().claimed == 0
    clock.set(after - timedelta(minutes=1))
    services.scan()
    clock.set(after)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    clock.set(after + timedelta(hours=2))
    services.scan()
    services.relay().relay_until_idle()
    assert [m.recipient for m in channel.sent] == ["user1@example.com"]
    assert [(task, status, error) for task, status, _, error in _rows(services)] == [
        (10, Status.EXPIRED, FELL_IN_PAUSE),
        (11, Status.EXPIRED, FELL_IN_PAUSE),
        (12, Status.DELIVERED, None),
    ]
