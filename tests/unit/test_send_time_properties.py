"""Property: whatever users do with their quiet hours, digest times, pauses and time zones
while the clock runs (across a change of the clocks), no reminder is delivered inside a
quiet window or while its recipient is paused, none is lost and none is sent twice, alone or
in a digest.

SQLite, through the real scan, relay and re-check with a clock moved by hand, from a migrated
template file copied for each example. The expectations are this file's own: a delivery is
checked against the recipient's preferences and zone as the test set them at the instant it
went out, by reading that instant on the user's local clock; nothing here asks the service's
policy code what it would do.

Tasks are due more than a day after they are added, under the built-in rule (one reminder
24 hours before), and quiet windows are at most twelve hours long: no reminder is legitimately
expired by a hold that lasts past its due time, so every one whose recipient was not paused
must arrive.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select, update

from outbox.channels.base import Message
from outbox.table import ACTIVE, OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker import migrate
from worker.bootstrap import Services
from worker.db import make_engine
from worker.reminders import preference_store
from worker.reminders.preferences import PreferenceEdit
from worker.reminders.schema import User

USERS = (1, 2)
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC")
LEAD = timedelta(hours=24)
#: Instants at which a clock changes: each example starts some hours before one of them.
CHANGES = (
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Berlin falls back
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # New York falls back
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Berlin springs forward
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York springs forward
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe springs forward half an hour
)
#: Why the service may expire a reminder or digest: its recipient's pause.
PAUSE_REASONS = ("its moment fell in the recipient's pause", "the recipient is paused")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_EVENTS = 400
TASKS_APART = timedelta(minutes=10)


# --- the steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AddTask:
    owner: int
    ahead: timedelta  # the first due this long after now
    count: int = 1  # tasks, due ten minutes apart


@dataclass(frozen=True)
class Quiet:
    user: int
    start: time | None  # None: cleared
    end: time = time(0)
    days: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Digest:
    user: int
    at: time | None  # None: cleared
    workdays: bool = False


@dataclass(frozen=True)
class Pause:
    user: int
    days: int | None  # until that many local days after today; None: cleared


@dataclass(frozen=True)
class Zone:
    user: int
    name: str


@dataclass(frozen=True)
class Advance:
    by: timedelta


Step = AddTask | Quiet | Digest | Pause | Zone | Advance

users = st.sampled_from(USERS)
half_hours = st.integers(0, 47).map(lambda n: time(n // 2, 30 * (n % 2)))


@st.composite
def quiet_steps(draw: st.DrawFn) -> Quiet:
    user = draw(users)
    if draw(st.integers(0, 5)) == 0:
        return Quiet(user, None)
    start = draw(half_hours)
    length = draw(st.integers(1, 24))  # half hours: at most twelve hours
    end_minutes = (start.hour * 60 + start.minute + 30 * length) % (24 * 60)
    end = time(end_minutes // 60, end_minutes % 60)
    days = draw(st.none() | st.sets(st.integers(0, 6), min_size=1, max_size=6).map(sorted))
    return Quiet(user, start, end, None if days is None else tuple(days))


steps: st.SearchStrategy[Step] = st.one_of(
    st.builds(
        AddTask,
        users,
        st.integers(25 * 60, 40 * 60).map(lambda m: timedelta(minutes=m)),
        st.integers(1, 6),
    ),
    quiet_steps(),
    st.builds(Digest, users, st.none() | half_hours, st.booleans()),
    st.builds(Pause, users, st.none() | st.integers(1, 2)),
    st.builds(Zone, users, st.sampled_from(ZONES)),
    st.builds(Advance, st.integers(10, 14 * 60).map(lambda m: timedelta(minutes=m))),
)


# --- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Prefs:
    """One user's preferences and zone, as this test set them."""

    zone: str = "UTC"
    quiet: Quiet | None = None
    pause_until: date | None = None


def local(instant: datetime, prefs: Prefs) -> datetime:
    """``instant`` as the user's wall clock reads it (naive)."""
    return instant.astimezone(ZoneInfo(prefs.zone)).replace(tzinfo=None)


def inside_quiet(instant: datetime, prefs: Prefs) -> bool:
    """Whether the user's clock at ``instant`` reads a time inside one of their windows."""
    quiet = prefs.quiet
    if quiet is None or quiet.start is None:
        return False
    reading = local(instant, prefs)
    now = reading.time()
    today, yesterday = reading.weekday(), (reading.weekday() - 1) % 7

    def starts(weekday: int) -> bool:
        return quiet.days is None or weekday in quiet.days

    if quiet.start < quiet.end:
        return starts(today) and quiet.start <= now < quiet.end
    return (starts(today) and now >= quiet.start) or (starts(yesterday) and now < quiet.end)


def paused_at(instant: datetime, prefs: Prefs) -> bool:
    """Whether the user's local date at ``instant`` is before their pause date."""
    return prefs.pause_until is not None and local(instant, prefs).date() < prefs.pause_until


@dataclass
class World:
    """The example's services and what the test knows: preferences, tasks, deliveries."""

    services: Services
    clock: ManualClock
    channel: RecordingChannel
    prefs: dict[int, Prefs] = field(default_factory=lambda: {u: Prefs() for u in USERS})
    moments: dict[int, datetime] = field(default_factory=dict)  # by task
    owners: dict[int, int] = field(default_factory=dict)  # by task
    delivered: Counter[str] = field(default_factory=Counter)  # reminder keys, alone or listed
    digests_sent: set[str] = field(default_factory=set)
    pause_expired: set[str] = field(default_factory=set)  # keys of rows, checked when expired
    problems: list[str] = field(default_factory=list)

    def user_of(self, message: Message) -> int:
        return int(message.recipient.removeprefix("user").split("@")[0])

    def on_send(self, message: Message) -> None:
        """Each delivery, at the instant it goes out, against the preferences then."""
        now = self.clock.now()
        user = self.user_of(message)
        prefs = self.prefs[user]
        if inside_quiet(now, prefs):
            self.problems.append(f"{message.key} sent at {local(now, prefs)} inside {prefs}")
        if paused_at(now, prefs):
            self.problems.append(f"{message.key} sent at {local(now, prefs)} paused {prefs}")
        if message.key.startswith("digest-"):
            self.digests_sent.add(message.key)
            keys = [key for line in message.document["reminders"] for key in line["keys"]]
            self.delivered.update(keys)
        else:
            self.delivered[message.key] += 1

    def tick(self) -> None:
        """Scan and relay at the clock's time; check each row the relay expired then."""
        self.services.scan()
        self.services.relay().relay_until_idle()
        now = self.clock.now()
        with self.services.session_factory() as session:
            expired = session.execute(
                select(
                    OutboxRow.idempotency_key,
                    OutboxRow.kind,
                    OutboxRow.subject_id,
                    OutboxRow.subject_at,
                    OutboxRow.last_error,
                ).where(OutboxRow.status == Status.EXPIRED, OutboxRow.updated_at == now)
            ).all()
        for key, kind, subject, subject_at, reason in expired:
            if key in self.pause_expired:
                continue
            if kind == "digest":
                assert subject_at is not None  # a digest's slot
                user, moment = subject, subject_at
            else:
                user, moment = self.owners[subject], self.moments[subject]
            prefs = self.prefs[user]
            if reason not in PAUSE_REASONS or not (
                paused_at(moment, prefs) or paused_at(now, prefs)
            ):
                self.problems.append(f"{key} expired at {now}: {reason!r}, {prefs}")
            self.pause_expired.add(key)

    def next_event(self) -> datetime | None:
        """The next instant anything is due: a waiting row, or a task's moment."""
        now = self.clock.now()
        with self.services.session_factory() as session:
            waiting = session.scalar(
                select(func.min(OutboxRow.available_at)).where(OutboxRow.status.in_(ACTIVE))
            )
        future = [m for m in self.moments.values() if m > now]
        candidates = [*future, *([] if waiting is None else [waiting])]
        return None if not candidates else max(min(candidates), now + timedelta(seconds=1))

    def run_until(self, target: datetime | None) -> None:
        """Move the clock event by event to ``target`` (None: until nothing is left)."""
        for _ in range(MAX_EVENTS):
            upcoming = self.next_event()
            if upcoming is None or (target is not None and upcoming > target):
                if target is not None:
                    self.clock.set(target)
                    self.tick()
                return
            self.clock.set(upcoming)
            self.tick()
        raise AssertionError("the outbox never drained")


def apply(world: World, step: Step, next_task: int) -> int:
    """Play one step; return the next task id."""
    services, now = world.services, world.clock.now()
    if isinstance(step, AddTask):
        for n in range(step.count):
            due = now + step.ahead + n * TASKS_APART
            add_task(services, next_task, step.owner, due, title=f"task {next_task}")
            world.moments[next_task], world.owners[next_task] = due - LEAD, step.owner
            next_task += 1
        return next_task
    if isinstance(step, Advance):
        world.run_until(now + step.by)
        return next_task
    if isinstance(step, Zone):
        with services.session_factory.begin() as session:
            session.execute(update(User).where(User.id == step.user).values(timezone=step.name))
        world.prefs[step.user] = replace(world.prefs[step.user], zone=step.name)
        return next_task
    prefs = world.prefs[step.user]
    edit: PreferenceEdit
    if isinstance(step, Quiet):
        if step.start is None:
            edit = PreferenceEdit(quiet="off")
        else:
            days = "" if step.days is None else ",".join(WEEKDAYS[d] for d in step.days)
            window = f"{step.start:%H:%M}-{step.end:%H:%M}"
            edit = PreferenceEdit(quiet=window, quiet_days=days or "off")
        world.prefs[step.user] = replace(prefs, quiet=None if step.start is None else step)
    elif isinstance(step, Digest):
        digest = "off" if step.at is None else f"{step.at:%H:%M}"
        edit = PreferenceEdit(digest=digest, digest_workdays=step.workdays)
    else:
        until = None if step.days is None else local(now, prefs).date() + timedelta(step.days)
        edit = PreferenceEdit(pause_until="off" if until is None else until.isoformat())
        world.prefs[step.user] = replace(prefs, pause_until=until)
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(session, services.host, step.user, edit, now=now)
    return next_task


# --- the property --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """A migrated SQLite file, the same for every example."""
    directory = Path(tempfile.mkdtemp(prefix="send-time-properties-"))
    engine = make_engine(f"sqlite:///{directory}/template.db")
    migrate.upgrade(engine)
    engine.dispose()
    yield directory / "template.db"
    shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def fresh(template: Path) -> Iterator[Engine]:
    directory = Path(tempfile.mkdtemp(prefix="send-time-example-"))
    try:
        shutil.copy(template, directory / "reminders.db")
        engine = make_engine(f"sqlite:///{directory}/reminders.db")
        yield engine
        engine.dispose()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@given(
    change=st.sampled_from(CHANGES),
    hours_before=st.integers(2, 30),
    zones=st.tuples(st.sampled_from(ZONES), st.sampled_from(ZONES)),
    history=st.lists(steps, min_size=3, max_size=14),
)
@example(  # a burst: five of user 1's reminders held by one night, user 2's in a digest
    change=CHANGES[0],
    hours_before=30,
    zones=("Europe/Berlin", "America/New_York"),
    history=[
        Quiet(1, time(22, 0), time(7, 0)),
        Digest(2, time(8, 0)),
        AddTask(1, timedelta(hours=52), 5),  # moments from 01:00 local, in the window
        AddTask(2, timedelta(hours=30), 3),
        Advance(timedelta(hours=14)),
    ],
)
@settings(
    max_examples=35,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_reminder_is_sent_in_quiet_hours_or_a_pause_lost_or_sent_twice(
    template: Path,
    change: datetime,
    hours_before: int,
    zones: tuple[str, str],
    history: list[Step],
) -> None:
    clock = ManualClock(change - timedelta(hours=hours_before))
    channel = RecordingChannel()
    with fresh(template) as engine:
        services = make_services(engine, clock, channel)
        world = World(services, clock, channel)
        channel.on_send = world.on_send
        for user, zone in zip(USERS, zones, strict=True):
            add_user(services, user, email=f"user{user}@example.com", timezone=zone)
            world.prefs[user] = Prefs(zone=zone)
        next_task = 1
        for step in [*history, AddTask(1, timedelta(hours=26))]:
            note(f"{clock.now().isoformat()}: {step}")
            next_task = apply(world, step, next_task)
        world.run_until(None)
        assert world.problems == []
        outcome = settled(services)
    planned = {task for _, task, _, _ in outcome}
    assert planned == set(world.moments), "a task's reminder was never planned"
    for key, _task, status, reason in outcome:
        sent = world.delivered[key]
        assert sent <= 1, f"{key} delivered {sent} times"
        if sent:
            continue
        if key in world.pause_expired:
            continue
        digest = (reason or "").removeprefix("in digest ")
        assert status == Status.CANCELLED and digest in world.pause_expired, (
            f"{key} lost: {status} {reason!r}"
        )
    assert all(n == 1 for n in world.delivered.values()), world.delivered


def settled(services: Services) -> list[tuple[str, int, str, str | None]]:
    """(key, task, status, last error) of every reminder row, none still live."""
    with services.session_factory() as session:
        rows: list[Any] = list(
            session.execute(
                select(
                    OutboxRow.idempotency_key,
                    OutboxRow.subject_id,
                    OutboxRow.status,
                    OutboxRow.last_error,
                ).where(OutboxRow.kind != "digest")
            )
        )
    assert not [row for row in rows if row.status in ACTIVE], rows
    return [tuple(row) for row in rows]
