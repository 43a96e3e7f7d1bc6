"""The chaos soak: the whole service under random faults, then a count of every reminder.

``make chaos`` (``python -m tests.chaos``) runs, against a private PostgreSQL cluster, a
private Redis and a flaky SMTP receiver, two ``dramatiq`` workers (the fault-injecting
build, ``tests.acceptance.faulty_worker``) and two ``periodiq`` schedulers kept alive by a
supervisor, as a process manager would. A host thread writes a few thousand tasks while the
run goes on, moving and completing some. A chaos thread, on a seeded random schedule,
SIGKILLs worker processes or whole ``dramatiq`` commands every few seconds, kills
schedulers, restarts Redis and PostgreSQL, and drops SMTP connections; the receiver defers
one message in ten with a 451; the workers also kill themselves at exact steps now and then.
Then the faults stop, the outbox drains, and the soak prints expected / delivered / missed /
duplicated / unexpected and explains every duplicate from the workers' journals.

It passes when nothing is missed, nothing unexpected arrived, and every duplicate was
accepted by a process that died (or lost the database) before recording the delivery — the
one window the contract allows.
"""

from __future__ import annotations

import argparse
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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from outbox.table import Status
from tests.acceptance.harness import (
    BIN,
    ROOT,
    PostgresCluster,
    Proc,
    RedisServer,
    SmtpReceiver,
    add_tasks,
    add_users,
    outbox,
    service_env,
    smtp_env,
    tally,
    utc_now,
)
from worker.db import make_engine
from worker.reminders.keys import reminder_key

HOUR = timedelta(hours=1)
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


@dataclass
class Host:
    """Writes tasks while the soak runs, and remembers every key that may legitimately arrive."""

    engine: Engine
    rng: random.Random
    next_id: int = 1
    optional: set[str] = field(default_factory=set)  # keys that may arrive (at most once)
    in_window: list[int] = field(default_factory=list)  # open, dated in the window
    far: list[int] = field(default_factory=list)  # open, beyond the lookahead
    due: dict[int, datetime] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    failures: int = 0

    def new_due(self, now: datetime) -> datetime:
        """A due date well inside the 24-hour window, to the microsecond (keys stay unique)."""
        return now + HOUR + timedelta(seconds=self.rng.uniform(0, 19 * 3600))

    def write(self, action: Callable[[], None]) -> bool:
        """Run one write; PostgreSQL may be down, like for any application: try later."""
        try:
            action()
        except Exception:
            self.failures += 1
            return False
        return True

    def seed(self, count: int) -> None:
        """The owners, ``count`` tasks due in the window and tasks that are never due."""
        now = utc_now()
        owners = [(i, f"user{i}@example.com", "UTC", True) for i in range(1, OWNERS + 1)]
        add_users(self.engine, owners)
        add_users(self.engine, [(OFF, "off@example.com", "UTC", False)])
        self.insert(count, now)
        never = [
            (self._id(), OFF, "owner opted out", now + 2 * HOUR, None),
            (self._id(), 1, "completed", now + 2 * HOUR, now),
            (self._id(), 1, "overdue", now - HOUR, None),
            (self._id(), 1, "undated", None, None),
            (self._id(), 1, "beyond the window", now + 30 * HOUR, None),
        ]
        for _ in range(20):
            add_tasks(self.engine, never)
            never = [(self._id(), *row[1:]) for row in never]

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def insert(self, count: int, now: datetime) -> None:
        """``count`` new tasks due in the window."""
        rows = []
        for _ in range(count):
            task_id, due = self._id(), self.new_due(now)
            rows.append((task_id, 1 + task_id % OWNERS, f"task {task_id}", due, None))
        if self.write(lambda: add_tasks(self.engine, rows)):
            for task_id, _, _, due, _ in rows:
                assert due is not None
                self.due[task_id] = due
                self.in_window.append(task_id)
                self.optional.add(reminder_key(task_id, due))
            self.counts["inserted"] += count

    def step(self, per_step: int) -> None:
        """One burst of host activity: new tasks, and now and then a move or a completion."""
        now = utc_now()
        self.insert(per_step, now)
        roll = self.rng.random()
        if roll < 0.3:  # a task far ahead, which will be completed or moved into the window
            task_id, due = self._id(), now + 30 * HOUR
            if self.write(lambda: add_tasks(self.engine, [(task_id, 2, "far", due, None)])):
                self.far.append(task_id)
        elif roll < 0.5 and self.far:
            task_id = self.far.pop(self.rng.randrange(len(self.far)))
            if self.rng.random() < 0.5:
                self._set(task_id, "completed_at", now, "completed far ahead")
            else:
                self._move(task_id, self.new_due(now), "moved into the window")
        elif roll < 0.7 and self.in_window:
            task_id = self.in_window[self.rng.randrange(len(self.in_window))]
            self._move(task_id, self.new_due(now), "moved within the window")
        elif roll < 0.8 and self.in_window:
            task_id = self.in_window.pop(self.rng.randrange(len(self.in_window)))
            self._set(task_id, "completed_at", now, "completed in the window")

    def _move(self, task_id: int, due: datetime, what: str) -> None:
        self.optional.add(reminder_key(task_id, due))  # before: the write may commit, then fail
        if self._set(task_id, "due_date", due, what):
            self.due[task_id] = due
            if task_id not in self.in_window:
                self.in_window.append(task_id)

    def _set(self, task_id: int, column: str, value: datetime, what: str) -> bool:
        def update() -> None:
            with self.engine.begin() as connection:
                statement = text(f"UPDATE tasks SET {column} = :v WHERE id = :id")
                connection.execute(statement, {"v": value, "id": task_id})

        done = self.write(update)
        if done:
            self.counts[what] += 1
        return done

    def required(self) -> set[str]:
        """The keys that must have arrived: every open task of an opted-in owner due in the
        window now, for its current due date (read from the database, what counts)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT t.id, t.due_date FROM tasks t JOIN users u ON u.id = t.owner_id "
                     "WHERE t.completed_at IS NULL AND u.notifications_enabled "
                     "AND t.due_date > now() AND t.due_date <= now() + interval '24 hours'")
            ).all()  # fmt: skip
        return {reminder_key(task_id, due) for task_id, due in rows}


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


def parse(argv: list[str]) -> Options:
    """Read the options."""
    summary = (__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=summary)
    parser.add_argument("--tasks", type=int, default=3000, help="tasks written (default 3000)")
    parser.add_argument("--duration", type=float, default=180, help="seconds of faults (180)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--workers", type=int, default=2, help="dramatiq commands (2)")
    parser.add_argument("--drain", type=float, default=420, help="max seconds to drain (420)")
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    return Options(args.tasks, args.duration, seed, args.workers, args.drain, args.keep)


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
    host = Host(engine, random.Random(rng.random()))
    initial = options.tasks // 3
    host.seed(initial)
    env = service_env(
        url, redis_server.url, **smtp_env(smtp),
        REMINDERS_LEASE="5s", REMINDERS_MAX_ATTEMPTS="20", REMINDERS_RELAY_BATCH="10",
        REMINDERS_SCAN_BATCH="500", REMINDERS_TEST_FAULT="random:0.0005",
        REMINDERS_TEST_JOURNAL=str(journals),
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
            host.step(per_step)
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

    deadline = time.monotonic() + options.drain
    required: set[str] = set()
    while time.monotonic() < deadline:
        try:
            required = host.required()
            rows = outbox(engine)
        except Exception:
            time.sleep(1)
            continue
        waiting = [r for r in rows.values() if r.status in WAITING_OR_CLAIMED]
        done = all(k in rows and rows[k].status == Status.DELIVERED for k in required)
        if done and not waiting:
            break
        log(f"draining: {sum(r.status == Status.DELIVERED for r in rows.values())} delivered, "
            f"waiting {dict(Counter(r.status for r in waiting))}, {next_due(engine)}")  # fmt: skip
        time.sleep(5)
    drained = time.monotonic() - chaos_end
    supervisor.stop()
    for scan in scans:
        scan.wait(60)
    rows = outbox(engine)
    required = host.required()
    engine.dispose()

    received = smtp.received()
    arrivals: dict[str, list[float]] = defaultdict(list)
    for headers, at in zip(smtp.headers(), smtp.arrived_at, strict=True):
        arrivals[str(headers["X-Reminder-Key"])].append(at)
    allowed = required | host.optional
    result = tally(received, required)
    optional_twice = {k: n for k, n in received.items() if k in host.optional - required and n > 1}
    unexpected = {k: n for k, n in received.items() if k not in allowed}
    events = read_journals(journals)
    duplicates = {**result.duplicated, **optional_twice}
    explained = {k: explain(k, events, faults, arrivals[k]) for k in duplicates}
    unexplained = sorted(k for k, why in explained.items() if why is None)
    dead = sorted(k for k, r in rows.items() if r.status == Status.DEAD)
    fault_kills = Counter(e.detail for e in events if e.kind == "killed")

    print(f"chaos soak: seed {options.seed}; {host.counts['inserted']} tasks written "
          f"({dict((k, v) for k, v in host.counts.items() if k != 'inserted')}); "
          f"{options.duration:.0f} s of faults, drained in {drained:.0f} s")  # fmt: skip
    print("faults: " + ", ".join(
        [f"{n} {what}" for what, n in sorted(faults.counts.items())]
        + [f"{sum(fault_kills.values())} self-kills at exact steps {dict(fault_kills)}",
           f"{smtp.deferred} SMTP 451 deferrals",
           f"{sum(s.starts - 1 for s in supervisor.slots)} process restarts by the supervisor"]
    ))  # fmt: skip
    print(f"expected {result.expected} / delivered {result.delivered} "
          f"/ missed {len(result.missed)} / duplicated {len(duplicates)} "
          f"/ unexpected {sum(unexpected.values())}")  # fmt: skip
    print(f"optional reminders (due dates moved or tasks completed after queueing) that arrived: "
          f"{len(set(received) & (host.optional - required))}; dead rows: {len(dead)}")  # fmt: skip
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
    for key in result.missed[:20]:
        print(f"  missed {key}: row {rows.get(key)}")
    for key, n in list(unexpected.items())[:20]:
        print(f"  unexpected {key} x{n}")
    passed = not result.missed and not unexpected and not unexplained
    print("result: " + ("PASS" if passed else f"FAIL (logs kept in {directory})"))
    return passed
