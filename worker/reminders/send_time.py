"""Whether a claimed reminder goes out now, from its recipient's preferences as they are now.

The relay's re-check (`worker.reminders.recheck`) asks `decide` about each reminder it is
about to send, with the preferences read again at that moment, so that a pause or a quiet
window set or changed after planning applies. In this order:

1. **Pause**: a reminder whose moment fell in the pause, or that would go out during it, is
   expired (`Expire`): "reminders that fell in the pause are not sent afterwards", and a
   paused user gets nothing (`worker.reminders.pause`).
2. **Digest** (only when asked for, ``digests=True``): a digest user's reminder goes into the
   digest of its slot (`ToDigest`, `worker.reminders.digest_slots.slot_of`).
3. **Quiet hours**: nothing goes out inside a window. At an instant inside one the reminder
   is held to the window's end (`Hold`), or expired when that end comes at or after the due
   time of a before-due reminder (the hold would make it useless). Outside every window it
   goes out (`Send`), with the end of the window its moment fell in, when it was held by one
   (`Send.released_at`), so that the rows released by one window can be counted together.

A before-due reminder whose task falls due inside a window is planned to go out just before
the window starts (`pulled_to`): its instant is outside every window, so `decide` sends it.
One claimed before its moment is sent only from the instant it is pulled to as the
preferences say now; earlier (its window moved or was cleared) it is held to that instant,
or to its moment.

Pure functions: instants are aware UTC (a naive one is refused), nothing reads a clock or
the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from outbox.clock import require_utc
from worker.reminders import quiet as quiet_policy
from worker.reminders.digest_slots import DigestSchedule, slot_of
from worker.reminders.pause import paused
from worker.reminders.preferences import Preferences

#: Why a reminder is expired by a pause: its moment fell in it, or it would go out in it.
FELL_IN_PAUSE = "its moment fell in the recipient's pause"
SENT_IN_PAUSE = "the recipient is paused"
#: Why a held before-due reminder is expired: its window ends at or after its due time.
QUIET_PAST_DUE = "quiet hours last until after it is due"
QUIET = "quiet hours"
#: Why a row claimed before its moment waits: it was pulled forward, and is no longer, or
#: to a later instant (its window was changed or cleared since).
EARLY = "before its send time"


@dataclass(frozen=True)
class Send:
    """Send it now. ``released_at``: the end of the quiet window its moment fell in, now
    over (None: its moment was in no window)."""

    released_at: datetime | None = None


@dataclass(frozen=True)
class Hold:
    """Not now: the instant is inside a quiet window, which ends at ``until`` (aware UTC)."""

    until: datetime
    reason: str = QUIET


@dataclass(frozen=True)
class Expire:
    """Never: the reminder is expired unsent, for ``reason``."""

    reason: str


@dataclass(frozen=True)
class ToDigest:
    """Not alone: the reminder goes into the recipient's digest at ``slot`` (aware UTC)."""

    slot: datetime


Decision = Send | Hold | Expire | ToDigest


def zone_of(name: str | None) -> ZoneInfo:
    """The zone of a users row's zone name; UTC for none or one the zone database lacks (as
    the rendering does)."""
    try:
        if name and name.strip():
            return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        pass
    return ZoneInfo("UTC")


def quiet_hours(preferences: Preferences) -> quiet_policy.QuietHours | None:
    """The user's quiet hours as the policy takes them (None: none)."""
    stored = preferences.quiet
    if stored is None:
        return None
    return quiet_policy.QuietHours(stored.start, stored.end, stored.days)


def digest_schedule(preferences: Preferences) -> DigestSchedule | None:
    """The user's digest time as the policy takes it (None: no digest)."""
    if preferences.digest_at is None:
        return None
    return DigestSchedule(preferences.digest_at, preferences.digest_workdays)


def decide(
    moment: datetime,
    due: datetime,
    now: datetime,
    preferences: Preferences,
    zone: ZoneInfo,
    *,
    digests: bool = False,
) -> Decision:
    """What to do now (``now``) with a reminder meant for ``moment`` of a task due at ``due``,
    sent to the user of ``preferences`` in ``zone``. ``digests``: a digest user's reminder
    goes into a digest (`ToDigest`); without it, it is decided as anyone else's."""
    moment, due, now = require_utc(moment), require_utc(due), require_utc(now)
    if paused(moment, preferences.pause_until, zone):
        return Expire(FELL_IN_PAUSE)
    if paused(now, preferences.pause_until, zone):
        return Expire(SENT_IN_PAUSE)
    schedule = digest_schedule(preferences) if digests else None
    if schedule is not None:
        return ToDigest(slot_of(moment, schedule, zone))
    if now < moment:  # planned to go out early: only while the window still says so
        chosen = pulled_to(moment, due, preferences, zone) or moment
        if now < chosen:
            return Hold(chosen, EARLY)
    quiet = quiet_hours(preferences)
    if quiet is None:
        return Send()
    until = quiet_policy.held_until(now, quiet, zone)
    if until is not None:
        if moment < due <= until:
            return Expire(QUIET_PAST_DUE)
        return Hold(until)
    released = quiet_policy.held_until(moment, quiet, zone)
    return Send(released_at=released if released is not None and released <= now else None)


def pulled_to(
    moment: datetime, due: datetime, preferences: Preferences, zone: ZoneInfo
) -> datetime | None:
    """When a reminder meant for ``moment`` of a task due at ``due`` goes out instead, because
    its task falls due inside the quiet window its moment is in: just before that window
    (`worker.reminders.quiet.send_at`), aware UTC. None when it goes out at its moment or
    is only held."""
    quiet = quiet_hours(preferences)
    instant = require_utc(moment)
    if quiet is None:
        return None
    chosen = quiet_policy.send_at(instant, require_utc(due), quiet, zone)
    return chosen if chosen < instant else None
