"""A user's reminder preferences as values: opt-outs, quiet hours, digest, pause, channel.

These are the forms the command line and the API take (``22:00-07:00``, ``mon-fri``,
``2026-12-24``) and the checks each value passes before it is stored
(`worker.reminders.preference_store`). All times of day are local, in the user's zone.
A bad value raises `InvalidPreference` with one line naming the option.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from typing import Any

from outbox.channels.apprise import understood
from outbox.masking import mask_url
from worker.errors import InvalidPreference

#: The opt-out of every kind of reminder (what an unsubscribe link records).
ALL_KINDS = "*"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_CHANNEL_URL = 2000
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,49}$")


@dataclass(frozen=True)
class QuietHours:
    """A local window in which no reminder goes out: from ``start`` to ``end`` (across
    midnight when ``end`` is earlier), on ``days`` (Monday 0; None: every day). A window
    across midnight belongs to the day it starts on."""

    start: time
    end: time
    days: frozenset[int] | None = None

    def describe(self) -> str:
        """``22:00-07:00`` and, when not every day, ``on mon-fri``."""
        window = f"{self.start:%H:%M}-{self.end:%H:%M}"
        return window if self.days is None else f"{window} on {format_days(self.days)}"


@dataclass(frozen=True)
class Preferences:
    """One user's stored preferences; a user without a row has `Preferences(user_id)`."""

    user_id: int
    #: The kinds of reminder the user opted out of; `ALL_KINDS` for every kind.
    opted_out: frozenset[str] = frozenset()
    quiet: QuietHours | None = None
    digest_at: time | None = None
    digest_workdays: bool = False
    #: Nothing is sent before this local date.
    pause_until: date | None = None
    #: The user's Apprise URL: a secret, shown only through `masked_channel`.
    channel_url: str | None = field(default=None, repr=False)
    updated_at: datetime | None = None

    def opted_out_of(self, kind: str) -> bool:
        """Whether the user wants no reminder of this kind."""
        return ALL_KINDS in self.opted_out or kind in self.opted_out

    @property
    def masked_channel(self) -> str | None:
        """The channel URL with everything but its scheme hidden."""
        return None if self.channel_url is None else mask_url(self.channel_url)

    def document(self) -> dict[str, Any]:
        """The preferences as JSON, the channel URL masked."""
        quiet = self.quiet
        return {
            "user_id": self.user_id,
            "unsubscribed": sorted("all" if k == ALL_KINDS else k for k in self.opted_out),
            "quiet": None if quiet is None else f"{quiet.start:%H:%M}-{quiet.end:%H:%M}",
            "quiet_days": None if quiet is None or quiet.days is None else format_days(quiet.days),
            "digest_at": None if self.digest_at is None else f"{self.digest_at:%H:%M}",
            "digest_workdays": self.digest_workdays,
            "pause_until": None if self.pause_until is None else self.pause_until.isoformat(),
            "channel": self.masked_channel,
            "updated_at": None
            if self.updated_at is None
            else self.updated_at.isoformat().replace("+00:00", "Z"),
        }


def parse_clock(option: str, value: str) -> time:
    """``HH:MM`` (24-hour) as a time of day."""
    match = _CLOCK.match(value)
    if match is None:
        raise InvalidPreference(f"{option}: {value!r} is not a time HH:MM, such as 07:00")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise InvalidPreference(
            f"{option}: {value.strip()!r} is not a time of day (00:00 to 23:59)"
        )
    return time(hour, minute)


def parse_quiet(value: str) -> tuple[time, time]:
    """``22:00-07:00`` as (start, end); a window of zero length is refused."""
    start, dash, end = value.partition("-")
    if not dash:
        raise InvalidPreference(
            f"--quiet: {value!r} is not a window HH:MM-HH:MM, such as 22:00-07:00"
        )
    window = parse_clock("--quiet", start), parse_clock("--quiet", end)
    if window[0] == window[1]:
        raise InvalidPreference(f"--quiet: {value.strip()!r} is a window of zero length")
    return window


def parse_days(value: str) -> frozenset[int]:
    """``mon-fri``, ``sat,sun`` or ``mon,wed-fri`` as weekday numbers (Monday 0)."""
    days: set[int] = set()
    for part in value.lower().replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if first not in WEEKDAYS or (dash and last not in WEEKDAYS):
            raise InvalidPreference(
                f"--quiet-days: {value!r} is not a list of weekdays, such as mon-fri or sat,sun"
            )
        start = WEEKDAYS.index(first)
        stop = WEEKDAYS.index(last) if dash else start
        if stop < start:
            raise InvalidPreference(f"--quiet-days: {part!r} runs backwards (write mon-fri)")
        days.update(range(start, stop + 1))
    return frozenset(days)


def format_days(days: Iterable[int]) -> str:
    """Weekday numbers as the shortest list of ranges: ``mon-fri``, ``mon,wed-fri``."""
    chosen = sorted(set(days))
    runs: list[list[int]] = []
    for day in chosen:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(
        WEEKDAYS[run[0]] if len(run) == 1 else f"{WEEKDAYS[run[0]]}-{WEEKDAYS[run[-1]]}"
        for run in runs
    )


def days_mask(days: frozenset[int] | None) -> int | None:
    """Weekdays as the stored bit mask (bit 0 Monday); None: every day."""
    return None if days is None else sum(1 << day for day in days)


def mask_days(mask: int | None) -> frozenset[int] | None:
    """The stored bit mask as weekday numbers."""
    return None if mask is None else frozenset(day for day in range(7) if mask >> day & 1)


def parse_pause(value: str, today: date) -> date:
    """``2026-12-24`` as the date reminders resume; a date before ``today`` is refused."""
    try:
        until = date.fromisoformat(value.strip())
    except ValueError:
        raise InvalidPreference(
            f"--pause-until: {value!r} is not a date YYYY-MM-DD, such as 2026-12-24"
        ) from None
    if until < today:
        raise InvalidPreference(
            f"--pause-until: {until.isoformat()} is in the past (today is {today.isoformat()} "
            "in the user's zone)"
        )
    return until


def parse_kinds(value: str) -> frozenset[str]:
    """``due_soon,overdue`` as kinds of reminder; ``all`` (or ``*``) for every kind."""
    kinds = {part.strip().lower() for part in value.split(",") if part.strip()}
    if kinds & {"all", ALL_KINDS}:
        return frozenset({ALL_KINDS})
    if not kinds or not all(_KIND.match(kind) for kind in kinds):
        raise InvalidPreference(f"--kinds: {value!r} is not a list of reminder kinds (due_soon)")
    return frozenset(kinds)


def check_channel_url(value: str) -> str:
    """``value`` as an Apprise URL Apprise can deliver to, such as ``ntfy://topic``.

    The URL is a secret: the error names only its scheme.
    """
    url = value.strip()
    scheme = mask_url(url)
    if not url or len(url) > MAX_CHANNEL_URL or not url.isprintable() or " " in url:
        raise InvalidPreference(
            f"--channel: not one URL of at most {MAX_CHANNEL_URL} printable characters"
        )
    if "://" not in url or not understood(url):
        raise InvalidPreference(
            f"--channel: {scheme} is not a notification URL Apprise knows "
            "(such as ntfy://topic or mailto://user:password@example.com)"
        )
    return url


def encode_kinds(kinds: frozenset[str]) -> str | None:
    """Kinds as stored: a comma list in order, None for none."""
    return ",".join(sorted(kinds)) or None


def decode_kinds(stored: str | None) -> frozenset[str]:
    """The stored kinds."""
    return frozenset(kind for kind in (stored or "").split(",") if kind)


#: The value that clears an option: ``--quiet off``.
OFF = "off"


@dataclass(frozen=True)
class PreferenceEdit:
    """A change to a user's preferences in the command line's forms; None keeps a value,
    `OFF` clears it. ``unsubscribe`` True opts out of ``kinds`` (every kind when None),
    False opts back in to them."""

    quiet: str | None = None
    quiet_days: str | None = None
    digest: str | None = None
    digest_workdays: bool | None = None
    pause_until: str | None = None
    channel: str | None = None
    unsubscribe: bool | None = None
    kinds: str | None = None

    def applied(self, current: Preferences, today: date) -> Preferences:
        """``current`` with this edit made; ``today`` is the user's local date.

        Raises:
            InvalidPreference: a value is malformed or not allowed, naming its option.
        """
        quiet = current.quiet
        if self.quiet is not None:
            quiet = None if _off(self.quiet) else QuietHours(*parse_quiet(self.quiet))
            if quiet is not None and current.quiet is not None and self.quiet_days is None:
                quiet = replace(quiet, days=current.quiet.days)
        if self.quiet_days is not None:
            if quiet is None:
                raise InvalidPreference("--quiet-days: give a window too: --quiet HH:MM-HH:MM")
            days = None if _off(self.quiet_days) else parse_days(self.quiet_days)
            quiet = replace(quiet, days=days)
        digest_at = current.digest_at
        if self.digest is not None:
            digest_at = None if _off(self.digest) else parse_clock("--digest", self.digest)
        pause = current.pause_until
        if self.pause_until is not None:
            pause = None if _off(self.pause_until) else parse_pause(self.pause_until, today)
        channel = current.channel_url
        if self.channel is not None:
            channel = None if _off(self.channel) else check_channel_url(self.channel)
        opted_out = current.opted_out
        if self.kinds is not None and self.unsubscribe is None:
            raise InvalidPreference("--kinds: give --unsubscribe or --resubscribe with it")
        if self.unsubscribe is not None:
            kinds = frozenset({ALL_KINDS}) if self.kinds is None else parse_kinds(self.kinds)
            if self.unsubscribe:
                opted_out = opted_out | kinds
            else:
                opted_out = frozenset() if ALL_KINDS in kinds else opted_out - kinds
        return replace(
            current,
            opted_out=opted_out,
            quiet=quiet,
            digest_at=digest_at,
            digest_workdays=(
                current.digest_workdays if self.digest_workdays is None else self.digest_workdays
            ),
            pause_until=pause,
            channel_url=channel,
        )


def _off(value: str) -> bool:
    return value.strip().lower() == OFF
