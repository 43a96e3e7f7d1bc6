"""The send-time decision: pause, quiet hours (DST included), digests only when asked for."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from worker.reminders.preferences import Preferences, QuietHours
from worker.reminders.send_time import (
    FELL_IN_PAUSE,
    QUIET_PAST_DUE,
    SENT_IN_PAUSE,
    Expire,
    Hold,
    Send,
    ToDigest,
    decide,
    pulled_to,
    zone_of,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NIGHT = QuietHours(time(22), time(7))
DAY = timedelta(days=1)


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    """A local reading in ``zone`` as an aware UTC instant (``fold=1``: a repeated time's
    second occurrence)."""
    year, month, day, hour, minute = (*parts, 0)[:5]
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold).astimezone(UTC)


def quiet(window: QuietHours | None = NIGHT, **others: object) -> Preferences:
    return Preferences(1, quiet=window, **others)  # type: ignore[arg-type]


def test_outside_every_window_a_reminder_is_sent() -> None:
    """Wed 2 Dec 20:00 in Berlin, quiet 22:00-07:00: sent, from no window."""
    moment = at(BERLIN, 2026, 12, 2, 20, 0)
    assert decide(moment, moment + DAY, moment, quiet(), BERLIN) == Send()
    assert decide(moment, moment + DAY, moment, quiet(None), BERLIN) == Send()


def test_inside_a_window_a_reminder_is_held_until_it_ends() -> None:
    """A reminder at 03:00 local waits for 07:00; at 06:59 still, at 07:00 it goes, and says
    which window released it."""
    moment = at(BERLIN, 2026, 12, 3, 3, 0)
    due = moment + DAY
    seven = at(BERLIN, 2026, 12, 3, 7, 0)
    assert decide(moment, due, moment, quiet(), BERLIN) == Hold(seven)
    assert decide(moment, due, seven - timedelta(minutes=1), quiet(), BERLIN) == Hold(seven)
    assert decide(moment, due, seven, quiet(), BERLIN) == Send(released_at=seven)
    assert decide(moment, due, seven + timedelta(hours=3), quiet(), BERLIN) == Send(seven)


def test_a_late_send_into_a_window_is_held_whatever_its_moment() -> None:
    """Moment 21:50, outside; claimed at 22:05, inside: held (never sent inside a window)."""
    moment = at(BERLIN, 2026, 12, 2, 21, 50)
    now = at(BERLIN, 2026, 12, 2, 22, 5)
    assert decide(moment, moment + DAY, now, quiet(), BERLIN) == Hold(at(BERLIN, 2026, 12, 3, 7))


def test_a_hold_past_the_due_time_of_a_before_due_reminder_expires_it() -> None:
    """1 h before a task due at 23:30 inside the window: a hold to 07:00 would be useless."""
    moment = at(BERLIN, 2026, 12, 2, 22, 30)
    due = moment + timedelta(hours=1)
    assert decide(moment, due, moment, quiet(), BERLIN) == Expire(QUIET_PAST_DUE)
    nudge = due + timedelta(minutes=30)  # an overdue nudge is only held
    assert decide(nudge, due, nudge, quiet(), BERLIN) == Hold(at(BERLIN, 2026, 12, 3, 7))


def test_a_window_changed_after_planning_is_the_one_applied() -> None:
    """The decision follows the preferences it is given, as read at send time."""
    moment = at(BERLIN, 2026, 12, 2, 20, 0)
    due = moment + DAY
    assert decide(moment, due, moment, quiet(), BERLIN) == Send()
    evening = QuietHours(time(19), time(21))
    assert decide(moment, due, moment, quiet(evening), BERLIN) == Hold(
        at(BERLIN, 2026, 12, 2, 21, 0)
    )
    night_moment = at(BERLIN, 2026, 12, 3, 3, 0)
    assert decide(night_moment, night_moment + DAY, night_moment, quiet(None), BERLIN) == Send()


def test_weekday_windows_hold_only_on_their_days() -> None:
    """22:00-07:00 mon-fri: Friday night is quiet until Saturday 07:00; Sunday night is not."""
    workdays = QuietHours(time(22), time(7), frozenset(range(5)))
    friday = at(BERLIN, 2026, 12, 4, 23, 0)
    assert decide(friday, friday + DAY, friday, quiet(workdays), BERLIN) == Hold(
        at(BERLIN, 2026, 12, 5, 7, 0)
    )
    sunday = at(BERLIN, 2026, 12, 6, 23, 0)
    assert decide(sunday, sunday + DAY, sunday, quiet(workdays), BERLIN) == Send()
    monday_early = at(BERLIN, 2026, 12, 7, 3, 0)  # Sunday's window would hold it: none starts
    assert decide(monday_early, monday_early + DAY, monday_early, quiet(workdays), BERLIN) == (
        Send()
    )


def test_a_window_across_the_spring_forward_in_berlin() -> None:
    """29 Mar 2026, 02:00 CET jumps to 03:00 CEST. 01:30-03:30 lasts one real hour; a window
    ending in the gap (01:00-02:30) ends where the gap does, 03:00 CEST."""
    moment = at(BERLIN, 2026, 3, 29, 1, 45)
    end = at(BERLIN, 2026, 3, 29, 3, 30)
    assert end - at(BERLIN, 2026, 3, 29, 1, 30) == timedelta(hours=1)
    across = QuietHours(time(1, 30), time(3, 30))
    assert decide(moment, moment + DAY, moment, quiet(across), BERLIN) == Hold(end)
    assert decide(moment, moment + DAY, end - timedelta(seconds=1), quiet(across), BERLIN) == (
        Hold(end)
    )
    assert decide(moment, moment + DAY, end, quiet(across), BERLIN) == Send(released_at=end)
    into_gap = QuietHours(time(1), time(2, 30))
    gap_end = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert decide(moment, moment + DAY, moment, quiet(into_gap), BERLIN) == Hold(gap_end)


def test_a_window_across_the_repeated_hour_in_new_york() -> None:
    """1 Nov 2026, 01:00-02:00 EDT is repeated in EST. 22:00-01:30 ends at the second 01:30:
    a reminder at either 01:15 is held until then."""
    window = QuietHours(time(22), time(1, 30))
    second_end = at(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
    assert second_end == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    for fold in (0, 1):
        moment = at(NEW_YORK, 2026, 11, 1, 1, 15, fold=fold)
        assert decide(moment, moment + DAY, moment, quiet(window), NEW_YORK) == Hold(second_end)
    first_end = at(NEW_YORK, 2026, 11, 1, 1, 30, fold=0)
    moment = at(NEW_YORK, 2026, 11, 1, 0, 30)
    assert decide(moment, moment + DAY, first_end, quiet(window), NEW_YORK) == Hold(second_end)
    assert decide(moment, moment + DAY, second_end, quiet(window), NEW_YORK) == Send(second_end)


def test_a_moment_in_the_pause_expires_and_is_not_sent_afterwards() -> None:
    """Paused until Thu 3 Dec: a moment before that local midnight expires, even when the
    relay comes after the pause; from midnight on, reminders go out."""
    paused = Preferences(1, pause_until=date(2026, 12, 3))
    moment = at(BERLIN, 2026, 12, 2, 23, 0)
    assert decide(moment, moment + DAY, moment, paused, BERLIN) == Expire(FELL_IN_PAUSE)
    after_pause = at(BERLIN, 2026, 12, 3, 9, 0)
    assert decide(moment, moment + DAY, after_pause, paused, BERLIN) == Expire(FELL_IN_PAUSE)
    midnight = at(BERLIN, 2026, 12, 3, 0, 0)
    assert decide(midnight, midnight + DAY, midnight, paused, BERLIN) == Send()


def test_nothing_goes_out_during_a_pause() -> None:
    """A reminder planned early (its moment after the pause) sent while the pause lasts is
    expired: a paused user gets nothing."""
    paused = Preferences(1, pause_until=date(2026, 12, 3))
    moment = at(BERLIN, 2026, 12, 3, 8, 0)
    now = at(BERLIN, 2026, 12, 2, 21, 59)
    assert decide(moment, moment + DAY, now, paused, BERLIN) == Expire(SENT_IN_PAUSE)


def test_the_pause_comes_before_quiet_hours_and_digests() -> None:
    """A moment in both a pause and a window is expired, not held until after the pause."""
    both = Preferences(1, quiet=NIGHT, pause_until=date(2026, 12, 3), digest_at=time(8))
    moment = at(BERLIN, 2026, 12, 2, 23, 0)
    assert decide(moment, moment + DAY, moment, both, BERLIN, digests=True) == Expire(FELL_IN_PAUSE)


def test_a_digest_user_gets_a_digest_only_when_digests_are_asked_for() -> None:
    """With ``digests`` the reminder goes into its slot's digest; without, it is decided
    as anyone's (here: sent)."""
    digest = Preferences(1, digest_at=time(8))
    moment = at(BERLIN, 2026, 12, 3, 20, 0)
    slot = at(BERLIN, 2026, 12, 4, 8, 0)
    assert decide(moment, moment + DAY, moment, digest, BERLIN, digests=True) == ToDigest(slot)
    assert decide(moment, moment + DAY, moment, digest, BERLIN) == Send()
    workdays = Preferences(1, digest_at=time(8), digest_workdays=True)
    saturday = at(BERLIN, 2026, 12, 5, 12, 0)
    assert decide(saturday, saturday + DAY, saturday, workdays, BERLIN, digests=True) == (
        ToDigest(at(BERLIN, 2026, 12, 7, 8, 0))
    )


def test_a_reminder_pulled_forward_is_sent_before_its_window() -> None:
    """1 h before a task due Thu 00:00: moment Wed 23:00 inside the window, pulled to 21:59;
    sent then, held back if claimed earlier, and not pulled when its task is due later."""
    due = at(BERLIN, 2026, 12, 3, 0, 0)
    moment = due - timedelta(hours=1)
    pulled = at(BERLIN, 2026, 12, 2, 21, 59)
    assert pulled_to(moment, due, quiet(), BERLIN) == pulled
    assert decide(moment, due, pulled, quiet(), BERLIN) == Send()
    early = pulled - timedelta(hours=1)
    assert decide(moment, due, early, quiet(), BERLIN) == Hold(pulled, "before its send time")
    assert pulled_to(moment, due + DAY, quiet(), BERLIN) is None  # only held
    assert pulled_to(moment, due, quiet(None), BERLIN) is None
    outside = at(BERLIN, 2026, 12, 2, 20, 0)
    assert pulled_to(outside, outside + timedelta(hours=3), quiet(), BERLIN) is None


def test_a_row_pulled_forward_whose_window_was_removed_waits_for_its_moment() -> None:
    """Planned early for a window since cleared: it is held to its own moment."""
    due = at(BERLIN, 2026, 12, 3, 0, 0)
    moment = due - timedelta(hours=1)
    pulled = at(BERLIN, 2026, 12, 2, 21, 59)
    assert decide(moment, due, pulled, quiet(None), BERLIN) == Hold(moment, "before its send time")


def test_naive_instants_and_unknown_zones() -> None:
    """A naive instant is refused; an unknown zone name is UTC."""
    naive = datetime(2026, 12, 2, 20, 0)
    aware = naive.replace(tzinfo=UTC)
    with pytest.raises(ValueError, match="naive"):
        decide(naive, aware, aware, quiet(), BERLIN)
    with pytest.raises(ValueError, match="naive"):
        decide(aware, aware, naive, quiet(), BERLIN)
    assert zone_of("Mars/Olympus") == zone_of(None) == zone_of(" ") == ZoneInfo("UTC")
    assert zone_of(" Europe/Berlin ") == BERLIN
