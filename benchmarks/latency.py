"""Section 4: latency from the moment a task becomes eligible to the receiver's 200.

The service runs as deployed on one host: ``reminders run`` (scheduler and two worker
threads) on the Redis broker, relaying signed webhooks to the real receiver. This
process plays the host application: it saves tasks already inside the lookahead (so a
task is eligible the moment its INSERT commits) at random moments (Poisson arrivals),
and, in the second case, nudges the scanner right after each save by enqueuing a
``scan_due_tasks`` message, as a host application would. Latency = the receiver's
acceptance time - the commit time, both wall-clock on this machine.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import text

from benchmarks.common import WEBHOOK_SECRET, progress
from benchmarks.database import drop_database, migrated
from benchmarks.receivers import Receivers
from benchmarks.report import Row, Table, percentile
from worker.db import make_engine

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
DEFAULT_P99_TARGET_S = 61.0  # one period of the default schedule, plus a second
NUDGE_P99_TARGET_S = 1.0
USERS = 100


def clear_redis() -> None:
    """Forget the queues of an earlier run in the benchmark's Redis database."""
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter("dramatiq:*"):
        client.delete(key)
    client.close()


def start_service(database_url: str, webhook_url: str, log: Path) -> subprocess.Popen[bytes]:
    """``reminders run`` with the default schedule, on Redis, to the webhook receiver."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")},
        "REMINDERS_DATABASE_URL": database_url,
        "REMINDERS_BROKER_URL": REDIS_URL,
        "REMINDERS_CHANNEL": "webhook",
        "REMINDERS_WEBHOOK_URL": webhook_url,
        "REMINDERS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "REMINDERS_WEBHOOK_ALLOW_HTTP_LOCALHOST": "true",
    }
    command = [str(Path(sys.executable).with_name("reminders")), "run", "--threads", "2"]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_first_scan(database_url: str, timeout: float = 60.0) -> None:
    """Return once the service has scanned once (its heartbeat row exists)."""
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                if connection.execute(
                    text("SELECT count(*) FROM reminder_scan_heartbeat")
                ).scalar():
                    return
            time.sleep(0.2)
    finally:
        engine.dispose()
    raise RuntimeError(f"the service did not scan within {timeout:.0f} s")


def save_tasks(
    database_url: str, seconds: float, rate: float, first_id: int, nudge: RedisBroker | None
) -> dict[int, float]:
    """Save tasks due in 23 h at Poisson moments for ``seconds``; {task id: commit time}."""
    engine = make_engine(database_url)
    saved: dict[int, float] = {}
    rng = random.Random(first_id)
    task_id, end = first_id, time.monotonic() + seconds
    insert = text(
        "INSERT INTO tasks (id, owner_id, title, due_date) VALUES (:id, :owner, :title, :due)"
    )
    try:
        with engine.connect() as connection:
            while time.monotonic() < end:
                time.sleep(rng.expovariate(rate))
                due = datetime.now(UTC) + timedelta(hours=23)
                connection.execute(insert, {"id": task_id, "owner": 1 + task_id % USERS,
                                            "title": f"task {task_id}", "due": due})  # fmt: skip
                connection.commit()
                saved[task_id] = time.time()
                if nudge is not None:
                    nudge.enqueue(Message(queue_name="reminders", actor_name="scan_due_tasks",
                                          args=(), kwargs={}, options={}))  # fmt: skip
                task_id += 1
    finally:
        engine.dispose()
    return saved


def latencies(receivers: Receivers, saved: dict[int, float], wait_s: float) -> list[float]:
    """Wait until every saved task was delivered; return the latencies in seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        arrivals = {task: at for at, task in receivers.webhook_arrivals() if task in saved}
        if len(arrivals) >= len(saved) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = len(saved) - len(arrivals)
    if missing:
        raise RuntimeError(f"{missing} of {len(saved)} reminders never arrived")
    return [arrivals[task] - saved[task] for task in saved]


def run(default_seconds: float, nudge_seconds: float) -> Table:
    """Both cases against one running service; the table gives p50 and p99."""
    name, url = migrated("latency")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO users (id, email) SELECT u, 'user' || u || '@example.com' "
                 "FROM generate_series(1, :n) u"), {"n": USERS})  # fmt: skip
    engine.dispose()
    clear_redis()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_latency_{os.getpid()}.log"
    # dramatiq leaves RedisBroker's constructor unannotated.
    broker = RedisBroker(url=REDIS_URL)  # type: ignore[no-untyped-call]
    broker.declare_queue("reminders")
    try:
        with Receivers() as receivers:
            service = start_service(url, receivers.endpoints["webhook_url"], log)
            try:
                wait_for_first_scan(url)
                progress(f"latency: default schedule, saving tasks for {default_seconds:.0f} s")
                saved = save_tasks(url, default_seconds, 2.0, 1, None)
                by_schedule = latencies(receivers, saved, 75)
                progress(f"latency: nudged, saving tasks for {nudge_seconds:.0f} s")
                saved = save_tasks(url, nudge_seconds, 4.0, 1_000_000, broker)
                nudged = latencies(receivers, saved, 75)
            finally:
                service.send_signal(signal.SIGTERM)
                service.wait(90)
    finally:
        broker.close()
        clear_redis()
        drop_database(name)
    return table(by_schedule, nudged)


def table(by_schedule: list[float], nudged: list[float]) -> Table:
    """p50 and p99 rows: the schedule against the naive hourly one, the nudge against it."""
    result = Table("4. Latency: task eligible → receiver's acceptance (seconds)")
    hourly = 3600.0  # the naive design's schedule: the wait is uniform over one hour
    for q in (50, 99):
        ours = percentile(by_schedule, q)
        target = f"≤ {DEFAULT_P99_TARGET_S:g} s" if q == 99 else ""
        result.add(Row(f"p{q}, default schedule `* * * * *` ({len(by_schedule)} tasks)",
                       hourly * q / 100, ours, "s", "sooner", target,
                       ours <= DEFAULT_P99_TARGET_S if q == 99 else None))  # fmt: skip
    for q in (50, 99):
        ours = percentile(nudged, q)
        target = f"≤ {NUDGE_P99_TARGET_S:g} s" if q == 99 else ""
        result.add(Row(f"p{q}, nudged after save ({len(nudged)} tasks)",
                       percentile(by_schedule, q), ours, "s", "sooner", target,
                       ours <= NUDGE_P99_TARGET_S if q == 99 else None))  # fmt: skip
    result.notes.append(
        "default-schedule rows: baseline = the naive design's hourly schedule, analytically "
        "(a uniform wait over one hour, processing ignored); nudged rows: baseline = the default "
        "schedule"
    )
    result.notes.append(
        f"max: {max(by_schedule):.1f} s on the schedule, {max(nudged) * 1000:.0f} ms nudged; "
        "service: `reminders run --threads 2`, Redis broker, webhook channel"
    )
    return result
