"""Quiet hours: which moments are held and until when, which reminders are pulled forward,
across the days clocks skip or repeat a time."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.zones import DAYS, TIMES, steady, zone_and_moment
from worker.errors import InvalidPreference, UsageError
from worker.reminders.local_time import first_instant, last_instant, occurrences
from worker.reminders.quiet import (
    PULL_AHEAD,
    QuietHours,
    QuietWindow,
    held_until,
    parse_days,
    parse_quiet,
    pulled_forward,
    send_at,
    window_at,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
APIA = ZoneInfo("Pacific/Apia")
NIGHT = QuietHours(time(22, 0), time(7, 0))
PROPERTY = settings(max_examples=300, deadline=None, database=None)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An aware UTC instant."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, fold: int = 0
) -> datetime:
    """The instant (aware UTC) the clock in ``tz`` reads that date and time (``fold=1``: the
    second time, in a repeated hour)."""
    return datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold).astimezone(UTC)


def reads_quiet(moment: datetime, quiet: QuietHours, tz: ZoneInfo) -> bool:
    """Whether the clock in ``tz`` shows, at ``moment``, a time inside a window of ``quiet``
    that starts on one of its days: the user's view, computed without the module."""
    shown = moment.astimezone(tz)
    clock, day = shown.time().replace(tzinfo=None), shown.date()

    def starts_on(weekday: int) -> bool:
        return quiet.days is None or weekday in quiet.days

    if not quiet.crosses_midnight:
        return quiet.start <= clock < quiet.end and starts_on(day.weekday())
    return (clock >= quiet.start and starts_on(day.weekday())) or (
        clock < quiet.end and starts_on((day - timedelta(days=1)).weekday())
    )


# Construction and parsing


def test_quiet_hours_are_parsed_with_their_days() -> None:
    """``22:00-07:00`` is every day; days after it are the weekdays a window starts on."""
    assert parse_quiet("22:00-07:00") == NIGHT
    assert parse_quiet(" 22:00 - 7:00  mon-fri ") == QuietHours(
        time(22), time(7), frozenset({0, 1, 2, 3, 4})
    )
    assert parse_quiet("13:00-14:30 sat,sun") == QuietHours(
        time(13), time(14, 30), frozenset({5, 6})
    )
    assert parse_quiet("none") is None
    assert NIGHT.crosses_midnight and not QuietHours(time(13), time(14)).crosses_midnight


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("fri-mon", {4, 5, 6, 0}),
        ("Monday, wed", {0, 2}),
        ("tue-tue", {1}),
        ("mon-sun", None),
        ("daily", None),
    ],
)
def test_weekdays_are_parsed_as_names_lists_and_ranges(text: str, days: set[int] | None) -> None:
    """Names of three letters or in full, lists, ranges that may wrap past Sunday; all seven
    days are every day (None)."""
    assert parse_days(text) == (None if days is None else frozenset(days))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("25:00-07:00", "--quiet: 25:00 is not a time of day (00:00 to 23:59)"),
        ("22:00-24:00", "--quiet: 24:00 is not a time of day"),
        ("22:61-07:00", "--quiet: 22:61 is not a time of day"),
        ("07:00-07:00", "--quiet: 07:00-07:00 has zero length; give two different times"),
        ("7:00-07:00", "has zero length"),
        ("22:00", "--quiet: '22:00' is not HH:MM-HH:MM, such as 22:00-07:00"),
        ("22-07", "is not HH:MM-HH:MM"),
        ("22:00-07:00 funday", "--quiet: 'funday' is not a weekday (mon, tue,"),
        ("22:00-07:00 mon,,fri", "has an empty weekday"),
        ("", "is not HH:MM-HH:MM"),
    ],
)
def test_bad_quiet_hours_are_refused_with_one_line(text: str, message: str) -> None:
    """Each bad window is refused as a usage error (exit 2) with one line saying why."""
    with pytest.raises(InvalidPreference) as refused:
        parse_quiet(text)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert isinstance(refused.value, UsageError)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"start": time(7), "end": time(7)}, "zero length"),
        ({"start": time(22, 0, 30), "end": time(7)}, "whole minutes"),
        ({"start": time(22, tzinfo=UTC), "end": time(7)}, "local time"),
        ({"start": "22:00", "end": time(7)}, "local time"),
        ({"start": time(22), "end": time(7), "days": frozenset()}, "no weekdays"),
        ({"start": time(22), "end": time(7), "days": frozenset({7})}, "weekday 7 is not"),
        ({"start": time(22), "end": time(7), "days": frozenset({True})}, "weekday True"),
        ({"start": time(22), "end": time(7), "days": "mon"}, "weekday numbers"),
    ],
)
def test_quiet_hours_out_of_bounds_cannot_be_made(values: dict[str, object], message: str) -> None:
    """The constructor refuses what the parser refuses, and values no parser makes."""
    with pytest.raises(InvalidPreference, match=message):
        QuietHours(**values)  # type: ignore[arg-type]


def test_all_seven_days_are_every_day() -> None:
    """A set of all weekdays is kept as None, so that equal preferences compare equal."""
    assert QuietHours(time(22), time(7), frozenset(range(7))) == NIGHT
    assert QuietHours(time(22), time(7), {1, 2}).days == frozenset({1, 2})  # type: ignore[arg-type]


@given(TIMES, TIMES, DAYS)
@PROPERTY
def test_a_description_parses_back_to_the_same_quiet_hours(
    start: time, end: time, days: frozenset[int] | None
) -> None:
    """`describe` writes what `parse_quiet` reads: the command's output can be given back."""
    if start == end:
        return
    quiet = QuietHours(start, end, days)
    assert parse_quiet(quiet.describe()) == quiet


def test_naive_datetimes_are_refused() -> None:
    """A moment without a zone could be anyone's: every policy refuses it."""
    naive = datetime(2026, 12, 2, 23, 0)
    with pytest.raises(ValueError, match="naive datetime"):
        held_until(naive, NIGHT, BERLIN)
    with pytest.raises(ValueError, match="naive datetime"):
        pulled_forward(naive, NIGHT, BERLIN)
    with pytest.raises(ValueError, match="naive datetime"):
        send_at(naive, utc(2026, 12, 3), NIGHT, BERLIN)


# Ordinary days


def test_a_moment_inside_the_window_is_held_until_it_ends() -> None:
    """23:00 and 03:00 Berlin are held until 07:00; 07:00 itself and 21:59 are not held."""
    assert held_until(local(BERLIN, 2026, 12, 2, 23, 0), NIGHT, BERLIN) == local(
        BERLIN, 2026, 12, 3, 7, 0
    )
    assert held_until(local(BERLIN, 2026, 12, 3, 3, 0), NIGHT, BERLIN) == local(
        BERLIN, 2026, 12, 3, 7, 0
    )
    assert held_until(local(BERLIN, 2026, 12, 2, 22, 0), NIGHT, BERLIN) is not None
    assert held_until(local(BERLIN, 2026, 12, 3, 7, 0), NIGHT, BERLIN) is None
    assert held_until(local(BERLIN, 2026, 12, 2, 21, 59), NIGHT, BERLIN) is None


def test_the_same_instant_is_quiet_in_one_zone_and_not_in_another() -> None:
    """Quiet hours are the user's local time: 04:00 UTC is 05:00 in Berlin, 23:00 in New York."""
    moment = utc(2026, 12, 3, 4, 0)
    assert held_until(moment, NIGHT, BERLIN) == local(BERLIN, 2026, 12, 3, 7, 0)
    assert held_until(moment, NIGHT, NEW_YORK) == local(NEW_YORK, 2026, 12, 3, 7, 0)
    assert held_until(moment, NIGHT, ZoneInfo("Asia/Kolkata")) is None  # 09:30 there


def test_days_name_the_weekday_a_window_starts_on() -> None:
    """With mon-fri, Friday night until Saturday 07:00 is quiet, Sunday night is not."""
    weekdays = parse_quiet("22:00-07:00 mon-fri")
    assert weekdays is not None
    saturday_night = local(BERLIN, 2026, 12, 5, 3, 0)  # Saturday, in Friday's window
    monday_night = local(BERLIN, 2026, 12, 7, 3, 0)  # Monday, in Sunday's window
    assert held_until(saturday_night, weekdays, BERLIN) == local(BERLIN, 2026, 12, 5, 7, 0)
    assert held_until(monday_night, weekdays, BERLIN) is None
    assert held_until(local(BERLIN, 2026, 12, 6, 23, 0), weekdays, BERLIN) is None  # Sunday


def test_a_task_due_inside_the_window_is_reminded_just_before_it() -> None:
    """Due at 23:30 or at 06:59: the reminder goes out at 21:59, a minute before the window;
    due at 07:00, when the window has ended, nothing is pulled forward."""
    before = local(BERLIN, 2026, 12, 2, 22, 0) - PULL_AHEAD
    assert pulled_forward(local(BERLIN, 2026, 12, 2, 23, 30), NIGHT, BERLIN) == before
    assert pulled_forward(local(BERLIN, 2026, 12, 3, 6, 59), NIGHT, BERLIN) == before
    assert pulled_forward(local(BERLIN, 2026, 12, 2, 22, 0), NIGHT, BERLIN) == before
    assert pulled_forward(local(BERLIN, 2026, 12, 3, 7, 0), NIGHT, BERLIN) is None


# The examples of docs/quiet-hours.md, "Examples": (quiet, moment, due, goes out), Berlin local.
DOC_EXAMPLES = [
    ("22:00-07:00", (2026, 12, 2, 20, 0), (2026, 12, 3, 20, 0), (2026, 12, 2, 20, 0)),
    ("22:00-07:00", (2026, 12, 2, 23, 0), (2026, 12, 3, 23, 0), (2026, 12, 3, 7, 0)),
    ("22:00-07:00", (2026, 12, 2, 23, 0), (2026, 12, 3, 0, 0), (2026, 12, 2, 21, 59)),
    ("22:00-07:00", (2026, 12, 3, 6, 0), (2026, 12, 3, 7, 0), (2026, 12, 2, 21, 59)),
    ("22:00-07:00", (2026, 12, 3, 7, 0), (2026, 12, 3, 7, 0), (2026, 12, 3, 7, 0)),
    ("22:00-07:00", (2026, 12, 2, 21, 0), (2026, 12, 2, 23, 0), (2026, 12, 2, 21, 0)),
    ("22:00-07:00", (2026, 12, 3, 2, 0), (2026, 12, 3, 1, 0), (2026, 12, 3, 7, 0)),
    ("22:00-07:00 mon-fri", (2026, 12, 6, 23, 0), (2026, 12, 7, 0, 0), (2026, 12, 6, 23, 0)),
    ("01:30-03:30", (2026, 3, 29, 1, 45), (2026, 3, 30, 2, 45), (2026, 3, 29, 3, 30)),
    ("01:00-02:30", (2026, 3, 29, 1, 45), (2026, 3, 30, 2, 45), (2026, 3, 29, 3, 0)),
    ("22:00-02:30", (2026, 10, 25, 2, 15, 1), (2026, 10, 26, 2, 15), (2026, 10, 25, 2, 30, 1)),
    ("22:00-02:30", (2026, 10, 25, 2, 45, 0), (2026, 10, 26, 1, 45), (2026, 10, 25, 2, 30, 1)),
]


@pytest.mark.parametrize(("text", "moment", "due", "expected"), DOC_EXAMPLES)
def test_the_documented_examples_hold(
    text: str,
    moment: tuple[int, ...],
    due: tuple[int, ...],
    expected: tuple[int, ...],
) -> None:
    """Each row of the documentation's table of quiet-hours examples, as `send_at` decides it
    (every lead time in the table is a whole number of real hours)."""
    quiet = parse_quiet(text)
    sent = send_at(local(BERLIN, *moment), local(BERLIN, *due), quiet, BERLIN)
    assert sent == local(BERLIN, *expected)


def test_without_quiet_hours_a_reminder_goes_out_at_its_moment() -> None:
    """No preference: the moment, whatever the local time."""
    moment = local(BERLIN, 2026, 12, 3, 3, 0)
    assert send_at(moment, moment + timedelta(hours=1), None, BERLIN) == moment


# Clocks that skip a time (spring forward)


def test_a_window_across_the_spring_forward_gap_ends_at_its_local_end() -> None:
    """Berlin, 2026-03-29, 02:00 CET becomes 03:00 CEST: 01:30-03:30 lasts one real hour, and
    a moment in it is held until 03:30 CEST."""
    moment = local(BERLIN, 2026, 3, 29, 1, 45)
    window = window_at(moment, QuietHours(time(1, 30), time(3, 30)), BERLIN)
    assert window == QuietWindow(utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30))
    assert window.end - window.start == timedelta(hours=1)


def test_an_end_the_clock_skips_is_the_end_of_the_gap() -> None:
    """Ending at 02:30, which 2026-03-29 does not have in Berlin: held until 03:00 CEST, the
    first instant after it; a start at 02:30 begins there too."""
    assert held_until(
        local(BERLIN, 2026, 3, 29, 1, 45), QuietHours(time(1), time(2, 30)), BERLIN
    ) == utc(2026, 3, 29, 1, 0)
    late = QuietHours(time(2, 30), time(6, 0))
    assert held_until(utc(2026, 3, 29, 0, 59), late, BERLIN) is None  # 01:59 CET
    assert held_until(utc(2026, 3, 29, 1, 0), late, BERLIN) == local(BERLIN, 2026, 3, 29, 6, 0)


def test_a_window_inside_the_gap_is_no_window_that_night() -> None:
    """Lord Howe skips 02:00-02:30 on 2026-10-04 (a half-hour change): a window 02:05-02:20
    holds nothing that night, and 01:45-02:15 ends at 02:30, the end of the gap."""
    tiny = QuietHours(time(2, 5), time(2, 20))
    change = utc(2026, 10, 3, 15, 30)  # 02:00 +10:30 becomes 02:30 +11:00
    assert all(
        held_until(change + timedelta(minutes=n), tiny, LORD_HOWE) is None for n in range(-60, 60)
    )
    assert held_until(change - timedelta(minutes=10), tiny, LORD_HOWE) is None
    short = QuietHours(time(1, 45), time(2, 15))
    assert held_until(change - timedelta(minutes=10), short, LORD_HOWE) == change


def test_a_window_on_the_day_the_zone_skipped_ends_as_the_next_day_begins() -> None:
    """Pacific/Apia went from 2011-12-29 straight to 2011-12-31: the night window of the 29th
    ends at the skipped 07:00, where the 30th's begins (the first instant of the 31st), so a
    reminder held on the night of the 29th waits for 07:00 on the 31st."""
    moment = local(APIA, 2011, 12, 29, 23, 0)
    assert held_until(moment, NIGHT, APIA) == local(APIA, 2011, 12, 31, 7, 0)
    assert held_until(local(APIA, 2011, 12, 31, 7, 0), NIGHT, APIA) is None


# Clocks that repeat a time (fall back)


def test_a_window_ending_in_the_repeated_hour_ends_at_its_second_pass() -> None:
    """New York, 2026-11-01, 02:00 EDT becomes 01:00 EST: 22:00-01:30 ends at 01:30 EST, so
    01:15 EST (the clock's second 01:15) is still quiet."""
    quiet = QuietHours(time(22), time(1, 30))
    first, second = occurrences(datetime(2026, 11, 1, 1, 30), NEW_YORK)
    assert held_until(local(NEW_YORK, 2026, 10, 31, 23, 0), quiet, NEW_YORK) == second
    assert second - first == timedelta(hours=1)
    assert held_until(local(NEW_YORK, 2026, 11, 1, 1, 15, fold=1), quiet, NEW_YORK) == second
    assert held_until(local(NEW_YORK, 2026, 11, 1, 1, 45, fold=0), quiet, NEW_YORK) == second
    assert held_until(second, quiet, NEW_YORK) is None


def test_a_window_starting_in_the_repeated_hour_starts_at_its_first_pass() -> None:
    """Berlin, 2026-10-25, 03:00 CEST becomes 02:00 CET: 02:30-06:00 starts at 02:30 CEST."""
    quiet = QuietHours(time(2, 30), time(6))
    window = window_at(utc(2026, 10, 25, 2, 0), quiet, BERLIN)
    assert window == QuietWindow(utc(2026, 10, 25, 0, 30), local(BERLIN, 2026, 10, 25, 6, 0))
    assert held_until(utc(2026, 10, 25, 0, 29), quiet, BERLIN) is None


def test_half_hour_repeats_follow_the_same_rule() -> None:
    """Lord Howe repeats 01:30-02:00 on 2026-04-05: 23:00-01:45 ends at the second 01:45."""
    quiet = QuietHours(time(23), time(1, 45))
    assert held_until(local(LORD_HOWE, 2026, 4, 5, 0, 30), quiet, LORD_HOWE) == last_instant(
        datetime(2026, 4, 5).date(), time(1, 45), LORD_HOWE
    )
    assert last_instant(datetime(2026, 4, 5).date(), time(1, 45), LORD_HOWE) - first_instant(
        datetime(2026, 4, 5).date(), time(1, 45), LORD_HOWE
    ) == timedelta(minutes=30)


# Properties, over arbitrary windows, zones and instants (most of them near a change of clock)


@given(TIMES, TIMES, DAYS, zone_and_moment())
@PROPERTY
def test_a_held_reminder_is_released_later_outside_every_window(
    start: time, end: time, days: frozenset[int] | None, at: tuple[ZoneInfo, datetime]
) -> None:
    """held_until(m) is after m and inside no window; every instant from m to it is held."""
    if start == end:
        return
    quiet, (tz, moment) = QuietHours(start, end, days), at
    release = held_until(moment, quiet, tz)
    if release is None:
        assert window_at(moment, quiet, tz) is None
        return
    assert release > moment
    assert window_at(release, quiet, tz) is None
    assert not reads_quiet(release, quiet, tz)
    for step in range(1, 8):
        between = moment + (release - moment) * step / 8
        assert held_until(between, quiet, tz) == release


@given(TIMES, TIMES, DAYS, zone_and_moment())
@PROPERTY
def test_no_moment_whose_clock_reads_quiet_goes_out(
    start: time, end: time, days: frozenset[int] | None, at: tuple[ZoneInfo, datetime]
) -> None:
    """Whenever the user's clock shows a time inside a window, the moment is held, on the
    days the clock skips or repeats a time too; away from a change, the moments held are
    exactly those."""
    if start == end:
        return
    quiet, (tz, moment) = QuietHours(start, end, days), at
    held = held_until(moment, quiet, tz) is not None
    if reads_quiet(moment, quiet, tz):
        assert held
    if steady(moment, tz):
        assert held == reads_quiet(moment, quiet, tz)


@given(TIMES, TIMES, DAYS, zone_and_moment())
@PROPERTY
def test_a_reminder_pulled_forward_goes_out_before_its_window_in_none(
    start: time, end: time, days: frozenset[int] | None, at: tuple[ZoneInfo, datetime]
) -> None:
    """pulled_forward(due) is before the start of the window due is in, inside no window,
    and at least `PULL_AHEAD` before any window."""
    if start == end:
        return
    quiet, (tz, due) = QuietHours(start, end, days), at
    window = window_at(due, quiet, tz)
    early = pulled_forward(due, quiet, tz)
    if window is None:
        assert early is None
        return
    assert early is not None
    assert early <= window.start - PULL_AHEAD
    assert window_at(early, quiet, tz) is None
    assert not reads_quiet(early, quiet, tz)
    assert held_until(early + PULL_AHEAD - timedelta(seconds=1), quiet, tz) is None


@given(TIMES, TIMES, DAYS, zone_and_moment(), st.integers(0, 3 * 86400))
@PROPERTY
def test_a_before_due_reminder_goes_out_outside_every_window_and_by_its_due_time(
    start: time,
    end: time,
    days: frozenset[int] | None,
    at: tuple[ZoneInfo, datetime],
    lead: int,
) -> None:
    """send_at never chooses a quiet instant, nor one at or after the task's due time (unless
    that is the moment itself), and is later than the moment only by a hold, earlier only
    when the task falls due by the hold's end."""
    if start == end:
        return
    quiet, (tz, moment) = QuietHours(start, end, days), at
    due = moment + timedelta(seconds=lead)
    sent = send_at(moment, due, quiet, tz)
    assert window_at(sent, quiet, tz) is None
    assert not reads_quiet(sent, quiet, tz)
    assert sent < due or sent == moment == due
    if sent > moment:
        assert sent == held_until(moment, quiet, tz)
    if sent < moment:
        assert sent == pulled_forward(moment, quiet, tz)
        if window_at(due, quiet, tz) is not None:
            assert sent == pulled_forward(due, quiet, tz)


@given(TIMES, TIMES, DAYS, zone_and_moment(), st.integers(1, 3 * 86400))
@PROPERTY
def test_an_overdue_nudge_is_only_held(
    start: time,
    end: time,
    days: frozenset[int] | None,
    at: tuple[ZoneInfo, datetime],
    late: int,
) -> None:
    """A nudge after its due time is never sent before its moment: at it, or when its window
    ends."""
    if start == end:
        return
    quiet, (tz, moment) = QuietHours(start, end, days), at
    sent = send_at(moment, moment - timedelta(seconds=late), quiet, tz)
    assert sent == (held_until(moment, quiet, tz) or moment)
