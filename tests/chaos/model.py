"""The soak's expectation: which reminders a run requires, from what the host did, not from
the service's tables.

The host thread records every change it made (a task written, moved, completed; a watcher
added or removed; a rule set or cleared) with the wall-clock interval in which it may have
taken effect: from just before its transaction began to just after it committed. From that
history alone, `Model` says of each reminder (task, due date, offset, recipient):

- *required*: it must have arrived, exactly once up to the explained duplicates. Its
  validity (the task open with that due date, the user its owner or listed, opted in, the
  offset in the user's rule) held for certain from before it was planned until well after
  its moment, so that no fault the soak injects can make the service right to skip it;
- *allowed either way*: its validity changed near its planning or its moment (a watcher
  added less than a planning horizon before, a completion a little after the moment, a rule
  edit, a write whose outcome the host could not tell), so it may arrive (once) or not;
- anything else that arrives is *unexpected*: it was not valid at any time in the few
  seconds before it arrived (the re-check runs at most one relay window before the send).

The model knows the service's planning only as far as the contract states it: a reminder
whose moment lies ahead is planned before its moment and sent at it; of the moments already
past when a due date is set, only the latest is sent, at once, while the task is not due.
Keys are spelled by `worker.reminders.keys`; nothing else of the worker is used.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from worker.reminders.keys import reminder_key, reminder_variant
from worker.reminders.rules import Rule

T = TypeVar("T")

#: How long before its moment a reminder must already be valid to be required: the scan plans
#: a moment up to the tick after next plus 30 s ahead (about 150 s), a little more for a scan
#: that comes late.
PLANNED_BEFORE = 200.0
#: How long after its moment (or, for a moment already past, after its due date was set) a
#: reminder must stay valid to be required: a worker killed takes its delayed wake-ups with
#: it, and the next minute tick, a lease and a deferral's backoff may pass before the send;
#: a reminder invalidated meanwhile is rightly cancelled by the re-check.
SENT_WITHIN = 120.0
#: A reminder delivered when it had not been valid at any time in this many seconds before
#: its arrival is unexpected (the re-check is at most one relay window before the send).
RECHECKED_WITHIN = 3.0
#: The clock granularity allowed for "early": the receiver and the database read the same
#: clock, but the database stores microseconds and the receiver timestamps after reading
#: the message, so only rounding is left.
EARLY_TOLERANCE = 0.05

REQUIRED, EITHER_WAY, PENDING, NEVER = "required", "either way", "pending", "never"


@dataclass
class Steps(Generic[T]):
    """A value over time: its initial value, then changes each known to have taken effect
    somewhere in [lo, hi] (one writer, so the intervals do not overlap)."""

    initial: T
    changes: list[tuple[float, float, T]] = field(default_factory=list)

    def set(self, lo: float, hi: float, value: T) -> None:
        """The value became ``value`` somewhere between ``lo`` and ``hi``."""
        self.changes.append((lo, hi, value))

    def settled(self, at: float) -> T:
        """The value at ``at`` for certain, ignoring a change still in progress."""
        value = self.initial
        for _, hi, new in self.changes:
            if hi <= at:
                value = new
        return value

    def possible(self, start: float, end: float) -> list[T]:
        """Every value the thing may have had at some time in [start, end]."""
        values = [self.settled(start)]
        values += [v for lo, hi, v in self.changes if lo <= end and hi > start]
        return values

    def values(self) -> list[T]:
        """Every value it ever had."""
        return [self.initial] + [v for _, _, v in self.changes]


#: A task's state: its due date (None: no such task yet, or undated) and whether it is open.
State = tuple[datetime | None, bool]


@dataclass
class TaskHistory:
    """What the host did to one task."""

    owner: int
    state: Steps[State]
    watchers: dict[int, Steps[bool]] = field(default_factory=dict)
    uncertain: bool = False  # a write whose outcome the host could not tell


@dataclass(frozen=True)
class Reminder:
    """One (task, due date, offset, recipient) the history makes possible."""

    task: int
    due: datetime
    offset: int
    user: int
    key: str

    @property
    def moment(self) -> float:
        """due - offset, as a Unix time."""
        return self.due.timestamp() - self.offset


def offsets(rule: Rule) -> frozenset[int]:
    """The offsets a rule's reminders have: lead times, and -k x every for the nudges."""
    nudges: tuple[int, ...] = ()
    if rule.overdue_every is not None:
        every = int(rule.overdue_every.total_seconds())
        nudges = tuple(-k * every for k in range(1, rule.overdue_count + 1))
    return frozenset(rule.lead_seconds + nudges)


@dataclass
class Verdict:
    """The model's judgement of one run."""

    required: set[str]
    either_way: set[str]
    reasons: dict[str, str]  # why each reminder allowed either way is so
    kinds: dict[str, int]  # the required reminders by kind
    lateness: list[float]  # first arrival - moment of each required one planned ahead
    not_yet: int  # reminders whose moment is too recent to judge
    unexpected: dict[str, int]
    early: dict[str, float]  # key -> seconds before its moment it arrived
    uncertain_arrivals: int


@dataclass
class Model:
    """The host's history, and the judgement drawn from it."""

    builtin: Rule
    legacy_offset: int
    enabled: dict[int, bool]
    tasks: dict[int, TaskHistory] = field(default_factory=dict)
    default_rule: Steps[Rule | None] = field(default_factory=lambda: Steps(None))
    own_rules: dict[int, Steps[Rule | None]] = field(default_factory=dict)

    # --- recording ---------------------------------------------------------------------

    def task(self, task_id: int, owner: int) -> TaskHistory:
        """The history of ``task_id``, created on first use (not yet written)."""
        if task_id not in self.tasks:
            self.tasks[task_id] = TaskHistory(owner, Steps((None, False)))
        return self.tasks[task_id]

    def own_rule(self, user: int) -> Steps[Rule | None]:
        """The history of ``user``'s own rule."""
        return self.own_rules.setdefault(user, Steps(None))

    # --- validity ----------------------------------------------------------------------

    def rules_possible(self, user: int, start: float, end: float) -> list[Rule]:
        """Every rule that may have been in force for ``user`` in [start, end]."""
        own = self.own_rule(user).possible(start, end)
        default = self.default_rule.possible(start, end)
        found = []
        for mine in own:
            if mine is not None:
                found.append(mine)
                continue
            found += [d if d is not None else self.builtin for d in default]
        return found

    def listed(self, history: TaskHistory, user: int) -> Steps[bool]:
        """Whether ``user`` is a recipient of the task over time."""
        if user == history.owner:
            return Steps(True)
        return history.watchers.get(user, Steps(False))

    def certainly_valid(self, r: Reminder, start: float, end: float) -> bool:
        """Whether ``r`` was valid at every time in [start, end], whatever the timing."""
        return self.doubt(r, start, end) is None

    def doubt(self, r: Reminder, start: float, end: float) -> str | None:
        """Why ``r`` may not have been valid at some time in [start, end]; None: it was."""
        history = self.tasks[r.task]
        if history.uncertain:
            return "a write to its task failed"
        if not self.enabled.get(r.user, False):
            return "its recipient opted out"
        if not all(s == (r.due, True) for s in history.state.possible(start, end)):
            return "its task moved or completed near its moment"
        if not all(self.listed(history, r.user).possible(start, end)):
            return "its watcher listed or removed near its moment"
        if not all(r.offset in offsets(rule) for rule in self.rules_possible(r.user, start, end)):
            return "a rule edited near its moment"
        return None

    def possibly_valid(self, r: Reminder, start: float, end: float) -> bool:
        """Whether ``r`` may have been valid at some time in [start, end] (generous: each
        condition is judged on its own)."""
        history = self.tasks[r.task]
        return (
            self.enabled.get(r.user, False)
            and (r.due, True) in history.state.possible(start, end)
            and any(self.listed(history, r.user).possible(start, end))
            and any(r.offset in offsets(rule) for rule in self.rules_possible(r.user, start, end))
        )

    # --- the reminders -----------------------------------------------------------------

    def every_rule(self, user: int) -> list[Rule]:
        """Every rule ever in force for ``user``."""
        own = [r for r in self.own_rule(user).values() if r is not None]
        default = [r if r is not None else self.builtin for r in self.default_rule.values()]
        return own + default

    def reminders(self) -> Iterator[Reminder]:
        """Every reminder the history may have made valid at some time."""
        for task_id, history in self.tasks.items():
            dues = {due for due, _ in history.state.values() if due is not None}
            users = {history.owner} | set(history.watchers)
            for user in users:
                every = frozenset().union(*(offsets(r) for r in self.every_rule(user)))
                for due in dues:
                    for offset in every:
                        tail = reminder_variant(
                            offset, user, history.owner, legacy_offset=self.legacy_offset
                        )
                        key = reminder_key(task_id, due) + tail
                        yield Reminder(task_id, due, offset, user, key)

    def set_at(self, r: Reminder) -> tuple[float, float]:
        """When the task first took the due date ``r`` is for: (lo, hi)."""
        for lo, hi, (due, is_open) in self.tasks[r.task].state.changes:
            if due == r.due and is_open:
                return lo, hi
        return math.inf, math.inf

    def classify(self, r: Reminder, now: float) -> tuple[str, str]:
        """`REQUIRED`, `EITHER_WAY` (with why), `PENDING` (too recent to judge) or `NEVER`
        (not valid at its moment or after, or a moment already past when its due date was
        set and not the latest such: never sent)."""
        set_lo, set_hi = self.set_at(r)
        if r.moment >= set_hi + SENT_WITHIN:  # ahead when its due date was set: planned
            if r.moment + SENT_WITHIN > now:
                return PENDING, ""
            if not self.possibly_valid(r, r.moment - RECHECKED_WITHIN, now):
                return NEVER, ""
            start = max(set_hi, r.moment - PLANNED_BEFORE)
            why = self.doubt(r, start, r.moment + SENT_WITHIN)
            return (REQUIRED, "") if why is None else (EITHER_WAY, why)
        if set_hi + SENT_WITHIN > now:
            return PENDING, ""
        if not self.possibly_valid(r, set_lo, now):
            return NEVER, ""
        if r.offset <= 0:
            return EITHER_WAY, "a nudge already due when its due date was set"
        if r.moment >= set_lo - 5:
            return EITHER_WAY, "its moment came about when its due date was set"
        # Past when the date was set: sent at once if it is the latest such moment of its
        # recipient; another moment about the setting makes "the latest" uncertain.
        later = [
            r.due.timestamp() - o
            for rule in self.rules_possible(r.user, set_lo, set_hi + SENT_WITHIN)
            for o in offsets(rule)
            if r.moment < r.due.timestamp() - o < set_hi + SENT_WITHIN
        ]
        if any(m < set_lo - 5 for m in later):
            return NEVER, ""
        if later:
            return EITHER_WAY, "another moment came about when its due date was set"
        if r.due.timestamp() < set_hi + SENT_WITHIN:
            return EITHER_WAY, "its task may be due before it can go out"
        why = self.doubt(r, set_hi, set_hi + SENT_WITHIN)
        if why is not None:
            return EITHER_WAY, why.replace("near its moment", "near its planning")
        return REQUIRED, ""

    def judge(self, now: float, arrivals: dict[str, list[float]]) -> Verdict:
        """The verdict at ``now`` on what arrived (key -> arrival times)."""
        known: dict[str, Reminder] = {}
        required: set[str] = set()
        either: set[str] = set()
        reasons: dict[str, str] = {}
        kinds: Counter[str] = Counter()
        planned: dict[str, float] = {}
        not_yet = 0
        for r in self.reminders():
            if not self.possibly_valid(r, -math.inf, math.inf):
                continue
            known[r.key] = r
            verdict, why = self.classify(r, now)
            if verdict == PENDING:
                not_yet += 1
            elif verdict == REQUIRED:
                required.add(r.key)
                kinds[kind(r, self.legacy_offset)] += 1
                if r.user != self.tasks[r.task].owner:
                    kinds["to a watcher"] += 1
                if r.moment >= self.set_at(r)[1] + SENT_WITHIN:
                    planned[r.key] = r.moment
            elif verdict == EITHER_WAY:
                either.add(r.key)
                reasons[r.key] = why
        unexpected: dict[str, int] = {}
        early: dict[str, float] = {}
        uncertain = 0
        for key, times in arrivals.items():
            found = known.get(key)
            if found is not None and self.tasks[found.task].uncertain:
                uncertain += 1
                continue
            if found is None:
                unexpected[key] = len(times)
                continue
            r = found
            late = [t for t in times if not self.possibly_valid(r, t - RECHECKED_WITHIN, t)]
            if late:
                unexpected[key] = len(late)
            first = min(times)
            if first < r.moment - EARLY_TOLERANCE:
                early[key] = r.moment - first
        lateness = sorted(min(arrivals[k]) - m for k, m in planned.items() if k in arrivals)
        return Verdict(
            required, either, reasons, dict(kinds), lateness, not_yet, unexpected, early, uncertain
        )

    def last_change(self) -> float:
        """When the host's last change to a task ended."""
        return max((hi for h in self.tasks.values() for _, hi, _ in h.state.changes), default=0.0)

    def last_moment(self, before: float) -> float:
        """The latest moment of a possible reminder before ``before``."""
        return max((r.moment for r in self.reminders() if r.moment < before), default=0.0)


def kind(r: Reminder, legacy_offset: int) -> str:
    """What sort of reminder ``r`` is, for the figures."""
    if r.offset == legacy_offset:
        return "a day ahead"
    if r.offset > 0:
        return "minutes ahead"
    return "at the due time" if r.offset == 0 else "overdue nudge"
