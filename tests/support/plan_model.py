"""Histories of rule edits, due moves, completions and recipient changes, played against the
service and against a model of what each reminder should be, for the planning properties.

The model is plain Python and knows nothing of the planner: a reminder is (task, due date,
offset, recipient), its moment is due - offset, and it *stands* in a state of the world when
the task is open with that due date, the user is its owner or listed for it and has
reminders on, and the offset is in the user's rule (their own, else the default, else the
built-in one). Time moves a minute at a time with the service running: at every minute a
scan and then a relay run, as the tick does (every moment here is on a whole minute, so the
relay's wake-up at a moment is the tick's relay run); histories add scans and relay runs of
their own at any point. Changes happen between the minutes: the state at a moment is the
state the tick of that minute sees.

What `Played.check` holds the service to:

1. every reminder that stands at its moment is delivered, at that moment;
2. no reminder is delivered twice;
3. none is delivered before its moment;
4. every delivery is of a reminder that stands when it is sent (none for a task done, moved,
   or a recipient gone), and still useful then (a lead-time reminder before its task's due
   moment, any other within a day of its moment). A reminder that did not stand at its
   moment but stands later (its task reopened, its recipient back) may be sent then, late,
   once: the catch-up sends the latest reminder still useful of a task it plans anew.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from hypothesis import strategies as st
from sqlalchemy import Engine, update

from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.support.db import add_task, add_user
from tests.support.watchers import unwatch, watch, watched_services
from worker.bootstrap import Services
from worker.reminders import rule_store
from worker.reminders.rules import Rule
from worker.reminders.schema import Task, User

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
#: The built-in rule's one lead time (``REMINDERS_LOOKAHEAD``), short so that its moments
#: fall inside the histories.
LOOKAHEAD = timedelta(minutes=15)
USERS = (1, 2, 3)
#: Each task's owner (owners do not change).
OWNERS: Mapping[int, int] = {1: 1, 2: 2}
#: Due dates are whole minutes after the start, up to this many.
LAST_DUE_MINUTE = 30

_KEY = re.compile(r"due_soon-(\d{8}T\d{6})Z-(\d+)(?:-o(-?\d+))?(?:-u(\d+))?")


class Reminder(NamedTuple):
    """One reminder: of ``task`` due at ``due``, ``offset`` seconds before it, for ``user``."""

    task: int
    due: datetime
    offset: int
    user: int

    @property
    def moment(self) -> datetime:
        return self.due - timedelta(seconds=self.offset)

    @property
    def useful_until(self) -> datetime:
        """The latest a reminder can still help: a lead time's until the task is due, the
        others a day after their moment."""
        return self.due if self.offset > 0 else self.moment + DAY


@dataclass(frozen=True)
class ModelRule:
    """A rule as the model sees it: lead times and nudges, in seconds."""

    leads: frozenset[int]
    every: int | None = None
    count: int = 0

    @property
    def offsets(self) -> frozenset[int]:
        nudges = (
            set() if self.every is None else {-k * self.every for k in range(1, self.count + 1)}
        )
        return self.leads | nudges


BUILTIN = ModelRule(frozenset({int(LOOKAHEAD.total_seconds())}))


@dataclass(frozen=True)
class World:
    """What the host application and the rules say at one instant."""

    due: Mapping[int, datetime]
    done: frozenset[int] = frozenset()
    watchers: frozenset[tuple[int, int]] = frozenset()
    opted_out: frozenset[int] = frozenset()
    rules: Mapping[int | None, ModelRule] = field(default_factory=dict)

    def rule_of(self, user: int) -> ModelRule:
        return self.rules.get(user) or self.rules.get(None) or BUILTIN

    def recipients(self, task: int) -> set[int]:
        listed = {user for listed_task, user in self.watchers if listed_task == task}
        return (listed | {OWNERS[task]}) - self.opted_out

    def stands(self, reminder: Reminder) -> bool:
        task = reminder.task
        return (
            task not in self.done
            and self.due[task] == reminder.due
            and reminder.user in self.recipients(task)
            and reminder.offset in self.rule_of(reminder.user).offsets
        )

    def standing_at(self, moment: datetime) -> set[Reminder]:
        """The reminders that stand now and whose moment is ``moment``."""
        found = set()
        for task, due in self.due.items():
            if task in self.done:
                continue
            for user in self.recipients(task):
                for offset in self.rule_of(user).offsets:
                    reminder = Reminder(task, due, offset, user)
                    if reminder.moment == moment:
                        found.add(reminder)
        return found


# The steps of a history, as tuples: ("rule", user, leads in minutes, every in minutes or
# None, count), ("clear rule", user), ("move", task, due minute), ("complete", task),
# ("reopen", task), ("watch", task, user), ("unwatch", task, user), ("opt", user, on),
# ("advance", minutes), ("scan",), ("relay",).
Step = tuple[Any, ...]

_rule_users = st.sampled_from([None, *USERS])
_tasks = st.sampled_from(sorted(OWNERS))
_users = st.sampled_from(USERS)
_leads = st.frozensets(st.sampled_from([0, 1, 2, 3, 5, 10]), max_size=3)
_nudges = st.one_of(
    st.tuples(st.none(), st.just(0)),
    st.tuples(st.sampled_from([2, 3, 5]), st.integers(1, 3)),
)

steps: st.SearchStrategy[Step] = st.one_of(
    st.builds(lambda u, leads, n: ("rule", u, leads, *n), _rule_users, _leads, _nudges).filter(
        lambda s: bool(s[2]) or s[3] is not None  # a rule reminds of something
    ),
    st.tuples(st.just("clear rule"), _rule_users),
    st.tuples(st.just("move"), _tasks, st.integers(0, LAST_DUE_MINUTE)),
    st.tuples(st.just("complete"), _tasks),
    st.tuples(st.just("reopen"), _tasks),
    st.tuples(st.just("watch"), _tasks, _users),
    st.tuples(st.just("unwatch"), _tasks, _users),
    st.tuples(st.just("opt"), _users, st.booleans()),
    # Time passes in two of every twelve steps, so that histories reach their moments.
    st.tuples(st.just("advance"), st.integers(1, 8)),
    st.tuples(st.just("advance"), st.integers(1, 8)),
    st.tuples(st.just("scan")),
    st.tuples(st.just("relay")),
)
histories = st.lists(steps, min_size=4, max_size=30)
first_dues = st.tuples(st.integers(0, LAST_DUE_MINUTE), st.integers(0, LAST_DUE_MINUTE))

#: A watcher's reminder planned inside the horizon, cancelled by a re-plan of its task while
#: the watcher was gone, the watcher back before its moment (task 1 due 12 minutes after the
#: start): the window must plan it again.
BACK_BEFORE_ITS_MOMENT: list[Step] = [
    ("watch", 1, 2),
    ("rule", None, frozenset({10}), None, 0),
    ("scan",),
    ("unwatch", 1, 2),
    ("rule", 1, frozenset({10}), None, 0),
    ("scan",),
    ("advance", 1),
    ("watch", 1, 2),
]


@dataclass
class Delivery:
    """A message the channel was given: its reminder, when, and the world then."""

    reminder: Reminder
    at: datetime
    world: World


def read_key(key: str) -> Reminder:
    """The reminder a delivered key names, as the documented key format spells it:
    ``due_soon-<due>Z-<task>[-o<offset>][-u<user>]``, no offset for the built-in lead time,
    no user for the owner."""
    found = _KEY.fullmatch(key)
    assert found is not None, f"not a reminder key: {key}"
    stamp, task_text, offset_text, user_text = found.groups()
    due = datetime.strptime(stamp + "+0000", "%Y%m%dT%H%M%S%z")
    task = int(task_text)
    offset = int(LOOKAHEAD.total_seconds()) if offset_text is None else int(offset_text)
    user = OWNERS[task] if user_text is None else int(user_text)
    return Reminder(task, due, offset, user)


def _rule(leads: frozenset[int], every: int | None, count: int) -> tuple[Rule, ModelRule]:
    seconds = frozenset(minutes * 60 for minutes in leads)
    model = ModelRule(seconds, None if every is None else every * 60, count)
    rule = Rule(
        before=tuple(timedelta(minutes=m) for m in leads),
        overdue_every=None if every is None else timedelta(minutes=every),
        overdue_count=count,
    )
    return rule, model


@dataclass
class Played:
    """One history, played: the deliveries and the world at each minute's tick."""

    services: Services
    clock: ManualClock
    channel: RecordingChannel
    world: World
    deliveries: list[Delivery] = field(default_factory=list)
    #: The reminders standing at their moment, each at the tick of that minute.
    owed: dict[Reminder, datetime] = field(default_factory=dict)

    def tick(self) -> None:
        """The service's minute: what stands at this moment is owed; a scan, a relay run."""
        now = self.clock.now()
        for reminder in self.world.standing_at(now):
            self.owed[reminder] = now
        self.services.scan()
        self.relay()

    def relay(self) -> None:
        seen = len(self.channel.sent)
        self.services.relay().relay_until_idle()
        for message in self.channel.sent[seen:]:
            self.deliveries.append(Delivery(read_key(message.key), self.clock.now(), self.world))

    def apply(self, step: Step) -> None:
        kind, *args = step
        world, services, now = self.world, self.services, self.clock.now()
        if kind == "rule":
            user, leads, every, count = args
            rule, model = _rule(leads, every, count)
            with services.session_factory.begin() as session:
                rule_store.set_rule(session, services.host, user, rule, now=now)
            self.world = replace(world, rules={**world.rules, user: model})
        elif kind == "clear rule":
            (user,) = args
            with services.session_factory.begin() as session:
                rule_store.clear_rule(session, services.host, user)
            self.world = replace(world, rules={k: v for k, v in world.rules.items() if k != user})
        elif kind == "move":
            task, minute = args
            due = T0 + minute * MINUTE
            self._tasks(task, due_date=due)
            self.world = replace(world, due={**world.due, task: due})
        elif kind in {"complete", "reopen"}:
            (task,) = args
            done = kind == "complete"
            self._tasks(task, completed_at=now if done else None)
            changed = world.done | {task} if done else world.done - {task}
            self.world = replace(world, done=changed)
        elif kind in {"watch", "unwatch"}:
            pair = (args[0], args[1])
            if kind == "watch" and pair not in world.watchers:
                watch(services, *pair)
                self.world = replace(world, watchers=world.watchers | {pair})
            elif kind == "unwatch" and pair in world.watchers:
                unwatch(services, *pair)
                self.world = replace(world, watchers=world.watchers - {pair})
        elif kind == "opt":
            user, on = args
            with services.session_factory.begin() as session:
                session.execute(
                    update(User).where(User.id == user).values(notifications_enabled=on)
                )
            out = world.opted_out - {user} if on else world.opted_out | {user}
            self.world = replace(world, opted_out=out)
        elif kind == "advance":
            (minutes,) = args
            for _ in range(minutes):
                self.clock.advance(MINUTE)
                self.tick()
        elif kind == "scan":
            services.scan()
        elif kind == "relay":
            self.relay()
        else:  # pragma: no cover - the strategies make no other
            raise AssertionError(f"unknown step {step!r}")

    def _tasks(self, task: int, **values: object) -> None:
        with self.services.session_factory.begin() as session:
            session.execute(update(Task).where(Task.id == task).values(**values))

    def check(self) -> None:
        """The four rules of the module docstring."""
        sent: dict[Reminder, Delivery] = {}
        for delivery in self.deliveries:
            reminder = delivery.reminder
            assert reminder not in sent, f"delivered twice: {reminder}"
            sent[reminder] = delivery
            assert delivery.at >= reminder.moment, f"early: {reminder} at {delivery.at}"
            assert delivery.world.stands(reminder), f"stood no more: {reminder} at {delivery.at}"
            assert delivery.at < reminder.useful_until, f"useless: {reminder} at {delivery.at}"
        for reminder, moment in self.owed.items():
            assert reminder in sent, f"never delivered: {reminder}"
            assert sent[reminder].at == moment, f"late: {reminder} at {sent[reminder].at}"


def play(
    engines: Callable[[], AbstractContextManager[tuple[Engine, Path]]],
    dues: tuple[int, int],
    history: list[Step],
) -> Played:
    """Play ``history`` on a fresh database from ``engines`` (an engine and a directory of
    its own): users 1 to 3, task 1 of user 1 and task 2 of user 2 due ``dues`` minutes after
    the start, no rule; a tick at the start, the steps, and ten more minutes."""
    with engines() as (engine, directory):
        clock = ManualClock()
        channel = RecordingChannel()
        services = watched_services(engine, clock, channel, directory, lookahead=LOOKAHEAD)
        try:
            for user in USERS:
                add_user(services, user)
            due = {
                task: T0 + minute * MINUTE
                for task, minute in zip(sorted(OWNERS), dues, strict=True)
            }
            for task, owner in OWNERS.items():
                add_task(services, task, owner, due[task])
            played = Played(services, clock, channel, World(due=due))
            played.tick()
            for step in [*history, ("advance", 10)]:
                played.apply(step)
        finally:
            services.engine.dispose()
    return played


def describe(played: Played) -> Iterator[str]:
    """The deliveries, one line each, for a failing example's report."""
    for delivery in played.deliveries:
        minute = (delivery.at - T0) // MINUTE
        yield f"+{minute}m {delivery.reminder}"
