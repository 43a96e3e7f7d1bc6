"""The reminder key: one definition in Python, and the SQL and scans held equal to it, on the
reference schema and on a mapped one whose deadlines are wall time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Engine, delete, literal, select, text

from outbox.table import OutboxRow
from outbox.types import UTCDateTime
from tests.conftest import HostDatabase
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from tests.support.hosts import TODO_APP_BERLIN
from worker.reminders.keys import reminder_key, reminder_key_sql
from worker.reminders.schema import Task, User

T = TypeVar("T", bound=Callable[..., Any])

ZONES = [UTC, timezone(timedelta(hours=5)), timezone(timedelta(hours=-3, minutes=-30))]
#: Any instant Python can write, in a few zones, with or without microseconds; a day of margin
#: at both ends so that a scan window around it stays representable.
INSTANTS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(ZONES)
)
TASK_IDS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SESSION_ZONES = st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"])
EXAMPLES = [
    datetime(2026, 11, 28, 18, 30, tzinfo=UTC),
    datetime(2026, 11, 28, 18, 30, 0, 1, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2027, 1, 1, 4, 59, 59, tzinfo=timezone(timedelta(hours=5))),  # 2026 in UTC
    datetime(999, 3, 1, 0, 0, 0, 5, tzinfo=UTC),
    datetime(9, 1, 2, tzinfo=UTC),
    datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC),
]


def test_the_key_is_stable_and_readable() -> None:
    """The same task and due date always give the same key, in UTC whatever the input zone."""
    due = datetime(2026, 11, 28, 18, 30, tzinfo=UTC)
    assert reminder_key(42, due) == "due_soon-20261128T183000Z-42"
    assert reminder_key(42, due.replace(microsecond=120)) == "due_soon-20261128T183000.000120Z-42"
    assert reminder_key(42, due.astimezone(ZONES[1])) == reminder_key(42, due)
    assert reminder_key(7, datetime(999, 1, 2, tzinfo=UTC)) == "due_soon-9990102T000000Z-7"
    # Keys sort by due time first, whatever the task ids.
    assert reminder_key(9_000, due) < reminder_key(10, due + timedelta(seconds=1))


def with_examples(**fixed: object) -> Callable[[T], T]:
    """The hand-picked instants as explicit examples (task id 42, and ``fixed``)."""

    def decorate(test: T) -> T:
        for due in EXAMPLES:
            test = example(task_id=42, due=due, **fixed)(test)
        return test

    return decorate


@with_examples(zone="UTC")
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(task_id=TASK_IDS, due=INSTANTS, zone=SESSION_ZONES)
def test_the_key_written_in_sql_is_the_key(
    postgres_engine: Engine, task_id: int, due: datetime, zone: str
) -> None:
    """`reminder_key_sql` gives `reminder_key` for any id and instant, in any session zone."""
    with postgres_engine.connect() as connection:
        connection.exec_driver_sql(f"SET LOCAL TIME ZONE '{zone}'")
        moment = literal(due, UTCDateTime())
        written = connection.scalar(select(reminder_key_sql(literal(task_id, BigInteger), moment)))
    assert written == reminder_key(task_id, due)


@with_examples()
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(task_id=TASK_IDS, due=INSTANTS)
def test_the_scan_writes_the_key_on_every_dialect(
    engine: Engine, task_id: int, due: datetime
) -> None:
    """Whichever way a dialect's scan builds keys, the outbox row carries `reminder_key`."""
    clock = ManualClock(due - timedelta(minutes=1))
    services = make_services(engine, clock, RecordingChannel(), lookahead=timedelta(minutes=1))
    with services.session_factory.begin() as session:  # what the previous example left
        for table in (OutboxRow, Task, User):
            session.execute(delete(table))
    add_user(services, 1)
    add_task(services, task_id, 1, due)
    assert services.scan().queued == 1
    with services.session_factory() as session:
        written = session.scalars(select(OutboxRow.idempotency_key)).one()
    assert written == reminder_key(task_id, due)


def outside_the_repeated_hour(due: datetime) -> bool:
    """Whether Berlin wall time names ``due`` alone: not in the hour the clocks repeat."""
    return not TODO_APP_BERLIN.ambiguous(due)


@pytest.mark.parametrize("host_app", [TODO_APP_BERLIN], ids=["todo_app_berlin"])
@with_examples()
@example(task_id=42, due=datetime(2026, 10, 24, 23, 59, 59, 999999, tzinfo=UTC))  # 01:59 CEST
@example(task_id=42, due=datetime(2026, 10, 25, 2, 0, tzinfo=UTC))  # 03:00 CET, after the fold
@example(task_id=42, due=datetime(2027, 3, 28, 0, 59, 59, tzinfo=UTC))  # 01:59:59 CET
@example(task_id=42, due=datetime(2027, 3, 28, 1, 0, tzinfo=UTC))  # 03:00 CEST, after the gap
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(task_id=TASK_IDS, due=INSTANTS.filter(outside_the_repeated_hour))
def test_the_scan_keys_a_wall_time_deadline_by_the_instant_it_stands_for(
    host_database: HostDatabase, task_id: int, due: datetime
) -> None:
    """A deadline the host keeps as Berlin wall time is queued under `reminder_key` of the
    instant that wall time stands for, for any id and any instant it can name alone (the
    hour repeated when the clocks go back holds two instants for one wall time)."""
    app, engine = host_database.app, host_database.engine
    clock = ManualClock(due - timedelta(minutes=1))
    services = make_services(
        engine, clock, RecordingChannel(), schema_file=host_database.schema_file,
        lookahead=timedelta(minutes=1),
    )  # fmt: skip
    with engine.begin() as connection:  # what the previous example left
        for table in ("outbox", "todo_items", "accounts"):
            connection.execute(text(f"DELETE FROM {table}"))
        app.add_user(connection, 1)
        app.add_task(connection, task_id, 1, due)
    assert services.scan().queued == 1
    with services.session_factory() as session:
        written = session.scalars(select(OutboxRow.idempotency_key)).one()
    assert written == reminder_key(task_id, due)


@pytest.mark.parametrize("host_app", [TODO_APP_BERLIN], ids=["todo_app_berlin"])
def test_a_wall_time_the_clocks_repeat_is_reminded_once_as_standard_time(
    host_database: HostDatabase,
) -> None:
    """02:30 on the night Berlin's clocks go back names 00:30 and 01:30 UTC: the scan, the
    key and the send-time re-check all read it as the later (standard time, CET), so that
    its one reminder is sent rather than cancelled as moved."""
    app, engine = host_database.app, host_database.engine
    cet = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET; 00:30 UTC is 02:30 CEST
    assert app.ambiguous(cet) and app.stored_due(cet) == app.stored_due(cet - timedelta(hours=1))
    channel = RecordingChannel()
    clock = ManualClock(datetime(2026, 10, 24, 6, 0, tzinfo=UTC))
    services = make_services(engine, clock, channel, schema_file=host_database.schema_file)
    with engine.begin() as connection:
        app.add_user(connection, 1)
        app.add_task(connection, 1, 1, cet - timedelta(hours=1))  # meant as CEST: not kept
    assert services.scan().queued == 1
    assert services.relay().relay_until_idle().counts == Counter(delivered=1)
    assert channel.keys == [reminder_key(1, cet)]
    assert services.scan().queued == 0
