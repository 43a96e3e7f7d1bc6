"""An all-day task's reminder moment: the relay's re-check (Python) and the planner
(PostgreSQL's ``AT TIME ZONE``) give the same instant, also where the wall time lands in an
hour the clock skips or repeats."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import NamedTuple

import pytest
from sqlalchemy import Date, Integer, String, Time, column, select, values

from tests.conftest import database_from
from worker.db import make_engine
from worker.reminders import recheck
from worker.reminders.burst import Live
from worker.reminders.due_time import DateDue
from worker.reminders.render import OwnerFacts

pytestmark = pytest.mark.postgres

DAY = 86400
#: Lead times: a day, two days, an hour, at the due time, and a nudge a day after.
OFFSETS = [DAY, 2 * DAY, 3600, 0, -DAY]


class Change(NamedTuple):
    """A day a zone's clock changes, and times of day in and next to the hour it skips or
    repeats."""

    zone: str
    day: date
    times: tuple[time, ...]


CHANGES = [
    # Clocks skip 02:00-03:00, then repeat 02:00-03:00.
    Change("Europe/Berlin", date(2026, 3, 29), (time(2, 30), time(3, 30), time(1, 30))),
    Change("Europe/Berlin", date(2026, 10, 25), (time(2, 30), time(3, 30), time(1, 30))),
    # Clocks skip 02:00-03:00, then repeat 01:00-02:00.
    Change("America/New_York", date(2026, 3, 8), (time(2, 30), time(3, 30), time(1, 30))),
    Change("America/New_York", date(2026, 11, 1), (time(1, 30), time(2, 30), time(0, 30))),
    # Half an hour: clocks repeat 01:30-02:00 (April), then skip 02:00-02:30 (October).
    Change("Australia/Lord_Howe", date(2026, 4, 5), (time(1, 45), time(2, 15), time(1, 15))),
    Change("Australia/Lord_Howe", date(2026, 10, 4), (time(2, 15), time(2, 45), time(1, 45))),
]

CASES = [
    pytest.param(
        change.zone,
        change.day + timedelta(days=later),
        at,
        offset,
        id=f"{change.zone}-{change.day + timedelta(days=later)}-{at:%H%M}-{offset}",
    )
    for change in CHANGES
    for later in (0, 1, 2)  # due that day, or a lead of a day or two before lands on it
    for at in (*change.times, time(9, 0))
    for offset in OFFSETS
]


Planned = dict[tuple[str, date, time, int], tuple[datetime, datetime]]


@pytest.fixture(scope="module")
def planned(postgres_template: str) -> Iterator[Planned]:
    """For every case, the due moment and the reminder's moment the planner's SQL gives
    (`DateDue.instant`, `DateDue.moment`), read from PostgreSQL in one query."""
    kind = DateDue()
    cases = values(
        column("zone", String()),
        column("due", Date()),
        column("at", Time()),
        column("offset", Integer()),
        name="cases",
    ).data([tuple(case.values) for case in CASES])
    c = cases.c
    query = select(
        c.zone,
        c.due,
        c.at,
        c.offset,
        kind.instant(c.due, c.zone, c.at),
        kind.moment(c.due, c.zone, c.at, c.offset),
    )
    with database_from(postgres_template) as url:
        engine = make_engine(url)
        with engine.connect() as connection:
            found = connection.execute(query).all()
        engine.dispose()
    yield {
        (zone, due, at, offset): (due_at, moment) for zone, due, at, offset, due_at, moment in found
    }


@pytest.mark.parametrize(("zone", "due", "at", "offset"), CASES)
def test_the_recheck_places_an_all_day_moment_where_the_planner_does(
    planned: Planned, zone: str, due: date, at: time, offset: int
) -> None:
    """For an all-day task due on ``due`` at ``at`` local time, ``offset`` seconds before on
    the wall clock, the re-check's moment is the planner's, to the second."""
    due_at, moment = planned[zone, due, at, offset]
    row = Live(1, "k", "reminder", 1, due_at, None, offset)
    user = OwnerFacts(1, "ada@example.com", zone, True)
    assert recheck._moment(row, user, 0, all_day_at=at) == moment
