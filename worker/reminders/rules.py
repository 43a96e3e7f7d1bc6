"""A reminder rule as a value: lead times, overdue nudges, the hour of all-day tasks.

`Rule` is pure: it is built, compared and checked without a database. A rule that exists is a
valid one: the constructor refuses a negative lead time, an overdue interval of zero, more
lead times than `MAX_LEADS` and the rest, each with one line (`InvalidRule`). The parsers read
the command line's forms (``24h,1h,0m``, ``1d x3``, ``09:00``); `worker.reminders.rule_store`
keeps rules in the worker's tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any

from worker.errors import InvalidRule
from worker.reminders.due_time import ALL_DAY_AT
from worker.settings import parse_duration

#: The most lead times one rule may have.
MAX_LEADS = 20
#: The longest lead time, and the longest overdue interval.
MAX_LEAD = timedelta(days=365)
#: The shortest overdue interval: one nudge a minute is already more than anyone reads.
MIN_OVERDUE_EVERY = timedelta(minutes=1)
#: The most overdue nudges one rule may send for one due date.
MAX_OVERDUE_COUNT = 100
#: How many nudges ``--overdue 1d`` (no count) means.
DEFAULT_OVERDUE_COUNT = 1
#: The rule of a service with none configured: one reminder ``REMINDERS_LOOKAHEAD`` ahead
#: (`builtin_rule` gives it for the settings in force).
DEFAULT_LOOKAHEAD = timedelta(hours=24)

_OVERDUE = re.compile(r"^\s*(?P<every>[^\sxX]+)\s*(?:[xX]\s*(?P<count>\S+))?\s*$")
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
_NONE = {"none", "off"}


def _check_lead(lead: object, option: str = "before") -> None:
    if not isinstance(lead, timedelta):
        raise InvalidRule(f"{option}: {lead!r} is not a duration (a datetime.timedelta)")
    if lead < timedelta(0):
        shown = format_duration(lead)
        raise InvalidRule(f"{option}: {shown} is negative; a lead time is 0 or more")
    if lead > MAX_LEAD:
        raise InvalidRule(
            f"{option}: {format_duration(lead)} is longer than {format_duration(MAX_LEAD)}"
        )
    if lead.microseconds:
        raise InvalidRule(f"{option}: {lead.total_seconds()}s is not a whole number of seconds")


def _check_overdue(every: object, count: object, option: str = "overdue") -> None:
    if every is None:
        if count != 0:
            raise InvalidRule(f"{option}: a count of nudges needs an interval")
        return
    if not isinstance(every, timedelta):
        raise InvalidRule(f"{option}: {every!r} is not a duration (a datetime.timedelta)")
    if every < MIN_OVERDUE_EVERY:
        shown = "zero" if every == timedelta(0) else f"{every.total_seconds():g}s"
        raise InvalidRule(
            f"{option}: an interval of {shown} is too short; nudges are at least "
            f"{format_duration(MIN_OVERDUE_EVERY)} apart"
        )
    if every > MAX_LEAD:
        raise InvalidRule(
            f"{option}: {format_duration(every)} is longer than {format_duration(MAX_LEAD)}"
        )
    if every.microseconds:
        raise InvalidRule(f"{option}: {every.total_seconds()}s is not a whole number of seconds")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_OVERDUE_COUNT:
        raise InvalidRule(
            f"{option}: a count of {count!r} nudges; give 1 to {MAX_OVERDUE_COUNT}, "
            "or no overdue nudges at all (none)"
        )


@dataclass(frozen=True)
class Rule:
    """When a recipient is reminded of a task's due time.

    ``before``: the lead times, each one reminder at due - lead (``0`` is at the due time);
    kept longest first, each once. ``overdue_every`` and ``overdue_count``: while the task
    stays open after its due time, a nudge every interval, at most that many (none when the
    interval is None). ``all_day_at``: the local time, in the recipient's zone, that an
    all-day (date-only) task's due time stands for.

    Raises:
        InvalidRule: a value out of its bounds (the message says which and why).
    """

    before: tuple[timedelta, ...] = (DEFAULT_LOOKAHEAD,)
    overdue_every: timedelta | None = None
    overdue_count: int = 0
    all_day_at: time = field(default=ALL_DAY_AT)

    def __post_init__(self) -> None:
        leads = tuple(self.before)
        for lead in leads:
            _check_lead(lead)
        unique = tuple(sorted(set(leads), reverse=True))
        if len(unique) > MAX_LEADS:
            raise InvalidRule(f"before: {len(unique)} lead times; a rule has at most {MAX_LEADS}")
        object.__setattr__(self, "before", unique)
        _check_overdue(self.overdue_every, self.overdue_count)
        if not isinstance(self.all_day_at, time) or self.all_day_at.tzinfo is not None:
            raise InvalidRule("all_day_at: must be a local time of day, such as 09:00")
        if self.all_day_at.second or self.all_day_at.microsecond:
            raise InvalidRule("all_day_at: must be whole minutes, such as 09:00")

    @property
    def lead_seconds(self) -> tuple[int, ...]:
        """The lead times in whole seconds, longest first: the form the tables keep."""
        return tuple(int(lead.total_seconds()) for lead in self.before)

    def describe(self) -> str:
        """The rule in one line, in the command line's own forms."""
        return (
            f"before {self.before_text()}; overdue {self.overdue_text()}; "
            f"all-day at {self.all_day_at:%H:%M}"
        )

    def before_text(self) -> str:
        """The lead times as ``--before`` takes them: ``1d,1h,0m``, or ``none``."""
        return ",".join(format_duration(lead) for lead in self.before) or "none"

    def overdue_text(self) -> str:
        """The overdue nudges as ``--overdue`` takes them: ``1d x3``, or ``none``."""
        if self.overdue_every is None:
            return "none"
        return f"{format_duration(self.overdue_every)} x{self.overdue_count}"

    def document(self) -> dict[str, Any]:
        """The rule as a JSON document's fields (durations in seconds)."""
        every = self.overdue_every
        return {
            "before": [format_duration(lead) for lead in self.before],
            "before_seconds": list(self.lead_seconds),
            "overdue_every_seconds": None if every is None else int(every.total_seconds()),
            "overdue_count": self.overdue_count,
            "all_day_at": f"{self.all_day_at:%H:%M}",
        }


#: The rule when no rule is stored, with the default lookahead (24 h).
DEFAULT_RULE = Rule()


def builtin_rule(lookahead: timedelta) -> Rule:
    """The rule in force where none is stored: one reminder ``lookahead`` ahead, in whole
    seconds (``REMINDERS_LOOKAHEAD``; a lookahead beyond `MAX_LEAD` is the operator's own)."""
    whole = timedelta(seconds=int(lookahead.total_seconds()))
    try:
        return Rule(before=(whole,))
    except InvalidRule:  # longer than MAX_LEAD: the operator's setting, kept as it is
        rule = Rule(before=())
        object.__setattr__(rule, "before", (whole,))
        return rule


def parse_leads(value: str) -> tuple[timedelta, ...]:
    """``24h,1h,0m`` as lead times; ``none`` for none (only overdue nudges, or nothing).

    Raises:
        InvalidRule: a part that is not a duration, a negative one, or an empty part.
    """
    text = value.strip()
    if text.lower() in _NONE:
        return ()
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > MAX_LEADS:
        raise InvalidRule(f"--before: {len(parts)} lead times; a rule has at most {MAX_LEADS}")
    leads: list[timedelta] = []
    for part in parts:
        if not part:
            raise InvalidRule(f"--before: {value!r} has an empty lead time (two commas?)")
        if part.startswith("-"):
            raise InvalidRule(f"--before: {part!r} is negative; a lead time is 0 or more")
        lead = _duration("--before", part, zero=True)
        _check_lead(lead, "--before")
        leads.append(lead)
    return tuple(leads)


def parse_overdue(value: str) -> tuple[timedelta | None, int]:
    """``1d x3``, ``1dx3`` or ``1d`` (`DEFAULT_OVERDUE_COUNT` nudges) as (interval, count);
    ``none`` for no nudges.

    Raises:
        InvalidRule: not that form, a zero or negative interval, a count out of bounds.
    """
    text = value.strip()
    if text.lower() in _NONE:
        return None, 0
    match = _OVERDUE.match(text)
    if match is None:
        raise InvalidRule(f"--overdue: {value!r} is not EVERY[xCOUNT], such as 1d x3")
    every_text, count_text = match.group("every"), match.group("count")
    if every_text.startswith("-"):
        raise InvalidRule(f"--overdue: {every_text!r} is negative; the interval is 1m or more")
    every = _duration("--overdue", every_text, zero=True)
    count = DEFAULT_OVERDUE_COUNT
    if count_text is not None:
        if not count_text.isdigit():
            raise InvalidRule(f"--overdue: count {count_text!r} is not a whole number")
        count = int(count_text)
    _check_overdue(every, count, option="--overdue")
    return every, count


def parse_time_of_day(value: str) -> time:
    """``09:00`` (24-hour HH:MM) as a time of day.

    Raises:
        InvalidRule: not HH:MM, or an hour or minute out of range (``25:00``).
    """
    match = _CLOCK.match(value)
    if match is None:
        raise InvalidRule(f"--all-day-at: {value!r} is not a time HH:MM, such as 09:00")
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        raise InvalidRule(f"--all-day-at: {value.strip()!r} is not a time of day (00:00 to 23:59)")
    return time(hour, minute)


def format_duration(value: timedelta) -> str:
    """A duration in the largest unit that holds it whole: ``1d``, ``90m``, ``45s``, ``0m``."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0m"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _duration(option: str, text: str, *, zero: bool) -> timedelta:
    try:
        return parse_duration(text, zero=zero)
    except ValueError as error:
        raise InvalidRule(f"{option}: {error}") from None
