"""The chaos soak: the whole service under random faults, then a count of every reminder.

``make chaos`` (``python -m tests.chaos``) runs, against a private PostgreSQL cluster, a
private Redis and a flaky SMTP receiver, two ``dramatiq`` workers (the fault-injecting
build, ``tests.acceptance.faulty_worker``) and two ``periodiq`` schedulers kept alive by a
supervisor, as a process manager would. The service reads the host through a mapping with a
watchers table (``[recipients]``) and plans from reminder rules: a default rule with several
lead times and an overdue nudge, and rules of their own for some users. A host thread writes
a few thousand tasks while the run goes on (some due within minutes, so that their lead
times, due times and nudges come during the run), moves and completes some, adds and
removes watchers, and edits the rules. A chaos thread, on a seeded random schedule,
SIGKILLs worker processes or whole ``dramatiq`` commands every few seconds, kills
schedulers, restarts Redis and PostgreSQL, and drops SMTP connections; the receiver defers
one message in ten with a 451; the workers also kill themselves at exact steps now and then.
Then the faults stop, the outbox drains, and the soak judges what arrived against an
independent model of what the host did (`tests.chaos.model`): expected / delivered /
missed / duplicated / unexplained / early / unexpected / allowed either way, each duplicate
explained from the workers' journals.

It passes when nothing required is missed, nothing arrived that was not valid when it was
sent, nothing arrived before its moment, and every duplicate was accepted by a process that
died (or lost the database) before recording the delivery — the one window the contract
allows. ``--no-rules`` runs the soak as before rules: no rule, no watcher, one reminder a day
ahead per task.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from outbox.table import Status
from tests.acceptance.harness import (
    BIN,
    ROOT,
    PostgresCluster,
    Proc,
    RedisServer,
    SmtpReceiver,
    add_users,
    outbox,
    service_env,
    smtp_env,
)
from tests.chaos.model import EARLY_TOLERANCE, SENT_WITHIN, Model, Steps, Verdict
from tests.support.watchers import watched_mapping, watchers_ddl
from worker import api_rules
from worker.db import make_engine
from worker.reminders.mapping import RecipientsMapping
from worker.reminders.rules import Rule, builtin_rule
from worker.settings import Settings, load_settings

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WAITING_OR_CLAIMED = (Status.PENDING, Status.CLAIMED, Status.FAILED)
OWNERS = 20
OFF = 99  # the owner who turned notifications off
#: How long before an arrival the kill of the process that sent it may land. SIGKILL after
#: the sender's last write still lets the kernel deliver what was written; the receiver
#: reads it and accepts it a few milliseconds after the sender died (seen: 0-2 ms).
IN_FLIGHT = 0.25
#: How long after an arrival its sender may be killed before it journals the acceptance.
UNJOURNALED = 2.0


def log(message: str) -> None:
    """One progress line on stderr."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --- the flaky receiver ---------------------------------------------------------------------


class FlakySmtp(SmtpReceiver):
    """The recording SMTP server, deferring a share of messages with a 451, timing arrivals."""

    def __init__(self, rng: random.Random, deferral: float) -> None:
        super().__init__()
        self.rng = rng
        self.deferral = deferral
        self.flaky = True
        self.deferred = 0
        self.arrived_at: list[float] = []  # aligned with `messages` (one event-loop thread)

    def _data(self, envelope: Any) -> str:
        if self.flaky and self.rng.random() < self.deferral:
            with self._changed:
                self.data_replies.append("451 4.3.0 chaos says: later")
                self.deferred += 1
        reply = super()._data(envelope)
        if reply.startswith("250"):
            self.arrived_at.append(time.time())
        return reply


# --- processes kept alive -------------------------------------------------------------------


@dataclass
class Slot:
    """One process the supervisor keeps running, restarted whenever it exits."""

    name: str
    args: list[str]
    process: Proc | None = None
    starts: int = 0


class Supervisor:
    """Keeps every slot's process running, like ``restart: always``."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.slots: list[Slot] = []
        self.everything: list[Proc] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def add(self, name: str, args: list[str]) -> None:
        """Keep ``args`` running under ``name``."""
        self.slots.append(Slot(name, args))

    def start(self) -> None:
        """Start every slot and watch them."""
        for slot in self.slots:
            self._start(slot)
        self._thread.start()

    def _start(self, slot: Slot) -> None:
        with self.lock:
            slot.starts += 1
            name = f"{slot.name}-{slot.starts}"
            slot.process = Proc(name, slot.args, self.env, self.directory)  # env as of now
            self.everything.append(slot.process)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for slot in self.slots:
                if slot.process is not None and not slot.process.alive():
                    self._start(slot)

    def running(self, prefix: str) -> list[Proc]:
        """The live processes of the slots named ``prefix``…"""
        with self.lock:
            return [
                s.process for s in self.slots
                if s.name.startswith(prefix) and s.process is not None and s.process.alive()
            ]  # fmt: skip

    def stop(self) -> None:
        """Stop restarting, then SIGTERM everything and reap it."""
        self._stop.set()
        self._thread.join(10)
        for slot in self.slots:
            if slot.process is not None and slot.process.alive():
                slot.process.popen.send_signal(signal.SIGTERM)
        for process in self.everything:
            try:
                process.popen.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
            process.close()


# --- the host application -------------------------------------------------------------------

#: The watchers table the soak's service reads as ``[recipients]``, beside the reference tables.
WATCHERS = RecipientsMapping(table="task_watchers", task="task_id", user="user_id")
#: The rules at the start: several lead times for everyone, an overdue nudge, and users 1-3
#: with a rule of their own (no reminder at the due time, an earlier one before it).
DEFAULT_RULE = Rule(before=(DAY, 2 * MINUTE, timedelta(0)), overdue_every=MINUTE, overdue_count=1)
OWN_RULE = Rule(before=(DAY, 3 * MINUTE))
OWN_RULE_USERS = (1, 2, 3)
#: The rule edits during the run, at these shares of the host's steps: user 4 gets a rule of
#: their own, the default's nudge moves, user 1's own rule is cleared.
EDITS: list[tuple[float, int | None, Rule | None]] = [
    (0.25, 4, Rule(before=(DAY, timedelta(seconds=150), timedelta(0)))),
    (0.45, None, Rule(before=DEFAULT_RULE.before, overdue_every=timedelta(seconds=90),
                      overdue_count=1)),
    (0.65, 1, None),
]  # fmt: skip
#: A task "due soon" is due this many seconds after it is written: its lead times' moments
#: (3 min, 2 min, 150 s) come at least two minutes after it, so the scan plans them ahead,
#: and the 24-hour one is the only moment already past (sent at once).
SOON = (305.0, 335.0)


@dataclass
class Host:
    """Writes tasks, watchers and rules while the soak runs, and records each change in the
    expectation `Model` with the interval in which it took effect."""

    engine: Engine
    rng: random.Random
    settings: Settings
    rules: bool = True
    model: Model = field(init=False)
    next_id: int = 1
    open_tasks: list[int] = field(default_factory=list)
    soon: set[int] = field(default_factory=set)  # due within minutes (else hours ahead)
    far: list[int] = field(default_factory=list)  # open, beyond the lookahead
    counts: Counter[str] = field(default_factory=Counter)
    edited: set[float] = field(default_factory=set)  # the EDITS made
    failures: int = 0

    def __post_init__(self) -> None:
        enabled = {i: True for i in range(1, OWNERS + 1)} | {OFF: False}
        self.model = Model(builtin_rule(DAY), int(DAY.total_seconds()), enabled)

    def new_due(self, now: datetime, soon: bool) -> datetime:
        """A due date to the microsecond (keys stay unique): in a few minutes, or well
        inside the 24-hour window."""
        if soon:
            return now + timedelta(seconds=self.rng.uniform(*SOON))
        return now + HOUR + timedelta(seconds=self.rng.uniform(0, 19 * 3600))

    def write(self, action: Callable[[Connection], object]) -> tuple[float, float, bool]:
        """Run one transaction: (when it began, when it ended, whether it committed). When
        it failed (PostgreSQL may be down, as for any application) it may still have
        committed: the task is then `TaskHistory.uncertain`."""
        lo = time.time()
        try:
            with self.engine.begin() as connection:
                action(connection)
        except Exception:
            self.failures += 1
            return lo, time.time(), False
        return lo, time.time(), True

    def seed(self, count: int) -> None:
        """The watchers table, the rules, the owners, ``count`` tasks and tasks that are
        never due."""
        with self.engine.begin() as connection:
            for statement in watchers_ddl(WATCHERS):
                connection.execute(text(statement))
        owners = [(i, f"user{i}@example.com", "UTC", True) for i in range(1, OWNERS + 1)]
        add_users(self.engine, owners)
        add_users(self.engine, [(OFF, "off@example.com", "UTC", False)])
        if self.rules:
            self.set_rule(None, DEFAULT_RULE)
            for user in OWN_RULE_USERS:
                self.set_rule(user, OWN_RULE)
        now = datetime.now(UTC)
        self.insert(count, now)
        never = [
            (OFF, "owner opted out", now + 2 * HOUR, False),
            (1, "completed", now + 2 * HOUR, True),
            (1, "overdue", now - HOUR, False),
            (1, "undated", None, False),
            (1, "beyond the window", now + 30 * HOUR, False),
        ]
        for _ in range(20):
            self.add([(self._id(), *row) for row in never], {})

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def add(
        self, rows: list[tuple[int, int, str, datetime | None, bool]], watchers: dict[int, int]
    ) -> bool:
        """Insert tasks (id, owner, title, due, completed) and a watcher for some, at once."""

        def insert(connection: Connection) -> None:
            connection.execute(
                text("INSERT INTO tasks (id, owner_id, title, due_date, completed_at) "
                     "VALUES (:id, :owner, :title, :due, :done)"),
                [{"id": i, "owner": o, "title": t, "due": d, "done": now if c else None}
                 for i, o, t, d, c in rows],
            )  # fmt: skip
            if watchers:
                connection.execute(
                    text("INSERT INTO task_watchers (task_id, user_id) VALUES (:t, :u)"),
                    [{"t": t, "u": u} for t, u in watchers.items()],
                )

        now = datetime.now(UTC)
        lo, hi, ok = self.write(insert)
        for task_id, owner, _, due, completed in rows:
            history = self.model.task(task_id, owner)
            history.uncertain |= not ok
            history.state.set(lo, hi, (due, not completed))
            if task_id in watchers:
                history.watchers.setdefault(watchers[task_id], Steps(False)).set(lo, hi, True)
        return ok

    def insert(self, count: int, now: datetime, soon_share: float = 0.3) -> None:
        """``count`` new tasks due in the window, some within minutes, some watched."""
        rows: list[tuple[int, int, str, datetime | None, bool]] = []
        watchers: dict[int, int] = {}
        soon: set[int] = set()
        for _ in range(count):
            task_id = self._id()
            is_soon = self.rules and self.rng.random() < soon_share
            rows.append((task_id, 1 + task_id % OWNERS, f"task {task_id}",
                         self.new_due(now, is_soon), False))  # fmt: skip
            if is_soon:
                soon.add(task_id)
            if self.rules and self.rng.random() < 0.35:
                # The owner now and then (reminded once), the opted-out user now and then.
                watchers[task_id] = self.rng.choice([*range(1, OWNERS + 1), OFF])
        if self.add(rows, watchers):
            self.open_tasks += [row[0] for row in rows]
            self.soon |= soon
            self.counts["inserted"] += count
            self.counts["watched at creation"] += len(watchers)

    def step(self, per_step: int, share: float) -> None:
        """One burst of host activity at ``share`` of the run: new tasks, and now and then
        a move, a completion, a watcher added or removed, a rule edited."""
        now = datetime.now(UTC)
        self.insert(per_step, now, soon_share=0.3 if share < 0.5 else 0.0)
        for at, user, rule in EDITS:
            if self.rules and at <= share and at not in self.edited:
                self.edited.add(at)
                self.set_rule(user, rule)
                self.counts["rule edits"] += 1
        roll = self.rng.random()
        if roll < 0.15:  # a task far ahead, which will be completed or moved into the window
            task_id, due = self._id(), now + 30 * HOUR
            if self.add([(task_id, 2, "far", due, False)], {}):
                self.far.append(task_id)
        elif roll < 0.25 and self.far:
            task_id = self.far.pop(self.rng.randrange(len(self.far)))
            if self.rng.random() < 0.5:
                self._complete(task_id, "completed far ahead")
            else:
                self._move(task_id, self.new_due(now, soon=False), "moved into the window")
        elif roll < 0.4 and self.open_tasks:
            task_id = self.rng.choice(self.open_tasks)
            soon = task_id in self.soon and share < 0.5
            self._move(task_id, self.new_due(now, soon), "moved within the window")
        elif roll < 0.5 and self.open_tasks:
            task_id = self.open_tasks.pop(self.rng.randrange(len(self.open_tasks)))
            self._complete(task_id, "completed in the window")
        elif roll < 0.65 and self.rules and self.open_tasks:
            self._watch(self.rng.choice(self.open_tasks))
        elif roll < 0.75 and self.rules:
            self._unwatch()

    def _update(
        self, task_id: int, statement: str, values: dict[str, Any]
    ) -> tuple[float, float, bool]:
        return self.write(lambda c: c.execute(text(statement), {"id": task_id, **values}))

    def _move(self, task_id: int, due: datetime, what: str) -> None:
        history = self.model.tasks[task_id]
        lo, hi, ok = self._update(
            task_id, "UPDATE tasks SET due_date = :v WHERE id = :id", {"v": due}
        )
        history.state.set(lo, hi, (due, True))
        history.uncertain |= not ok
        if not ok:
            return
        self.counts[what] += 1
        if task_id not in self.open_tasks:
            self.open_tasks.append(task_id)
        if due - datetime.now(UTC) < 2 * HOUR:
            self.soon.add(task_id)

    def _complete(self, task_id: int, what: str) -> None:
        history = self.model.tasks[task_id]
        due, _ = history.state.settled(math.inf)
        lo, hi, ok = self._update(
            task_id, "UPDATE tasks SET completed_at = now() WHERE id = :id", {}
        )
        history.state.set(lo, hi, (due, False))
        history.uncertain |= not ok
        if not ok:
            return
        self.counts[what] += 1

    def _watch(self, task_id: int) -> None:
        """A new watcher for the task: a user never listed on it before."""
        history = self.model.tasks[task_id]
        candidates = [u for u in [*range(1, OWNERS + 1), OFF] if u not in history.watchers]
        if not candidates:
            return
        user = self.rng.choice(candidates)
        lo, hi, ok = self.write(lambda c: c.execute(
            text("INSERT INTO task_watchers (task_id, user_id) VALUES (:t, :u)"),
            {"t": task_id, "u": user},
        ))  # fmt: skip
        history.watchers.setdefault(user, Steps(False)).set(lo, hi, True)
        history.uncertain |= not ok
        if not ok:
            return
        self.counts["watcher added"] += 1

    def _unwatch(self) -> None:
        """A watcher removed (never added back: a pair is listed once at most)."""
        listed = [
            (task_id, user)
            for task_id, history in self.model.tasks.items()
            for user, steps in history.watchers.items()
            if steps.settled(math.inf) and not history.uncertain
        ]
        if not listed:
            return
        task_id, user = self.rng.choice(listed)
        history = self.model.tasks[task_id]
        lo, hi, ok = self.write(lambda c: c.execute(
            text("DELETE FROM task_watchers WHERE task_id = :t AND user_id = :u"),
            {"t": task_id, "u": user},
        ))  # fmt: skip
        history.watchers[user].set(lo, hi, False)
        history.uncertain |= not ok
        if not ok:
            return
        self.counts["watcher removed"] += 1

    def set_rule(self, user: int | None, rule: Rule | None) -> None:
        """Set (or, ``rule`` None, clear) the default or a user's rule through `worker.api`,
        retried while PostgreSQL is down (setting the same rule twice changes nothing)."""
        steps = self.model.default_rule if user is None else self.model.own_rule(user)
        lo = time.time()
        for _ in range(120):
            try:
                if rule is None and user is None:
                    api_rules.clear_default_rule(self.engine, settings=self.settings)
                elif rule is None:
                    assert user is not None
                    api_rules.clear_rule(self.engine, user=user, settings=self.settings)
                elif user is None:
                    api_rules.set_default_rule(self.engine, rule, settings=self.settings)
                else:
                    api_rules.set_rule(self.engine, rule, user=user, settings=self.settings)
                break
            except Exception:
                self.failures += 1
                time.sleep(0.5)
        else:
            raise RuntimeError(f"could not set the rule of {user} for a minute")
        steps.set(lo, time.time(), rule)


# --- the faults -----------------------------------------------------------------------------


@dataclass
class Faults:
    """What the chaos thread did, with times (for explaining duplicates)."""

    kills: list[tuple[float, int]] = field(default_factory=list)  # (time, pid killed)
    drops: list[float] = field(default_factory=list)  # when the receiver's connections closed
    counts: Counter[str] = field(default_factory=Counter)
    database_down: list[tuple[float, float]] = field(default_factory=list)


def chaos(
    stop: threading.Event,
    rng: random.Random,
    supervisor: Supervisor,
    redis_server: RedisServer,
    cluster: PostgresCluster,
    smtp: FlakySmtp,
    faults: Faults,
    scans: list[subprocess.Popen[bytes]],
    directory: Path,
) -> None:
    """Inject faults on a random schedule until ``stop`` is set."""
    start = time.monotonic()
    plan = {
        "kill": start + rng.uniform(2, 5),
        "redis": start + rng.uniform(15, 30),
        "postgres": start + rng.uniform(25, 45),
        "smtp": start + rng.uniform(3, 10),
        "periodiq": start + rng.uniform(20, 40),
        "scan": start + rng.uniform(5, 15),
    }
    while not stop.wait(0.05):
        now = time.monotonic()
        if now >= plan["kill"]:
            plan["kill"] = now + rng.uniform(2, 6)
            workers = supervisor.running("dramatiq")
            if workers:
                victim = rng.choice(workers)
                children = victim.children()
                if children and rng.random() < 0.7:
                    pid = rng.choice(children)
                    _kill(pid, faults)
                    faults.counts["SIGKILL of a worker process"] += 1
                else:
                    for pid in children:
                        faults.kills.append((time.time(), pid))
                    faults.kills.append((time.time(), victim.pid))
                    victim.kill()
                    faults.counts["SIGKILL of a whole dramatiq command"] += 1
        if now >= plan["periodiq"]:
            plan["periodiq"] = now + rng.uniform(20, 40)
            schedulers = supervisor.running("periodiq")
            if schedulers:
                rng.choice(schedulers).kill()
                faults.counts["SIGKILL of a periodiq"] += 1
        if now >= plan["smtp"]:
            plan["smtp"] = now + rng.uniform(5, 15)
            faults.drops.append(time.time())
            smtp.drop_connections()
            faults.counts["SMTP connections dropped"] += 1
        if now >= plan["scan"]:
            plan["scan"] = now + rng.uniform(8, 20)
            scans.append(subprocess.Popen(
                [str(BIN / "reminders"), "scan"], env=supervisor.env, cwd=directory,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            faults.counts["`reminders scan` started"] += 1
        if now >= plan["redis"]:
            redis_server.crash()
            stop.wait(rng.uniform(0.5, 3))
            redis_server.start()
            faults.counts["Redis restarts"] += 1
            plan["redis"] = time.monotonic() + rng.uniform(20, 45)
        if now >= plan["postgres"]:
            mode = rng.choice(["fast", "immediate"])
            down = time.time()
            cluster.stop(mode)
            stop.wait(rng.uniform(1, 4))
            cluster.start()
            faults.database_down.append((down, time.time()))
            faults.counts[f"PostgreSQL restarts ({mode})"] += 1
            plan["postgres"] = time.monotonic() + rng.uniform(30, 60)


def _kill(pid: int, faults: Faults) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    faults.kills.append((time.time(), pid))


def next_due(engine: Engine) -> str:
    """When the next waiting row falls due, for the progress lines."""
    with engine.connect() as connection:
        seconds = connection.execute(
            text("SELECT EXTRACT(EPOCH FROM min(available_at) - now()) FROM outbox "
                 "WHERE status IN ('pending', 'claimed', 'failed')")
        ).scalar()  # fmt: skip
    return "nothing waiting" if seconds is None else f"next due in {float(seconds):.0f} s"


# --- the verdict ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One journal line."""

    pid: int
    kind: str
    key: str
    detail: str
    at: float


def read_journals(directory: Path) -> list[Event]:
    """Every event the faulty workers wrote."""
    events = []
    for path in directory.glob("*.journal"):
        pid = int(path.stem)
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) == 4 and words[0] != "killed":  # accepted KEY T is 3 words
                events.append(Event(pid, words[0], words[1], words[2], float(words[3])))
            elif len(words) == 4:  # killed STEP KEY T
                events.append(Event(pid, "killed", words[2], words[1], float(words[3])))
            elif len(words) == 3:
                events.append(Event(pid, words[0], words[1], "", float(words[2])))
    return sorted(events, key=lambda e: e.at)


def about_key(events: list[Event], key: str) -> list[Event]:
    """The journal lines about ``key``."""
    return [e for e in events if e.key == key]


def every_kill(events: list[Event], faults: Faults) -> list[tuple[float, int]]:
    """(time, pid) of every kill: the chaos thread's, and the workers' kills of themselves
    (journaled), which take a worker's other threads with it, mid-send or not."""
    return faults.kills + [(e.at, e.pid) for e in events if e.kind == "killed"]


def explain(key: str, events: list[Event], faults: Faults, arrivals: list[float]) -> str | None:
    """Why ``key`` arrived more than once, if it is the allowed window; None otherwise."""
    kills = every_kill(events, faults)
    killed = {pid for _, pid in kills}
    about = about_key(events, key)
    if any(e.kind == "recorded" and e.detail == "fenced" for e in about):
        return None  # a lease expired while a send was on the wire: not the allowed window
    reasons = []
    accepted = [e for e in about if e.kind == "accepted"]
    recorded = {e.pid for e in about if e.kind == "recorded"}
    for acceptance in accepted:
        if acceptance.pid in recorded:
            continue
        if acceptance.pid in killed:
            reasons.append("its sender was killed after the receiver accepted it")
        elif any(down - 1 <= acceptance.at <= up for down, up in faults.database_down):
            reasons.append("its sender lost the database after the receiver accepted it")
        else:
            return None
    # Copies whose sender never saw the acceptance (killed before its channel returned, or
    # the reply lost): the arrivals left once each journaled acceptance has taken the last
    # arrival before it (such a copy may be the first one, its row sent again later).
    unjournaled = sorted(arrivals)
    for acceptance in accepted:
        before = [arrival for arrival in unjournaled if arrival <= acceptance.at]
        if before:
            unjournaled.remove(before[-1])
    for arrival in unjournaled:
        if any(arrival - IN_FLIGHT <= at <= arrival + UNJOURNALED for at, _ in kills):
            reasons.append("its sender was killed while the receiver was accepting it")
        elif any(abs(arrival - at) <= IN_FLIGHT for at in faults.drops):
            # The message was read, then the connection closed: the reply never left, and
            # for the sender that is a failure like any other (sent again, same key).
            reasons.append("the receiver closed the connection before its reply")
        else:
            return None
    return "; ".join(sorted(set(reasons))) or None


@dataclass
class Options:
    """Command-line options."""

    tasks: int
    duration: float
    seed: int
    workers: int
    drain: float
    keep: bool
    rules: bool


def parse(argv: list[str]) -> Options:
    """Read the options."""
    summary = (__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=summary)
    parser.add_argument("--tasks", type=int, default=2400, help="tasks written (default 2400)")
    parser.add_argument("--duration", type=float, default=180, help="seconds of faults (180)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--workers", type=int, default=2, help="dramatiq commands (2)")
    parser.add_argument("--drain", type=float, default=600, help="max seconds to drain (600)")
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    parser.add_argument(
        "--no-rules", dest="rules", action="store_false",
        help="no rules, watchers or tasks due within minutes: one reminder a day ahead each",
    )  # fmt: skip
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    return Options(args.tasks, args.duration, seed, args.workers, args.drain, args.keep, args.rules)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the result; exit 0 when it passed."""
    options = parse(sys.argv[1:] if argv is None else argv)
    rng = random.Random(options.seed)
    directory = Path(tempfile.mkdtemp(prefix="reminders-chaos-"))
    journals = directory / "journals"
    journals.mkdir()
    log(f"chaos soak: seed {options.seed}, logs in {directory}")
    cluster = PostgresCluster(f"reminders_chaos_{os.getpid()}")
    redis_server = RedisServer(directory)
    passed = False
    try:
        cluster.create()
        url = cluster.create_database("chaos")
        redis_server.start()
        with FlakySmtp(random.Random(rng.random()), deferral=0.1) as smtp:
            passed = soak(options, rng, directory, journals, cluster, url, redis_server, smtp)
    finally:
        redis_server.stop()
        cluster.drop()
        if passed and not options.keep:
            shutil.rmtree(directory, ignore_errors=True)
    return 0 if passed else 1


def soak(
    options: Options,
    rng: random.Random,
    directory: Path,
    journals: Path,
    cluster: PostgresCluster,
    url: str,
    redis_server: RedisServer,
    smtp: FlakySmtp,
) -> bool:
    """The run itself; returns whether it passed."""
    engine = make_engine(url)
    mapping = directory / "schema.toml"
    mapping.write_text(watched_mapping(WATCHERS), encoding="utf-8")
    settings = load_settings(database_url=url, schema_file=str(mapping))
    host = Host(engine, random.Random(rng.random()), settings, rules=options.rules)
    initial = options.tasks // 3
    host.seed(initial)
    env = service_env(
        url, redis_server.url, **smtp_env(smtp),
        REMINDERS_LEASE="5s", REMINDERS_MAX_ATTEMPTS="20", REMINDERS_RELAY_BATCH="10",
        REMINDERS_SCAN_BATCH="500", REMINDERS_TEST_FAULT="random:0.0005",
        REMINDERS_TEST_JOURNAL=str(journals), REMINDERS_SCHEMA_FILE=str(mapping),
    )  # fmt: skip
    supervisor = Supervisor(env, directory)
    for n in range(options.workers):
        supervisor.add(f"dramatiq{n}", [
            str(BIN / "dramatiq"), "tests.acceptance.faulty_worker", "--processes", "1",
            "--threads", "2", "--path", str(ROOT),
        ])  # fmt: skip
    for n in range(2):
        supervisor.add(f"periodiq{n}", [str(BIN / "periodiq"), "worker.actors"])
    faults = Faults()
    scans: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()
    started = time.monotonic()
    supervisor.start()
    chaos_thread = threading.Thread(
        target=chaos,
        args=(stop, rng, supervisor, redis_server, cluster, smtp, faults, scans, directory),
        name="chaos", daemon=True,
    )  # fmt: skip
    chaos_thread.start()
    host_steps = max(int(options.duration * 0.75 / 0.5), 1)
    per_step = max((options.tasks - initial) // host_steps, 1)
    try:
        for n in range(host_steps):
            host.step(per_step, n / host_steps)
            if n % 40 == 0:
                log(f"chaos: {host.counts['inserted']} tasks written, {len(smtp.messages)} mails, "
                    f"faults {dict(faults.counts)}")  # fmt: skip
            time.sleep(0.5)  # the host's pace: this is load, not synchronisation
        stop.wait(max(options.duration - (time.monotonic() - started), 0))
    finally:
        stop.set()
        chaos_thread.join(60)
    smtp.flaky = False
    # No more self-kills either: restart the workers (gracefully) without the fault hook.
    supervisor.env = {k: v for k, v in env.items() if k != "REMINDERS_TEST_FAULT"}
    for worker in supervisor.running("dramatiq"):
        worker.popen.send_signal(signal.SIGTERM)
    chaos_end = time.monotonic()
    log("faults stopped; draining")

    # Drain until every moment of the run is old enough to judge and all it requires is in.
    # (A due date set less than SENT_WITHIN ago is not judged yet either.)
    last = max(host.model.last_moment(before=time.time() + 900), host.model.last_change())
    deadline = time.monotonic() + options.drain
    while time.monotonic() < deadline:
        try:
            rows = outbox(engine)
        except Exception:
            time.sleep(1)
            continue
        verdict = host.model.judge(time.time(), arrivals_by_key(smtp))
        waiting = [r for r in rows.values() if r.status in WAITING_OR_CLAIMED]
        missing = verdict.required - set(arrivals_by_key(smtp))
        judged = time.time() > last + SENT_WITHIN + 5
        if judged and not missing and not waiting:
            break
        log(f"draining: {sum(r.status == Status.DELIVERED for r in rows.values())} delivered, "
            f"{len(missing)} required missing, waiting {dict(Counter(r.status for r in waiting))}, "
            f"{next_due(engine)}, last moment in {last - time.time():.0f} s")  # fmt: skip
        time.sleep(5)
    drained = time.monotonic() - chaos_end
    supervisor.stop()
    for scan in scans:
        scan.wait(60)
    rows = outbox(engine)
    engine.dispose()
    return verdict_of(options, host, faults, supervisor, smtp, rows, journals, drained, directory)


def arrivals_by_key(smtp: FlakySmtp) -> dict[str, list[float]]:
    """When each key arrived at the receiver (accepted with a 250)."""
    arrivals: dict[str, list[float]] = defaultdict(list)
    for headers, at in zip(smtp.headers(), list(smtp.arrived_at), strict=False):
        arrivals[str(headers["X-Reminder-Key"])].append(at)
    return arrivals


def verdict_of(
    options: Options,
    host: Host,
    faults: Faults,
    supervisor: Supervisor,
    smtp: FlakySmtp,
    rows: dict[str, Any],
    journals: Path,
    drained: float,
    directory: Path,
) -> bool:
    """Print the figures and every fault found; return whether the run passed."""
    arrivals = arrivals_by_key(smtp)
    received = Counter({k: len(v) for k, v in arrivals.items()})
    verdict: Verdict = host.model.judge(time.time(), arrivals)
    required = verdict.required
    missed = sorted(required - set(received))
    duplicates = {k: n for k, n in received.items() if n > 1}
    events = read_journals(journals)
    explained = {k: explain(k, events, faults, arrivals[k]) for k in duplicates}
    unexplained = sorted(k for k, why in explained.items() if why is None)
    dead = sorted(k for k, r in rows.items() if r.status == Status.DEAD)
    expired = sorted(k for k, r in rows.items() if r.status == Status.EXPIRED)
    fault_kills = Counter(e.detail for e in events if e.kind == "killed")
    either_arrived = len(verdict.either_way & set(received))

    mode = "rules and watchers" if options.rules else "no rules"
    print(f"chaos soak: seed {options.seed}; {mode}; "
          f"{host.counts['inserted']} tasks written "
          f"({dict((k, v) for k, v in host.counts.items() if k != 'inserted')}); "
          f"{options.duration:.0f} s of faults, drained in {drained:.0f} s")  # fmt: skip
    print("faults: " + ", ".join(
        [f"{n} {what}" for what, n in sorted(faults.counts.items())]
        + [f"{sum(fault_kills.values())} self-kills at exact steps {dict(fault_kills)}",
           f"{smtp.deferred} SMTP 451 deferrals",
           f"{sum(s.starts - 1 for s in supervisor.slots)} process restarts by the supervisor"]
    ))  # fmt: skip
    print(f"expected {len(required)} / delivered {len(required & set(received))} "
          f"/ missed {len(missed)} / duplicated {len(duplicates)} "
          f"/ unexplained {len(unexplained)} / early {len(verdict.early)} "
          f"/ unexpected {sum(verdict.unexpected.values())} "
          f"/ allowed either way {len(verdict.either_way)} ({either_arrived} arrived)")  # fmt: skip
    print("required: " + ", ".join(f"{n} {k}" for k, n in sorted(verdict.kinds.items())))
    if verdict.lateness:
        late = verdict.lateness
        p50, p99 = late[len(late) // 2], late[int(len(late) * 0.99)]
        print(f"lateness of the {len(late)} required reminders planned ahead (first arrival - "
              f"moment): p50 {p50:.2f} s, p99 {p99:.2f} s, max {late[-1]:.2f} s")  # fmt: skip
    reasons = Counter(verdict.reasons.values())
    arrived_why = Counter(verdict.reasons[k] for k in verdict.either_way & set(received))
    print("allowed either way: " + "; ".join(
        f"{n} {reason} ({arrived_why[reason]} arrived)" for reason, n in reasons.most_common()
    ))  # fmt: skip
    print(f"arrivals {sum(received.values())} of {len(received)} keys; dead rows {len(dead)}, "
          f"expired rows {len(expired)}; {verdict.not_yet} not due yet or too recent to judge; "
          f"early means before its moment by more than "
          f"{EARLY_TOLERANCE * 1000:.0f} ms")  # fmt: skip
    for key, why in sorted(explained.items()):
        print(f"  duplicate {key} x{received[key]}: {why or 'UNEXPLAINED'}")
        if why is None:  # what the verdict was drawn from, to look into it
            first = min(arrivals[key], default=0.0)
            copies = [round(at - first, 3) for at in arrivals[key]]
            lines = [
                (e.kind, e.pid, e.detail, round(e.at - first, 3)) for e in about_key(events, key)
            ]
            kills = [
                (round(at - first, 3), pid)
                for at, pid in every_kill(events, faults)
                if abs(at - first) < 99
            ]
            drops = [round(at - first, 3) for at in faults.drops if abs(at - first) < 99]
            print(f"    arrivals {copies} s after {first:.3f}; journal {lines}; kills {kills}; "
                  f"connections dropped {drops}")  # fmt: skip
    for key in missed[:20]:
        print(f"  missed {key}: row {rows.get(key)}")
    for key, n in list(verdict.unexpected.items())[:20]:
        print(f"  unexpected {key} x{n} at {arrivals[key]}: row {rows.get(key)}")
    for key, by in list(verdict.early.items())[:20]:
        print(f"  early {key}: {by:.3f} s before its moment")
    passed = not missed and not verdict.unexpected and not unexplained and not verdict.early
    print("result: " + ("PASS" if passed else f"FAIL (logs kept in {directory})"))
    return passed
