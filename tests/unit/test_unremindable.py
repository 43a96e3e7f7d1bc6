"""Tasks that cannot be reminded, counted where the scan looks: an owner row missing, or an
owner that wants reminders but has no address; the scan leaves them waiting."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta

from sqlalchemy import Engine, text, update

from outbox.channels.base import Channel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import Services
from worker.reminders.heartbeat import CountChange, record_unremindable
from worker.reminders.schema import User
from worker.reminders.unremindable import Unremindable, count_unremindable, some_unremindable

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def orphan(services: Services, task_id: int, owner_id: int, due_in: timedelta) -> None:
    """A task whose owner row does not exist, as in a host schema without the foreign key."""
    engine = services.engine
    due = services.clock.now() + due_in
    if engine.dialect.name == "sqlite":  # a plain connection: foreign keys unenforced
        with closing(sqlite3.connect(str(engine.url.database))) as plain, plain:
            plain.execute(
                "INSERT INTO tasks (id, owner_id, title, due_date) VALUES (?, ?, 't', ?)",
                (task_id, owner_id, due.strftime("%Y-%m-%d %H:%M:%S.%f")),
            )
        return
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE tasks DROP CONSTRAINT tasks_owner_id_fkey")
        connection.execute(
            text(
                "INSERT INTO tasks (id, owner_id, title, due_date) VALUES (:id, :owner, 't', :due)"
            ),
            {"id": task_id, "owner": owner_id, "due": due},
        )


def counted(services: Services) -> Unremindable:
    """The count now, over the default lookahead."""
    with services.session_factory() as session:
        return count_unremindable(session, services.clock.now(), services.settings.lookahead)


def seed(services: Services) -> None:
    """One task of each kind; tasks 2 and 4 (and 7) cannot be reminded."""
    now = services.clock.now()
    for user_id in (1, 2, 4):
        add_user(services, user_id)
    add_user(services, 3, enabled=False)
    blank = {2: "", 3: "   ", 4: "  "}  # 3 has no address, but turned reminders off
    with services.session_factory.begin() as session:
        for user_id, email in blank.items():
            session.execute(update(User).where(User.id == user_id).values(email=email))
    add_task(services, 1, 1, now + HOUR)  # fine
    add_task(services, 2, 2, now + 2 * HOUR)  # empty address
    add_task(services, 3, 3, now + 2 * HOUR)  # opted out: not reminded by choice
    add_task(services, 4, 4, now + 3 * HOUR)  # blank address
    add_task(services, 5, 2, now + 2 * DAY)  # beyond the lookahead
    add_task(services, 6, 2, now - HOUR)  # already due
    add_task(services, 8, 2, now + HOUR, completed=now)  # done


def test_tasks_in_the_window_are_counted_by_reason(
    engine: Engine, clock: ManualClock, channel: Channel
) -> None:
    """Only open tasks due within the lookahead count: a missing owner row, or an opted-in
    owner whose address is empty or blank."""
    services = make_services(engine, clock, channel)
    seed(services)
    orphan(services, 7, 99, 4 * HOUR)
    assert counted(services) == Unremindable(missing_owner=1, no_address=2)
    with services.session_factory() as session:
        assert some_unremindable(session, clock.now(), DAY, limit=2) == [2, 4]
        assert some_unremindable(session, clock.now(), DAY, limit=10) == [2, 4, 7]


def test_the_scan_leaves_them_waiting_until_the_owner_is_fixed(
    engine: Engine, clock: ManualClock, channel: Channel
) -> None:
    """The scan queues only the task it can remind; the others stay counted until their owner
    gets an address, and the next scan queues them."""
    services = make_services(engine, clock, channel, channel_name="smtp")
    seed(services)
    assert services.scan().queued == 1
    assert counted(services).total == 2
    with services.session_factory.begin() as session:
        session.execute(update(User).where(User.id.in_([2, 4])).values(email="x@example.com"))
    assert services.scan().queued == 2
    assert counted(services).total == 0


def test_a_change_of_the_count_is_recorded_once(
    engine: Engine, clock: ManualClock, channel: Channel
) -> None:
    """The first count after a scan and each change are reported once; the same count again,
    or no heartbeat row yet, is not."""
    services = make_services(engine, clock, channel)
    with services.session_factory.begin() as session:
        assert record_unremindable(session, 3) is None  # no scan has written the row
    services.scan()
    with services.session_factory.begin() as session:
        assert record_unremindable(session, 0) == CountChange(before=None)
        assert record_unremindable(session, 0) is None
        assert record_unremindable(session, 2) == CountChange(before=0)
        assert record_unremindable(session, 2) is None
