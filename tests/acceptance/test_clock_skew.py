"""Hosts with skewed clocks, as an operator would meet them: real processes, each shifted with
libfaketime (its wall clock only; the monotonic clock stays real), on one PostgreSQL, Redis
and SMTP server whose clocks are the true time.

One `dramatiq worker.actors` runs 150 s ahead, one 150 s behind, and `periodiq worker.actors`
40 s behind. Ticks come from periodiq and, every two seconds, from the test (stamped with the
true time, as periodiq on a host with a correct clock would stamp them). Every decision must
follow the database server's clock: nothing early, nothing for a task already due, nothing
late by the skew, no tick dropped.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlalchemy import text

from tests.acceptance.deployment import Deployment
from tests.acceptance.harness import (
    BIN,
    QUEUE,
    ROOT,
    Proc,
    SmtpReceiver,
    Waker,
    wait_until,
)
from tests.conftest import unavailable
from worker.reminders.keys import reminder_key

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LOOKAHEAD = timedelta(seconds=30)
SKEWS = {"ahead": 150, "behind": -150}  # seconds, the two workers' hosts
SCHEDULER_SKEW = -40
TICK_SECONDS = 2.0
#: How late a reminder may arrive after its moment: a tick or two, never the skew.
LATE = timedelta(seconds=8)
#: The processes read the database's clock through a measured offset, exact to a fraction of
#: a millisecond on the loopback; the receiver stamps arrivals with the same true clock.
SLACK = timedelta(milliseconds=50)
SHIM = Path(__file__).with_name("skewed")


def shifted(args: list[str], seconds: int) -> list[str]:
    """``args`` run with the host's wall clock ``seconds`` off the true time (libfaketime)."""
    return ["faketime", "-f", f"{seconds:+d}s", *args]


def skewed_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a shifted process: its monotonic clock stays the real one, and
    `time.sleep` works around libfaketime's bug in that mode (``skewed/sitecustomize.py``)."""
    path = os.pathsep.join(filter(None, [str(SHIM), env.get("PYTHONPATH")]))
    return {**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": path}


def start_worker(deployment: Deployment, name: str, env: Mapping[str, str]) -> Proc:
    """``dramatiq worker.actors`` with one process of two threads, its clock shifted."""
    args = [str(BIN / "dramatiq"), "worker.actors", "--processes", "1", "--threads", "2"]
    args += ["--path", str(ROOT)]
    return deployment.procs.start(f"dramatiq-{name}", shifted(args, SKEWS[name]), env)


@contextmanager
def ticking(url: str) -> Iterator[list[datetime]]:
    """Send a tick (a scan and a relay, stamped as periodiq stamps them) every two seconds;
    yield the list of the times they were sent at."""
    sent: list[datetime] = []
    stop = threading.Event()
    waker = Waker(url)

    def tick() -> None:
        while not stop.is_set():
            now = datetime.now(UTC).replace(microsecond=0)
            for actor in ("scan_due_tasks", "relay_outbox"):
                options = {"scheduled_at": now.isoformat()}
                message: dramatiq.Message[Any] = dramatiq.Message(QUEUE, actor, (), {}, options)
                waker.broker.enqueue(message)
            sent.append(now)
            stop.wait(TICK_SECONDS)

    thread = threading.Thread(target=tick, name="ticks", daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(10)
        waker.close()


def offsets_logged(process: Proc) -> list[float]:
    """The clock offsets the process logged (seconds: the database's lead over its host)."""
    found = []
    for line in process.log(tail=0).splitlines():
        if '"clock_offset' in line and line.startswith("{"):
            found.append(float(json.loads(line)["offset_seconds"]))
    return found


def scans(process: Proc) -> int:
    """How many scans the worker ran."""
    return len(re.findall(r'"event": "scan"', process.log(tail=0)))


def test_workers_minutes_ahead_and_behind_change_nothing(
    deployment: Deployment, smtp: SmtpReceiver
) -> None:
    """Nothing early (arrival against due - lookahead, on the true clock), nothing for a task
    already due, nothing late by the skew, every tick scanned; the logs show each skew."""
    if shutil.which("faketime") is None:
        unavailable("faketime", FileNotFoundError("no faketime command (Debian: faketime)"))
    env = skewed_env(deployment.env(smtp, REMINDERS_LOOKAHEAD=f"{LOOKAHEAD.total_seconds():g}s"))
    workers = [start_worker(deployment, name, env) for name in SKEWS]
    for worker in workers:
        wait_until(partial(worker.logged, "ready for action"), f"{worker.name} up", alive=workers)
    periodiq = [str(BIN / "periodiq"), "worker.actors"]
    scheduler = deployment.procs.start("periodiq", shifted(periodiq, SCHEDULER_SKEW), env)
    alive = [*workers, scheduler]

    start = datetime.now(UTC)
    deployment.add_users([(1, "ada@example.com", "UTC", True)])
    soon = {n: start + LOOKAHEAD + timedelta(seconds=6 * n) for n in range(1, 5)}  # 6..24 s
    never = {
        11: start - timedelta(seconds=10),  # due already
        12: start - timedelta(seconds=110),  # the behind host's own window would take it
        13: start + LOOKAHEAD + timedelta(seconds=140),  # the ahead host's would take it now
    }
    deployment.add_tasks(
        [(task_id, 1, f"task {task_id}", due, None) for task_id, due in (soon | never).items()]
    )
    expected = {reminder_key(task_id, due): due - LOOKAHEAD for task_id, due in soon.items()}

    with ticking(deployment.redis.url) as sent:
        deployment.wait_settled(expected, "every reminder delivered", alive=alive, timeout=60)
    periodiq_ticks = len(re.findall(r"Scheduling .*scan_due_tasks", scheduler.log(tail=0)))
    ticks = len(sent) + periodiq_ticks
    wait_until(lambda: sum(scans(w) for w in workers) >= ticks, "a scan per tick", alive=alive)

    mails = smtp.messages
    arrivals = {}
    for mail, headers in zip(mails, smtp.headers(), strict=True):
        key = str(headers["X-Reminder-Key"])
        arrived = datetime.fromtimestamp(mail.received_at, UTC)
        arrivals[key] = arrived - expected[key]  # a KeyError: a reminder that must not be sent
        dated = email.utils.parsedate_to_datetime(str(headers["Date"]))
        assert abs(dated - arrived) < timedelta(seconds=2), (key, dated, arrived)
    assert sorted(arrivals) == sorted(expected) and len(mails) == len(expected)
    for key, after in arrivals.items():
        assert -SLACK <= after <= LATE, (key, after.total_seconds())
    for worker in workers:
        assert not worker.logged("tick_skipped|Skipping"), worker.log()
    assert sum(scans(w) for w in workers) == ticks
    assert all(scans(w) > 0 for w in workers), [scans(w) for w in workers]
    for process, skew in [*zip(workers, SKEWS.values(), strict=True), (scheduler, SCHEDULER_SKEW)]:
        logged = offsets_logged(process)
        assert logged and abs(logged[0] + skew) < 0.5, (process.name, logged)
    with deployment.db.connect() as connection:
        beat = connection.execute(
            text("SELECT scanned_at, clock_offset_ms FROM reminder_scan_heartbeat")
        ).one()
    assert beat.scanned_at >= sent[-1] - timedelta(seconds=TICK_SECONDS + 1)
    assert abs(abs(beat.clock_offset_ms) - 150_000) < 500
    print(
        f"\nticks: {ticks} ({periodiq_ticks} from periodiq), scans per worker "
        f"{[scans(w) for w in workers]}; arrival after the moment (s): "
        + ", ".join(f"{after.total_seconds():.2f}" for after in sorted(arrivals.values()))
    )
