"""Quiet hours and pauses applied by the real scan, relay and re-check on PostgreSQL (each
test on a database of its own)."""

from __future__ import annotations

from sqlalchemy import Engine

from tests.support import send_time_scenarios as scenario
from tests.support.clock import ManualClock


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


def test_a_paused_users_reminders_expire_and_are_not_sent_afterwards(
    postgres_engine: Engine, clock: ManualClock
) -> None:
    """Moments in the pause end expired; after it, reminders go out again."""
    scenario.expired_in_the_pause(postgres_engine, clock)
