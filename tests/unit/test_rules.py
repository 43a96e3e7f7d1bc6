"""A reminder rule as a value: normalised, bounded, read from the command line's forms."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from worker.errors import InvalidRule, UsageError
from worker.reminders.rules import (
    DEFAULT_RULE,
    MAX_LEAD,
    MAX_LEADS,
    MAX_OVERDUE_COUNT,
    Rule,
    builtin_rule,
    format_duration,
    parse_leads,
    parse_overdue,
    parse_time_of_day,
)

H, M, D = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)


def test_lead_times_are_kept_longest_first_and_once() -> None:
    """Lead times given in any order, some twice, are stored sorted descending, each once."""
    rule = Rule(before=(H, 0 * M, D, 60 * M, H))
    assert rule.before == (D, H, timedelta(0))
    assert rule.lead_seconds == (86400, 3600, 0)


def test_the_default_rule_is_one_reminder_a_day_ahead() -> None:
    """Without any rule: one reminder 24 h before, no nudges, all-day tasks at 09:00."""
    assert Rule(before=(D,), overdue_every=None, overdue_count=0) == DEFAULT_RULE
    assert DEFAULT_RULE.all_day_at == time(9, 0)
    assert builtin_rule(timedelta(hours=24)) == DEFAULT_RULE


def test_the_builtin_rule_follows_the_lookahead() -> None:
    """The rule in force with nothing stored is one reminder REMINDERS_LOOKAHEAD ahead, in
    whole seconds, even a lookahead longer than a rule may set."""
    assert builtin_rule(timedelta(hours=2)).before == (2 * H,)
    assert builtin_rule(timedelta(seconds=90.7)).before == (timedelta(seconds=90),)
    assert builtin_rule(400 * D).before == (400 * D,)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"before": (-H,)}, "negative"),
        ({"before": (MAX_LEAD + timedelta(seconds=1),)}, "longer than 365d"),
        ({"before": tuple(n * M for n in range(MAX_LEADS + 1))}, f"at most {MAX_LEADS}"),
        ({"before": (timedelta(seconds=1.5),)}, "whole number of seconds"),
        ({"before": (3600,)}, "not a duration"),
        ({"overdue_every": timedelta(0), "overdue_count": 1}, "too short"),
        ({"overdue_every": timedelta(seconds=59), "overdue_count": 1}, "too short"),
        ({"overdue_every": -D, "overdue_count": 1}, "too short"),
        ({"overdue_every": D, "overdue_count": 0}, "give 1 to 100"),
        ({"overdue_every": D, "overdue_count": MAX_OVERDUE_COUNT + 1}, "give 1 to 100"),
        ({"overdue_every": D, "overdue_count": True}, "give 1 to 100"),
        ({"overdue_count": 3}, "needs an interval"),
        ({"overdue_every": 400 * D, "overdue_count": 1}, "longer than 365d"),
        ({"all_day_at": "09:00"}, "local time of day"),
        ({"all_day_at": time(9, 0, 30)}, "whole minutes"),
    ],
)
def test_a_rule_out_of_bounds_cannot_be_made(values: dict[str, object], message: str) -> None:
    """Each bound is checked when the rule is built, with one line saying which."""
    with pytest.raises(InvalidRule, match=message) as raised:
        Rule(**values)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value, UsageError)  # the CLI's exit 2


def test_twenty_lead_times_are_allowed() -> None:
    """The maximum itself is a valid rule."""
    assert len(Rule(before=tuple(n * M for n in range(MAX_LEADS))).before) == MAX_LEADS


@pytest.mark.parametrize(
    ("text", "leads"),
    [
        ("24h,1h,0m", (D, H, timedelta(0))),
        ("1h, 2d ,90s", (H, 2 * D, timedelta(seconds=90))),  # the Rule sorts them
        ("1h,60m", (H, H)),
        ("none", ()),
        ("0", (timedelta(0),)),
    ],
)
def test_lead_times_are_read_in_the_settings_form(text: str, leads: tuple[timedelta, ...]) -> None:
    """``--before`` takes the settings' durations, comma-separated, or none."""
    assert parse_leads(text) == leads


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1h", "negative"),
        ("1h,-5m", "negative"),
        ("1h,,2h", "empty lead time"),
        ("soon", "not a duration"),
        ("366d", "longer than 365d"),
        (",".join(["1h"] * 1000), f"at most {MAX_LEADS}"),
    ],
)
def test_bad_lead_times_are_refused(text: str, message: str) -> None:
    """A negative, empty, unreadable, too long or too many lead times: one line naming --before."""
    with pytest.raises(InvalidRule, match=message) as raised:
        parse_leads(text)
    assert str(raised.value).startswith("--before: ")


@pytest.mark.parametrize(
    ("text", "every", "count"),
    [
        ("1d x3", D, 3),
        ("1dx3", D, 3),
        ("1d X 3", D, 3),
        ("12h", 12 * H, 1),
        ("none", None, 0),
        ("off", None, 0),
    ],
)
def test_overdue_nudges_are_read_as_every_and_count(
    text: str, every: timedelta | None, count: int
) -> None:
    """``--overdue EVERY[xCOUNT]``: the count is 1 when left out; none turns nudges off."""
    assert parse_overdue(text) == (every, count)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0m", "zero is too short"),
        ("0d x3", "zero is too short"),
        ("-1d x3", "negative"),
        ("1d x0", "give 1 to 100"),
        ("1d x101", "give 1 to 100"),
        ("1d xthree", "not a whole number"),
        ("1d x3 x4", "not EVERY"),
        ("daily", "not a duration"),
    ],
)
def test_bad_overdue_nudges_are_refused(text: str, message: str) -> None:
    """A zero or negative interval, a count out of bounds, another form: one line."""
    with pytest.raises(InvalidRule, match=message) as raised:
        parse_overdue(text)
    assert str(raised.value).startswith("--overdue: ")


@pytest.mark.parametrize(
    ("text", "at"), [("09:00", time(9)), ("7:05", time(7, 5)), ("23:59", time(23, 59))]
)
def test_the_all_day_time_is_read_as_hh_mm(text: str, at: time) -> None:
    """``--all-day-at`` takes a 24-hour HH:MM."""
    assert parse_time_of_day(text) == at


@pytest.mark.parametrize("text", ["25:00", "24:00", "12:60", "9", "9am", "09:00:00", ""])
def test_a_time_that_is_not_of_a_day_is_refused(text: str) -> None:
    """``25:00`` and anything not HH:MM within a day: one line naming --all-day-at."""
    with pytest.raises(InvalidRule, match=r"^--all-day-at: "):
        parse_time_of_day(text)


def test_a_rule_reads_back_in_the_forms_it_was_given() -> None:
    """What `describe` prints is what ``rules set`` takes."""
    rule = Rule(before=(D, 90 * M, timedelta(0)), overdue_every=D, overdue_count=3)
    assert rule.describe() == "before 1d,90m,0m; overdue 1d x3; all-day at 09:00"
    assert parse_leads(rule.before_text()) == rule.before
    assert parse_overdue(rule.overdue_text()) == (D, 3)
    assert Rule(before=()).describe() == "before none; overdue none; all-day at 09:00"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0m"),
        (D, "1d"),
        (36 * H, "36h"),
        (90 * M, "90m"),
        (timedelta(seconds=45), "45s"),
    ],
)
def test_durations_are_shown_in_the_largest_whole_unit(value: timedelta, text: str) -> None:
    """Shown durations read back to the same value."""
    assert format_duration(value) == text
