"""Silent network faults between the real worker and its database or receiver: connections
that stop answering and are never closed (the fault proxy's ``silent`` mode, what a NAT that
lost its state does), and connections reset as they are used (``reset``, a restarted pooler
or firewall). Reminders are delayed, none is lost or repeated, the worker gives up
on the dead connections by itself, and once the fault ends deliveries resume within the
timeouts plus one tick, with no actor left running (a stuck thread would hold one) and the
same threads as before.

The schedule is the harness's one-second `Ticker`; the worker runs with the harness's fast
settings and a 1 s statement timeout (so a 6 s database deadline). Each test prints how long
the worker took to give up and to recover, against the bounds (``pytest -s`` shows them).

A silent database also runs on a mapped schema (``todo_items`` with Berlin wall-time
deadlines, read through ``REMINDERS_SCHEMA_FILE``): the worker's recovery goes through the
mapping's statements and the check of the mapping a process makes when it connects. The
reset database and the receiver's faults do not touch the host's tables: the reference
schema alone.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from tests.acceptance.harness import (
    Proc,
    Procs,
    RedisServer,
    SmtpReceiver,
    Ticker,
    assert_each_exactly_once,
    free_port,
    outbox,
    seed,
    service_env,
    settled,
    smtp_env,
    utc_now,
    wait_until,
)
from tests.acceptance.host import HostDatabase
from tests.conftest import HostDatabase as HostTables
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.hosts import REFERENCE_APP, TODO_APP_BERLIN
from worker.db import DatabaseTimeouts

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

DATABASE = DatabaseTimeouts(statement=1.0)  # what the worker runs with here
TICK = 1.0
SEND_TIMEOUT = 1.0  # the harness's REMINDERS_SEND_TIMEOUT
RETRY_BASE = 1.0  # the harness's REMINDERS_RETRY_BASE: a first retry waits at most this
SLACK = 5.0  # what a loaded machine may add
#: The send deadlines' watchdog thread starts with sends and ends 5 s after the last one, so
#: a count of threads may catch it or not; any other thread gained or lost fails the test.
WATCHDOG_THREAD = 1


@pytest.fixture
def database_proxy(host_database: HostTables) -> Iterator[tuple[FaultProxy, str]]:
    """A fault proxy in front of this test's database, and the database's URL through it."""
    direct = make_url(host_database.url)
    with FaultProxy(direct.host or "127.0.0.1", direct.port or 5432) as proxy:
        through = direct.set(host=proxy.host, port=proxy.port)
        yield proxy, through.render_as_string(hide_password=False)


def worker_threads(worker: Proc) -> int:
    """How many threads the dramatiq command's children run (its worker process, and the
    process that serves the metrics)."""
    return sum(len(list(Path(f"/proc/{child}/task").iterdir())) for child in worker.children())


def messages_in_progress(port: int) -> float:
    """The sum of dramatiq's in-progress gauge: actors running right now in the worker."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        page = answer.read().decode()
    samples = [
        line for line in page.splitlines() if line.startswith("dramatiq_messages_inprogress{")
    ]
    return sum(float(line.rsplit(" ", 1)[1]) for line in samples)


def idle(port: int) -> bool:
    """Whether no actor is running in the worker (its metrics may not be served yet)."""
    try:
        return messages_in_progress(port) == 0
    except OSError:
        return False


def failures(worker: Proc) -> int:
    """How many lines the worker logged of actor runs that failed (one per run of failures)."""
    return len(re.findall(r'"event": "(?:scan|relay)_failed"', worker.log(tail=0)))


# Silent: connections that stop answering and are never closed. Reset: every connection
# closed with RST, new ones too, until the fault ends (a restarted pooler or firewall).
FAULTS = pytest.mark.parametrize("fault", [Mode.SILENT, Mode.RESET], ids=str)


@pytest.mark.parametrize(
    ("host_app", "fault"),
    [
        pytest.param(REFERENCE_APP, Mode.SILENT, id="reference-silent"),
        pytest.param(REFERENCE_APP, Mode.RESET, id="reference-reset"),
        pytest.param(TODO_APP_BERLIN, Mode.SILENT, id="todo_app_berlin-silent"),
    ],
)
def test_a_silent_database_delays_reminders_and_the_worker_recovers_by_itself(
    fault: Mode,
    db: Engine,
    host_database: HostTables,
    database_proxy: tuple[FaultProxy, str],
    private_redis: RedisServer,
    smtp: SmtpReceiver,
    procs: Procs,
) -> None:
    """Every database connection goes silent, new ones too: the worker's calls give up within
    their bounds, and after the fault the reminders written meanwhile are delivered within
    a connect timeout, a ping and a tick, each once."""
    proxy, url = database_proxy
    host = HostDatabase(db, app=host_database.app, schema_file=host_database.schema_file)
    now = utc_now()
    first = seed(db, now, 10, app=host.app)
    metrics = free_port()
    env = service_env(
        url, private_redis.url, **host.schema_env(),
        REMINDERS_DB_STATEMENT_TIMEOUT="1s", REMINDERS_METRICS_PORT=str(metrics), **smtp_env(smtp),
    )  # fmt: skip
    worker = procs.dramatiq(env, threads=2)
    with Ticker(private_redis.url, period=TICK):
        wait_until(lambda: settled(db, first.keys), "the first reminders", alive=[worker])
        wait_until(lambda: idle(metrics), "the worker to be idle", alive=[worker])
        threads_before = worker_threads(worker)

        proxy.mode = fault
        started = time.monotonic()
        during = seed(db, now + timedelta(minutes=5), 10, first=100, users=False, app=host.app)
        give_up_bound = TICK + DATABASE.ping + DATABASE.connect  # a tick, a ping, a connect
        wait_until(
            lambda: failures(worker) > 0, "the worker to give up on the silent database",
            timeout=give_up_bound + SLACK, alive=[worker],
        )  # fmt: skip
        gave_up = time.monotonic() - started

        proxy.mode = Mode.FORWARD
        ended = time.monotonic()
        # A connect begun just before the end runs out, then a pooled connection's ping.
        recovery_bound = DATABASE.connect + DATABASE.ping + TICK
        wait_until(
            lambda: settled(db, during.keys), "the reminders written during the fault",
            timeout=recovery_bound + SLACK, alive=[worker],
        )  # fmt: skip
        recovered = time.monotonic() - ended
        wait_until(lambda: idle(metrics), "no actor left running", alive=[worker])
        threads_after = worker_threads(worker)

    print(
        f"\n{fault} database: gave up after {gave_up:.1f}s (bound {give_up_bound:g}s), "
        f"recovered {recovered:.1f}s after the fault (bound {recovery_bound:g}s), "
        f"threads {threads_before} before, {threads_after} after, "
        f"{proxy.counts.silenced} connections silenced, {proxy.counts.reset} reset"
    )
    assert recovered < recovery_bound + SLACK
    assert abs(threads_after - threads_before) <= WATCHDOG_THREAD
    worker.check_alive()  # never restarted
    assert worker.terminate() == 0, worker.log()
    assert_each_exactly_once(smtp.received(), first.keys | during.keys)


@FAULTS
def test_a_silent_receiver_delays_reminders_and_the_relay_recovers_by_itself(
    fault: Mode,
    db: Engine,
    postgres_url: str,
    private_redis: RedisServer,
    smtp: SmtpReceiver,
    procs: Procs,
) -> None:
    """The SMTP relay's connections go silent, new ones too: each send gives up at the send
    timeout and is retried; after the fault every reminder is delivered within a send
    timeout, a first retry's backoff and a tick, each once."""
    now = utc_now()
    first = seed(db, now, 10)
    metrics = free_port()
    with FaultProxy(smtp.host, smtp.port) as proxy:
        receiver = {**smtp_env(smtp), "REMINDERS_SMTP_PORT": str(proxy.port)}
        env = service_env(
            postgres_url, private_redis.url, REMINDERS_METRICS_PORT=str(metrics), **receiver
        )
        worker = procs.dramatiq(env, threads=2)
        with Ticker(private_redis.url, period=TICK):
            wait_until(lambda: settled(db, first.keys), "the first reminders", alive=[worker])
            wait_until(lambda: idle(metrics), "the worker to be idle", alive=[worker])
            threads_before = worker_threads(worker)

            proxy.mode = fault
            started = time.monotonic()
            during = seed(db, now + timedelta(minutes=5), 10, first=100, users=False)
            wait_until(
                lambda: any(r.last_error for r in outbox(db).values()),
                "a send to give up on the faulty receiver",
                timeout=SEND_TIMEOUT + TICK + SLACK, alive=[worker],
            )  # fmt: skip
            gave_up = time.monotonic() - started

            proxy.mode = Mode.FORWARD
            ended = time.monotonic()
            recovery_bound = SEND_TIMEOUT + RETRY_BASE + TICK
            wait_until(
                lambda: settled(db, during.keys), "the reminders held up by the fault",
                timeout=recovery_bound + SLACK, alive=[worker],
            )  # fmt: skip
            recovered = time.monotonic() - ended
            wait_until(lambda: idle(metrics), "no actor left running", alive=[worker])
            threads_after = worker_threads(worker)
        silenced, reset = proxy.counts.silenced, proxy.counts.reset

    print(
        f"\n{fault} receiver: gave up after {gave_up:.1f}s (send timeout {SEND_TIMEOUT:g}s), "
        f"recovered {recovered:.1f}s after the fault (bound {recovery_bound:g}s), "
        f"threads {threads_before} before, {threads_after} after, "
        f"{silenced} connections silenced, {reset} reset"
    )
    assert recovered < recovery_bound + SLACK
    assert abs(threads_after - threads_before) <= WATCHDOG_THREAD
    worker.check_alive()
    assert worker.terminate() == 0, worker.log()
    assert_each_exactly_once(smtp.received(), first.keys | during.keys)
