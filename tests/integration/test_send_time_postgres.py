"""Quiet hours and pauses applied by the real scan, relay and re-check on PostgreSQL (each
test on a database of its own)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import HostDatabase
from tests.integration.test_host_fit import ALL_DAY_MAPPING
from tests.support import send_time_scenarios as scenario
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.hosts import TODO_APP_BERLIN
from worker import migrate
from worker.bootstrap import bootstrap
from worker.db import make_engine
from worker.reminders import preference_store
from worker.reminders.mapping import load_mapping
from worker.reminders.preferences import PreferenceEdit
from worker.settings import Settings


def test_a_reminder_in_quiet_hours_is_delivered_when_they_end(
    postgres_engine: Engine, clock: ManualClock
) -> None:
    """03:00 local, quiet 22:00-07:00: at 07:00, not before."""
    scenario.held_until_the_window_ends(postgres_engine, clock)


def test_a_task_due_inside_quiet_hours_is_reminded_before_they_start(
    postgres_engine: Engine, clock: ManualClock
) -> None:
    """Due at 23:00 inside 22:00-07:00: delivered at 21:59, once."""
    scenario.pulled_forward_before_the_window(postgres_engine, clock)


def test_a_reminder_planned_at_its_moment_is_moved_before_the_window(
    postgres_engine: Engine, clock: ManualClock
) -> None:
    """Pulled by the scan that planned it at 22:00: its row is moved to 21:59."""
    late = timedelta(seconds=30)
    scenario.pulled_forward_before_the_window(postgres_engine, clock, scan_ahead=late)


def test_a_paused_users_reminders_expire_and_are_not_sent_afterwards(
    postgres_engine: Engine, clock: ManualClock
) -> None:
    """Moments in the pause end expired; after it, reminders go out again."""
    scenario.expired_in_the_pause(postgres_engine, clock)


@pytest.mark.parametrize("host_app", [TODO_APP_BERLIN], ids=lambda app: app.name)
def test_a_host_schemas_wall_time_deadline_is_pulled_forward_and_held(
    host_database: HostDatabase, clock: ManualClock
) -> None:
    """On a host's own tables (a deadline in Berlin wall time, its own users table), 1 h
    before and quiet 22:00-07:00: a task due at 23:00 is reminded at 21:59, before the
    window; one due at 07:30 the next morning (its moment 06:30 in the window) is deferred and
    delivered at 07:00; nothing else goes out."""
    app = host_database.app
    channel = RecordingChannel()
    settings = Settings(
        database_url=host_database.url, schema_file=host_database.schema_file, lookahead="1h"
    )
    services = bootstrap(
        settings, clock=clock, engine=host_database.engine, make_channel=lambda: channel
    )
    with host_database.engine.begin() as connection:
        app.add_user(connection, 1, timezone="Europe/Berlin")
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, services.host, 1, PreferenceEdit(quiet="22:00-07:00"), now=clock.now()
        )
    due = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)  # 23:00 in Berlin
    morning_due = datetime(2026, 11, 29, 6, 30, tzinfo=UTC)  # 07:30 in Berlin
    with host_database.engine.begin() as connection:
        app.add_task(connection, 10, 1, due)
        app.add_task(connection, 11, 1, morning_due)
    pulled = datetime(2026, 11, 28, 20, 59, tzinfo=UTC)  # 21:59 in Berlin
    clock.set(pulled - timedelta(minutes=2))
    assert services.scan().queued == 1
    clock.set(pulled - timedelta(seconds=1))
    assert services.relay().relay_until_idle().claimed == 0
    clock.set(pulled)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    counts: Counter[str] = Counter()
    for step in range(21):  # the night, half an hour at a time
        clock.set(datetime(2026, 11, 28, 21, 0, tzinfo=UTC) + step * timedelta(minutes=30))
        services.scan()
        counts += services.relay().relay_until_idle().counts
    assert counts == {"deferred": 1, "delivered": 1}
    assert [m.recipient for m in channel.sent] == ["user1@example.com"] * 2
    with host_database.engine.connect() as connection:
        sent = connection.execute(
            text("SELECT subject_id, delivered_at FROM outbox ORDER BY subject_id")
        ).all()
    assert [(task, at) for task, at in sent] == [
        (10, pulled),
        (11, datetime(2026, 11, 29, 6, 0, tzinfo=UTC)),
    ]


def _all_day_services(
    empty_postgres_url: str, tmp_path: Path, clock: ManualClock, channel: RecordingChannel
) -> tuple[Engine, Any]:
    """Services on a host whose chores have a ``date`` due column: chore 1 of user 1
    (Berlin), due Sun 25 Oct 2026, the day the clocks go back."""
    engine = make_engine(empty_postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE people (id INT PRIMARY KEY, email TEXT, zone TEXT)"))
        connection.execute(
            text(
                "CREATE TABLE chores (id INT PRIMARY KEY, user_id INT, title TEXT, "
                "due_on DATE, done_at TIMESTAMPTZ)"
            )
        )
        connection.execute(text("INSERT INTO people VALUES (1, 'p1@example.com', 'Europe/Berlin')"))
        connection.execute(text("INSERT INTO chores VALUES (1, 1, 'chore', '2026-10-25', NULL)"))
    schema_file = tmp_path / "chores.toml"
    schema_file.write_text(ALL_DAY_MAPPING)
    migrate.run(engine, load_mapping(schema_file))
    settings = Settings(database_url=empty_postgres_url, schema_file=str(schema_file))
    return engine, bootstrap(settings, clock=clock, engine=engine, make_channel=lambda: channel)


def test_an_all_day_reminder_across_the_fall_back_goes_out_at_its_wall_clock_moment(
    empty_postgres_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    """A ``date`` due column, Berlin, due Sun 25 Oct 2026 (09:00 CET, the clocks went back at
    03:00), a day before on the wall clock: Sat 09:00 CEST, 25 hours before. The re-check
    places the moment as the planner does, so it sends then, not an hour later at "due less
    24 h"."""
    channel = RecordingChannel()
    engine, services = _all_day_services(empty_postgres_url, tmp_path, clock, channel)
    moment = datetime(2026, 10, 24, 7, 0, tzinfo=UTC)  # Sat 09:00 CEST
    clock.set(moment - timedelta(minutes=1))
    assert services.scan().queued == 1
    clock.set(moment)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    engine.dispose()


def test_an_all_day_reminder_across_the_fall_back_joins_the_digest_after_its_moment(
    empty_postgres_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    """The same chore, its user's digest at 09:30: the reminder's moment, Sat 09:00 CEST on
    the wall clock, is in Saturday's 09:30 digest. Counted as "due less 24 h" (10:00 CEST) it
    would wait for Sunday's, after the chore is due."""
    channel = RecordingChannel()
    engine, services = _all_day_services(empty_postgres_url, tmp_path, clock, channel)
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, services.host, 1, PreferenceEdit(digest="09:30"), now=clock.now()
        )
    moment = datetime(2026, 10, 24, 7, 0, tzinfo=UTC)  # Sat 09:00 CEST
    slot = datetime(2026, 10, 24, 7, 30, tzinfo=UTC)  # Sat 09:30 CEST
    clock.set(moment - timedelta(minutes=1))
    assert services.scan().queued == 1
    clock.set(moment)
    services.relay().relay_until_idle()
    with engine.connect() as connection:
        digests = connection.execute(
            text("SELECT subject_at FROM outbox WHERE kind = 'digest'")
        ).all()
    assert [at for (at,) in digests] == [slot]
    clock.set(slot)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert len(channel.sent) == 1
    engine.dispose()
