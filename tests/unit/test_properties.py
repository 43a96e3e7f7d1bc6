"""Property-based tests of the scheduling rules: scan, relay and what the host application does.

Hypothesis writes arbitrary histories — tasks created, due dates moved, tasks completed or
deleted, time moving on, scans, relay runs with transient failures — and runs them on SQLite
with the plain functions (`Services.scan`, `Relay.relay_until_idle`), a manual clock and a
channel that checks every delivery against a model of what the host application wrote. The
rules, after a final scan at time T and relay runs until nothing is left:

1. every open task of an opted-in owner whose current due date lies in (T, T + lookahead] has
   exactly one delivered reminder for that due date;
2. no key is ever delivered twice (nothing dies in these runs);
3. every delivery, when it happens, is for a task that exists, is open, belongs to an opted-in
   owner and has that due date now, and that due date was in the window at some scan while
   it was the task's — a reminder for a due date that was moved *after* its delivery is
   legitimate, one for a completed task or a stale date never is;
4. after every scan at most one reminder per task is waiting.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update

from outbox.channels.base import Delivery, Message
from outbox.retry import RetryPolicy
from outbox.table import WAITING, OutboxRow, Status
from tests.support.clock import T0, ManualClock
from tests.support.db import add_task, add_user, make_services
from worker import migrate
from worker.bootstrap import Services
from worker.db import make_engine
from worker.reminders.keys import reminder_key
from worker.reminders.schema import Task, User

LOOKAHEAD = timedelta(hours=24)
OWNERS = {1: True, 2: True, 3: False}  # owner id -> notifications enabled at start
MAX_ATTEMPTS = 100  # transient failures must never make a row dead in these histories


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """A migrated SQLite file that each example copies (migrating each time would be slow)."""
    directory = Path(tempfile.mkdtemp(prefix="reminders-properties-"))
    engine = make_engine(f"sqlite:///{directory}/template.db")
    migrate.upgrade(engine)
    engine.dispose()
    yield directory / "template.db"
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

    def in_window(self, task: Modelled, now: datetime) -> bool:
        """Open, owner opted in, due in (now, now + lookahead]."""
        return (
            not task.deleted
            and not task.completed
            and self.enabled[task.owner]
            and task.due is not None
            and now < task.due <= now + LOOKAHEAD
        )

    def scanned(self, now: datetime) -> None:
        """Remember which (task, due date) pairs a scan at ``now`` may queue."""
        for task_id, task in self.tasks.items():
            if self.in_window(task, now):
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

# Minutes from now: mostly inside the lookahead, sometimes past, beyond it, or undated.
offsets = st.one_of(
    st.integers(min_value=1, max_value=24 * 60),
    st.integers(min_value=-120, max_value=30 * 60),
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
    """One history played against a fresh copy of the template database."""

    def __init__(self, template: Path, *, fresh_dates: bool) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="reminders-example-"))
        shutil.copy(template, self.directory / "reminders.db")
        self.engine = make_engine(f"sqlite:///{self.directory}/reminders.db")
        self.clock = ManualClock(T0)
        self.world = World()
        self.channel = CheckingChannel(self.world)
        self.services: Services = make_services(
            self.engine, self.clock, self.channel,
            lookahead=LOOKAHEAD, max_attempts=MAX_ATTEMPTS,
        )  # fmt: skip
        self.fresh_dates = fresh_dates
        self.rng = random.Random(0)  # the retry jitter, fixed so that examples replay
        for owner, enabled in OWNERS.items():
            add_user(self.services, owner, enabled=enabled)

    def close(self) -> None:
        """Drop the copy."""
        self.engine.dispose()
        shutil.rmtree(self.directory, ignore_errors=True)

    # the host application

    def due(self, task: Modelled | None, minutes: int | None) -> datetime | None:
        """A due date ``minutes`` from now; with fresh dates, never one the task had before.

        Fresh dates differ by whole milliseconds: SQLite compares instants to the millisecond
        (see `test_a_due_date_moved_by_less_than_a_millisecond_supersedes_the_old_reminder`).
        """
        if minutes is None:
            return None
        when = self.clock.now() + timedelta(minutes=minutes)
        while self.fresh_dates and task is not None and when in task.history:
            when += timedelta(milliseconds=1)
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
        add_task(self.services, task_id, owner, when)
        self.world.tasks[task_id] = Modelled(owner, when, history={when})

    def do_move(self, ref: int, minutes: int | None) -> None:
        task_id = self.pick(ref)
        if task_id is None or self.world.tasks[task_id].deleted:
            return
        task = self.world.tasks[task_id]
        task.due = self.due(task, minutes)
        task.history.add(task.due)
        self.write(update(Task).where(Task.id == task_id).values(due_date=task.due))

    def do_complete(self, ref: int) -> None:
        task_id = self.pick(ref)
        if task_id is None or self.world.tasks[task_id].deleted:
            return
        self.world.tasks[task_id].completed = True
        values = {"completed_at": self.clock.now()}
        self.write(update(Task).where(Task.id == task_id).values(**values))

    def do_reopen(self, ref: int) -> None:
        task_id = self.pick(ref)
        if task_id is None or self.world.tasks[task_id].deleted:
            return
        self.world.tasks[task_id].completed = False
        self.write(update(Task).where(Task.id == task_id).values(completed_at=None))

    def do_delete(self, ref: int) -> None:
        task_id = self.pick(ref)
        if task_id is None or self.world.tasks[task_id].deleted:
            return
        self.world.tasks[task_id].deleted = True
        self.write(delete(Task).where(Task.id == task_id))

    def do_toggle(self, owner: int) -> None:
        self.world.enabled[owner] = not self.world.enabled[owner]
        on = self.world.enabled[owner]
        self.write(update(User).where(User.id == owner).values(notifications_enabled=on))

    def write(self, statement: Any) -> None:
        with self.services.session_factory.begin() as session:
            session.execute(statement)

    # time and the worker

    def do_advance(self, minutes: int) -> None:
        self.clock.advance(timedelta(minutes=minutes))

    def do_scan(self) -> None:
        self.world.scanned(self.clock.now())
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


def play(template: Path, ops: list[tuple[Any, ...]], *, fresh_dates: bool) -> None:
    """Play ``ops``, then the final scan and relay runs, and check the rules."""
    run = Run(template, fresh_dates=fresh_dates)
    try:
        for op in ops:
            run.apply(op)
        final = run.finish()
        check(run, final)
    finally:
        run.close()


PROPERTY = settings(max_examples=100, deadline=None, database=None)


@PROPERTY
@given(ops=histories)
@example(ops=[("create", 1, 60), ("scan",), ("move", 0, 120), ("relay", 0), ("scan",)])
@example(ops=[("create", 1, 60), ("scan",), ("move", 0, 120), ("scan",), ("relay", 0)])
@example(ops=[("create", 1, 60), ("scan",), ("relay", 1), ("complete", 0), ("advance", 30)])
@example(ops=[("create", 1, 24 * 60), ("advance", 1), ("scan",), ("create", 2, 0), ("scan",)])
def test_each_open_task_due_in_the_window_gets_one_reminder_for_its_current_due_date(
    template: Path, ops: list[tuple[Any, ...]]
) -> None:
    """Any history of creations, moves (to dates the task never had), completions, deletions,
    scans and relay runs ends with one delivery per open in-window task and no other."""
    play(template, ops, fresh_dates=True)


@PROPERTY
@given(ops=histories_with_undo)
@example(ops=[("create", 1, 60), ("scan",), ("complete", 0), ("relay", 0), ("reopen", 0)])
def test_undoing_a_change_keeps_the_rules(template: Path, ops: list[tuple[Any, ...]]) -> None:
    """The same rules hold when the host also reopens tasks, moves a due date back to one the
    task had, and owners turn notifications off and on."""
    play(template, ops, fresh_dates=False)


def test_a_due_date_moved_by_less_than_a_millisecond_supersedes_the_old_reminder(
    template: Path,
) -> None:
    """On SQLite, a scan after a due date moved by 1 µs leaves one reminder waiting, not two."""
    run = Run(template, fresh_dates=False)
    try:
        run.apply(("create", 1, 1))
        run.do_scan()
        task = run.world.tasks[1]
        assert task.due is not None
        task.due += timedelta(microseconds=1)
        run.write(update(Task).where(Task.id == 1).values(due_date=task.due))
        run.do_scan()  # rule 4 fails here: the old row is still waiting
    finally:
        run.close()
