"""The actors over Redis (fakeredis, then a real server with the real commands) and the
embedded `reminders run`, stopped by SIGTERM.

Subprocess tests wait for what the processes do (mail received, lines printed, rows in the
database) by polling with a deadline; nothing sleeps to let a race settle.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import dramatiq
import fakeredis
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from periodiq import PeriodiqMiddleware
from sqlalchemy import Engine, bindparam, select, text

from outbox.table import OutboxRow, Status
from outbox.types import UTCDateTime
from tests.support.servers.smtp import RecordingSmtpServer
from worker import migrate
from worker.broker import SKIP_DELAY_SECONDS, StopRelaysOnShutdown, build_broker
from worker.db import make_engine
from worker.reminders.keys import reminder_key
from worker.settings import Settings

BIN = Path(sys.executable).parent
MAIL_DOMAIN = "reminders.test"
QUEUE = "reminders"


# --- helpers --------------------------------------------------------------------------------


def child_env(**variables: str) -> dict[str, str]:
    """The test process's environment without REMINDERS_*, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    env.update(TZ="UTC", PYTHONUNBUFFERED="1", **variables)
    return env


def seed(engine: Engine, tasks: dict[int, datetime], *, users: bool = True) -> None:
    """Owners 1 (UTC) and 2 (Europe/Paris), and the tasks ``{id: due}`` split between them.

    Due dates are bound with the schema's column type, i.e. in the text form SQLAlchemy
    writes on SQLite (see `test_sqlite_due_dates_written_with_plain_sql_are_reminded`).
    """
    with engine.begin() as connection:
        if users:
            connection.execute(
                text(
                    "INSERT INTO users (id, email, timezone) VALUES "
                    "(1, 'ada@example.com', 'UTC'), (2, 'bob@example.org', 'Europe/Paris')"
                )
            )
        for task_id, due in tasks.items():
            connection.execute(
                text(
                    "INSERT INTO tasks (id, owner_id, title, due_date) "
                    "VALUES (:id, :owner, :title, :due)"
                ).bindparams(bindparam("due", type_=UTCDateTime)),
                {"id": task_id, "owner": 1 + task_id % 2, "title": f"task {task_id}", "due": due},
            )


def outbox(engine: Engine) -> dict[str, tuple[str, int]]:
    """Every outbox row as ``{key: (status, attempts)}``."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(OutboxRow.idempotency_key, OutboxRow.status, OutboxRow.attempts)
        ).all()
    return {key: (status, attempts) for key, status, attempts in rows}


def wait_until(
    condition: Callable[[], bool], deadline_s: float, what: str, alive: Callable[[], None]
) -> None:
    """Poll ``condition`` until true; fail after the deadline or when ``alive`` raises."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int, alive: Callable[[], None], *expect: str) -> str:
    """The text of http://127.0.0.1:PORT/metrics once it contains every one of ``expect``
    (by default, any of the service's own metrics)."""
    wanted = expect or ("reminders_",)
    page: list[str] = [""]

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                page[0] = answer.read().decode()
        except OSError:
            return False
        return all(text in page[0] for text in wanted)

    wait_until(ready, 30, f"metrics on port {port}", alive)
    return page[0]


def sample(metrics: str, name: str) -> float:
    """The value of one sample (name with labels, as printed) in a metrics page."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{metrics[-2000:]}")


class Process:
    """A child process in its own session whose output goes to a log file."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        cwd: Path,
        log: Path,
        *,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = Path(args[0]).name
        self.log_path = log
        self._log: IO[str] = log.open("w")
        self.popen: subprocess.Popen[str] = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )

    def log(self) -> str:
        """The output so far (last 4,000 characters), for failure messages."""
        self._log.flush()
        return self.log_path.read_text()[-4000:]

    def check_alive(self) -> None:
        """Fail with the process's log when it has exited."""
        code = self.popen.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.log()}"

    def terminate_and_wait(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; return the exit code and how long the exit took."""
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout}s of SIGTERM:\n{self.log()}")
        return code, time.monotonic() - started

    def close(self) -> None:
        """Kill the process group if anything is left, and close the files."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # children left behind, if any
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes the test starts; anything still running at the end is killed."""
    started: list[Process] = []
    yield started
    for process in started:
        process.close()


# --- (a) fakeredis: the broker the module builds, unit-style --------------------------------


@pytest.fixture
def fake_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[fakeredis.FakeRedis, dict[str, Any]]]:
    """Make `build_broker`'s Redis client a FakeRedis (with Lua); yield it and its options."""
    client = fakeredis.FakeRedis()
    seen: dict[str, Any] = {}

    def from_url(url: str, **options: Any) -> fakeredis.FakeRedis:
        seen.update(options, url=url)
        return client

    monkeypatch.setattr(redis.Redis, "from_url", from_url)
    yield client, seen
    client.close()


def test_build_broker_gives_a_redis_broker_that_runs_periodic_actors_and_stops_relays(
    fake_redis: tuple[fakeredis.FakeRedis, dict[str, Any]],
) -> None:
    """The Redis broker has periodiq's middleware and timeouts, runs actors, stops relays."""
    client, options = fake_redis
    stop = threading.Event()
    settings = Settings(broker_url="redis://127.0.0.1:1/0")

    broker = build_broker(settings, stop)

    assert isinstance(broker, RedisBroker)
    assert broker.client is client
    assert options["url"] == "redis://127.0.0.1:1/0"
    assert 0 < options["socket_timeout"] <= 60
    assert 0 < options["socket_connect_timeout"] <= 60
    periodiq = [m for m in broker.middleware if isinstance(m, PeriodiqMiddleware)]
    assert [m.skip_delay for m in periodiq] == [SKIP_DELAY_SECONDS]
    assert any(isinstance(m, StopRelaysOnShutdown) for m in broker.middleware)

    calls: list[tuple[Any, ...]] = []
    done = threading.Event()

    @dramatiq.actor(broker=broker, queue_name=QUEUE, periodic=settings.scan_cron, max_retries=0)
    def wake_up() -> None:
        calls.append(())
        done.set()

    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        message = wake_up.send()
        assert done.wait(10), "the actor never ran"
        broker.join(QUEUE, timeout=10_000)
        worker.join()
        assert not stop.is_set()
    finally:
        worker.stop()
    assert calls == [()]
    assert (message.args, message.kwargs) == ((), {})
    assert stop.is_set(), "shutting the worker down must tell running relays to stop"
    assert client.hlen(f"dramatiq:{QUEUE}.msgs") == 0
    broker.close()


# The real worker.actors, its broker built on a FakeRedis: scan → relay through Redis's Lua.
RUN_ON_FAKEREDIS = """
import json
import fakeredis
import redis

server = fakeredis.FakeServer()
clients = []

def from_url(url, **options):
    clients.append(fakeredis.FakeRedis(server=server))
    return clients[-1]

redis.Redis.from_url = from_url  # before worker.actors builds its broker

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from worker import actors

assert isinstance(actors.broker, RedisBroker) and actors.broker.client is clients[0]
actors.broker.emit_after("process_boot")
worker = dramatiq.Worker(actors.broker, worker_threads=2, worker_timeout=100)
worker.start()
try:
    for _ in range(2):
        actors.scan_due_tasks.send()
        actors.broker.join(actors.QUEUE, timeout=30_000)
        worker.join()
finally:
    worker.stop()
probe = fakeredis.FakeRedis(server=server)
left = {k.decode(): probe.hlen(k) for k in probe.keys("dramatiq:*.msgs")}
print("REPORT " + json.dumps({"left": left}))
"""


def test_actors_over_a_fake_redis_deliver_each_reminder_once(tmp_path: Path) -> None:
    """worker.actors on a RedisBroker backed by FakeRedis: scan wakes the relay, one line each."""
    url = f"sqlite:///{tmp_path}/reminders.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    due = {task_id: now + task_id * timedelta(hours=1) for task_id in (1, 2, 3)}
    seed(engine, {**due, 4: now + timedelta(days=2)})

    done = subprocess.run(
        [sys.executable, "-c", RUN_ON_FAKEREDIS],
        env=child_env(
            REMINDERS_DATABASE_URL=url,
            # Nothing listens there: every Redis call must go to the fake.
            REMINDERS_BROKER_URL="redis://127.0.0.1:1/0",
            REMINDERS_CHANNEL="console",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    (report,) = [json.loads(x.removeprefix("REPORT ")) for x in lines if x.startswith("REPORT ")]
    printed = Counter(re.findall(r"key (\S+)\)$", done.stdout, re.MULTILINE))
    keys = {reminder_key(task_id, when) for task_id, when in due.items()}
    assert printed == Counter(keys)
    assert outbox(engine) == {key: (Status.DELIVERED, 1) for key in keys}
    assert set(report["left"].values()) <= {0}, report
    engine.dispose()


# --- (b) the real commands on a real Redis --------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
def test_dramatiq_and_periodiq_on_redis_mail_each_reminder_once_and_stop_cleanly(
    postgres_url: str,
    postgres_engine: Engine,
    redis_url: str,
    tmp_path: Path,
    processes: list[Process],
) -> None:
    """`dramatiq` + `periodiq` on Redis mail each reminder once, and stop on SIGTERM."""
    now = datetime.now(UTC).replace(microsecond=0)
    first = {task_id: now + task_id * timedelta(hours=1) for task_id in range(1, 6)}
    seed(postgres_engine, {**first, 6: now + timedelta(days=3)})
    with RecordingSmtpServer() as smtp:
        env = child_env(
            REMINDERS_DATABASE_URL=postgres_url,
            REMINDERS_BROKER_URL=redis_url,
            REMINDERS_CHANNEL="smtp",
            REMINDERS_SMTP_HOST=smtp.host,
            REMINDERS_SMTP_PORT=str(smtp.port),
            REMINDERS_MAIL_DOMAIN=MAIL_DOMAIN,
            REMINDERS_METRICS_PORT=str(metrics_port := free_port()),
        )
        worker = Process(
            [str(BIN / "dramatiq"), "worker.actors", "--processes", "1", "--threads", "2"],
            env, tmp_path, tmp_path / "dramatiq.log",
        )  # fmt: skip
        processes.append(worker)
        scheduler = Process(
            [str(BIN / "periodiq"), "worker.actors"], env, tmp_path, tmp_path / "periodiq.log"
        )
        processes.append(scheduler)

        def both_alive() -> None:
            worker.check_alive()
            scheduler.check_alive()

        # periodiq sends the periodic actors on start (and then at each minute).
        wait_until(lambda: len(smtp.messages) >= 5, 90, "the first five mails", both_alive)

        # More tasks; this time the test sends the scan itself, as any producer may.
        later = {task_id: now + timedelta(hours=2, minutes=task_id) for task_id in (7, 8)}
        seed(postgres_engine, later, users=False)
        client = redis.Redis.from_url(redis_url)
        try:
            # dramatiq leaves RedisBroker's constructor unannotated.
            RedisBroker(client=client).enqueue(  # type: ignore[no-untyped-call]
                dramatiq.Message(
                    queue_name=QUEUE, actor_name="scan_due_tasks", args=(), kwargs={}, options={}
                )
            )
        finally:
            client.close()
        wait_until(lambda: len(smtp.messages) >= 7, 60, "the two later mails", both_alive)

        expected = {**first, **later}
        keys = {reminder_key(task_id, due): task_id for task_id, due in expected.items()}
        wait_until(
            lambda: set(outbox(postgres_engine).values()) == {(Status.DELIVERED, 1)},
            30, "the outbox to record every delivery", both_alive,
        )  # fmt: skip

        # The metrics reach Prometheus through Dramatiq's exposition server.
        metrics = scrape(metrics_port, both_alive)
        worker_code, worker_took = worker.terminate_and_wait(30)
        scheduler_code, _ = scheduler.terminate_and_wait(30)
        mails = list(smtp.messages)

    assert worker_code == 0, worker.log()
    assert scheduler_code in (0, -signal.SIGTERM), scheduler.log()
    print(f"\ndramatiq stopped {worker_took:.1f}s after SIGTERM")
    received: Counter[str] = Counter()
    for mail in mails:
        parsed = email.message_from_bytes(mail.raw, policy=email.policy.default)
        key = str(parsed["X-Reminder-Key"])
        received[key] += 1
        task_id = keys[key]
        owner = "ada@example.com" if task_id % 2 == 0 else "bob@example.org"
        assert mail.rcpt_tos == [owner]
        assert str(parsed["To"]) == owner
        assert str(parsed["Message-ID"]) == f"<{key}@{MAIL_DOMAIN}>"
        assert str(parsed["X-Task-Id"]) == str(task_id)
        assert f"task {task_id}" in str(parsed["Subject"])
    assert received == Counter(set(keys)), "each reminder exactly once"
    rows = outbox(postgres_engine)
    assert set(rows) == set(keys)
    assert {status for status, _ in rows.values()} == {Status.DELIVERED}
    assert sample(metrics, 'reminders_deliveries_total{channel="smtp",outcome="delivered"}') == 7
    assert sample(metrics, "reminders_queued_total") == 7
    assert "dramatiq_messages_total" in metrics


# --- `reminders run`, embedded, on SQLite ---------------------------------------------------


class LineReader:
    """Reads a child's stdout line by line in a thread; ``hold_after`` lines, it waits for
    ``drain`` before reading on (so the pipe fills and the child blocks on its next write)."""

    def __init__(self, stream: IO[str], hold_after: int | None = None) -> None:
        self.lines: list[str] = []
        self.drain = threading.Event()
        self.held = threading.Event()
        self._hold_after = hold_after
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if self._hold_after is not None and len(self.lines) == self._hold_after:
                self.held.set()
                self.drain.wait(60)

    def finish(self) -> list[str]:
        """Read to the end of the stream and return every line."""
        self.drain.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "stdout never reached its end"
        return self.lines

    def keys(self) -> list[str]:
        """The idempotency keys of the reminder lines read so far."""
        return [m.group(1) for line in list(self.lines) if (m := re.search(r"key (\S+)\)$", line))]


def start_embedded(
    tmp_path: Path,
    tasks: int,
    processes: list[Process],
    *options: str,
    metrics_port: int | None = None,
) -> tuple[Process, str]:
    """A migrated SQLite database with ``tasks`` due tasks and `reminders run` on it."""
    url = f"sqlite:///{tmp_path}/reminders.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    now = datetime.now(UTC).replace(microsecond=0)
    seed(engine, {i: now + timedelta(hours=1, seconds=i) for i in range(1, tasks + 1)})
    engine.dispose()
    process = Process(
        [str(BIN / "reminders"), "run", *options],
        child_env(
            REMINDERS_DATABASE_URL=url,
            REMINDERS_CHANNEL="console",
            REMINDERS_METRICS_PORT="" if metrics_port is None else str(metrics_port),
        ),
        tmp_path, tmp_path / "run.log", stdout_pipe=True,
    )  # fmt: skip
    processes.append(process)
    return process, url


def test_reminders_run_delivers_on_start_and_exits_0_on_sigterm(
    tmp_path: Path, processes: list[Process]
) -> None:
    """`reminders run` prints each due reminder once at start; SIGTERM exits 0, nothing claimed."""
    process, url = start_embedded(tmp_path, 3, processes)
    assert process.popen.stdout is not None
    reader = LineReader(process.popen.stdout)

    wait_until(lambda: len(reader.keys()) >= 3, 30, "three reminder lines", process.check_alive)
    code, took = process.terminate_and_wait(10)
    lines = reader.finish()

    assert code == 0, process.log()
    assert took < 5, f"took {took:.1f}s to stop"
    keys = reader.keys()
    assert len(keys) == len(set(keys)) == 3, lines
    engine = make_engine(url)
    assert outbox(engine) == {key: (Status.DELIVERED, 1) for key in keys}
    engine.dispose()


def test_reminders_run_serves_metrics(tmp_path: Path, processes: list[Process]) -> None:
    """With REMINDERS_METRICS_PORT, `reminders run` serves the service's Prometheus metrics."""
    port = free_port()
    process, _url = start_embedded(tmp_path, 2, processes, metrics_port=port)
    assert process.popen.stdout is not None
    reader = LineReader(process.popen.stdout)
    wait_until(lambda: len(reader.keys()) >= 2, 30, "two reminder lines", process.check_alive)
    # A scan is counted when it returns, which can be after the relay has delivered the
    # rows its first batch committed: wait for both counts.
    metrics = scrape(
        port, process.check_alive, 'outcome="delivered"} 2.0', "reminders_queued_total 2.0"
    )
    process.terminate_and_wait(10)
    reader.finish()
    assert sample(metrics, 'reminders_deliveries_total{channel="console",outcome="delivered"}') == 2
    assert sample(metrics, "reminders_queued_total") == 2
    assert sample(metrics, "reminders_delivery_latency_seconds_count") == 2
    # Outcomes that never happened are series too, at zero, from the start.
    assert sample(metrics, 'reminders_deliveries_total{channel="console",outcome="dead"}') == 0


def test_reminders_run_stopped_mid_relay_leaves_no_row_claimed(
    tmp_path: Path, processes: list[Process]
) -> None:
    """SIGTERM with the relay blocked mid-batch: exit 0, sent rows delivered, the rest pending."""
    # 2,000 lines (about 250 kB) cannot fit in the pipe: with the test reading nothing after
    # the first line, the relay is certainly in the middle of its work when SIGTERM arrives.
    process, url = start_embedded(tmp_path, 2000, processes)
    assert process.popen.stdout is not None
    reader = LineReader(process.popen.stdout, hold_after=1)

    wait_until(reader.held.is_set, 60, "the first reminder line", process.check_alive)
    process.popen.send_signal(signal.SIGTERM)
    lines = reader.finish()  # let the blocked relay finish the row it is sending
    try:
        code = process.popen.wait(15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`reminders run` did not exit after SIGTERM:\n{process.log()}")

    assert code == 0, process.log()
    printed = reader.keys()
    assert len(printed) == len(set(printed)), "a reminder was printed twice"
    engine = make_engine(url)
    rows = outbox(engine)
    engine.dispose()
    by_status = Counter(status for status, _ in rows.values())
    assert by_status[Status.CLAIMED] == 0
    assert len(rows) == 2000
    delivered = {key for key, (status, _) in rows.items() if status == Status.DELIVERED}
    assert delivered == set(printed), f"{len(delivered)} delivered, {len(printed)} printed"
    print(f"\nstopped after {len(delivered)} of 2000 reminders; {by_status}")
    assert 0 < len(delivered) < 2000, lines[-3:]
    # Rows not attempted were given back as they were: pending, no attempt counted.
    assert {rows[key] for key in rows.keys() - delivered} == {(Status.PENDING, 0)}
