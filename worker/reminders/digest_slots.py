"""Digest slots: the instants a digest user's reminders go out together, as pure functions.

A `DigestSchedule` is one local time a day (``08:00``), optionally Monday to Friday only.
Each day's slot is the first instant the clock in the user's zone reads that time
(`worker.reminders.local_time.first_instant`): where the clock skips it (spring forward, a
digest at 02:30 in Europe/Berlin on the last Sunday of March) the first instant after the gap,
03:00; where it repeats it (fall back, 01:30 in America/New_York), the first of the two. So
every day has exactly one slot, none is skipped and none sent twice.

A digest carries the reminders whose moments fall after the previous slot, up to and at its
own: `slot_of` gives the slot of a reminder, `previous_slot` where a slot's span begins. Its
outbox key, `digest_key`, names the user and the slot's UTC instant (`slot_id`), so it is the
same for every planner that computes it. When quiet hours end with more than `BURST_THRESHOLD`
reminders held, they go out as one digest (`release_as_digest`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from outbox.clock import require_utc
from worker.errors import InvalidPreference
from worker.reminders.local_time import CLOCK, first_instant, reading, time_of_day

#: "More than a few": held reminders beyond this many go out as one digest, not one by one.
BURST_THRESHOLD = 3
#: The weekdays (0 = Monday) of a workdays-only digest.
WORKDAYS = frozenset(range(5))
DIGEST_KIND = "digest"

_DIGEST = re.compile(rf"^\s*{CLOCK}(?:\s+(?P<days>\S+))?\s*$")
_WORKDAY_WORDS = {"workdays", "weekdays", "mon-fri"}
_NONE = {"none", "off"}
# A workdays-only schedule has a slot within three days; a change of the clock moves a slot by
# a day at most (Pacific/Apia skipped one): a week on either side always holds the answer.
_SEARCH_DAYS = 7


@dataclass(frozen=True)
class DigestSchedule:
    """When a digest user's digests go out: at ``at`` local time each day, or each workday
    (Monday to Friday) when ``workdays_only``.

    Raises:
        InvalidPreference: a time that is not whole minutes or has a zone, a flag not a bool.
    """

    at: time
    workdays_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.at, time) or self.at.tzinfo is not None:
            raise InvalidPreference("digest: the time must be a local time, such as 08:00")
        if self.at.second or self.at.microsecond:
            raise InvalidPreference("digest: the time must be whole minutes, such as 08:00")
        if not isinstance(self.workdays_only, bool):
            raise InvalidPreference("digest: workdays_only must be True or False")

    def describe(self) -> str:
        """The schedule as `parse_digest` takes it: ``08:00`` or ``08:00 workdays``."""
        return f"{self.at:%H:%M}" + (" workdays" if self.workdays_only else "")


def slot_on(day: date, schedule: DigestSchedule, zone: ZoneInfo) -> datetime | None:
    """The slot of local date ``day`` (aware UTC), None on a weekend of a workdays schedule."""
    if schedule.workdays_only and day.weekday() not in WORKDAYS:
        return None
    return first_instant(day, schedule.at, zone)


def next_slot(after: datetime, schedule: DigestSchedule, zone: ZoneInfo) -> datetime:
    """The first slot strictly after ``after`` (aware UTC)."""
    instant = require_utc(after)
    return min(slot for slot in _slots_around(instant, schedule, zone) if slot > instant)


def previous_slot(before: datetime, schedule: DigestSchedule, zone: ZoneInfo) -> datetime:
    """The last slot strictly before ``before`` (aware UTC): where the span of the digest at
    ``before`` begins, when ``before`` is a slot."""
    instant = require_utc(before)
    return max(slot for slot in _slots_around(instant, schedule, zone) if slot < instant)


def slot_of(moment: datetime, schedule: DigestSchedule, zone: ZoneInfo) -> datetime:
    """The digest that carries a reminder whose moment is ``moment``: the first slot at or
    after it (aware UTC). A reminder at a slot's very instant goes in that slot's digest."""
    instant = require_utc(moment)
    return min(slot for slot in _slots_around(instant, schedule, zone) if slot >= instant)


def slot_id(slot: datetime) -> str:
    """A slot's stable name: its UTC instant, ``20261202T070000Z`` (the year unpadded, as in
    `worker.reminders.keys.reminder_key`)."""
    instant = require_utc(slot)
    return f"{instant.year}{instant:%m%dT%H%M%S}Z"


def digest_key(user_id: int, slot: datetime) -> str:
    """The outbox key of a user's digest at ``slot``: ``digest-<user>-<slot_id>``, the same
    from every planner, so one (user, slot) is one outbox row."""
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise TypeError(f"user id {user_id!r} is not an int")
    return f"{DIGEST_KIND}-{user_id}-{slot_id(slot)}"


def release_as_digest(held_count: int, threshold: int = BURST_THRESHOLD) -> bool:
    """Whether ``held_count`` reminders held by quiet hours go out, when the window ends, as
    one digest (more than ``threshold`` of them) rather than one by one."""
    for name, value in (("held_count", held_count), ("threshold", threshold)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number of 0 or more, not {value!r}")
    return held_count > threshold


def parse_digest(value: str, option: str = "--digest") -> DigestSchedule | None:
    """``08:00`` (24-hour HH:MM, local) for a digest every day, ``08:00 workdays`` for Monday
    to Friday; ``none`` for no digest (a reminder at a time).

    Raises:
        InvalidPreference: not that form, a time out of 00:00-23:59 (``25:00``).
    """
    text = value.strip()
    if text.lower() in _NONE:
        return None
    match = _DIGEST.match(text)
    days = None if match is None else match.group("days")
    if match is None or (days is not None and days.lower() not in _WORKDAY_WORDS):
        raise InvalidPreference(
            f"{option}: {value!r} is not HH:MM or HH:MM workdays, such as 08:00 (or none)"
        )
    return DigestSchedule(time_of_day(option, match.group(1), match.group(2)), days is not None)


def _slots_around(
    instant: datetime, schedule: DigestSchedule, zone: ZoneInfo
) -> Iterator[datetime]:
    today = reading(instant.astimezone(UTC), zone).date()
    for offset in range(-_SEARCH_DAYS, _SEARCH_DAYS + 1):
        slot = slot_on(today + timedelta(days=offset), schedule, zone)
        if slot is not None:
            yield slot
