"""`reminders health`'s checks, judged on readings the tests write: failed, old and missing
scans, dead rows, and the default scan age of three schedule ticks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from worker.bootstrap import Services
from worker.cli.health import CHECKS, Limits, Reading
from worker.reminders.heartbeat import Heartbeat
from worker.settings import parse_cron

NOW = datetime(2026, 12, 4, 12, 0, 30, tzinfo=UTC)  # a Friday
NO_SERVICES = cast(Services, None)  # the checks below read nothing more


def limits(
    schedule: str = "* * * * *",
    *,
    max_scan_age: timedelta | None = None,
    allow_dead: bool = False,
) -> Limits:
    """The limits for ``schedule``, the defaults otherwise."""
    return Limits(
        max_pending_age=timedelta(minutes=15),
        max_scan_age=max_scan_age,
        schedule=parse_cron(schedule),
        schedule_text=schedule,
        allow_dead=allow_dead,
    )


def beat(scanned_at: datetime, failed_at: datetime | None = None) -> Heartbeat:
    """A heartbeat whose last scan started at ``scanned_at``."""
    failure = None if failed_at is None else "ProgrammingError: permission denied"
    return Heartbeat(scanned_at, 0, 0, 1.0, None, failed_at, failure)


def problems(reading: Reading, given: Limits | None = None) -> list[str]:
    """What every check finds."""
    found = [check(NO_SERVICES, reading, given or limits()) for check in CHECKS]
    return [problem for problem in found if problem]


def reading(heartbeat: Heartbeat | None, *, dead: int = 0) -> Reading:
    """A reading at `NOW` with nothing waiting."""
    return Reading(now=NOW, oldest=None, dead=dead, beat=heartbeat)


@pytest.mark.parametrize(
    ("schedule", "last", "overdue"),
    [
        ("* * * * *", datetime(2026, 12, 4, 12, 0, 5), datetime(2026, 12, 4, 12, 3, 30)),
        ("0 * * * *", datetime(2026, 12, 4, 12, 0, 5), datetime(2026, 12, 4, 15, 0, 30)),
        # Friday's 09:00 scan is too old only on Wednesday: the weekend has no ticks.
        ("0 9 * * 1-5", datetime(2026, 12, 4, 9, 0, 10), datetime(2026, 12, 9, 9, 0, 30)),
    ],
)
def test_the_default_scan_age_is_three_ticks_of_the_schedule(
    schedule: str, last: datetime, overdue: datetime
) -> None:
    """A scan becomes too old once three ticks passed without another, plus the time the
    last tick has to be processed."""
    found = limits(schedule).scan_overdue_at(last.replace(tzinfo=UTC))
    assert found == overdue.replace(tzinfo=UTC)


def test_an_explicit_scan_age_replaces_the_schedule() -> None:
    """--max-scan-age 5m: five minutes after the last scan, whatever the schedule."""
    given = limits("0 * * * *", max_scan_age=timedelta(minutes=5))
    assert given.scan_overdue_at(NOW) == NOW + timedelta(minutes=5)
    assert problems(reading(beat(NOW - timedelta(minutes=6))), given) == [
        "the last scan ran 6m ago (limit 5m)"
    ]


def test_a_recent_scan_is_healthy_and_three_missed_ticks_are_not() -> None:
    """Two minutes after the last scan is fine on a one-minute schedule; four are not."""
    assert problems(reading(beat(NOW - timedelta(minutes=2)))) == []
    assert problems(reading(beat(NOW - timedelta(minutes=4)))) == [
        "the last scan ran 4m ago (3 ticks of '* * * * *' missed)"
    ]


def test_no_scan_yet_is_unhealthy() -> None:
    """A database never scanned: the scheduler or the scans are not working yet."""
    (problem,) = problems(reading(None))
    assert problem.startswith("no scan has completed yet")


def test_a_failure_after_the_last_success_is_unhealthy_until_a_scan_succeeds() -> None:
    """The scan is failing while its last failure started after its last success."""
    success = NOW - timedelta(seconds=60)
    failing = beat(success, failed_at=NOW - timedelta(seconds=10))
    assert problems(reading(failing)) == [
        "the last scan failed 10s ago: ProgrammingError: permission denied"
    ]
    recovered = beat(NOW - timedelta(seconds=5), failed_at=NOW - timedelta(seconds=10))
    assert problems(reading(recovered)) == []


def test_dead_rows_are_unhealthy_unless_allowed() -> None:
    """Dead rows need an operator; --allow-dead accepts them."""
    dead = reading(beat(NOW), dead=3)
    (problem,) = problems(dead)
    assert problem.startswith("3 dead row(s)") and "--allow-dead" in problem
    assert problems(dead, limits(allow_dead=True)) == []
