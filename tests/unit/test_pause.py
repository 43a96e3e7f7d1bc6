"""A pause until a date: nothing before the start of that local date, everything from it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.zones import steady, zone_and_moment
from worker.errors import InvalidPreference
from worker.reminders.local_time import reading
from worker.reminders.pause import parse_pause_until, pause_ends, paused

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_a_pause_ends_at_the_start_of_its_date_in_the_users_zone() -> None:
    """Until 2026-12-28: paused up to 23:59:59 on the 27th Berlin time, not at 00:00 on the
    28th; the same instant is still paused for a user in New York."""
    end = datetime(2026, 12, 27, 23, 0, tzinfo=UTC)  # 00:00 on the 28th in Berlin
    assert pause_ends(date(2026, 12, 28), BERLIN) == end
    assert paused(end - timedelta(seconds=1), date(2026, 12, 28), BERLIN)
    assert not paused(end, date(2026, 12, 28), BERLIN)
    assert paused(end, date(2026, 12, 28), ZoneInfo("America/New_York"))
    assert not paused(end, None, BERLIN)


def test_a_midnight_the_clock_skips_ends_the_pause_at_the_end_of_the_gap() -> None:
    """Santiago skips 00:00-01:00 on 2026-09-06: a pause until that date ends at 01:00."""
    santiago = ZoneInfo("America/Santiago")
    end = pause_ends(date(2026, 9, 6), santiago)
    assert reading(end, santiago) == datetime(2026, 9, 6, 1, 0)
    assert paused(end - timedelta(seconds=1), date(2026, 9, 6), santiago)


def test_pause_dates_are_parsed_against_today_in_the_users_zone() -> None:
    """Tomorrow is a pause; today, in the user's zone, pauses nothing and is refused."""
    assert parse_pause_until("2026-12-03", NOW, BERLIN) == date(2026, 12, 3)
    assert parse_pause_until("none", NOW, BERLIN) is None
    late_evening = datetime(2026, 12, 2, 23, 30, tzinfo=UTC)  # already the 3rd in Berlin
    with pytest.raises(InvalidPreference, match=r"2026-12-03 is not after today \(2026-12-03"):
        parse_pause_until("2026-12-03", late_evening, BERLIN)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "2026-12-02",
            "--pause-until: 2026-12-02 is not after today (2026-12-02 in Europe/Berlin)",
        ),
        ("2025-01-01", "is not after today"),
        ("2026-02-30", "--pause-until: 2026-02-30 is not a date of the calendar"),
        ("28.12.2026", "--pause-until: '28.12.2026' is not a date YYYY-MM-DD"),
        ("2026-12-28T08:00", "is not a date YYYY-MM-DD"),
    ],
)
def test_bad_pause_dates_are_refused_with_one_line(text: str, message: str) -> None:
    """A date in the past, today, no such date or another form: one line saying which."""
    with pytest.raises(InvalidPreference) as refused:
        parse_pause_until(text, NOW, BERLIN)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_datetime_is_not_a_pause_date() -> None:
    """A datetime (a date subclass) would carry a time the policy ignores: refused."""
    with pytest.raises(InvalidPreference, match="not a date"):
        pause_ends(datetime(2026, 12, 28, 8, 0), BERLIN)
    with pytest.raises(ValueError, match="naive"):
        paused(datetime(2026, 12, 28, 8, 0), date(2026, 12, 28), BERLIN)


@given(zone_and_moment(), st.integers(-3, 3))
@settings(max_examples=200, deadline=None, database=None)
def test_a_moment_is_paused_until_its_local_date_reaches_the_pause_date(
    at: tuple[ZoneInfo, datetime], days: int
) -> None:
    """In every zone, on days the clock changes too: never paused once the user's calendar
    shows the pause date or later, always paused before it; the pause is one span, from
    whenever it was set to its end."""
    tz, moment = at
    today = reading(moment, tz).date()
    until = today + timedelta(days=days)
    if today >= until:
        assert not paused(moment, until, tz)
        assert not paused(moment + timedelta(days=1), until, tz)
    elif steady(moment, tz):
        assert paused(moment, until, tz)
    if paused(moment, until, tz):
        assert paused(moment - timedelta(days=1), until, tz)


# The pause rows of docs/quiet-hours.md, "Examples": (moment, pause until, paused), Berlin.
DOC_EXAMPLES = [
    (datetime(2026, 12, 2, 23, 0), date(2026, 12, 3), True),
    (datetime(2026, 12, 3, 0, 0), date(2026, 12, 3), False),
]


@pytest.mark.parametrize(("moment", "until", "expected"), DOC_EXAMPLES)
def test_the_documented_examples_hold(moment: datetime, until: date, expected: bool) -> None:
    """Each pause row of the documentation's table of examples, as `paused` decides it."""
    assert paused(moment.replace(tzinfo=BERLIN), until, BERLIN) is expected
