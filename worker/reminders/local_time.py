"""A local date and time of day as an instant, with one rule for the times DST skips or repeats.

A zone's clock skips times (spring forward: 02:30 in Europe/Berlin on the last Sunday of
March; a whole date in Pacific/Apia at the end of 2011) and repeats others (fall back: 01:30
twice in America/New_York on the first Sunday of November). The policies that turn a local
time into an instant say which instant they mean:

- `first_instant`: the first instant at which the clock reads that time or later: a repeated
  time's first occurrence, a skipped time's first existing instant after it (the instant the
  gap ends). Where a window starts and where a digest is sent.
- `last_instant`: the last instant at which the clock reads exactly that time: a repeated
  time's second occurrence; a skipped time, as `first_instant`. Where a quiet window ends.
- `postgres_instant`: the instant PostgreSQL gives for a local wall time (``AT TIME ZONE``):
  a repeated time's second occurrence, a skipped time read with the offset in force before
  the change (02:30 in Berlin on the day it skips 02:00-03:00 is 01:30 UTC, which reads
  03:30). Where an all-day task's moments are, as the planner computes them in SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from worker.errors import InvalidPreference

#: A time of day as the preferences' options write it (HH:MM, 24-hour), hour and minute grouped.
CLOCK = r"(\d{1,2}):(\d{2})"


def reading(moment: datetime, zone: ZoneInfo) -> datetime:
    """What the clock in ``zone`` reads at ``moment``, as a naive local datetime."""
    return moment.astimezone(zone).replace(tzinfo=None)


def occurrences(local: datetime, zone: ZoneInfo) -> list[datetime]:
    """The instants (aware UTC, earliest first) at which the clock in ``zone`` reads ``local``
    (naive): one, two in a repeated hour, none in a skipped one."""
    found = set()
    for fold in (0, 1):
        instant = local.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if reading(instant, zone) == local.replace(fold=0):
            found.add(instant)
    return sorted(found)


def postgres_instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The instant (aware UTC) PostgreSQL gives for ``local`` (naive) in ``zone``, as
    ``local AT TIME ZONE zone`` does: a repeated time's second occurrence (the offset after
    the change), a skipped time read with the offset before the change.

    PostgreSQL documents the rule ("Handling of Invalid or Ambiguous Timestamps"); Python's
    ``fold=0`` alone takes a repeated time's first occurrence instead.
    """
    found = occurrences(local, zone)
    if found:
        return found[-1]
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)  # fold=0: the offset before


def first_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The first instant (aware UTC) at which the clock in ``zone`` reads ``day`` ``at`` or
    later: a repeated time's first occurrence, a skipped time's end of the gap."""
    local = datetime.combine(day, at)
    found = occurrences(local, zone)
    return found[0] if found else _end_of_gap(local, zone)


def last_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The last instant (aware UTC) at which the clock in ``zone`` reads ``day`` ``at``: a
    repeated time's second occurrence; a skipped time's end of the gap, as `first_instant`."""
    local = datetime.combine(day, at)
    found = occurrences(local, zone)
    return found[-1] if found else _end_of_gap(local, zone)


def next_skip(
    at: time, zone: ZoneInfo, since: date, days: int = 366, on: Callable[[date], bool] | None = None
) -> date | None:
    """The first of the ``days`` days from ``since`` (those ``on`` accepts, when given) on
    which the clock in ``zone`` skips ``at``; None when it reads ``at`` on each of them."""
    for n in range(days):
        day = since + timedelta(days=n)
        if (on is None or on(day)) and not occurrences(datetime.combine(day, at), zone):
            return day
    return None


def _end_of_gap(local: datetime, zone: ZoneInfo) -> datetime:
    """The first instant whose reading is later than ``local``, a time the clock skips.

    Read with the offset before the change (``fold=0``) the time lands after the change, read
    with the offset after it (``fold=1``) before: the change lies between the two. Zone
    changes fall on whole seconds, so halving the span down to one second finds it exactly.
    """
    spans = sorted(local.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    before, after = spans  # reading(before) < local < reading(after)
    second = timedelta(seconds=1)
    while after - before > second:
        middle = before + (after - before) // 2
        middle = middle.replace(microsecond=0)
        if middle <= before:
            middle = before + second
        if reading(middle, zone) < local:
            before = middle
        else:
            after = middle
    return after


def time_of_day(option: str, hour_text: str, minute_text: str) -> time:
    """The time ``hour_text``:``minute_text`` of ``option``'s value (digits matched by `CLOCK`).

    Raises:
        InvalidPreference: an hour over 23 or a minute over 59 (``25:00``).
    """
    hour, minute = int(hour_text), int(minute_text)
    if hour > 23 or minute > 59:
        raise InvalidPreference(
            f"{option}: {hour_text}:{minute_text} is not a time of day (00:00 to 23:59)"
        )
    return time(hour, minute)
