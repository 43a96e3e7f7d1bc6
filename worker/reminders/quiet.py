"""Quiet hours: a local window in which a user's reminders are held back, as pure functions.

`QuietHours` is the preference (``22:00-07:00``, optionally only windows starting on some
weekdays); `held_until` says until when a reminder whose moment falls inside a window waits,
`pulled_forward` when one whose task falls due inside a window goes out instead, and
`send_at` combines the two for one reminder; `windows_pulled_within` lists the windows whose
pulled-forward reminders a scan plans. Every function takes aware UTC instants (a naive
one is refused) and the user's zone; nothing here reads a clock or a database, so the planner
and the send-time re-check apply the same policy.

A window is half-open, ``[start, end)`` as instants: a reminder at the very instant the window
ends goes out. Where the clock skips or repeats a time (`worker.reminders.local_time`):

- a window starts at the **first** instant the clock reads its start time (a start the clock
  skips: the end of the gap);
- it ends at the **last** instant the clock reads its end time (an end the clock skips: the
  end of the gap). On the night the clock repeats an hour, a window ending at 01:30 lasts
  until the second 01:30: no reminder arrives while the clock shows a time inside the window,
  not even during the repeated hour. The window is an hour longer that night; the other choice,
  the first 01:30, would send during the second pass of 01:00-01:30, a time the user asked
  to be left alone in.

So, in every zone, a reminder is never sent at an instant whose local reading lies inside a
window on one of its days (``tests/unit/test_quiet.py``, the property tests).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from outbox.clock import require_utc
from worker.errors import InvalidPreference
from worker.reminders.local_time import CLOCK, first_instant, last_instant, reading, time_of_day

#: How long before its window a reminder pulled forward goes out: more than the relay's
#: lateness, so that it is delivered before the window starts, not at its first instant. One
#: delivered later than that (a retry) is held by the send-time re-check like any other.
PULL_AHEAD = timedelta(minutes=1)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EVERY_DAY = {"daily", "every", "all"}
_NONE = {"none", "off"}
_WINDOW = re.compile(rf"^\s*{CLOCK}\s*-\s*{CLOCK}(?:\s+(?P<days>\S.*?))?\s*$")
# Windows touch only where the clock changes (an end and the next start in one gap, a skipped
# date), so a chain of them is two or three long; the loops that follow one stop at this bound.
_MAX_LINKS = 8


@dataclass(frozen=True)
class QuietHours:
    """A user's quiet hours: every day (or only on ``days``), from ``start`` to ``end`` local.

    ``end`` earlier than ``start`` crosses midnight: ``22:00-07:00`` is from 22:00 to 07:00 the
    next morning. ``days`` are the weekdays (0 = Monday) on which a window **starts**: with
    ``22:00-07:00`` on Monday to Friday, Friday 22:00 to Saturday 07:00 is quiet, Sunday night
    is not. None (and all seven days, kept as None) is every day.

    Raises:
        InvalidPreference: a window of zero length, a time that is not whole minutes or has a
            zone, a weekday out of 0-6, an empty set of days.
    """

    start: time
    end: time
    days: frozenset[int] | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, time) or value.tzinfo is not None:
                raise InvalidPreference(f"quiet hours: {name} must be a local time, such as 22:00")
            if value.second or value.microsecond:
                raise InvalidPreference(f"quiet hours: {name} must be whole minutes, such as 22:00")
        if self.start == self.end:
            raise InvalidPreference(
                f"quiet hours: {self.start:%H:%M}-{self.end:%H:%M} has zero length; "
                "give two different times, such as 22:00-07:00"
            )
        object.__setattr__(self, "days", _normalise_days(self.days))

    @property
    def crosses_midnight(self) -> bool:
        """Whether a window ends on the day after it starts."""
        return self.end < self.start

    def describe(self) -> str:
        """The quiet hours as `parse_quiet` takes them: ``22:00-07:00``, ``22:00-07:00 mon,fri``."""
        window = f"{self.start:%H:%M}-{self.end:%H:%M}"
        if self.days is None:
            return window
        return f"{window} {','.join(WEEKDAYS[day] for day in sorted(self.days))}"


@dataclass(frozen=True)
class QuietWindow:
    """One quiet window as instants, aware UTC: quiet from ``start`` up to, not at, ``end``."""

    start: datetime
    end: datetime

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, datetime) and self.start <= moment < self.end


def _normalise_days(days: object) -> frozenset[int] | None:
    if days is None:
        return None
    if isinstance(days, str | bytes) or not isinstance(days, Iterable):
        raise InvalidPreference("quiet hours: days must be weekday numbers, 0 (Monday) to 6")
    found = set()
    for day in days:
        if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
            raise InvalidPreference(f"quiet hours: weekday {day!r} is not 0 (Monday) to 6 (Sunday)")
        found.add(day)
    if not found:
        raise InvalidPreference("quiet hours: no weekdays given; leave days out for every day")
    return None if len(found) == 7 else frozenset(found)


def window_at(moment: datetime, quiet: QuietHours, zone: ZoneInfo) -> QuietWindow | None:
    """The quiet window ``moment`` falls in, None outside every window (the earliest one
    where two overlap, which only a change of the clock can make)."""
    instant = require_utc(moment)
    today = reading(instant, zone).date()
    for offset in (-2, -1, 0, 1):
        window = _window_starting(today + timedelta(days=offset), quiet, zone)
        if window is not None and instant in window:
            return window
    return None


def held_until(moment: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime | None:
    """When a reminder whose moment is ``moment`` may go out: the end of the quiet window it
    falls in (aware UTC), or None when it falls in none and goes out at its moment.

    Where one window ends as the next begins (a window ending in a skipped hour, the next
    starting in it), the reminder waits for the last of them: the instant returned is inside
    no window.
    """
    window = window_at(moment, quiet, zone)
    if window is None:
        return None
    end = window.end
    for _ in range(_MAX_LINKS):
        following = window_at(end, quiet, zone)
        if following is None:
            break
        end = following.end
    return end


def pulled_forward(due: datetime, quiet: QuietHours, zone: ZoneInfo) -> datetime | None:
    """When a reminder goes out whose task falls due at ``due``, inside a quiet window: just
    before that window starts (`PULL_AHEAD` before it, and before any window that ends in that
    margin), aware UTC. None when ``due`` is outside every window.

    The instant returned is inside no window and earlier than the start of the window ``due``
    falls in.
    """
    window = window_at(due, quiet, zone)
    return None if window is None else pulled_ahead_of(window, quiet, zone)


def pulled_ahead_of(window: QuietWindow, quiet: QuietHours, zone: ZoneInfo) -> datetime:
    """When the reminders pulled forward out of ``window`` go out: `PULL_AHEAD` before it
    starts, and before any window that ends in that margin (aware UTC)."""
    moment = window.start - PULL_AHEAD
    for _ in range(_MAX_LINKS):
        earlier = window_at(moment, quiet, zone)
        if earlier is None:
            break
        moment = earlier.start - PULL_AHEAD
    return moment


def windows_pulled_within(
    after: datetime, until: datetime, quiet: QuietHours, zone: ZoneInfo
) -> list[QuietWindow]:
    """The windows that start after ``after`` and whose reminders pulled forward go out by
    ``until`` (`pulled_ahead_of`), earliest first: those a scan planning up to ``until``
    must pull forward, when the scan before it ran at ``after``.

    A window is pulled to at most a window's length before its start, more only where a
    chain of windows touch across clock changes; the days read run two past ``until``'s.
    """
    start, stop = require_utc(after), require_utc(until)
    first = reading(start, zone).date() - timedelta(days=1)
    last = reading(stop, zone).date() + timedelta(days=2)
    found = []
    for offset in range((last - first).days + 1):
        window = _window_starting(first + timedelta(days=offset), quiet, zone)
        if window is None or window.start <= start:
            continue
        if pulled_ahead_of(window, quiet, zone) <= stop:
            found.append(window)
    return found


def send_at(moment: datetime, due: datetime, quiet: QuietHours | None, zone: ZoneInfo) -> datetime:
    """When a reminder with moment ``moment`` for a task due at ``due`` goes out under
    ``quiet`` (aware UTC).

    Outside every window: at its moment. Inside one: when the window ends (`held_until`),
    unless its task falls due by then (at or after the moment): a before-due reminder the hold
    would make useless goes out instead just before the window starts (`pulled_forward`),
    earlier than its moment. That is the window its task falls due in, or, for a task due at
    the very instant the window ends, the window right before it. An overdue nudge (its
    moment after the due time) is only held.
    """
    instant = require_utc(moment)
    due_at = require_utc(due)
    if quiet is None:
        return instant
    release = held_until(instant, quiet, zone)
    if release is None:
        return instant
    if instant <= due_at <= release:
        early = pulled_forward(instant, quiet, zone)
        if early is not None:
            return early
    return release


# Pure and asked again at every tick (the scan lists the windows in reach of every quiet
# setting) and for every re-checked reminder: a small cache keeps the zone arithmetic off
# the repeated days.
@lru_cache(maxsize=4096)
def _window_starting(day: date, quiet: QuietHours, zone: ZoneInfo) -> QuietWindow | None:
    if quiet.days is not None and day.weekday() not in quiet.days:
        return None
    start = first_instant(day, quiet.start, zone)
    end_day = day + timedelta(days=1) if quiet.crosses_midnight else day
    end = last_instant(end_day, quiet.end, zone)
    return QuietWindow(start, end) if start < end else None


def parse_quiet(value: str, option: str = "--quiet") -> QuietHours | None:
    """``22:00-07:00`` (24-hour HH:MM-HH:MM, local), optionally followed by the weekdays the
    windows start on (``22:00-07:00 mon-fri``, `parse_days`); ``none`` for no quiet hours.

    Raises:
        InvalidPreference: not that form, a time out of 00:00-23:59 (``25:00-07:00``), a window
            of zero length (``07:00-07:00``), days `parse_days` refuses.
    """
    text = value.strip()
    if text.lower() in _NONE:
        return None
    match = _WINDOW.match(text)
    if match is None:
        raise InvalidPreference(
            f"{option}: {value!r} is not HH:MM-HH:MM, such as 22:00-07:00 (or none)"
        )
    start = time_of_day(option, match.group(1), match.group(2))
    end = time_of_day(option, match.group(3), match.group(4))
    if start == end:
        raise InvalidPreference(
            f"{option}: {start:%H:%M}-{end:%H:%M} has zero length; "
            "give two different times, such as 22:00-07:00"
        )
    days_text = match.group("days")
    days = None if days_text is None else parse_days(days_text, option)
    return QuietHours(start, end, days)


def parse_days(value: str, option: str = "--quiet") -> frozenset[int] | None:
    """Weekdays as ``mon-fri``, ``sat,sun``, ``fri-mon`` (a range may wrap past Sunday), names
    of three letters or in full, any case; ``daily`` for every day (None).

    Raises:
        InvalidPreference: a name that is no weekday, an empty part.
    """
    text = value.strip().lower()
    if text in _EVERY_DAY:
        return None
    days: set[int] = set()
    for part in text.split(","):
        piece = part.strip()
        if not piece:
            raise InvalidPreference(f"{option}: {value!r} has an empty weekday (two commas?)")
        first, _, last = piece.partition("-")
        begin = _weekday(option, first)
        stop = begin if not last else _weekday(option, last)
        days.update((begin + step) % 7 for step in range((stop - begin) % 7 + 1))
    return None if len(days) == 7 else frozenset(days)


def _weekday(option: str, name: str) -> int:
    word = name.strip()
    for number, (short, full) in enumerate(zip(WEEKDAYS, _FULL_NAMES, strict=True)):
        if word in (short, full):
            return number
    raise InvalidPreference(f"{option}: {name.strip()!r} is not a weekday ({', '.join(WEEKDAYS)})")
