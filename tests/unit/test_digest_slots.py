"""Digest slots: one a local day (or workday), on the days clocks skip or repeat the time
too; the slot that carries a reminder; its stable key; when held reminders become a digest."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.zones import TIMES, zone_and_moment
from worker.errors import InvalidPreference
from worker.reminders.digest_slots import (
    BURST_THRESHOLD,
    DigestSchedule,
    digest_key,
    next_slot,
    parse_digest,
    previous_slot,
    release_as_digest,
    slot_id,
    slot_of,
    slot_on,
)
from worker.reminders.local_time import reading

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
EIGHT = DigestSchedule(time(8, 0))
PROPERTY = settings(max_examples=300, deadline=None, database=None)


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """The instant (aware UTC) the clock in ``tz`` reads that date and time (first pass)."""
    return datetime(year, month, day, hour, minute, tzinfo=tz).astimezone(UTC)


def is_slot(moment: datetime, schedule: DigestSchedule, tz: ZoneInfo) -> bool:
    """Whether ``moment`` is the slot of the local date before, of, or after it."""
    today = reading(moment, tz).date()
    return any(
        slot_on(today + timedelta(days=offset), schedule, tz) == moment for offset in (-1, 0, 1)
    )


def test_schedules_are_parsed() -> None:
    """``08:00`` is every day, ``08:00 workdays`` Monday to Friday, ``none`` no digest."""
    assert parse_digest("08:00") == EIGHT
    assert parse_digest(" 7:30 workdays ") == DigestSchedule(time(7, 30), workdays_only=True)
    assert parse_digest("07:30 mon-fri") == DigestSchedule(time(7, 30), workdays_only=True)
    assert parse_digest("none") is None
    assert parse_digest(DigestSchedule(time(18, 5), True).describe()) == DigestSchedule(
        time(18, 5), True
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("25:00", "--digest: 25:00 is not a time of day (00:00 to 23:59)"),
        ("08:60", "--digest: 08:60 is not a time of day"),
        ("8", "--digest: '8' is not HH:MM or HH:MM workdays, such as 08:00"),
        ("08:00 weekends", "is not HH:MM or HH:MM workdays"),
        ("08:00-09:00", "is not HH:MM or HH:MM workdays"),
    ],
)
def test_bad_digest_times_are_refused_with_one_line(text: str, message: str) -> None:
    """Each bad schedule is refused as a usage error with one line saying why."""
    with pytest.raises(InvalidPreference) as refused:
        parse_digest(text)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"at": time(8, 0, 1)}, "whole minutes"),
        ({"at": time(8, tzinfo=UTC)}, "local time"),
        ({"at": "08:00"}, "local time"),
        ({"at": time(8), "workdays_only": 1}, "True or False"),
    ],
)
def test_schedules_out_of_bounds_cannot_be_made(values: dict[str, object], message: str) -> None:
    """The constructor refuses values the parser would never make."""
    with pytest.raises(InvalidPreference, match=message):
        DigestSchedule(**values)  # type: ignore[arg-type]


def test_slots_follow_the_local_time_and_the_workdays() -> None:
    """08:00 Berlin daily; a workdays schedule goes from Friday's slot to Monday's."""
    friday_noon = local(BERLIN, 2026, 12, 4, 12)
    assert next_slot(friday_noon, EIGHT, BERLIN) == local(BERLIN, 2026, 12, 5, 8)
    workdays = DigestSchedule(time(8), workdays_only=True)
    assert next_slot(friday_noon, workdays, BERLIN) == local(BERLIN, 2026, 12, 7, 8)
    assert previous_slot(local(BERLIN, 2026, 12, 7, 8), workdays, BERLIN) == local(
        BERLIN, 2026, 12, 4, 8
    )
    assert slot_on(date(2026, 12, 6), workdays, BERLIN) is None


def test_a_reminder_at_the_slot_goes_in_that_slot() -> None:
    """slot_of is the first slot at or after the moment; next_slot the first strictly after."""
    slot = local(BERLIN, 2026, 12, 3, 8)
    assert slot_of(slot, EIGHT, BERLIN) == slot
    assert slot_of(slot - timedelta(seconds=1), EIGHT, BERLIN) == slot
    assert slot_of(slot + timedelta(seconds=1), EIGHT, BERLIN) == slot + timedelta(days=1)
    assert next_slot(slot, EIGHT, BERLIN) == slot + timedelta(days=1)
    assert previous_slot(slot, EIGHT, BERLIN) == slot - timedelta(days=1)


def test_a_digest_time_the_clock_skips_is_sent_at_the_end_of_the_gap() -> None:
    """02:30 on 2026-03-29 does not exist in Berlin: that day's digest goes at 03:00 CEST, the
    days around it at 02:30."""
    schedule = DigestSchedule(time(2, 30))
    saturday = local(BERLIN, 2026, 3, 28, 2, 30)
    sunday = next_slot(saturday, schedule, BERLIN)
    assert sunday == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert reading(sunday, BERLIN) == datetime(2026, 3, 29, 3, 0)
    assert next_slot(sunday, schedule, BERLIN) == local(BERLIN, 2026, 3, 30, 2, 30)


def test_a_repeated_digest_time_is_sent_once_at_its_first_pass() -> None:
    """01:30 happens twice in New York on 2026-11-01: one digest, at 01:30 EDT; a reminder at
    01:30 EST goes into the next day's."""
    schedule = DigestSchedule(time(1, 30))
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert next_slot(first - timedelta(hours=1), schedule, NEW_YORK) == first
    second_pass = first + timedelta(hours=1)  # 01:30 EST
    assert slot_of(second_pass, schedule, NEW_YORK) == local(NEW_YORK, 2026, 11, 2, 1, 30)


def test_the_half_hour_change_and_the_skipped_date_keep_one_slot_a_day() -> None:
    """Lord Howe skips 02:00-02:30 (a digest at 02:15 goes at 02:30); Apia's missing
    2011-12-30 gets its digest at midnight of the 31st, the 31st its own at 08:00."""
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    skipped = slot_on(date(2026, 10, 4), DigestSchedule(time(2, 15)), lord_howe)
    assert skipped is not None and reading(skipped, lord_howe) == datetime(2026, 10, 4, 2, 30)
    apia = ZoneInfo("Pacific/Apia")
    after = local(apia, 2011, 12, 29, 8)
    lost_day = next_slot(after, EIGHT, apia)
    assert reading(lost_day, apia) == datetime(2011, 12, 31, 0, 0)
    assert reading(next_slot(lost_day, EIGHT, apia), apia) == datetime(2011, 12, 31, 8, 0)


def test_the_key_names_the_user_and_the_slot_in_utc() -> None:
    """``digest-<user>-<slot>``: the slot as its UTC instant, whatever zone it is given in."""
    slot = local(BERLIN, 2026, 12, 3, 8)
    assert slot_id(slot) == "20261203T070000Z"
    assert digest_key(42, slot) == "digest-42-20261203T070000Z"
    assert digest_key(42, slot.astimezone(NEW_YORK)) == digest_key(42, slot)
    assert digest_key(42, slot) != digest_key(42, slot + timedelta(days=1))
    assert digest_key(42, slot) != digest_key(4, slot)
    with pytest.raises(ValueError, match="naive"):
        slot_id(datetime(2026, 12, 3, 8))


@pytest.mark.parametrize(
    ("held", "threshold", "as_digest"),
    [(0, 3, False), (3, 3, False), (4, 3, True), (1, 0, True), (0, 0, False), (50, 49, True)],
)
def test_more_than_the_threshold_held_go_out_as_one_digest(
    held: int, threshold: int, as_digest: bool
) -> None:
    """A few held reminders (up to the threshold) go one by one; more become one digest."""
    assert release_as_digest(held, threshold) is as_digest


def test_the_default_threshold_is_three() -> None:
    """Without a setting, four held reminders make a digest, three do not."""
    assert BURST_THRESHOLD == 3
    assert release_as_digest(4) and not release_as_digest(3)


@pytest.mark.parametrize(("held", "threshold"), [(-1, 3), (2, -1), (True, 3), (2, 1.5)])
def test_counts_that_are_not_counts_are_refused(held: object, threshold: object) -> None:
    """Negative, boolean or fractional counts are refused, not compared."""
    with pytest.raises(ValueError, match="whole number"):
        release_as_digest(held, threshold)  # type: ignore[arg-type]


SCHEDULES = st.builds(DigestSchedule, TIMES, st.booleans())


@given(SCHEDULES, zone_and_moment())
@PROPERTY
def test_the_next_slot_is_later_and_is_a_slot(
    schedule: DigestSchedule, at: tuple[ZoneInfo, datetime]
) -> None:
    """next_slot(after) > after, it is a slot, and no slot lies between them; previous_slot
    mirrors it."""
    tz, after = at
    following = next_slot(after, schedule, tz)
    assert following > after
    assert is_slot(following, schedule, tz)
    assert previous_slot(following, schedule, tz) <= after
    earlier = previous_slot(after, schedule, tz)
    assert earlier < after
    assert is_slot(earlier, schedule, tz)
    assert next_slot(earlier, schedule, tz) >= after


@given(SCHEDULES, zone_and_moment())
@PROPERTY
def test_a_reminder_goes_in_the_first_slot_at_or_after_its_moment(
    schedule: DigestSchedule, at: tuple[ZoneInfo, datetime]
) -> None:
    """slot_of(m) >= m, no slot lies in [m, slot_of(m)), and the digest's span
    (previous slot, slot] holds m."""
    tz, moment = at
    slot = slot_of(moment, schedule, tz)
    assert slot >= moment
    assert is_slot(slot, schedule, tz)
    assert previous_slot(slot, schedule, tz) < moment
    if slot > moment:
        assert next_slot(moment, schedule, tz) == slot


@given(SCHEDULES, zone_and_moment())
@PROPERTY
def test_every_local_day_has_one_slot_and_slots_go_forward(
    schedule: DigestSchedule, at: tuple[ZoneInfo, datetime]
) -> None:
    """A slot a day (a workday), each later than the one before, at the digest time or, where
    the clock skips it, at the first instant after the gap."""
    tz, moment = at
    today = reading(moment, tz).date()
    days = [today + timedelta(days=n) for n in range(-2, 3)]
    slots = {day: slot_on(day, schedule, tz) for day in days}
    present = [slot for slot in slots.values() if slot is not None]
    assert present == sorted(present)
    assert len(present) == (
        sum(day.weekday() < 5 for day in days) if schedule.workdays_only else len(days)
    )
    for day, slot in slots.items():
        if slot is not None:
            digest_time = datetime.combine(day, schedule.at)
            assert reading(slot, tz) >= digest_time
            assert reading(slot - timedelta(seconds=1), tz) < digest_time


# The digest rows of docs/quiet-hours.md, "Examples": (digest, moment, its slot), Berlin local.
DOC_EXAMPLES = [
    ("08:00", (2026, 12, 3, 20, 0), (2026, 12, 4, 8, 0)),
    ("08:00", (2026, 12, 3, 8, 0), (2026, 12, 3, 8, 0)),
    ("08:00 workdays", (2026, 12, 5, 12, 0), (2026, 12, 7, 8, 0)),
    ("02:30", (2026, 3, 29, 3, 0), (2026, 3, 29, 3, 0)),
]


@pytest.mark.parametrize(("text", "moment", "slot"), DOC_EXAMPLES)
def test_the_documented_examples_hold(
    text: str, moment: tuple[int, int, int, int, int], slot: tuple[int, int, int, int, int]
) -> None:
    """Each digest row of the documentation's table of examples, as `slot_of` decides it."""
    schedule = parse_digest(text)
    assert schedule is not None
    assert slot_of(local(BERLIN, *moment), schedule, BERLIN) == local(BERLIN, *slot)
