"""Rule changes on PostgreSQL, on the reference schema and a host's own: the tasks they
re-plan (owners and recipients), two changes at once, and no reminder sent twice."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from outbox.table import OutboxRow
from tests.conftest import HostDatabase
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from tests.support.hosts import HostApp
from worker.db import make_session_factory
from worker.reminders import rule_store
from worker.reminders.host import HostSchema, check_host
from worker.reminders.mapping import RecipientsMapping
from worker.reminders.rules import Rule

DUE = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
THREE = Rule(before=(timedelta(days=1), timedelta(hours=1), timedelta(0)))
TWO_HOURS = Rule(before=(timedelta(hours=2),))
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def watched_host(host_database: HostDatabase) -> HostSchema:
    """The host's tables with a watchers table of (task, user) added to the mapping."""
    engine = host_database.engine
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE watchers (task_ref BIGINT, account_ref BIGINT)"))
    recipients = RecipientsMapping(table="watchers", task="task_ref", user="account_ref")
    mapping = dataclasses.replace(host_database.mapping, recipients=recipients)
    with engine.connect() as connection:
        host = check_host(connection, mapping)
    assert host.mapping.recipients is not None
    return host


def seed(app: HostApp, engine: Engine) -> None:
    """Users 1 to 3; task 11 (open) and 12 (done) of user 1, watched by user 2; task 21 of
    user 2; task 31 of user 3, watched by user 1; every task marked as reminded."""
    with engine.begin() as connection:
        for user_id in (1, 2, 3):
            app.add_user(connection, user_id)
        app.add_task(connection, 11, 1, DUE)
        app.add_task(connection, 12, 1, DUE, completed=True)
        app.add_task(connection, 21, 2, DUE)
        app.add_task(connection, 31, 3, DUE)
        connection.execute(
            text("INSERT INTO watchers VALUES (11, 2), (12, 2), (31, 1)"),
        )
    mark_all(app, engine)


def mark_all(app: HostApp, engine: Engine) -> None:
    """Every task marked as reminded for its due value, as a scan leaves it."""
    due = "deadline" if app.mapped else "due_date"
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {app.tasks_table} SET reminder_due_at = {due}"))


def marked(app: HostApp, engine: Engine) -> set[int]:
    """The ids of the tasks whose marker is set."""
    with engine.connect() as connection:
        found = connection.execute(
            text(f"SELECT id FROM {app.tasks_table} WHERE reminder_due_at IS NOT NULL")
        )
        return set(found.scalars())


def change(engine: Engine, host: HostSchema, user_id: int | None, rule: Rule | None) -> int:
    """Set (or, with None, clear) a rule; how many tasks it re-planned."""
    with make_session_factory(engine).begin() as session:
        if rule is None:
            return rule_store.clear_rule(session, host, user_id).replanned
        return rule_store.set_rule(session, host, user_id, rule, now=NOW).replanned


def test_a_users_rule_replans_the_tasks_they_own_and_watch(host_database: HostDatabase) -> None:
    """User 1 owns 11 (and 12, done) and watches 31: those open ones are re-planned."""
    app, engine = host_database.app, host_database.engine
    host = watched_host(host_database)
    seed(app, engine)
    assert change(engine, host, 1, THREE) == 2
    assert marked(app, engine) == {12, 21}
    mark_all(app, engine)
    assert change(engine, host, 2, THREE) == 2  # owns 21, watches 11 (12 is done)
    assert marked(app, engine) == {12, 31}


def test_the_default_rule_replans_every_task_someone_without_a_rule_receives(
    host_database: HostDatabase,
) -> None:
    """With rules for users 1 and 3, the default covers user 2: tasks 21 and 11 (watched)."""
    app, engine = host_database.app, host_database.engine
    host = watched_host(host_database)
    seed(app, engine)
    change(engine, host, 1, THREE)
    change(engine, host, 3, THREE)
    mark_all(app, engine)
    assert change(engine, host, None, TWO_HOURS) == 2
    assert marked(app, engine) == {12, 31}
    mark_all(app, engine)
    assert change(engine, host, None, None) == 2
    assert marked(app, engine) == {12, 31}


def test_two_changes_of_the_default_at_once_leave_one_rule(postgres_engine: Engine) -> None:
    """The second waits for the first's commit, then replaces its rule: one default row."""
    services = make_services(postgres_engine, ManualClock(), RecordingChannel())
    first = Session(postgres_engine)
    first.begin()
    rule_store.set_rule(first, services.host, None, THREE, now=NOW)
    outcome: list[object] = []

    def second() -> None:
        with services.session_factory.begin() as session:
            outcome.append(rule_store.set_rule(session, services.host, None, TWO_HOURS, now=NOW))

    thread = threading.Thread(target=second)
    thread.start()
    waiting = (
        select(func.count())
        .select_from(text("pg_stat_activity"))
        .where(text("wait_event_type = 'Lock' AND datname = current_database()"))
    )
    deadline = time.monotonic() + 60
    with postgres_engine.connect() as watcher:
        while not watcher.execute(waiting).scalar_one():  # until the second waits on the first
            watcher.rollback()
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
    first.commit()
    first.close()
    thread.join(timeout=60)
    assert outcome == [rule_store.RuleChange(changed=True, replanned=0)]
    with services.session_factory() as session:
        assert rule_store.rules(session) == {None: TWO_HOURS}
        count = select(func.count()).select_from(rule_store.RuleRow)
        assert session.execute(count).scalar_one() == 1


def test_a_replanned_reminder_already_sent_is_not_sent_again(postgres_engine: Engine) -> None:
    """The marker cleared by a rule change brings the task back to the scan; its key is
    delivered already, so no second row and no second send."""
    clock = ManualClock()
    channel = RecordingChannel()
    services = make_services(postgres_engine, clock, channel)
    add_user(services, 1)
    add_task(services, 1, 1, clock.now() + timedelta(hours=2))
    services.scan()
    services.relay().relay_until_idle()
    assert len(channel.sent) == 1
    with services.session_factory.begin() as session:
        assert rule_store.set_rule(session, services.host, 1, THREE, now=clock.now()).replanned == 1
    services.scan()
    services.relay().relay_until_idle()
    assert len(channel.sent) == 1
    with services.session_factory() as session:
        rows = session.execute(select(OutboxRow.status)).scalars().all()
    assert rows == ["delivered"]
