"""Time zones whose clocks skip and repeat, their changes, and instants near them, for the
property tests of the local-time policies (quiet hours, digest slots, pauses)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

#: Zones with one-hour, half-hour and two-hour changes, changes at midnight, a skipped date,
#: a negative DST, and zones that never change.
ZONE_NAMES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute changes
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "America/Santiago",  # changes at midnight
    "America/Havana",  # changes at midnight
    "Asia/Beirut",  # changes at midnight
    "Europe/Dublin",  # negative DST in the tz database
    "Antarctica/Troll",  # a two-hour change
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kolkata",  # no change
    "UTC",
)
YEARS = (2010, 2030)


def zone(name: str) -> ZoneInfo:
    """The zone of that name."""
    return ZoneInfo(name)


@cache
def changes(name: str) -> tuple[datetime, ...]:
    """The instants (aware UTC) the zone's offset changes within `YEARS`, to the second."""
    tz = ZoneInfo(name)
    found: list[datetime] = []
    day = datetime(YEARS[0], 1, 1, tzinfo=UTC)
    end = datetime(YEARS[1] + 1, 1, 1, tzinfo=UTC)
    step = timedelta(hours=6)
    while day < end:
        following = day + step
        if day.astimezone(tz).utcoffset() != following.astimezone(tz).utcoffset():
            before, after = day, following
            while after - before > timedelta(seconds=1):
                middle = before + (after - before) / 2
                if middle.astimezone(tz).utcoffset() == before.astimezone(tz).utcoffset():
                    before = middle
                else:
                    after = middle
            found.append(after.replace(microsecond=0))
        day = following
    return tuple(found)


def steady(moment: datetime, tz: ZoneInfo, margin: timedelta = timedelta(days=2)) -> bool:
    """Whether the zone's offset stays the same from ``margin`` before ``moment`` to after it."""
    offset = moment.astimezone(tz).utcoffset()
    return all(
        (moment + step * margin / 8).astimezone(tz).utcoffset() == offset for step in range(-8, 9)
    )


ZONES = st.sampled_from(ZONE_NAMES)
#: Whole-minute times, most of them where the clocks of `ZONE_NAMES` change.
TIMES = st.one_of(
    st.sampled_from([time(h, m) for h in (0, 1, 2, 3, 22, 23) for m in (0, 15, 30, 45)]),
    st.builds(time, st.integers(0, 23), st.integers(0, 59)),
)
DAYS = st.one_of(
    st.none(),
    st.frozensets(st.integers(0, 6), min_size=1, max_size=6),
)


@st.composite
def zone_and_moment(draw: st.DrawFn) -> tuple[ZoneInfo, datetime]:
    """A zone and an instant (aware UTC, whole seconds), mostly within a day and a half of
    one of the zone's changes of offset."""
    name = draw(ZONES)
    near = changes(name)
    nearby: bool = bool(near) and draw(st.integers(0, 3)) > 0
    if nearby:
        base = draw(st.sampled_from(near))
        moment = base + timedelta(seconds=draw(st.integers(-36 * 3600, 36 * 3600)))
    else:
        moment = draw(
            st.datetimes(
                min_value=datetime(YEARS[0], 1, 3),
                max_value=datetime(YEARS[1], 12, 28),
                timezones=st.just(UTC),
            )
        ).replace(microsecond=0)
    return ZoneInfo(name), moment
