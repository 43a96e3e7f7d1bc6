"""SQLite keeps timestamps as text: any ISO 8601 spelling the host writes is the same instant."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_user, make_services
from worker.bootstrap import Services
from worker.reminders.keys import reminder_key


def insert_task(engine: Engine, task_id: int, due: str) -> None:
    """Insert a task with plain SQL, as a host application on SQLite would."""
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO tasks (id, owner_id, title, due_date) VALUES (:id, 1, 'pay', :due)"),
            {"id": task_id, "due": due},
        )


@pytest.fixture
def services(sqlite_engine: Engine, clock: ManualClock, channel: RecordingChannel) -> Services:
    """Services on SQLite with owner 1 opted in."""
    built = make_services(sqlite_engine, clock, channel)
    add_user(built, 1)
    return built


@pytest.mark.parametrize(
    "written",
    ["2026-11-28 13:00:00", "2026-11-28 13:00:00+00:00", "2026-11-28T14:00:00+01:00"],
)
def test_due_dates_written_with_plain_sql_are_reminded_once(
    services: Services,
    sqlite_engine: Engine,
    clock: ManualClock,
    channel: RecordingChannel,
    written: str,
) -> None:
    """A due date one hour ahead, in any ISO spelling, is queued and delivered exactly once."""
    insert_task(sqlite_engine, 1, written)
    result = services.scan()
    report = services.relay().relay_until_idle()
    assert (result.queued, result.superseded) == (1, 0)
    assert report.counts == Counter(delivered=1)
    assert channel.keys == [reminder_key(1, clock.now() + timedelta(hours=1))]
    assert services.scan().queued == 0


@pytest.mark.parametrize(
    "written", ["2026-11-28T11:00:00", "2026-11-28T12:30:00+01:00", "2026-11-29T12:10:00.001Z"]
)
def test_spellings_outside_the_window_are_not_queued(
    services: Services, sqlite_engine: Engine, written: str
) -> None:
    """Overdue or too-far due dates are left alone whatever their spelling (clock at 12:00Z)."""
    insert_task(sqlite_engine, 1, written)
    assert services.scan().queued == 0


def test_a_due_date_that_is_not_a_time_is_never_reminded(
    services: Services, sqlite_engine: Engine
) -> None:
    """Text that is no timestamp is skipped by the scan instead of failing it."""
    insert_task(sqlite_engine, 1, "next tuesday")
    insert_task(sqlite_engine, 2, "2026-11-28 13:00:00")
    assert services.scan().queued == 1
