"""Races and recovery against real PostgreSQL: many scanners, many relays, lost leases.

Every test acts at an exact step (a `threading.Barrier`, the channel's ``on_send`` hook, a
table lock the test holds); none sleeps to make a race likely. Polling with a deadline is
used only to wait for subprocesses to reach a state the database shows.

Each test that takes ``host_database`` runs twice: on the reference schema, and on a host
schema read through a mapping (``todo_items`` with a ``timestamp without time zone``
deadline in Berlin wall time, completion as ``status = 'done'``; `tests.support.hosts`), the
host's rows written as that application writes them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.orm import Session

from outbox.channels.base import Delivery, Message
from outbox.relay import Answer, Attempt, RelayReport
from outbox.store import Claim
from outbox.table import OutboxRow, Status
from tests.conftest import HostDatabase
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.support.db import make_services
from tests.support.hosts import REFERENCE_APP, TODO_APP_BERLIN, HostApp, HostTask
from tests.support.races import run_threads
from tests.support.watchers import WATCHERS, watched_mapping
from worker.bootstrap import Services
from worker.db import make_engine
from worker.reminders.keys import reminder_key
from worker.reminders.scan import ScanResult
from worker.reminders.schema import ScanHeartbeat

pytestmark = pytest.mark.postgres

HOUR = timedelta(hours=1)
#: For the races in the worker's own tables only (the scan heartbeat, the outbox's retries and
#: leases), which read nothing of the host's that the other tests do not: the reference
#: schema alone, or one case on the mapped schema.
REFERENCE_ONLY = pytest.mark.parametrize("host_app", [REFERENCE_APP], ids=["reference"])
WAIT = 30.0  # seconds; an upper bound for threads and subprocesses, never reached when healthy
REMINDERS = Path(sys.executable).with_name("reminders")


# --- helpers --------------------------------------------------------------------------------


def seed_users(app: HostApp, engine: Engine, enabled: int = 50) -> None:
    """Users 1..enabled want reminders; user 9999 turned them off."""
    with engine.begin() as connection:
        for user_id in range(1, enabled + 1):
            app.add_user(connection, user_id)
        app.add_user(connection, 9999, email="off@example.com", enabled=False)


def seed_tasks(
    host: HostDatabase, now: datetime, due: int, lead: timedelta = timedelta(0)
) -> dict[int, datetime]:
    """Tasks 1..due due every 30 s after now + lead; 500 more that must never be reminded.

    Returns the due tasks' due dates. The others: beyond the lookahead, completed, owned by
    an opted-out user, overdue, and undated (100 each).
    """
    minute = timedelta(minutes=1)
    # due: every 30 s from now + lead + 30 s (2,000 tasks end at now + lead + 16h40)
    due_dates = {g: now + lead + g * timedelta(seconds=30) for g in range(1, due + 1)}
    tasks = [HostTask(g, 1 + g % 50, when, f"task {g}") for g, when in due_dates.items()]
    for g in range(1, 101):
        tasks += [
            HostTask(due + g, 1, now + 25 * HOUR + g * minute, "later"),
            HostTask(due + 100 + g, 1, now + g * minute, "done", completed=now),
            HostTask(due + 200 + g, 9999, now + g * minute, "opted out"),
            HostTask(due + 300 + g, 1, now - (g - 1) * minute, "overdue"),
            HostTask(due + 400 + g, 1, None, "undated"),
        ]
    with host.engine.begin() as connection:
        host.app.add_tasks(connection, tasks)
    return due_dates


def outbox_rows(engine: Engine) -> list[OutboxRow]:
    """Every outbox row, by id, detached from any session."""
    from sqlalchemy.orm import Session

    with Session(engine, expire_on_commit=False) as session:
        rows = list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))
        session.expunge_all()
    return rows


def row_for(engine: Engine, key: str) -> OutboxRow:
    """The outbox row with idempotency key ``key``."""
    (row,) = [r for r in outbox_rows(engine) if r.idempotency_key == key]
    return row


def marked_tasks(host: HostDatabase) -> dict[int, tuple[Any, Any]]:
    """The tasks the scan marked as reminded: their due column and ``reminder_due_at`` as
    the host's table holds them."""
    due = "deadline" if host.app.mapped else "due_date"
    with host.engine.connect() as connection:
        rows = connection.execute(
            text(
                f"SELECT id, {due}, reminder_due_at FROM {host.app.tasks_table} "
                "WHERE reminder_sent_at IS NOT NULL"
            )
        )
        return {task_id: (stored, marker) for task_id, stored, marker in rows}


def assert_exactly_one_row_per_due_task(host: HostDatabase, due_dates: dict[int, datetime]) -> None:
    """One outbox row per due task, keyed by (task, due date), and every due task marked for
    the due date it holds."""
    rows = outbox_rows(host.engine)
    keys = Counter(r.idempotency_key for r in rows)
    assert [k for k, n in keys.items() if n > 1] == []
    assert Counter(r.subject_id for r in rows) == Counter(list(due_dates))
    assert {r.idempotency_key for r in rows} == {reminder_key(i, d) for i, d in due_dates.items()}
    assert {r.subject_id: r.subject_at for r in rows} == due_dates
    marked = marked_tasks(host)
    assert set(marked) == set(due_dates)
    assert all(
        stored == marker == host.app.stored_due(due_dates[task_id])
        for task_id, (stored, marker) in marked.items()
    )
    assert {r.status for r in rows} == {Status.PENDING}


@pytest.fixture
def engines(host_database: HostDatabase) -> Iterator[Callable[[], Engine]]:
    """A factory of extra engines on this test's database (one per racing thread)."""
    made: list[Engine] = []

    def factory() -> Engine:
        made.append(make_engine(host_database.url))
        return made[-1]

    yield factory
    for engine in made:
        engine.dispose()


def services_on(
    host: HostDatabase,
    clock: ManualClock,
    channel: RecordingChannel,
    engine: Engine | None = None,
    **settings: Any,
) -> Services:
    """Services on the host's database (on ``engine``, or the host's own), through its mapping."""
    return make_services(
        engine or host.engine, clock, channel, schema_file=host.schema_file, **settings
    )


@pytest.fixture
def services(
    host_database: HostDatabase, clock: ManualClock, channel: RecordingChannel
) -> Services:
    """Services on this test's host database, with owner 1 opted in."""
    with host_database.engine.begin() as connection:
        host_database.app.add_user(connection, 1)
    return services_on(host_database, clock, channel)


def add_task(host: HostDatabase, task_id: int, owner_id: int, due: datetime | None) -> None:
    """Insert a task as the host application would."""
    with host.engine.begin() as connection:
        host.app.add_task(connection, task_id, owner_id, due)


def set_due(host: HostDatabase, task_id: int, due: datetime | None) -> None:
    """Move a task's due date as the host application would."""
    with host.engine.begin() as connection:
        host.app.move(connection, task_id, due)


def waiting_per_task(engine: Engine) -> Counter[int]:
    """How many rows wait to be sent (pending or failed) for each task."""
    return Counter(
        r.subject_id for r in outbox_rows(engine) if r.status in (Status.PENDING, Status.FAILED)
    )


# --- (a) scanners ---------------------------------------------------------------------------


def test_many_scanner_threads_queue_exactly_one_row_per_due_task(
    host_database: HostDatabase,
    engines: Callable[[], Engine],
    clock: ManualClock,
    channel: RecordingChannel,
) -> None:
    """Eight scanners released together over 2,000 due tasks write one row per key, mark all."""
    host = host_database
    seed_users(host.app, host.engine)
    due_dates = seed_tasks(host, clock.now(), 2000)
    scanners = [services_on(host, clock, channel, engines(), scan_batch=50) for _ in range(8)]
    start = threading.Barrier(len(scanners), timeout=WAIT)
    # Each scanner holds its first batch (50 tasks locked, not yet committed) until all eight
    # hold one: every scanner then claims while the others' locks are held.
    first_batches = threading.Barrier(len(scanners), timeout=WAIT)
    callers: set[int] = set()  # the scanners' own threads, not their loops' (two each)
    committed: set[int] = set()
    for scanner in scanners:

        @event.listens_for(scanner.session_factory, "before_commit")
        def hold_first_batch(session: object) -> None:
            if threading.get_ident() in callers - committed:
                committed.add(threading.get_ident())
                first_batches.wait()

    def scan(services: Services) -> ScanResult:
        callers.add(threading.get_ident())
        start.wait()
        return services.scan()

    results = run_threads([functools.partial(scan, s) for s in scanners], wait=WAIT * 4)

    assert sum(r.queued for r in results) == 2000
    assert sum(r.marked for r in results) == 2000
    assert all(r.marked >= 50 for r in results), [r.marked for r in results]
    assert_exactly_one_row_per_due_task(host, due_dates)


def test_a_failing_loop_ends_the_scan_and_loses_no_task(
    host_database: HostDatabase, clock: ManualClock, channel: RecordingChannel
) -> None:
    """When one of a scan's two loops fails, the scan fails after the other loop's batch:
    every committed batch holds both its marks and its rows, and the next scan queues the
    rest."""
    host = host_database
    seed_users(host.app, host.engine)
    due_dates = seed_tasks(host, clock.now(), 2000)
    services = services_on(host, clock, channel, scan_batch=50, scan_connections=2)
    caller = threading.get_ident()
    guard = threading.Lock()
    failed: list[int] = []

    def fail_the_first_loop_commit(session: object) -> None:
        with guard:
            if threading.get_ident() == caller or failed:
                return
            failed.append(threading.get_ident())
        raise ConnectionError("server closed the connection")

    event.listen(services.session_factory, "before_commit", fail_the_first_loop_commit)
    with pytest.raises(ConnectionError, match="server closed"):
        services.scan()
    event.remove(services.session_factory, "before_commit", fail_the_first_loop_commit)

    marked = set(marked_tasks(host))
    assert {row.subject_id for row in outbox_rows(host.engine)} == marked
    assert len(marked) % 50 == 0  # whole batches only
    # The other loop stopped after a batch or two; left alone it would have gone on to
    # mark the remaining 1,950 or all 2,000 tasks.
    assert 50 <= len(marked) <= 1000
    assert services.scan().queued == 2000 - len(marked)
    assert_exactly_one_row_per_due_task(host, due_dates)


def test_many_scan_commands_at_once_queue_exactly_one_row_per_due_task(
    host_database: HostDatabase,
) -> None:
    """Four `reminders scan` processes released at the same instant write one row per key."""
    host = host_database
    now = datetime.now(UTC)  # the commands read the wall clock
    seed_users(host.app, host.engine)
    due_dates = seed_tasks(host, now, 2000, lead=timedelta(minutes=10))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")},
        "REMINDERS_DATABASE_URL": host.url,
        "REMINDERS_SCAN_BATCH": "50",
        "TZ": "UTC",
    }
    if host.schema_file is not None:
        env["REMINDERS_SCHEMA_FILE"] = host.schema_file
    database = make_url(host.url).database
    gate = host.engine.connect()
    processes: list[subprocess.Popen[str]] = []
    try:
        # The gate: every scanner's first write waits on this lock until all of them do.
        gate.begin()
        gate.execute(text(f"LOCK TABLE {host.app.tasks_table} IN SHARE MODE"))
        for _ in range(4):
            processes.append(
                subprocess.Popen(
                    [str(REMINDERS), "scan", "--json"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + WAIT
        waiting = 0
        while waiting < len(processes):
            assert time.monotonic() < deadline, f"only {waiting} scanners reached the gate"
            assert all(p.poll() is None for p in processes), "a scanner exited before the gate"
            with host.engine.connect() as probe:
                waiting = probe.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                        "AND application_name = 'reminders' AND wait_event_type = 'Lock'"
                    ),
                    {"db": database},
                ).scalar_one()
            time.sleep(0.05)
        gate.commit()  # all four go at once
        outputs = [p.communicate(timeout=WAIT) for p in processes]
    finally:
        gate.close()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    queued = [json.loads(stdout)["queued"] for stdout, _ in outputs]
    assert sum(queued) == 2000, queued
    assert_exactly_one_row_per_due_task(host, due_dates)


@REFERENCE_ONLY
def test_concurrent_first_scans_both_record_their_heartbeat(
    host_database: HostDatabase,
    engines: Callable[[], Engine],
    clock: ManualClock,
    channel: RecordingChannel,
) -> None:
    """Two scanners recording the first heartbeat at once on a never-scanned database both succeed.

    Regression: record_scan used to UPDATE the heartbeat row and INSERT it when the UPDATE
    found none; two first scans both found none and one died on the primary key.
    """
    host = host_database
    seed_users(host.app, host.engine)
    seed_tasks(host, clock.now(), 20)
    scanners = [services_on(host, clock, channel, engines()) for _ in range(2)]
    # Each scanner, once it has written to the heartbeat table, waits before committing until
    # the other has too. If the database itself serialises the two writes (an upsert waits
    # on the other's uncommitted row), the barrier times out and each goes on alone.
    both_there = threading.Barrier(2, timeout=2)
    wrote_heartbeat: set[int] = set()
    for scanner in scanners:

        @event.listens_for(scanner.engine, "after_cursor_execute")
        def note(
            conn: Connection,
            cursor: DBAPICursor,
            statement: str,
            parameters: object,
            context: object,
            executemany: bool,
        ) -> None:
            if "reminder_scan_heartbeat" in statement:
                wrote_heartbeat.add(threading.get_ident())

        @event.listens_for(scanner.session_factory, "before_commit")
        def pause(session: object) -> None:
            if threading.get_ident() in wrote_heartbeat:
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_there.wait()

    results = run_threads([s.scan for s in scanners], wait=WAIT * 4)

    assert sum(r.queued for r in results) == 20
    with host.engine.connect() as connection:
        assert connection.execute(select(ScanHeartbeat.id)).scalars().all() == [1]


# --- (b) relays -----------------------------------------------------------------------------


def test_two_relays_racing_deliver_each_key_exactly_once(
    host_database: HostDatabase,
    engines: Callable[[], Engine],
    clock: ManualClock,
    channel: RecordingChannel,
) -> None:
    """Two relays on separate engines, both mid-batch at once, deliver 500 rows once each."""
    host = host_database
    seed_users(host.app, host.engine)
    due_dates = seed_tasks(host, clock.now(), 500)
    assert services_on(host, clock, channel).scan().queued == 500
    relays = [services_on(host, clock, channel, engines(), relay_batch=10) for _ in range(2)]
    start = threading.Barrier(2, timeout=WAIT)
    # Each relay's first send waits for the other's: both hold a claimed batch at that moment.
    first_sends = threading.Barrier(2, timeout=WAIT)
    passed: set[int] = set()

    def on_send(_message: Message) -> None:
        if threading.get_ident() not in passed:
            passed.add(threading.get_ident())
            first_sends.wait()

    channel.on_send = on_send

    def relay(services: Services) -> RelayReport:
        start.wait()
        return services.relay().relay_until_idle()

    reports = run_threads([functools.partial(relay, s) for s in relays], wait=WAIT * 4)

    sent = Counter(channel.keys)
    assert set(sent) == {reminder_key(i, d) for i, d in due_dates.items()}
    assert [key for key, n in sent.items() if n != 1] == []
    counts = [r.counts for r in reports]
    assert all(c["delivered"] >= 10 for c in counts), counts
    assert sum(c["delivered"] for c in counts) == 500
    assert sum(c["fenced"] + c["retry"] + c["released"] for c in counts) == 0
    rows = outbox_rows(host.engine)
    assert {r.status for r in rows} == {Status.DELIVERED}
    assert {r.attempts for r in rows} == {1}


# --- (c) a lease that expires mid-send ------------------------------------------------------


@pytest.mark.parametrize(
    ("host_app", "late_answer"),
    [
        pytest.param(REFERENCE_APP, Delivery.delivered(), id="reference-delivered"),
        pytest.param(REFERENCE_APP, Delivery.retry("451 try later"), id="reference-retry"),
        pytest.param(
            REFERENCE_APP, Delivery.permanent("550 no such user"), id="reference-permanent"
        ),
        pytest.param(TODO_APP_BERLIN, Delivery.delivered(), id="todo_app_berlin-delivered"),
    ],
)
def test_a_lease_lost_during_send_is_fenced(
    host_database: HostDatabase,
    services: Services,
    engines: Callable[[], Engine],
    clock: ManualClock,
    late_answer: Delivery,
) -> None:
    """Relay A's lease expires mid-send and B re-delivers; A's late answer changes nothing."""
    add_task(host_database, 1, 1, clock.now() + HOUR)
    services.scan()
    key = reminder_key(1, clock.now() + HOUR)
    channel_a = RecordingChannel(script=[late_answer])
    channel_b = RecordingChannel()
    services_a = services_on(host_database, clock, channel_a)
    services_b = services_on(host_database, clock, channel_b, engines())
    seen_a: list[Attempt] = []
    seen_b: list[Attempt] = []
    lease = services_a.settings.lease
    taken_over_at: list[datetime] = []

    def inside_a_send(_message: Message) -> None:
        # A is on the wire. Its lease runs out, and B claims and delivers the same row.
        taken_over_at.append(clock.advance(lease + timedelta(seconds=1)))
        report = services_b.relay(on_attempt=seen_b.append).relay_until_idle()
        assert report.counts == Counter(delivered=1)

    channel_a.on_send = inside_a_send
    report_a = services_a.relay(on_attempt=seen_a.append).relay_until_idle()

    assert channel_a.keys == [key]
    assert channel_b.keys == [key]
    assert [(a.key, a.attempt, a.outcome) for a in seen_b] == [(key, 2, "delivered")]
    assert [(a.key, a.attempt, a.outcome) for a in seen_a] == [(key, 1, "fenced")]
    assert report_a.counts == Counter(fenced=1)
    row = row_for(services.engine, key)
    assert row.status == Status.DELIVERED
    assert row.attempts == 2
    assert row.lease_token == 2
    assert row.delivered_at == taken_over_at[0]
    assert row.last_error is None
    assert row.lease_owner is None


# --- (d) due date moved ---------------------------------------------------------------------


def test_moving_the_due_date_cancels_the_old_reminder_and_arms_the_new_one(
    host_database: HostDatabase,
    services: Services,
    clock: ManualClock,
    channel: RecordingChannel,
) -> None:
    """A scan after a move cancels the pending old key and queues the new one, sent once."""
    old, new = clock.now() + 2 * HOUR, clock.now() + 5 * HOUR
    add_task(host_database, 1, 1, old)
    assert services.scan().queued == 1
    set_due(host_database, 1, new)

    result = services.scan()

    assert (result.queued, result.superseded) == (1, 1)
    old_row = row_for(services.engine, reminder_key(1, old))
    assert old_row.status == Status.CANCELLED
    assert "due date moved" in (old_row.last_error or "")
    assert row_for(services.engine, reminder_key(1, new)).status == Status.PENDING
    assert waiting_per_task(services.engine) == Counter({1: 1})
    assert services.relay().relay_until_idle().counts == Counter(delivered=1)
    clock.advance(HOUR)
    assert services.scan().queued == 0
    assert services.relay().relay_until_idle().counts == Counter()
    assert channel.keys == [reminder_key(1, new)]
    assert row_for(services.engine, reminder_key(1, new)).status == Status.DELIVERED


def test_moving_the_due_date_back_re_arms_the_cancelled_reminder(
    host_database: HostDatabase,
    services: Services,
    clock: ManualClock,
    channel: RecordingChannel,
) -> None:
    """Old → new → old again: the old key is pending again, the new one cancelled, one sent."""
    old, new = clock.now() + 2 * HOUR, clock.now() + 5 * HOUR
    add_task(host_database, 1, 1, old)
    services.scan()
    set_due(host_database, 1, new)
    services.scan()
    set_due(host_database, 1, old)

    result = services.scan()

    assert (result.queued, result.superseded) == (1, 1)
    assert row_for(services.engine, reminder_key(1, new)).status == Status.CANCELLED
    assert waiting_per_task(services.engine) == Counter({1: 1})
    assert services.relay().relay_until_idle().counts == Counter(delivered=1)
    assert channel.keys == [reminder_key(1, old)]
    assert len(outbox_rows(services.engine)) == 2


def test_a_move_the_scan_has_not_seen_yet_is_cancelled_at_send_time(
    host_database: HostDatabase,
    services: Services,
    clock: ManualClock,
    channel: RecordingChannel,
) -> None:
    """Moved between scan and relay: the relay's re-check cancels it, a later scan re-arms."""
    old, new = clock.now() + 2 * HOUR, clock.now() + 30 * HOUR  # new: outside the window
    add_task(host_database, 1, 1, old)
    services.scan()
    set_due(host_database, 1, new)

    assert services.relay().relay_until_idle().counts == Counter(cancelled=1)
    assert services.scan().queued == 0  # the new date is not due yet
    clock.advance(10 * HOUR)
    assert services.scan().queued == 1
    assert services.relay().relay_until_idle().counts == Counter(delivered=1)
    assert channel.keys == [reminder_key(1, new)]
    old_row = row_for(services.engine, reminder_key(1, old))
    assert (old_row.status, old_row.last_error) == (Status.CANCELLED, "due date moved")


# --- (e) completed or deleted before delivery -----------------------------------------------


@pytest.mark.parametrize(
    ("window", "send_takes", "rechecked"),
    [
        ("0", timedelta(0), True),  # re-checked right before every send
        ("100ms", timedelta(milliseconds=100), True),  # the window ran out: re-checked
        ("100ms", timedelta(0), False),  # inside the window: the round's re-check stands
    ],
    ids=["window-0", "window-spent", "inside-window"],
)
def test_a_task_completed_or_deleted_before_delivery_is_cancelled(
    host_database: HostDatabase,
    clock: ManualClock,
    channel: RecordingChannel,
    window: str,
    send_takes: timedelta,
    rechecked: bool,
) -> None:
    """Completed or deleted: cancelled, never sent. Completed while its batch is on the wire:
    cancelled if that was more than one window (REMINDERS_RELAY_WINDOW) before its send."""
    host = host_database
    services = services_on(host, clock, channel, relay_window=window)
    with host.engine.begin() as connection:
        host.app.add_user(connection, 1)
    due = {task_id: clock.now() + HOUR + task_id * timedelta(minutes=1) for task_id in (1, 2, 3, 4)}
    for task_id, when in due.items():
        add_task(host, task_id, 1, when)
    assert services.scan().queued == 4
    with host.engine.begin() as connection:
        host.app.complete(connection, 1)
        host.app.delete(connection, 2)
    on_the_wire: list[int] = []

    def complete_the_other(message: Message) -> None:
        # Tasks 3 and 4 were claimed in one batch. While the first of them is being sent,
        # the other one is completed.
        sent_id = int(message.document["task_id"])
        on_the_wire.append(sent_id)
        other = 7 - sent_id
        with host.engine.begin() as connection:
            host.app.complete(connection, other)
        clock.advance(send_takes)

    channel.on_send = complete_the_other
    report = services.relay().relay_until_idle()

    first = on_the_wire[0]
    other = 7 - first
    if rechecked:
        assert report.counts == Counter(cancelled=3, delivered=1)
        assert on_the_wire == [first]
        other_outcome: tuple[Status, str | None] = (Status.CANCELLED, "task completed")
    else:
        assert report.counts == Counter(cancelled=2, delivered=2)
        assert on_the_wire == [first, other]
        other_outcome = (Status.DELIVERED, None)
    assert channel.keys == [reminder_key(sent, due[sent]) for sent in on_the_wire]
    outcomes = {r.subject_id: (r.status, r.last_error) for r in outbox_rows(services.engine)}
    assert outcomes == {
        1: (Status.CANCELLED, "task completed"),
        2: (Status.CANCELLED, "task deleted"),
        first: (Status.DELIVERED, None),
        other: other_outcome,
    }
    assert services.scan().queued == 0


# --- (f) catch-up after an outage -----------------------------------------------------------


def test_one_scan_after_a_long_outage_queues_every_task_still_ahead_and_none_past(
    host_database: HostDatabase,
    services: Services,
    clock: ManualClock,
    channel: RecordingChannel,
) -> None:
    """After 20 h without scans, one scan queues exactly the tasks due in (now, now + 24h];
    the relay sends what is still ahead, none for a task already due."""
    due_dates: dict[int, datetime] = {}

    def add(task_id: int, due: datetime) -> None:
        due_dates[task_id] = due
        add_task(host_database, task_id, 1, due)

    for k in range(1, 49):  # tasks due every hour from T0 + 1h to T0 + 48h
        add(k, T0 + k * HOUR)
    before = services.scan()
    assert before.queued == 24  # T0 + 1h .. T0 + 24h
    # The outage: 20 hours without a scan (nor a relay) while the application adds tasks.
    for hour in range(1, 21):
        clock.advance(HOUR)
        add(100 + hour, clock.now() + 30 * timedelta(minutes=1))
        add(200 + hour, clock.now() + 23 * HOUR)
    add(300, clock.now())  # due exactly at the resume: not ahead
    now = clock.now()
    assert now == T0 + 20 * HOUR
    already = {r.idempotency_key for r in outbox_rows(services.engine)}

    result = services.scan()

    ahead = {i for i, due in due_dates.items() if now < due <= now + 24 * HOUR}
    expected = ahead - set(range(1, 25))
    assert expected == set(range(25, 45)) | {120} | set(range(201, 221))
    new_rows = [r for r in outbox_rows(services.engine) if r.idempotency_key not in already]
    assert {r.subject_id for r in new_rows} == expected
    assert result.queued == len(expected) == 41
    assert all(r.subject_at == due_dates[r.subject_id] > now for r in new_rows)
    never_marked = set(due_dates) - set(marked_tasks(host_database))
    assert never_marked == set(range(45, 49)) | set(range(101, 120)) | {300}
    # The relay, down as long, then delivers everything still ahead, queued before and after,
    # once each; the reminders of the tasks that fell due meanwhile expire unsent.
    report = services.relay().relay_until_idle()
    assert report.counts == Counter(delivered=4 + 41, expired=20)
    assert len(channel.keys) == len(set(channel.keys)) == 45
    sent = {r.subject_id for r in outbox_rows(services.engine) if r.status == Status.DELIVERED}
    assert sent == set(range(21, 25)) | expected


# --- (g) a poison row -----------------------------------------------------------------------


@REFERENCE_ONLY
@pytest.mark.parametrize("where", ["prepare", "send"])
def test_a_poison_row_is_retried_until_its_task_is_due_then_expires_and_the_others_flow(
    host_database: HostDatabase, clock: ManualClock, channel: RecordingChannel, where: str
) -> None:
    """A row whose prepare or send raises is retried, past max attempts and at most the cap
    apart, while its task is not due, then expired; others flow."""
    host = host_database
    services = services_on(host, clock, channel, max_attempts=3)
    with host.engine.begin() as connection:
        host.app.add_user(connection, 1)
    for task_id in range(1, 6):
        add_task(host, task_id, 1, clock.now() + task_id * HOUR)
    services.scan()
    poison = reminder_key(3, clock.now() + 3 * HOUR)
    relay = services.relay()
    tries: list[str] = []
    if where == "prepare":
        render = relay.prepare

        def prepare(session: Session, claims: Sequence[Claim]) -> Mapping[int, Answer]:
            if any(claim.key == poison for claim in claims):  # breaks its whole round
                tries.append(poison)
                raise RuntimeError("cannot render this task")
            return render(session, claims)

        relay.prepare = prepare
    else:

        def explode(message: Message) -> None:
            if message.key == poison:
                tries.append(message.key)
                raise RuntimeError("the channel blew up")

        channel.on_send = explode

    reports = [relay.relay_until_idle()]
    assert reports[0].counts == Counter(delivered=4, retry=1)
    due = clock.now() + 3 * HOUR
    while reports[-1].next_attempt_at is not None:
        assert len(reports) < 40, "the poison row is retried past its task's due time"
        assert reports[-1].next_attempt_at - clock.now() <= services.settings.retry_cap_until_expiry
        clock.set(reports[-1].next_attempt_at)
        reports.append(relay.relay_until_idle())

    assert clock.now() < due
    assert {tuple(r.counts.items()) for r in reports[1:-1]} == {(("retry", 1),)}
    assert reports[-1].counts == Counter(expired=1)
    row = row_for(host.engine, poison)
    assert row.status == Status.EXPIRED and row.attempts == len(reports) > 3
    # Each attempt: the round's re-check, then (prepare only) the row's own re-check.
    assert tries == [poison] * (2 * row.attempts if where == "prepare" else row.attempts)
    assert (row.last_error or "").startswith("expires before its next attempt; last error: ")
    assert "RuntimeError: " in (row.last_error or "")
    delivered = [k for k in channel.keys if k != poison]
    assert len(delivered) == len(set(delivered)) == 4
    others = [r for r in outbox_rows(host.engine) if r.idempotency_key != poison]
    assert {(r.status, r.attempts) for r in others} == {(Status.DELIVERED, 1)}


# --- (h) the due query uses the partial index -----------------------------------------------


def test_the_due_query_uses_the_partial_index(
    postgres_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """On 50,000 tasks with 4% due, the scan's own statement is planned on the partial index."""
    now = clock.now()
    seed_users(REFERENCE_APP, postgres_engine, enabled=1000)
    with postgres_engine.begin() as connection:
        # g % 25 = 0 (4%): due within the window. Of the rest: 60% completed, 20% already
        # reminded for their date, 20% open and due in 2 to 30 days.
        connection.execute(
            text(
                """
                INSERT INTO tasks (id, owner_id, title, due_date, completed_at,
                                   reminder_sent_at, reminder_due_at)
                SELECT g, 1 + g % 1000, 'task ' || g, d.due,
                       CASE WHEN g % 25 <> 0 AND g % 5 IN (0, 1, 2) THEN d.past END,
                       CASE WHEN g % 25 <> 0 AND g % 5 = 3 THEN d.past END,
                       CASE WHEN g % 25 <> 0 AND g % 5 = 3 THEN d.due END
                FROM generate_series(1, 50000) AS g,
                LATERAL (SELECT
                    CASE WHEN g % 25 = 0
                         THEN CAST(:now AS timestamptz) + (1 + g % 1439) * interval '1 min'
                         WHEN g % 5 = 4
                         THEN CAST(:now AS timestamptz) + interval '2 days'
                              + (g % 40000) * interval '1 min'
                         ELSE CAST(:now AS timestamptz) - (g % 40000) * interval '1 min'
                    END AS due,
                    CAST(:now AS timestamptz) - interval '30 days' AS past) AS d
                """
            ),
            {"now": now},
        )
    with postgres_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE users"))
        connection.execute(text("ANALYZE tasks"))
    plans: dict[str, str] = {}

    @event.listens_for(postgres_engine, "before_cursor_execute")
    def explain_the_due_query(
        conn: Connection,
        cursor: Any,  # psycopg's cursor: the plan is read through its own connection
        statement: str,
        parameters: object,
        context: object,
        executemany: bool,
    ) -> None:
        # Explain, in the scan's own transaction and with its parameters, the statement
        # that claims due tasks and the SELECT ... FOR UPDATE SKIP LOCKED inside it.
        found = re.search(r"array\(\((SELECT .* SKIP LOCKED)\)\)", statement, re.DOTALL)
        if found and "UPDATE tasks" in statement:
            with cursor.connection.cursor() as explain:
                for name, sql in (("select", found.group(1)), ("statement", statement)):
                    explain.execute("EXPLAIN " + sql, parameters)
                    plans[name] = "\n".join(row[0] for row in explain.fetchall())

    result = make_services(postgres_engine, clock, channel).scan()
    event.remove(postgres_engine, "before_cursor_execute", explain_the_due_query)

    assert result.queued == 2000
    assert set(plans) == {"select", "statement"}, "the scan's due query was not seen"
    print(f"\nEXPLAIN of the scan's due select (50,000 tasks, 2,000 due):\n{plans['select']}")
    print(f"\nEXPLAIN of the whole claiming statement:\n{plans['statement']}")
    assert "ix_tasks_awaiting_reminder" in plans["select"]
    assert "Seq Scan on tasks" not in plans["select"]
    assert "ix_tasks_awaiting_reminder" in plans["statement"]
    # The batch is joined by primary key, not by hashing the whole table.
    assert "Seq Scan on tasks" not in plans["statement"]


# --- (f) scanners and relays at once, under rules and a recipients table --------------------

#: The default rule, and user 2's own: lead times in minutes, so that every moment comes
#: within half an hour of the start.
DEFAULT_LEADS = (timedelta(minutes=10), timedelta(minutes=5), timedelta(0))
USER_2_LEADS = (timedelta(minutes=7), timedelta(minutes=1))
STEP = timedelta(seconds=30)
RULED_TASKS = 60


def watched_schema_file(tmp_path: Path) -> str:
    """A mapping file: the reference tables, and a watchers table of (task, user)."""
    path = tmp_path / "schema.toml"
    path.write_text(watched_mapping(WATCHERS))
    return str(path)


@REFERENCE_ONLY
def test_two_scanners_and_two_relays_under_rules_and_recipients_send_each_reminder_once(
    host_database: HostDatabase,
    engines: Callable[[], Engine],
    clock: ManualClock,
    channel: RecordingChannel,
    tmp_path: Path,
) -> None:
    """Two scanners and two relays, each on its own engine, started together at every step of
    the clock (30 s) under a default rule of three lead times, a user's rule of two and a
    watchers table: every reminder planned is delivered exactly once, none before its moment,
    none to the opted-out watcher, and the owner who also watches a task is reminded once."""
    from worker.reminders import rule_store
    from worker.reminders.rules import Rule

    host = host_database
    seed_users(host.app, host.engine, enabled=10)
    start = clock.now()
    due = {t: start + timedelta(minutes=12, seconds=17 * t) for t in range(1, RULED_TASKS + 1)}
    owners = {t: 1 + t % 10 for t in due}
    watchers: dict[int, set[int]] = {t: set() for t in due}
    for t in due:
        if t % 2 == 0:
            watchers[t].add(1 + (t + 3) % 10)  # another user (or, now and then, the owner)
        if t % 3 == 0:
            watchers[t].add(owners[t])  # the owner listed as a watcher too: reminded once
        if t % 5 == 0:
            watchers[t].add(9999)  # opted out: never reminded
    with host.engine.begin() as connection:
        host.app.add_tasks(
            connection, [HostTask(t, owners[t], when, f"task {t}") for t, when in due.items()]
        )
        connection.execute(text("CREATE TABLE watchers (task_ref BIGINT, account_ref BIGINT)"))
        pairs = [{"t": t, "u": u} for t, users in watchers.items() for u in users]
        connection.execute(text("INSERT INTO watchers VALUES (:t, :u)"), pairs)
    schema = watched_schema_file(tmp_path)
    made = make_services(host.engine, clock, channel, schema_file=schema)
    with made.session_factory.begin() as session:
        rule_store.set_rule(session, made.host, None, Rule(before=DEFAULT_LEADS), now=start)
        rule_store.set_rule(session, made.host, 2, Rule(before=USER_2_LEADS), now=start)

    expected = set()
    for t, when in due.items():
        for user in ({owners[t]} | watchers[t]) - {9999}:
            for lead in USER_2_LEADS if user == 2 else DEFAULT_LEADS:
                expected.add((t, user, int(lead.total_seconds()), when - lead))

    sent_at: dict[str, list[datetime]] = {}

    def on_send(message: Message) -> None:
        sent_at.setdefault(message.key, []).append(clock.now())

    channel.on_send = on_send
    scanners = [make_services(engines(), clock, channel, schema_file=schema) for _ in range(2)]
    relays = [
        make_services(engines(), clock, channel, schema_file=schema, relay_batch=7)
        for _ in range(2)
    ]

    def scan(services: Services, together: threading.Barrier) -> object:
        together.wait()
        return services.scan(clock.now())

    def relay(services: Services, together: threading.Barrier) -> object:
        together.wait()
        return services.relay().relay_until_idle()

    last = max(due.values()) + STEP
    while clock.now() <= last:  # all four start together at each step
        together = threading.Barrier(4, timeout=WAIT)
        steps: list[Callable[[], object]] = [functools.partial(scan, s, together) for s in scanners]
        steps += [functools.partial(relay, s, together) for s in relays]
        run_threads(steps, wait=WAIT * 4)
        clock.advance(STEP)
    for services in relays:  # the last rows the scans committed as the relays finished
        services.relay().relay_until_idle()

    rows = {r.idempotency_key: r for r in outbox_rows(host.engine)}

    def moment(row: OutboxRow) -> datetime:
        assert row.subject_at is not None and row.offset_seconds is not None
        return row.subject_at - timedelta(seconds=row.offset_seconds)

    def recipient(row: OutboxRow) -> int:
        # The owner's row keeps the key a task's one reminder had before rules: no recipient.
        return owners[row.subject_id] if row.recipient_id is None else row.recipient_id

    delivered = {
        (r.subject_id, recipient(r), r.offset_seconds, moment(r))
        for r in rows.values()
        if r.status == Status.DELIVERED
    }
    assert delivered == expected
    assert {key: len(times) for key, times in sent_at.items() if len(times) != 1} == {}
    assert set(sent_at) == {k for k, r in rows.items() if r.status == Status.DELIVERED}
    early = {key: times for key, times in sent_at.items() if times[0] < moment(rows[key])}
    assert early == {}
    assert {r.status for r in rows.values()} == {Status.DELIVERED}
