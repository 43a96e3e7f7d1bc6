"""Quiet hours and pauses applied by the real scan, relay and re-check on SQLite."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from tests.support import send_time_scenarios as scenario
from tests.support.clock import ManualClock


def test_a_reminder_in_quiet_hours_is_delivered_when_they_end(
    sqlite_engine: Engine, clock: ManualClock
) -> None:
    """03:00 local, quiet 22:00-07:00: at 07:00, not before."""
    scenario.held_until_the_window_ends(sqlite_engine, clock)


def test_a_task_due_inside_quiet_hours_is_reminded_before_they_start(
    sqlite_engine: Engine, clock: ManualClock
) -> None:
    """Due at 23:00 inside 22:00-07:00: delivered at 21:59, once."""
    scenario.pulled_forward_before_the_window(sqlite_engine, clock)


def test_a_reminder_planned_at_its_moment_is_moved_before_the_window(
    sqlite_engine: Engine, clock: ManualClock
) -> None:
    """Pulled by the scan that planned it at 22:00: its row is moved to 21:59."""
    late = timedelta(seconds=30)
    scenario.pulled_forward_before_the_window(sqlite_engine, clock, scan_ahead=late)


def test_a_paused_users_reminders_expire_and_are_not_sent_afterwards(
    sqlite_engine: Engine, clock: ManualClock
) -> None:
    """Moments in the pause end expired; after it, reminders go out again."""
    scenario.expired_in_the_pause(sqlite_engine, clock)
