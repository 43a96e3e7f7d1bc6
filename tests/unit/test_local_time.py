"""A local date and time as an instant: the first or last time the clock reads it, the end
of the gap for a time the clock skips, and the instant PostgreSQL gives for it."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings

from tests.support.zones import TIMES, zone_and_moment
from worker.errors import InvalidPreference
from worker.reminders.local_time import (
    first_instant,
    last_instant,
    next_skip,
    occurrences,
    postgres_instant,
    reading,
    time_of_day,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def test_an_ordinary_time_is_one_instant() -> None:
    """On a day without a change, first and last are the same instant."""
    day, at = date(2026, 12, 2), time(8, 0)
    assert first_instant(day, at, BERLIN) == last_instant(day, at, BERLIN)
    assert first_instant(day, at, BERLIN) == datetime(2026, 12, 2, 7, 0, tzinfo=UTC)


def test_a_skipped_time_is_the_end_of_the_gap() -> None:
    """02:30 does not exist in Berlin on 2026-03-29: both give 03:00 CEST, 01:00 UTC."""
    day = date(2026, 3, 29)
    assert occurrences(datetime(2026, 3, 29, 2, 30), BERLIN) == []
    end_of_gap = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert first_instant(day, time(2, 30), BERLIN) == end_of_gap
    assert last_instant(day, time(2, 0), BERLIN) == end_of_gap
    assert reading(end_of_gap, BERLIN) == datetime(2026, 3, 29, 3, 0)


def test_a_repeated_time_has_a_first_and_a_last_instant() -> None:
    """01:30 happens twice in New York on 2026-11-01, an hour apart (EDT, then EST)."""
    day = date(2026, 11, 1)
    first, last = (
        first_instant(day, time(1, 30), NEW_YORK),
        last_instant(day, time(1, 30), NEW_YORK),
    )
    assert first == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert last - first == timedelta(hours=1)


def test_a_skipped_date_starts_at_the_next_one() -> None:
    """Pacific/Apia had no 2011-12-30: any time of it is midnight of the 31st."""
    apia = ZoneInfo("Pacific/Apia")
    midnight = datetime(2011, 12, 30, 10, 0, tzinfo=UTC)
    assert first_instant(date(2011, 12, 30), time(8), apia) == midnight
    assert reading(midnight, apia) == datetime(2011, 12, 31, 0, 0)


@pytest.mark.parametrize(
    ("zone", "local", "expected"),
    [
        # What PostgreSQL 15 answers for `timestamp 'local' AT TIME ZONE zone`; live in
        # tests/integration/test_all_day_moment_postgres.py.
        ("Europe/Berlin", datetime(2026, 3, 29, 2, 30), datetime(2026, 3, 29, 1, 30)),  # skipped
        ("Europe/Berlin", datetime(2026, 3, 29, 3, 0), datetime(2026, 3, 29, 1, 0)),
        ("Europe/Berlin", datetime(2026, 10, 25, 2, 0), datetime(2026, 10, 25, 1, 0)),  # twice
        ("Europe/Berlin", datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 1, 30)),
        ("America/New_York", datetime(2026, 3, 8, 2, 30), datetime(2026, 3, 8, 7, 30)),
        ("America/New_York", datetime(2026, 11, 1, 1, 30), datetime(2026, 11, 1, 6, 30)),
        ("Australia/Lord_Howe", datetime(2026, 4, 5, 1, 45), datetime(2026, 4, 4, 15, 15)),
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 15), datetime(2026, 10, 3, 15, 45)),
    ],
)
def test_postgres_reads_a_repeated_time_late_and_a_skipped_one_with_the_offset_before(
    zone: str, local: datetime, expected: datetime
) -> None:
    """A repeated time is its second occurrence; a skipped time is read with the offset in
    force before the change, as PostgreSQL does."""
    assert postgres_instant(local, ZoneInfo(zone)) == expected.replace(tzinfo=UTC)


@pytest.mark.parametrize("text", [("24", "00"), ("25", "00"), ("07", "60")])
def test_a_time_of_day_out_of_range_is_refused(text: tuple[str, str]) -> None:
    """Hours 0 to 23, minutes 0 to 59: anything else, one line naming the option."""
    with pytest.raises(InvalidPreference, match=r"^--digest: \d+:\d+ is not a time of day"):
        time_of_day("--digest", *text)


@given(zone_and_moment(), TIMES)
@settings(max_examples=300, deadline=None, database=None)
def test_first_instant_is_the_first_time_the_clock_reaches_it(
    at: tuple[ZoneInfo, datetime], clock: time
) -> None:
    """The clock reads the time or later at first_instant and earlier a second before it;
    last_instant reads the time exactly (if it exists) and is not before first_instant."""
    tz, moment = at
    day = reading(moment, tz).date()
    local = datetime.combine(day, clock)
    first, last = first_instant(day, clock, tz), last_instant(day, clock, tz)
    assert reading(first, tz) >= local
    assert reading(first - timedelta(seconds=1), tz) < local
    assert last >= first
    if occurrences(local, tz):
        assert reading(first, tz) == local == reading(last, tz)
    else:
        assert first == last


def test_next_skip_finds_the_day_the_clock_skips_a_time() -> None:
    """The spring-forward Sunday for a time in the gap; none for a time outside it, nor when
    only workdays count (Berlin springs forward on a Sunday); Lord Howe skips 02:00-02:30."""
    today = date(2026, 12, 2)
    assert next_skip(time(2, 30), BERLIN, today) == date(2027, 3, 28)
    assert next_skip(time(3, 0), BERLIN, today) is None
    assert next_skip(time(2, 30), BERLIN, today, on=lambda d: d.weekday() < 5) is None
    assert next_skip(time(2, 30), BERLIN, today, days=100) is None
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    assert next_skip(time(2, 15), lord_howe, today) == date(2027, 10, 3)
    assert next_skip(time(2, 30), lord_howe, today) is None
