"""Section 2: relay throughput into real receivers, against the raw channel.

Each case starts from the same state: ``count`` reminders queued by a real scan, the
outbox vacuumed. Ours is `Services.relay().relay_until_idle()` with the production
channel (SMTP or signed webhook), run in 1, 2 or 4 threads of one process (each with its
own relay and channel) or in 2 or 4 processes (spawned, one relay each). The baseline is
the raw loop of `benchmarks.raw` on one connection. Runs are interleaved (raw, then each
relay case) and repeated; the median is kept.
"""

from __future__ import annotations

import functools
import multiprocessing
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from benchmarks.common import channel_settings, production_logging, progress, timed_together
from benchmarks.database import Dataset, drop_database, migrated, reset, vacuum
from benchmarks.raw import raw_seconds
from benchmarks.receivers import Receivers
from benchmarks.report import Row, Table
from benchmarks.rules import LEADS, RECIPIENTS_SQL, RULE_SQL
from outbox.relay import RelayReport
from worker.bootstrap import Services, bootstrap
from worker.db import make_engine
from worker.settings import load_settings

TARGET_SHARE = 0.70
CHANNELS = ("smtp", "webhook")
THREADS = (1, 2, 4)
PROCESSES = (2, 4)

RELAY_TASKS_SQL = """
INSERT INTO tasks (id, owner_id, title, due_date)
SELECT i, 1 + i % :users, 'task ' || i || ': prepare the quarterly report',
       :now + :start * interval '1 second' + (i * 7919 % 79200) * interval '1 second'
FROM generate_series(1::bigint, :count) AS i
"""
#: The first task is due this long after the dataset's instant: with a rule ``24h,1h,0m``,
#: every task's 1 h reminder is then beyond the scan's horizon, and its 24 h one is due.
START = {False: 3_600, True: 4_200}
USERS_SQL = """
INSERT INTO users (id, email, timezone)
SELECT u, 'user' || u || '@example.com',
       (ARRAY['UTC', 'Europe/Paris', 'America/New_York', 'Asia/Tokyo'])[1 + u % 4]
FROM generate_series(1, :users) AS u
"""


def build(count: int, now: datetime, *, rules: bool = False) -> Dataset:
    """A database whose ``count`` tasks are all due within the next day; with ``rules``,
    the default rule ``24h,1h,0m`` and a watcher for every second task (`benchmarks.rules`).
    Its size is the number of reminders a scan queues for sending at once."""
    name, url = migrated(f"relay_{count}")
    engine = make_engine(url)
    users = max(count // 10, 10)
    values = {"users": users, "count": count, "now": now, "start": START[rules]}
    with engine.begin() as connection:
        connection.execute(text(USERS_SQL), {"users": users})
        connection.execute(text(RELAY_TASKS_SQL), values)
        if rules:
            for statement in [*RECIPIENTS_SQL, *RULE_SQL]:
                connection.execute(text(statement), {"users": users, "leads": list(LEADS)})
    engine.dispose()
    vacuum(url, "users", "tasks", "outbox", *(["task_recipients"] if rules else []))
    return Dataset(name, url, count + count // 2 * rules, now, "ours")


def queue_all(dataset: Dataset, settings: dict[str, Any]) -> None:
    """Back to the built state, then one real scan: every task has a pending reminder."""
    reset(dataset)
    services = bootstrap(load_settings(database_url=dataset.url, **settings))
    try:
        result = services.scan()
    finally:
        services.engine.dispose()
    if result.queued != dataset.size:
        raise RuntimeError(f"queued {result.queued} of {dataset.size}")
    vacuum(dataset.url, "tasks", "outbox")


def _warm(services: Services, connections: int) -> None:
    """Open the pool's connections before the clock starts, as a running worker has."""
    held = [services.engine.connect() for _ in range(connections)]
    for connection in held:
        connection.close()


def relay_in_threads(services: Services, threads: int) -> tuple[float, Counter[str]]:
    """Run ``threads`` relays until idle, at once; return (wall seconds, outcome counts)."""
    relays = [services.relay() for _ in range(threads)]  # built before the clock starts
    reports = [RelayReport() for _ in range(threads)]

    def relay_into(index: int) -> None:
        reports[index] = relays[index].relay_until_idle()

    seconds = timed_together([functools.partial(relay_into, i) for i in range(threads)])
    return seconds, sum((report.counts for report in reports), Counter[str]())


def _relay_process(options: dict[str, Any], ready: Any, start: Any, results: Any) -> None:
    """One spawned worker process: bootstrap, wait for the start, relay until idle."""
    production_logging()
    services = bootstrap(channel_settings(**options))
    _warm(services, 1)
    relay = services.relay()  # built before the clock starts, as in relay_in_threads
    ready.put(True)
    start.wait()
    report = relay.relay_until_idle()
    results.put((time.time(), dict(report.counts)))
    services.engine.dispose()


def relay_in_processes(options: dict[str, Any], processes: int) -> tuple[float, Counter[str]]:
    """Run one relay in each of ``processes`` spawned processes; (wall seconds, counts)."""
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    children = [
        context.Process(target=_relay_process, args=(options, ready, start, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=120)
    started = time.time()
    start.set()
    ends, counts = [], Counter[str]()
    for _ in children:
        end, outcome = results.get(timeout=600)
        ends.append(end)
        counts.update(outcome)
    for child in children:
        child.join(60)
    return max(ends) - started, counts


@dataclass
class Case:
    """One relay configuration and the seconds each repeat took."""

    label: str
    threads: int = 1
    processes: int = 0  # 0: threads of this process

    def run(self, services: Services, options: dict[str, Any]) -> tuple[float, Counter[str]]:
        """Relay everything queued with this configuration."""
        if self.processes:
            return relay_in_processes(options, self.processes)
        return relay_in_threads(services, self.threads)


def cases() -> list[Case]:
    """1, 2 and 4 threads in one process, then 2 and 4 processes."""
    return [Case(f"relay, {n} thread{'s' * (n > 1)}", threads=n) for n in THREADS] + [
        Case(f"relay, {n} processes", processes=n) for n in PROCESSES
    ]


def measure_channel(
    channel: str,
    dataset: Dataset,
    receivers: Receivers,
    repeats: int,
    settings: dict[str, Any],
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per case for one channel: (raw loops by connections, relay cases)."""
    options: dict[str, Any] = {
        "database_url": dataset.url, "channel": channel, "endpoints": receivers.endpoints,
        **settings,
    }  # fmt: skip
    services = bootstrap(channel_settings(**options))
    _warm(services, max(THREADS))
    raw: dict[str, list[float]] = {}
    ours: dict[str, list[float]] = {}
    count = dataset.size
    try:
        for repeat in range(repeats):
            progress(f"relay: {channel}, repeat {repeat + 1} of {repeats}")
            for threads in (1, *THREADS[1:]):
                receivers.reset()
                raw.setdefault(f"raw loop, {threads} conn.", []).append(
                    raw_seconds(channel, receivers.endpoints, count, threads)
                )
            for case in cases():
                queue_all(dataset, settings)
                receivers.reset()
                seconds, counts = case.run(services, options)
                if counts.get("delivered", 0) != count:
                    raise RuntimeError(f"{case.label}: {dict(counts)}, expected {count} delivered")
                if receivers.wait(channel, count) < count:
                    raise RuntimeError(f"{case.label}: the receiver did not get {count} messages")
                ours.setdefault(case.label, []).append(seconds)
    finally:
        services.engine.dispose()
    return (
        {k: statistics.median(v) for k, v in raw.items()},
        {k: statistics.median(v) for k, v in ours.items()},
    )


def run(count: int, repeats: int, now: datetime, *, schema_file: str | None = None) -> Table:
    """Measure both channels; return the section's table (rates in reminders/s).

    With ``schema_file`` (the ``[recipients]`` mapping of `benchmarks.rules`), the tasks have
    the default rule ``24h,1h,0m`` and 1.5 recipients on average: the relay's re-check joins
    both."""
    rules = schema_file is not None
    dataset = build(count, now, rules=rules)
    settings = {"schema_file": schema_file} if rules else {}
    count = dataset.size
    what = ", rules and recipients" if rules else ""
    table = Table(f"2{'b' * rules}. Relay throughput{what}, {count:,} reminders per run "
                  "(reminders/s)")  # fmt: skip
    try:
        with Receivers() as receivers:
            for channel in CHANNELS:
                raw, ours = measure_channel(channel, dataset, receivers, repeats, settings)
                base = count / raw["raw loop, 1 conn."]
                for label, seconds in raw.items():
                    if label != "raw loop, 1 conn.":
                        table.add(Row(f"{channel}: {label}", base, count / seconds, "/s"))
                for label, seconds in ours.items():
                    row = Row(f"{channel}: {label}", base, count / seconds, "/s", "of",
                              f"≥ {TARGET_SHARE:.2f}x raw")  # fmt: skip
                    table.add(row.judged((row.ratio or 0) >= TARGET_SHARE))
    finally:
        drop_database(dataset.name)
    table.notes.append(
        f"baseline: the raw loop on one connection, no database (median of {repeats}); "
        "ratio = our rate / raw rate"
    )
    table.notes.append(
        f"each relay run starts from the same {count:,} pending rows (reset, real scan, VACUUM)"
    )
    return table
