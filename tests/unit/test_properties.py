"""Property-based tests of the scheduling rules: scan, relay and what the host application does.

Hypothesis writes arbitrary histories — tasks created, due dates moved, tasks completed or
deleted, time moving on, scans, relay runs with transient failures — and runs them with the
plain functions (`Services.scan`, `Relay.relay_until_idle`), a manual clock and a channel
that checks every delivery against a model of what the host application wrote. They run on
three hosts (`HOSTS`): the reference schema on SQLite; the mapped to-do app on SQLite (UTC
deadlines: SQLite has no zones); and on PostgreSQL the mapped to-do app whose deadlines are
Berlin wall time, from a start just before its clocks go back or forward or from an ordinary
day (due dates in the hour the clocks repeat are left out: see `Run.due`). The rules, after
a final scan at time T and relay runs until nothing is left:

1. every open task of an opted-in owner whose current due date lies in (T, T + lookahead] has
   exactly one delivered reminder for that due date;
2. no key is ever delivered twice (nothing dies in these runs);
3. every delivery, when it happens, is for a task that exists, is open, belongs to an opted-in
   owner and has that due date now, and that due date was in the window at some scan while
   it was the task's (the lookahead past the scan's horizon: a reminder is planned up to the
   horizon, to go out at due - lookahead) — a reminder for a due date that was moved *after*
   its delivery is legitimate, one for a completed task or a stale date never is;
4. after every scan at most one reminder per task is waiting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, func, select, text

from outbox.channels.base import Delivery, Message
from outbox.retry import RetryPolicy
from outbox.table import WAITING, OutboxRow, Status
from tests.conftest import database_from
from tests.support.clock import T0, ManualClock
from tests.support.db import make_services
from tests.support.hosts import REFERENCE_APP, TODO_APP, TODO_APP_BERLIN, HostApp
from worker import migrate
from worker.bootstrap import Services, plan_ahead
from worker.db import make_engine
from worker.reminders.keys import reminder_key

LOOKAHEAD = timedelta(hours=24)
OWNERS = {1: True, 2: True, 3: False}  # owner id -> notifications enabled at start
MAX_ATTEMPTS = 100  # transient failures must never make a row dead in these histories
#: Where a history starts: an ordinary day, and a day before Berlin's clocks go back (the
#: night of 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC) and forward (2027-03-28:
#: 02:00 CET becomes 03:00 CEST at 01:00 UTC), so that due dates and windows straddle them.
STARTS = [
    T0,
    datetime(2026, 10, 24, 6, 0, tzinfo=UTC),
    datetime(2027, 3, 27, 6, 0, tzinfo=UTC),
]


class Template(Protocol):
    """A host's migrated database, of which each example gets a fresh state."""

    app: HostApp
    schema_file: str | None

    def fresh(self) -> contextlib.AbstractContextManager[Engine]:
        """An engine on a database holding the host's tables, migrated, with no rows."""
        ...

    def services(self, engine: Engine, clock: ManualClock, channel: CheckingChannel) -> Services:
        """The services of one example on ``engine`` (from `fresh`)."""
        ...


def example_services(
    engine: Engine, schema_file: str | None, clock: ManualClock, channel: CheckingChannel
) -> Services:
    """Services with the example's clock and channel, the lookahead and attempts of the rules."""
    return make_services(
        engine, clock, channel, schema_file=schema_file,
        lookahead=LOOKAHEAD, max_attempts=MAX_ATTEMPTS,
    )  # fmt: skip


@dataclass
class SqliteTemplate:
    """A migrated SQLite file that each example copies (migrating each time would be slow)."""

    app: HostApp
    directory: Path
    schema_file: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        engine = make_engine(f"sqlite:///{self.directory}/template.db")
        self.app.create_tables(engine)
        migrate.upgrade(engine, self.app.mapping(self.directory))
        engine.dispose()
        self.schema_file = self.app.schema_file(self.directory)

    @contextlib.contextmanager
    def fresh(self) -> Iterator[Engine]:
        """A copy of the template file of its own."""
        directory = Path(tempfile.mkdtemp(prefix="reminders-example-"))
        shutil.copy(self.directory / "template.db", directory / "reminders.db")
        engine = make_engine(f"sqlite:///{directory}/reminders.db")
        try:
            yield engine
        finally:
            engine.dispose()
            shutil.rmtree(directory, ignore_errors=True)

    def services(self, engine: Engine, clock: ManualClock, channel: CheckingChannel) -> Services:
        """Services on this example's copy."""
        return example_services(engine, self.schema_file, clock, channel)


@dataclass
class PostgresTemplate:
    """One PostgreSQL database for the module, emptied before each example (copying a
    database for each would take longer than most examples), and the services on it, wired
    once: checking the mapping against the catalogue would too."""

    app: HostApp
    engine: Engine
    schema_file: str | None
    wired: Services | None = None

    def services(self, engine: Engine, clock: ManualClock, channel: CheckingChannel) -> Services:
        """The services wired for the module, with this example's clock and channel."""
        if self.wired is None:
            self.wired = example_services(self.engine, self.schema_file, clock, channel)
        return dataclasses.replace(self.wired, clock=clock, make_channel=lambda: channel)

    @contextlib.contextmanager
    def fresh(self) -> Iterator[Engine]:
        """The module's database, every table emptied but the migration histories."""
        with self.engine.begin() as connection:
            tables = connection.execute(
                text(
                    "SELECT quote_ident(tablename) FROM pg_tables "
                    "WHERE schemaname = current_schema() AND tablename NOT LIKE '%alembic_version'"
                )
            ).scalars()
            connection.execute(text(f"TRUNCATE {', '.join(tables)}"))
        yield self.engine


#: (dialect, host application): the reference schema and the mapped to-do app on SQLite,
#: whose due columns hold instants (UTC); the to-do app with Berlin wall time on PostgreSQL.
HOSTS = [
    pytest.param(("sqlite", REFERENCE_APP), id="sqlite-reference"),
    pytest.param(("sqlite", TODO_APP), id="sqlite-todo_app"),
    pytest.param(
        ("postgresql", TODO_APP_BERLIN), id="postgres-todo_app_berlin", marks=pytest.mark.postgres
    ),
]


@pytest.fixture(scope="module", params=HOSTS)
def template(request: pytest.FixtureRequest) -> Iterator[Template]:
    """The host's migrated database, once per module; each example starts from it empty."""
    dialect, app = request.param
    directory = Path(tempfile.mkdtemp(prefix="reminders-properties-"))
    try:
        if dialect == "sqlite":
            yield SqliteTemplate(app, directory)
        else:
            templates: Callable[[HostApp], str] = request.getfixturevalue("host_templates")
            with database_from(templates(app)) as url:
                engine = make_engine(url)
                yield PostgresTemplate(app, engine, app.schema_file(directory))
                engine.dispose()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- the model -------------------------------------------------------------------------------


@dataclass
class Modelled:
    """A task as the host application last wrote it."""

    owner: int
    due: datetime | None
    completed: bool = False
    deleted: bool = False
    history: set[datetime | None] = field(default_factory=set)


@dataclass
class World:
    """The host application's data as written so far, and what each scan could see."""

    tasks: dict[int, Modelled] = field(default_factory=dict)
    enabled: dict[int, bool] = field(default_factory=lambda: dict(OWNERS))
    eligible_ever: set[str] = field(default_factory=set)
    deliveries: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def in_window(self, task: Modelled, now: datetime, ahead: timedelta = timedelta(0)) -> bool:
        """Open, owner opted in, due in (now, now + lookahead + ahead]."""
        return (
            not task.deleted
            and not task.completed
            and self.enabled[task.owner]
            and task.due is not None
            and now < task.due <= now + LOOKAHEAD + ahead
        )

    def scanned(self, now: datetime, ahead: timedelta) -> None:
        """Remember which (task, due date) pairs a scan at ``now`` may queue: the scan plans
        each reminder moment (due - lookahead) up to its horizon, ``now + ahead``, to be
        sent at that moment."""
        for task_id, task in self.tasks.items():
            if self.in_window(task, now, ahead):
                assert task.due is not None
                self.eligible_ever.add(reminder_key(task_id, task.due))

    def delivered(self, message: Message) -> None:
        """Check one delivery against the host's data at this moment (rule 3)."""
        self.deliveries.append(message.key)
        task_id = int(message.document["task_id"])
        task = self.tasks.get(task_id)
        if task is None or task.deleted:
            self.violations.append(f"{message.key}: the task was deleted")
        elif task.completed:
            self.violations.append(f"{message.key}: the task was completed")
        elif not self.enabled[task.owner]:
            self.violations.append(f"{message.key}: the owner had opted out")
        elif task.due is None or reminder_key(task_id, task.due) != message.key:
            self.violations.append(f"{message.key}: the task is due {task.due} now")
        elif message.key not in self.eligible_ever:
            self.violations.append(f"{message.key}: no scan ever saw it in the window")


@dataclass
class CheckingChannel:
    """A channel that fails the next ``failures`` sends (transiently), then delivers and checks.

    The relay turns an exception from a channel into a retry, so checks are recorded in the
    world, never raised here.
    """

    world: World
    name: str = "checking"
    failures: int = 0

    def send(self, message: Message) -> Delivery:
        """Fail transiently while told to, else deliver and check the delivery."""
        if self.failures:
            self.failures -= 1
            return Delivery.retry("421 scripted transient failure")
        self.world.delivered(message)
        return Delivery.delivered()

    def close(self) -> None:
        """Nothing to close."""


# --- histories -------------------------------------------------------------------------------

# Minutes from now: mostly inside the lookahead, sometimes past, beyond it, or undated; and
# often within two hours of 19 h from now, where the change of offset is from `STARTS`.
offsets = st.one_of(
    st.integers(min_value=1, max_value=24 * 60),
    st.integers(min_value=-120, max_value=30 * 60),
    st.integers(min_value=17 * 60, max_value=21 * 60),
    st.none(),
)
task_ref = st.integers(min_value=0, max_value=99)
creations = st.tuples(st.just("create"), st.sampled_from(sorted(OWNERS)), offsets)
BASE_OPS = [
    creations,
    st.tuples(st.just("move"), task_ref, offsets),
    st.tuples(st.just("complete"), task_ref),
    st.tuples(st.just("delete"), task_ref),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=180)),
    st.tuples(st.just("advance"), st.integers(min_value=181, max_value=26 * 60)),
    st.tuples(st.just("scan")),
    st.tuples(st.just("scan")),  # twice: scans and relays are most of what happens
    st.tuples(st.just("relay"), st.integers(min_value=0, max_value=3)),
    st.tuples(st.just("relay"), st.just(0)),
]
UNDO_OPS = [
    st.tuples(st.just("reopen"), task_ref),
    st.tuples(st.just("toggle"), st.sampled_from(sorted(OWNERS))),
]


def history(steps: list[st.SearchStrategy[tuple[Any, ...]]]) -> st.SearchStrategy[list[Any]]:
    """A few tasks created first, then up to 40 steps of any kind."""
    return st.tuples(
        st.lists(creations, min_size=1, max_size=6), st.lists(st.one_of(*steps), max_size=40)
    ).map(lambda parts: parts[0] + parts[1])


histories = history(BASE_OPS)
histories_with_undo = history(BASE_OPS + UNDO_OPS)


class Run:
    """One history played against a fresh state of the host's database."""

    def __init__(
        self, engine: Engine, template: Template, *, fresh_dates: bool, start: datetime = T0
    ) -> None:
        self.engine = engine
        self.app = template.app
        self.clock = ManualClock(start)
        self.world = World()
        self.channel = CheckingChannel(self.world)
        self.services = template.services(engine, self.clock, self.channel)
        self.fresh_dates = fresh_dates
        self.rng = random.Random(0)  # the retry jitter, fixed so that examples replay
        with self.engine.begin() as connection:
            for owner, enabled in OWNERS.items():
                self.app.add_user(connection, owner, enabled=enabled)

    # the host application

    def due(self, task: Modelled | None, minutes: int | None) -> datetime | None:
        """A due date ``minutes`` from now; with fresh dates, never one the task had before;
        never one the host's column cannot hold unambiguously.

        Fresh dates differ by whole milliseconds: SQLite compares instants to the millisecond
        (see `test_a_due_date_moved_by_less_than_a_millisecond_supersedes_the_old_reminder`).

        A wall-time column cannot hold an instant of the hour repeated when the clocks go
        back: 02:30 that night in Berlin is two instants an hour apart, and the host that
        wrote it has lost which one it meant. The model knows the instant, the worker only
        the wall time, so they would disagree about the key without either being wrong:
        such due dates are moved past the repeated hour (`HostApp.ambiguous`).
        """
        if minutes is None:
            return None
        when = self.clock.now() + timedelta(minutes=minutes)
        while True:
            if self.app.ambiguous(when):
                when += timedelta(hours=2)  # the repeated hour is one hour, twice over
            elif self.fresh_dates and task is not None and when in task.history:
                when += timedelta(milliseconds=1)
            else:
                return when

    def pick(self, ref: int) -> int | None:
        """An existing task (deleted ones included: the host may act on a stale id)."""
        ids = sorted(self.world.tasks)
        return ids[ref % len(ids)] if ids else None

    def apply(self, op: tuple[Any, ...]) -> None:
        """Play one step of the history."""
        kind, *args = op
        getattr(self, "do_" + kind)(*args)

    def do_create(self, owner: int, minutes: int | None) -> None:
        task_id = len(self.world.tasks) + 1
        when = self.due(None, minutes)
        self.write(lambda connection: self.app.add_task(connection, task_id, owner, when))
        self.world.tasks[task_id] = Modelled(owner, when, history={when})

    def do_move(self, ref: int, minutes: int | None) -> None:
        task_id = self.pick(ref)
        if task_id is None or self.world.tasks[task_id].deleted:
            return
        task = self.world.tasks[task_id]
        due = task.due = self.due(task, minutes)
        task.history.add(due)
        self.write(lambda connection: self.app.move(connection, task_id, due))

    def do_complete(self, ref: int) -> None:
        task_id = self.pick(ref)
        if task_id is None or self.world.tasks[task_id].deleted:
            return
        self.world.tasks[task_id].completed = True
        self.write(lambda connection: self.app.complete(connection, task_id))

    def do_reopen(self, ref: int) -> None:
        task_id = self.pick(ref)
        if task_id is None or self.world.tasks[task_id].deleted:
            return
        self.world.tasks[task_id].completed = False
        self.write(lambda connection: self.app.complete(connection, task_id, done=False))

    def do_delete(self, ref: int) -> None:
        task_id = self.pick(ref)
        if task_id is None or self.world.tasks[task_id].deleted:
            return
        self.world.tasks[task_id].deleted = True
        self.write(lambda connection: self.app.delete(connection, task_id))

    def do_toggle(self, owner: int) -> None:
        self.world.enabled[owner] = not self.world.enabled[owner]
        on = self.world.enabled[owner]
        self.write(lambda connection: self.app.opt(connection, owner, on))

    def write(self, change: Callable[[Connection], None]) -> None:
        """Make one change as the host application would, in a transaction of its own."""
        with self.engine.begin() as connection:
            change(connection)

    # time and the worker

    def do_advance(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))

    def do_scan(self) -> None:
        now = self.clock.now()
        self.world.scanned(now, plan_ahead(self.services.settings, now))
        self.services.scan()
        with self.services.session_factory() as session:
            waiting = session.execute(
                select(OutboxRow.subject_id, func.count())
                .where(OutboxRow.status.in_(WAITING))
                .group_by(OutboxRow.subject_id)
                .having(func.count() > 1)
            ).all()
        assert waiting == [], f"more than one reminder waiting for a task (rule 4): {waiting}"

    def do_relay(self, failures: int) -> None:
        self.channel.failures = failures
        relay = self.services.relay()
        base, cap = timedelta(seconds=30), timedelta(hours=1)
        relay.policy = RetryPolicy(MAX_ATTEMPTS, base, cap, self.rng)
        relay.relay_until_idle()
        self.channel.failures = 0

    def finish(self) -> datetime:
        """The final scan, then relay runs (moving time to each retry) until nothing waits."""
        final = self.clock.now()
        self.do_scan()
        for _ in range(1000):
            self.do_relay(0)
            with self.services.session_factory() as session:
                next_at = session.scalar(
                    select(func.min(OutboxRow.available_at)).where(
                        OutboxRow.status.in_((Status.PENDING, Status.FAILED, Status.CLAIMED))
                    )
                )
            if next_at is None:
                return final
            self.clock.set(max(self.clock.now(), next_at))
        raise AssertionError("the outbox never drained")


def check(run: Run, final: datetime) -> None:
    """Rules 1 to 3 after the final scan at ``final`` and the relay runs."""
    world = run.world
    assert world.violations == [], world.violations
    twice = {key: n for key, n in Counter(world.deliveries).items() if n > 1}
    assert twice == {}, f"delivered more than once: {twice}"
    delivered = set(world.deliveries)
    for task_id, task in world.tasks.items():
        if world.in_window(task, final):
            assert task.due is not None
            key = reminder_key(task_id, task.due)
            assert key in delivered, f"task {task_id} due {task.due} was never reminded"
    with run.services.session_factory() as session:
        dead = session.scalars(select(OutboxRow.idempotency_key).where(OutboxRow.status == "dead"))
        assert list(dead) == []


def play(
    template: Template, ops: list[tuple[Any, ...]], *, fresh_dates: bool, start: datetime
) -> None:
    """Play ``ops`` from ``start``, then the final scan and relay runs, and check the rules."""
    with template.fresh() as engine:
        run = Run(engine, template, fresh_dates=fresh_dates, start=start)
        for op in ops:
            run.apply(op)
        final = run.finish()
        check(run, final)


PROPERTY = settings(max_examples=100, deadline=None, database=None)


starts = st.sampled_from(STARTS)


@PROPERTY
@given(ops=histories, start=starts)
@example(ops=[("create", 1, 60), ("scan",), ("move", 0, 120), ("relay", 0), ("scan",)], start=T0)
@example(ops=[("create", 1, 60), ("scan",), ("move", 0, 120), ("scan",), ("relay", 0)], start=T0)
@example(
    ops=[("create", 1, 60), ("scan",), ("relay", 1), ("complete", 0), ("advance", 30)], start=T0
)
@example(
    ops=[("create", 1, 24 * 60), ("advance", 1), ("scan",), ("create", 2, 0), ("scan",)], start=T0
)
# Berlin's clocks going forward: due at 01:59 CET and at 03:01 CEST, two minutes apart.
@example(
    ops=[
        ("create", 1, 19 * 60 - 1),
        ("create", 2, 19 * 60 + 1),
        ("scan",),
        ("relay", 0),
        ("advance", 19 * 60),
        ("scan",),
    ],
    start=STARTS[2],
)
# Going back: due at 01:59 CEST and at 03:01 CET, either side of the repeated hour, one then
# moved into it (and so, by the generator, past it).
@example(
    ops=[
        ("create", 1, 18 * 60 - 1),
        ("create", 2, 20 * 60 + 1),
        ("scan",),
        ("move", 0, 19 * 60 + 30),
        ("scan",),
        ("relay", 0),
    ],
    start=STARTS[1],
)
def test_each_open_task_due_in_the_window_gets_one_reminder_for_its_current_due_date(
    template: Template, ops: list[tuple[Any, ...]], start: datetime
) -> None:
    """Any history of creations, moves (to dates the task never had), completions, deletions,
    scans and relay runs ends with one delivery per open in-window task and no other."""
    play(template, ops, fresh_dates=True, start=start)


@PROPERTY
@given(ops=histories_with_undo, start=starts)
@example(ops=[("create", 1, 60), ("scan",), ("complete", 0), ("relay", 0), ("reopen", 0)], start=T0)
def test_undoing_a_change_keeps_the_rules(
    template: Template, ops: list[tuple[Any, ...]], start: datetime
) -> None:
    """The same rules hold when the host also reopens tasks, moves a due date back to one the
    task had, and owners turn notifications off and on."""
    play(template, ops, fresh_dates=False, start=start)


def test_a_due_date_moved_by_less_than_a_millisecond_supersedes_the_old_reminder(
    template: Template,
) -> None:
    """A scan after a due date moved by 1 µs leaves one reminder waiting, not two, even on
    SQLite, which compares instants to the millisecond."""
    with template.fresh() as engine:
        run = Run(engine, template, fresh_dates=False)
        run.apply(("create", 1, 1))
        run.do_scan()
        task = run.world.tasks[1]
        assert task.due is not None
        due = task.due = task.due + timedelta(microseconds=1)
        run.write(lambda connection: run.app.move(connection, 1, due))
        run.do_scan()  # rule 4 fails here: the old row is still waiting
