"""The scan: who is due, exactly one row per key, re-arming, and the transaction."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.exc import DBAPIError

from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services, statuses
from worker.bootstrap import Services
from worker.reminders.due import PostgresDueQueries, SqliteDueQueries, due_queries
from worker.reminders.keys import reminder_key
from worker.reminders.schema import Task

HOUR = timedelta(hours=1)


@pytest.fixture
def services(engine: Engine, clock: ManualClock, channel: RecordingChannel) -> Services:
    """Services on SQLite and PostgreSQL with one opted-in and one opted-out owner."""
    built = make_services(engine, clock, channel)
    add_user(built, 1)
    add_user(built, 2, enabled=False)
    return built


def test_only_open_tasks_due_within_the_window_of_opted_in_owners_are_queued(
    services: Services, clock: ManualClock
) -> None:
    """A reminder 24 h ahead of each open task of an opted-in owner, its moment before the
    scan's horizon; completed, undated, overdue and opted-out are left out."""
    now = clock.now()
    add_task(services, 1, 1, now + HOUR)
    add_task(services, 2, 1, now + 24 * HOUR)
    # Beyond the horizon (the tick after next, and a margin): planned by a later scan.
    add_task(services, 3, 1, now + 24 * HOUR + 10 * timedelta(minutes=1))
    add_task(services, 4, 1, now)  # open end: excluded
    add_task(services, 5, 1, now - HOUR)
    add_task(services, 6, 1, None)
    add_task(services, 7, 1, now + HOUR, completed=now)
    add_task(services, 8, 2, now + HOUR)
    result = services.scan()
    assert result.queued == 2
    assert [k for k, _ in statuses(services)] == [
        reminder_key(1, now + HOUR),
        reminder_key(2, now + 24 * HOUR),
    ]


def test_repeated_and_stale_scans_never_add_a_second_row(
    services: Services, clock: ManualClock
) -> None:
    """Scanning again, later or with an older 'now' queues nothing new for the same key."""
    add_task(services, 1, 1, clock.now() + HOUR)
    assert services.scan().queued == 1
    assert services.scan().queued == 0
    assert services.scan(clock.now() - timedelta(minutes=5)).queued == 0
    clock.advance(timedelta(minutes=30))
    assert services.scan().queued == 0
    assert len(list(statuses(services))) == 1


def test_scan_marks_the_task_in_the_same_transaction(
    services: Services, clock: ManualClock
) -> None:
    """reminder_sent_at and the outbox row are written together."""
    due = clock.now() + HOUR
    add_task(services, 1, 1, due)
    services.scan()
    with services.session_factory() as session:
        task = session.get(Task, 1)
        assert task is not None
        assert task.reminder_sent_at == clock.now()
        assert task.reminder_due_at == due


def test_a_failing_insert_rolls_back_the_mark(services: Services, clock: ManualClock) -> None:
    """If the outbox insert fails, the task is not marked either, so the next scan retries it.

    The insert fails inside the database (a trigger), whichever way the scan writes: one
    statement on PostgreSQL, one statement per step on SQLite.
    """
    add_task(services, 1, 1, clock.now() + HOUR)
    postgres = services.engine.dialect.name == "postgresql"
    with services.engine.begin() as connection:
        if postgres:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'database went away'; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON outbox "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        else:
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON outbox "
                "BEGIN SELECT RAISE(ABORT, 'database went away'); END"
            )
    with pytest.raises(DBAPIError, match="database went away"):
        services.scan()
    with services.engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER refuse" + (" ON outbox" if postgres else ""))
    with services.session_factory() as session:
        assert session.get(Task, 1).reminder_sent_at is None  # type: ignore[union-attr]
    assert services.scan().queued == 1


def test_moving_the_due_date_rearms_and_cancels_the_old_row(
    services: Services, clock: ManualClock
) -> None:
    """A new due date gets a new reminder; the still-pending one for the old date is cancelled."""
    old, new = clock.now() + HOUR, clock.now() + 5 * HOUR
    add_task(services, 1, 1, old)
    services.scan()
    with services.session_factory.begin() as session:
        session.execute(update(Task).where(Task.id == 1).values(due_date=new))
    result = services.scan()
    assert (result.queued, result.superseded) == (1, 1)
    assert list(statuses(services)) == [
        (reminder_key(1, old), Status.CANCELLED),
        (reminder_key(1, new), Status.PENDING),
    ]


def test_moving_back_to_a_cancelled_date_rearms_that_row(
    services: Services, clock: ManualClock
) -> None:
    """Moving A -> B -> A reminds for A again once, reusing A's key; B's row is cancelled."""
    a, b = clock.now() + HOUR, clock.now() + 2 * HOUR
    add_task(services, 1, 1, a)
    services.scan()
    for due in (b, a):
        with services.session_factory.begin() as session:
            session.execute(update(Task).where(Task.id == 1).values(due_date=due))
        services.scan()
    rows = dict(statuses(services))
    assert rows == {reminder_key(1, a): Status.PENDING, reminder_key(1, b): Status.CANCELLED}


def test_a_delivered_key_is_never_queued_again(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Moving the due date away and back after delivery does not remind twice for that date."""
    a, b = clock.now() + HOUR, clock.now() + 2 * HOUR
    add_task(services, 1, 1, a)
    services.scan()
    services.relay().relay_until_idle()
    for due in (b, a):
        with services.session_factory.begin() as session:
            session.execute(update(Task).where(Task.id == 1).values(due_date=due))
        services.scan()
    services.relay().relay_until_idle()
    assert channel.keys == [reminder_key(1, a)]


def test_catch_up_after_downtime_queues_every_task_still_ahead(
    services: Services, clock: ManualClock
) -> None:
    """After 30 hours without a scan, the first one queues all tasks still due ahead, none past."""
    start = clock.now()
    for i in range(1, 31):
        add_task(services, i, 1, start + i * HOUR)  # one task due every hour
    clock.advance(30 * HOUR - timedelta(minutes=30))
    result = services.scan()
    assert result.queued == 1  # only task 30 is still ahead
    clock.set(start)
    assert services.scan().queued == 24


def fifty_due_tasks_in_batches_of_seven(
    engine: Engine, clock: ManualClock, channel: RecordingChannel, connections: int
) -> Services:
    """Services scanning 7 tasks per batch on ``connections``, and 50 tasks due."""
    services = make_services(engine, clock, channel, scan_batch=7, scan_connections=connections)
    add_user(services, 1)
    for i in range(1, 51):
        add_task(services, i, 1, clock.now() + timedelta(minutes=i))
    return services


def test_scan_batches_cover_everything(
    engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """With a small batch size the scan loops until every due task is queued."""
    services = fifty_due_tasks_in_batches_of_seven(engine, clock, channel, connections=1)
    result = services.scan()
    assert (result.queued, result.marked, result.batches) == (50, 50, 8)


def test_a_backlog_on_two_connections_is_queued_once(
    engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """After a full first batch, two loops share the rest on PostgreSQL (one on SQLite)."""
    services = fifty_due_tasks_in_batches_of_seven(engine, clock, channel, connections=2)
    committed_by: Counter[int] = Counter()
    event.listen(
        services.session_factory,
        "after_commit",
        lambda _session: committed_by.update([threading.get_ident()]),
    )
    result = services.scan()
    assert (result.queued, result.marked) == (50, 50)
    with services.session_factory() as session:
        keys = session.scalars(select(OutboxRow.idempotency_key)).all()
        unmarked = session.scalars(select(Task.id).where(Task.reminder_sent_at.is_(None))).all()
    assert sorted(keys) == sorted(
        reminder_key(i, clock.now() + timedelta(minutes=i)) for i in range(1, 51)
    )
    assert unmarked == []
    # The calling thread commits the first batch and the heartbeat; the loops the rest.
    loops = {thread: n for thread, n in committed_by.items() if thread != threading.get_ident()}
    expected_loops = 2 if engine.dialect.name == "postgresql" else 0
    assert len(loops) == expected_loops, committed_by
    if loops:
        assert result.batches == 1 + sum(loops.values())
    else:
        assert result.batches == 8  # SQLite: one loop, 7 full batches and a short one


def test_naive_datetimes_are_refused_at_the_boundary(services: Services) -> None:
    """A naive 'now' cannot reach the database."""
    with pytest.raises(ValueError, match="naive"):
        services.scan(datetime(2026, 11, 28, 12, 0))


def test_scan_records_its_heartbeat(services: Services, clock: ManualClock) -> None:
    """Each scan leaves its time for `reminders status`."""
    from worker.reminders.schema import ScanHeartbeat

    services.scan()
    clock.advance(timedelta(minutes=1))
    services.scan()
    with services.session_factory() as session:
        beats = session.scalars(select(ScanHeartbeat)).all()
    assert [b.scanned_at for b in beats] == [clock.now()]


def test_outbox_rows_keep_utc(services: Services, clock: ManualClock) -> None:
    """Times read back from the outbox are aware UTC."""
    add_task(services, 1, 1, clock.now() + HOUR)
    services.scan()
    with services.session_factory() as session:
        row = session.scalars(select(OutboxRow)).one()
    assert row.subject_at is not None and row.subject_at.utcoffset() == timedelta(0)


def test_only_waiting_rows_are_superseded_in_every_batch(
    engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A moved due date cancels the old pending or failed row; claimed or delivered ones stay."""
    services = make_services(engine, clock, channel, scan_batch=4, scan_connections=1)
    add_user(services, 1)
    a, b = clock.now() + HOUR, clock.now() + 2 * HOUR
    for task_id in range(1, 7):
        add_task(services, task_id, 1, a)
    assert services.scan().queued == 6
    old = {task_id: reminder_key(task_id, a) for task_id in range(1, 7)}
    with services.session_factory.begin() as session:
        for task_id, status in ((1, Status.FAILED), (2, Status.CLAIMED), (3, Status.DELIVERED)):
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.idempotency_key == old[task_id])
                .values(status=status)
            )
        session.execute(update(Task).values(due_date=b))
    result = services.scan()
    assert (result.queued, result.marked, result.superseded, result.batches) == (6, 6, 4, 2)
    rows = dict(statuses(services))
    assert {task_id: rows[key] for task_id, key in old.items()} == {
        1: Status.CANCELLED,
        2: Status.CLAIMED,
        3: Status.DELIVERED,
        4: Status.CANCELLED,
        5: Status.CANCELLED,
        6: Status.CANCELLED,
    }
    assert all(rows[reminder_key(task_id, b)] == Status.PENDING for task_id in range(1, 7))


def test_the_dialect_picks_its_query_set_once(services: Services) -> None:
    """Bootstrap hands the scan the engine's query set; only PostgreSQL's runs batches at once."""
    expected = {"postgresql": PostgresDueQueries, "sqlite": SqliteDueQueries}
    queries = services.due_queries
    assert type(queries) is expected[services.engine.dialect.name]
    assert queries.parallel is (services.engine.dialect.name == "postgresql")
    with pytest.raises(ValueError, match="mysql"):
        due_queries("mysql")
