"""An all-day task's reminder moment in Python, from the due moment the planner made of its
date at the recipient's all-day time (compared with PostgreSQL itself in
tests/integration/test_all_day_moment_postgres.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from worker.reminders.due_time import all_day_moment

BERLIN = ZoneInfo("Europe/Berlin")
DAY = timedelta(days=1)
#: Sunday 29 March 2026 at 02:30 in Berlin, a time the clock skips, and at 03:30: PostgreSQL
#: gives both the same instant, 01:30 UTC, which reads 03:30 CEST.
SKIPPED_DUE = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_a_due_time_the_clock_skipped_counts_from_the_time_asked_for() -> None:
    """Due at 02:30, a day before is Saturday 02:30 CET (01:30 UTC), not 03:30, the time the
    due moment reads."""
    assert all_day_moment(SKIPPED_DUE, time(2, 30), DAY, BERLIN) == datetime(
        2026, 3, 28, 1, 30, tzinfo=UTC
    )


def test_the_same_due_moment_at_the_time_after_the_gap_counts_from_that_time() -> None:
    """Due at 03:30, the same instant: a day before is Saturday 03:30 CET (02:30 UTC)."""
    assert all_day_moment(SKIPPED_DUE, time(3, 30), DAY, BERLIN) == datetime(
        2026, 3, 28, 2, 30, tzinfo=UTC
    )


def test_a_row_planned_under_another_all_day_time_keeps_the_time_it_reads() -> None:
    """Planned at 09:00 (07:00 UTC on Monday 30 March), the rule now at 10:00: a day before
    is Sunday 09:00 CEST, the wall time the row's due moment reads."""
    due_at = datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert all_day_moment(due_at, time(10, 0), DAY, BERLIN) == datetime(
        2026, 3, 29, 7, 0, tzinfo=UTC
    )
