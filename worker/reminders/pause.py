"""A user's pause, as pure functions: nothing is sent until the start of a local date.

``--pause-until 2026-12-28`` reads as "back on the 28th": the pause ends at the first instant
of that date in the user's zone (00:00, or where the clock skips midnight the first instant
after it, `worker.reminders.local_time.first_instant`), and the date itself is not paused.
That is the contract's "a paused user gets nothing until the date". The pause is one span: a
clock that goes back across midnight after the date began does not start it again.

A reminder whose moment falls in the pause is expired, not sent when the pause ends
("reminders that fell in the pause are not sent afterwards"), and nothing goes out while it
lasts: the planner tests a reminder's moment, the relay the instant it would send.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from outbox.clock import require_utc
from worker.errors import InvalidPreference
from worker.reminders.local_time import first_instant, reading

_DATE = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})\s*$")
_NONE = {"none", "off"}


def pause_ends(pause_until: date, zone: ZoneInfo) -> datetime:
    """The instant (aware UTC) a pause until ``pause_until`` ends: the start of that local date."""
    if isinstance(pause_until, datetime) or not isinstance(pause_until, date):
        raise InvalidPreference(f"pause: {pause_until!r} is not a date, such as 2026-12-28")
    return first_instant(pause_until, time(0), zone)


def paused(moment: datetime, pause_until: date | None, zone: ZoneInfo) -> bool:
    """Whether ``moment`` (aware UTC) falls in a pause until ``pause_until`` (None: no pause).

    True before the start of ``pause_until`` in ``zone``, false from that instant on.
    """
    instant = require_utc(moment)
    return pause_until is not None and instant < pause_ends(pause_until, zone)


def parse_pause_until(
    value: str, now: datetime, zone: ZoneInfo, option: str = "--pause-until"
) -> date | None:
    """``2026-12-28`` (ISO 8601, a local date in ``zone``) as the date a pause ends; ``none``
    for no pause. ``now`` is the current time (aware UTC), from the caller's clock.

    Raises:
        InvalidPreference: not YYYY-MM-DD, no such date, or a date that is not after today in
            ``zone``: a pause ends at the start of its date, so today's would pause nothing.
    """
    text = value.strip()
    if text.lower() in _NONE:
        return None
    match = _DATE.match(text)
    if match is None:
        raise InvalidPreference(f"{option}: {value!r} is not a date YYYY-MM-DD, such as 2026-12-28")
    try:
        day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        raise InvalidPreference(f"{option}: {text} is not a date of the calendar") from None
    today = reading(require_utc(now), zone).date()
    if day <= today:
        raise InvalidPreference(
            f"{option}: {text} is not after today ({today.isoformat()} in {zone.key}); "
            "a pause lasts until the start of its date"
        )
    return day
