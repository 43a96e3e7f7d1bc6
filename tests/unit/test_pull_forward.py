"""The pull-forward is driven by the quiet windows: a scan reads the reminders of the windows
whose pulled instant its range reaches, and no others (SQLite, the real scan)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, event, select

from outbox.table import OutboxRow
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import Services
from worker.reminders import preference_store
from worker.reminders.preferences import PreferenceEdit
from worker.reminders.quiet import PULL_AHEAD, QuietHours, windows_pulled_within

BERLIN = ZoneInfo("Europe/Berlin")
NIGHTS = QuietHours(time(22, 0), time(7, 0))
# Sat 28 Nov 2026, 22:00 in Berlin: the window's start; its reminders go out at 21:59.
WINDOW_STARTS = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
PULLED = WINDOW_STARTS - PULL_AHEAD


def test_a_window_starting_after_the_last_scan_is_listed_once_its_pull_is_in_reach() -> None:
    """Listed by the scan whose horizon reaches 21:59, not by the one before it."""
    before = windows_pulled_within(PULLED - timedelta(minutes=5), PULLED - timedelta(seconds=1),
                                   NIGHTS, BERLIN)  # fmt: skip
    [window] = windows_pulled_within(PULLED - timedelta(minutes=2), PULLED, NIGHTS, BERLIN)
    assert before == []
    assert window.start == WINDOW_STARTS


def test_a_window_that_started_before_the_last_scan_is_not_listed_again() -> None:
    """The last scan ran at the window's start: nothing is listed after it."""
    later = WINDOW_STARTS + timedelta(minutes=3)
    assert windows_pulled_within(WINDOW_STARTS, later, NIGHTS, BERLIN) == []


def test_a_long_gap_lists_every_window_started_in_it() -> None:
    """A day and a half between scans: the two windows that start in it, earliest first."""
    starts = [w.start for w in windows_pulled_within(
        WINDOW_STARTS - timedelta(hours=25), WINDOW_STARTS + timedelta(hours=12), NIGHTS, BERLIN
    )]  # fmt: skip
    assert starts == [WINDOW_STARTS - timedelta(days=1), WINDOW_STARTS]


def test_a_window_starting_in_the_spring_forward_gap_is_pulled_to_before_the_gaps_end() -> None:
    """02:30 does not exist in Berlin on 29 Mar 2026: the window starts at 03:00 CEST (01:00
    UTC), its reminders go out at 00:59 UTC; a scan reaching only 00:58 lists nothing."""
    quiet = QuietHours(time(2, 30), time(6, 0))
    starts = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    pulled = starts - PULL_AHEAD
    [window] = windows_pulled_within(pulled - timedelta(minutes=2), pulled, quiet, BERLIN)
    assert window.start == starts
    short = windows_pulled_within(pulled - timedelta(minutes=3), pulled - timedelta(minutes=1),
                                  quiet, BERLIN)  # fmt: skip
    assert short == []


def test_a_window_on_a_day_left_out_is_not_listed() -> None:
    """Quiet on weekdays only: Saturday night's window is none."""
    weekdays = QuietHours(time(22, 0), time(7, 0), frozenset(range(5)))
    assert windows_pulled_within(PULLED - timedelta(minutes=2), PULLED, weekdays, BERLIN) == []
    friday = PULLED - timedelta(days=1)
    [window] = windows_pulled_within(friday - timedelta(minutes=2), friday, weekdays, BERLIN)
    assert window.start == WINDOW_STARTS - timedelta(days=1)


def _services(engine: Engine, clock: ManualClock) -> Services:
    services = make_services(engine, clock, RecordingChannel(), lookahead="1h")
    add_user(services, 1, timezone="Europe/Berlin")
    with services.session_factory.begin() as session:
        edit = PreferenceEdit(quiet="22:00-07:00")
        preference_store.edit_preferences(session, services.host, 1, edit, now=clock.now())
    return services


def _reads_of_windows(services: Services) -> list[Any]:
    """The parameters of every read of a window's reminders from now on."""
    seen: list[Any] = []

    def listener(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "reminder_preferences.quiet_start =" in statement:
            seen.append(parameters)

    event.listen(services.engine, "before_cursor_execute", listener)
    return seen


def _available(services: Services) -> list[datetime]:
    with services.session_factory() as session:
        return list(session.execute(select(OutboxRow.available_at)).scalars())


def test_scans_on_every_tick_pull_a_window_once_and_read_it_only_while_in_reach(
    sqlite_engine: Engine, clock: ManualClock
) -> None:
    """Ticks every minute: the window's reminders are read by the ticks whose range holds
    21:59 (pulled there, due 23:00, moment 22:00), never by a tick before or after."""
    services = _services(sqlite_engine, clock)
    add_task(services, 10, 1, WINDOW_STARTS + timedelta(hours=1))
    clock.set(PULLED - timedelta(minutes=10))
    services.scan()
    reads = _reads_of_windows(services)
    pulled_at = []
    for minute in range(-9, 6):
        clock.set(PULLED + timedelta(minutes=minute))
        before = len(reads)
        services.scan()
        if len(reads) > before:
            pulled_at.append(minute)
        if minute < -3:
            assert _available(services) == []
    assert _available(services) == [PULLED]
    # Every scan's horizon is two ticks and a margin ahead: reached three ticks before.
    assert pulled_at and pulled_at[0] >= -3
    assert pulled_at[-1] <= 1  # the window starts at minute 1: not read after that scan


def test_a_scan_after_a_long_gap_pulls_a_window_that_started_in_it(
    sqlite_engine: Engine, clock: ManualClock
) -> None:
    """Scans at 12:00 and next at 21:59:30: the reminder is pulled to the last scan, 21:59:30,
    still before the window (21:59 was in the gap)."""
    services = _services(sqlite_engine, clock)
    add_task(services, 10, 1, WINDOW_STARTS + timedelta(hours=2))  # moment 23:00 local
    services.scan()
    assert _available(services) == []
    clock.set(PULLED + timedelta(seconds=30))
    services.scan()
    assert _available(services) == [PULLED + timedelta(seconds=30)]


def test_a_task_added_once_its_window_started_is_not_pulled_forward(
    sqlite_engine: Engine, clock: ManualClock
) -> None:
    """Added at 22:02 local, due at 23:30 inside the window: no scan reads the window again;
    the row is planned at its moment (22:30), where the relay's re-check expires it."""
    services = _services(sqlite_engine, clock)
    clock.set(WINDOW_STARTS + timedelta(minutes=1))
    services.scan()
    reads = _reads_of_windows(services)
    add_task(services, 10, 1, WINDOW_STARTS + timedelta(minutes=90))
    clock.set(WINDOW_STARTS + timedelta(minutes=2))
    services.scan()
    assert reads == []
    assert _available(services) == []
    clock.set(WINDOW_STARTS + timedelta(minutes=29))
    services.scan()
    assert _available(services) == [WINDOW_STARTS + timedelta(minutes=30)]
    clock.set(WINDOW_STARTS + timedelta(minutes=30))
    assert services.relay().relay_until_idle().counts == {"expired": 1}
