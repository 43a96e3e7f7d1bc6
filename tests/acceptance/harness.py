"""The acceptance harness: real processes, a private Redis and PostgreSQL, receivers that count.

Everything here starts something real and stops it again: the `dramatiq`, `periodiq` and
`reminders` commands as subprocesses (each in its own session, output in a log file), a
private ``redis-server`` and a private PostgreSQL cluster that tests may kill and restart
without touching the machine's shared ones, and receivers (the recording SMTP and webhook
servers of ``tests/support/servers``) that tell which reminder keys arrived how
often. The chaos soak (``tests/chaos``) uses the same pieces.

Waiting is always for an observable effect (a row's status, a count at the receiver, a line
in a log, a process's exit), polled with a deadline; nothing sleeps to let a race happen.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, NamedTuple

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from outbox.table import OutboxRow, Status
from tests.support.hosts import REFERENCE_APP, HostApp, HostTask
from tests.support.servers.smtp import RecordingSmtpServer
from tests.support.servers.webhook import RecordedRequest, RecordingWebhookServer, Reply
from worker import migrate
from worker.db import make_engine
from worker.reminders.keys import reminder_key

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
QUEUE = "reminders"
MAIL_DOMAIN = "reminders.test"
#: 32 random-looking bytes in the Standard Webhooks form (a test value, not a secret).
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw1Ubfg2Rk4Mo="
#: Short leases, timeouts and backoff, so that recovery takes seconds instead of minutes.
FAST = {
    "REMINDERS_LEASE": "3s",
    "REMINDERS_SEND_TIMEOUT": "1s",
    "REMINDERS_RETRY_BASE": "1s",
    "REMINDERS_RETRY_CAP": "4s",
}
WAIT = 60.0  # seconds: an upper bound for any one wait, never reached when healthy


# --- time and polling -----------------------------------------------------------------------


def utc_now() -> datetime:
    """The wall clock in UTC to the second (the processes under test read the same clock)."""
    return datetime.now(UTC).replace(microsecond=0)


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = WAIT,
    alive: Iterable[Proc] = (),
    interval: float = 0.1,
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` or when a process in ``alive``
    has exited (with its log in the message)."""
    deadline = time.monotonic() + timeout
    while not condition():
        for process in alive:
            process.check_alive()
        if time.monotonic() > deadline:
            logs = "".join(f"\n--- {p.name} ---\n{p.log(3000)}" for p in alive)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{logs}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- processes ------------------------------------------------------------------------------


def child_env(**variables: str) -> dict[str, str]:
    """This environment without any REMINDERS_* variable, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    env.update(TZ="UTC", PYTHONUNBUFFERED="1", **variables)
    return env


class Proc:
    """A child process in its own session (so a kill reaches its children), logging to a file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], cwd: Path) -> None:
        self.name = name
        self.args = args
        self.log_path = cwd / f"{name}.log"
        self._log: IO[str] = self.log_path.open("a")
        self.popen = subprocess.Popen(
            args,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.started = time.monotonic()

    def log(self, tail: int = 6000) -> str:
        """The output so far: its last ``tail`` characters, or all of it when ``tail`` is 0."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def logged(self, pattern: str) -> bool:
        """Whether the whole output so far holds a match of the regular expression ``pattern``."""
        return re.search(pattern, self.log(tail=0)) is not None

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def check_alive(self) -> None:
        """Fail, showing the log, when the process has exited."""
        code = self.popen.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.log()}"

    def wait_exit(self, timeout: float = WAIT) -> int:
        """Wait for the process to exit on its own; return its exit code."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            message = f"{self.name} still running after {timeout}s:\n{self.log()}"
            raise AssertionError(message) from None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit; return the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL the whole session (the process and every child it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def children(self) -> list[int]:
        """The PIDs of this process's direct children (a dramatiq worker's worker processes)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def close(self) -> None:
        """Kill whatever is left of the session, reap the process, close the log."""
        if self.alive():
            self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self.kill()  # children left behind, if any
        self._log.close()


class Procs:
    """The processes a test starts; all of them are killed and reaped at the end."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.started: list[Proc] = []
        self._names: Counter[str] = Counter()

    def start(self, name: str, args: list[str], env: Mapping[str, str]) -> Proc:
        """Start ``args`` (logging to ``<cwd>/<name>[-n].log``)."""
        self._names[name] += 1
        unique = name if self._names[name] == 1 else f"{name}-{self._names[name]}"
        process = Proc(unique, args, env, self.cwd)
        self.started.append(process)
        return process

    def dramatiq(
        self, env: Mapping[str, str], *, module: str = "worker.actors", threads: int = 2
    ) -> Proc:
        """``dramatiq MODULE`` with one worker process (the real CLI, as operators run it)."""
        args = [str(BIN / "dramatiq"), module, "--processes", "1", "--threads", str(threads)]
        return self.start("dramatiq", [*args, "--path", str(ROOT)], env)

    def faulty_dramatiq(self, env: Mapping[str, str], fault: str, mark: Path) -> Proc:
        """``dramatiq tests.acceptance.faulty_worker`` that SIGKILLs itself at ``fault``."""
        faulty = {**env, "REMINDERS_TEST_FAULT": fault, "REMINDERS_TEST_FAULT_MARK": str(mark)}
        return self.dramatiq(faulty, module="tests.acceptance.faulty_worker")

    def periodiq(self, env: Mapping[str, str]) -> Proc:
        """``periodiq worker.actors``: sends both periodic actors at start, then every minute."""
        return self.start("periodiq", [str(BIN / "periodiq"), "worker.actors"], env)

    def reminders(self, env: Mapping[str, str], *args: str) -> Proc:
        """``reminders ARGS`` in the background."""
        return self.start("reminders-" + args[0], [str(BIN / "reminders"), *args], env)

    def close(self) -> None:
        """Kill and reap everything still running."""
        for process in self.started:
            process.close()


def run_reminders(
    env: Mapping[str, str], *args: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``reminders ARGS`` to its end and return what it did."""
    return subprocess.run(
        [str(BIN / "reminders"), *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- a private Redis ------------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` of our own, without persistence: a restart loses every message."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self._log = (self.directory / f"redis-{self.port}.log").open("ab")
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_until(self.ping, f"redis-server on port {self.port}", timeout=20)

    def ping(self) -> bool:
        """Whether the server answers."""
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def crash(self) -> None:
        """SIGKILL the server: connections drop, queued messages are gone."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Crash the server and start an empty one on the same port."""
        self.crash()
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        """Stop the server for good."""
        self.crash()


class Waker:
    """Sends the actors' wake-up messages through Redis, as periodiq or the scan would."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        # dramatiq leaves RedisBroker's constructor unannotated.
        self.broker = RedisBroker(client=self.client)  # type: ignore[no-untyped-call]

    def send(self, *actors: str) -> None:
        """Enqueue one message (no arguments: they are wake-up calls) per actor name."""
        for actor in actors:
            self.broker.enqueue(
                dramatiq.Message(queue_name=QUEUE, actor_name=actor, args=(), kwargs={}, options={})
            )

    def tick(self) -> None:
        """What periodiq sends at each tick: a scan and a relay sweep."""
        self.send("scan_due_tasks", "relay_outbox")

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


def wake(url: str, *actors: str) -> None:
    """Send one wake-up per actor name through the Redis at ``url``, then disconnect."""
    waker = Waker(url)
    try:
        waker.send(*actors)
    finally:
        waker.close()


class Ticker:
    """A fast stand-in for periodiq: a scan and a relay sweep every ``period`` seconds.

    The contract's schedule is a cron expression with minute resolution; this sends the same
    messages every second, so that recovery which waits for "the next tick" takes a second.
    Ticks that find Redis down are lost, as periodiq's would be.
    """

    def __init__(self, url: str, period: float = 1.0) -> None:
        self.url = url
        self.period = period
        self.sent = 0
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            waker: Waker | None = None
            try:
                waker = Waker(self.url)
                waker.tick()
                self.sent += 1
            except redis.RedisError:
                self.lost += 1
            finally:
                if waker is not None:
                    waker.close()
            self._stop.wait(self.period)


# --- a private PostgreSQL cluster -----------------------------------------------------------


def postgres_version() -> str:
    """The major version of the PostgreSQL server binaries installed (pg_createcluster's)."""
    versions = sorted(Path("/usr/lib/postgresql").iterdir(), key=lambda p: int(p.name))
    return versions[-1].name


class PostgresCluster:
    """A PostgreSQL cluster of our own (pg_createcluster), with trust auth on 127.0.0.1.

    It runs as the ``postgres`` OS user like the shared one, but tests may stop and restart
    it at will. ``fsync`` is off: it is thrown away at the end.
    """

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.version = postgres_version()
        self.restarts = 0

    def _ctl(self, action: str, *options: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", self.version, self.name, action, *options],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def create(self) -> None:
        """Create and start the cluster."""
        subprocess.run(
            ["pg_createcluster", self.version, self.name, "--port", str(self.port),
             "-o", "fsync=off", "-o", "full_page_writes=off", "-o", "synchronous_commit=off",
             "--", "--auth-host=trust", "--auth-local=trust"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._ctl("start")
        wait_until(self.ready, f"PostgreSQL cluster {self.name}", timeout=60)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect everyone; ``immediate``: like a crash)."""
        self._ctl("stop", "--", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again."""
        self.stop(mode)
        self.start()
        self.restarts += 1

    def ready(self) -> bool:
        """Whether the server accepts connections now."""
        done = subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False, capture_output=True, timeout=30,
        )  # fmt: skip
        return done.returncode == 0

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create and migrate a database; return its URL."""
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
        engine = make_engine(self.url(name))
        migrate.upgrade(engine)
        engine.dispose()
        return self.url(name)

    def drop(self) -> None:
        """Stop and delete the cluster."""
        subprocess.run(
            ["pg_dropcluster", "--stop", self.version, self.name],
            check=False, capture_output=True, timeout=120,
        )  # fmt: skip


@contextlib.contextmanager
def database_copy(admin_url: str, template: str) -> Iterator[tuple[str, Engine]]:
    """A fresh database on the shared server, copied from ``template``: its URL and an engine.

    For module-scoped fixtures, which cannot use the per-test ``postgres_url``; the database
    is dropped at the end, disconnecting whoever is still on it.
    """
    name = f"reminders_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name} TEMPLATE {template}"))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


# --- what the host application writes -------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    """Tasks written for a test: ``due`` must each get one reminder, ``never`` none."""

    due: dict[int, datetime]
    never: set[int]

    @property
    def keys(self) -> set[str]:
        """The idempotency keys of the reminders expected."""
        return {reminder_key(task_id, when) for task_id, when in self.due.items()}

    def key(self, task_id: int) -> str:
        """The key of one due task's reminder."""
        return reminder_key(task_id, self.due[task_id])


def add_users(
    engine: Engine, users: Iterable[tuple[int, str, str, bool]], app: HostApp = REFERENCE_APP
) -> None:
    """Insert users ``(id, email, timezone, notifications_enabled)`` as the host ``app`` would."""
    with engine.begin() as connection:
        for user_id, email, zone, enabled in users:
            app.add_user(connection, user_id, email=email, timezone=zone, enabled=enabled)


def add_tasks(
    engine: Engine,
    tasks: Iterable[tuple[int, int, str, datetime | None, datetime | None]],
    app: HostApp = REFERENCE_APP,
) -> None:
    """Insert tasks ``(id, owner, title, due, completed_at)`` as the host ``app`` would."""
    rows = [HostTask(i, o, d, t, c or False) for i, o, t, d, c in tasks]
    if rows:
        with engine.begin() as connection:
            app.add_tasks(connection, rows)


STANDARD_USERS = [
    (1, "ada@example.com", "Europe/Paris", True),
    (2, "bob@example.org", "America/New_York", True),
    (3, "cyd@example.net", "UTC", True),
    (9, "off@example.com", "UTC", False),
]


def seed(
    engine: Engine,
    now: datetime,
    count: int,
    *,
    first: int = 1,
    users: bool = True,
    app: HostApp = REFERENCE_APP,
) -> Seeded:
    """``count`` tasks due from now + 1h (one every 7 s), spread over owners 1-3, and five
    that must never be reminded: beyond the lookahead, completed, owner opted out, overdue,
    undated; written as the host ``app`` would."""
    if users:
        add_users(engine, STANDARD_USERS, app)
    due = {first + n: now + timedelta(hours=1, seconds=7 * n) for n in range(count)}
    base = first + count
    never = [
        (base, 1, "beyond the lookahead", now + timedelta(hours=25), None),
        (base + 1, 2, "completed", now + timedelta(hours=2), now),
        (base + 2, 9, "owner opted out", now + timedelta(hours=2), None),
        (base + 3, 3, "overdue", now - timedelta(hours=1), None),
        (base + 4, 1, "undated", None, None),
    ]
    add_tasks(
        engine,
        [(task_id, 1 + task_id % 3, f"task {task_id}", when, None) for task_id, when in due.items()]
        + never,
        app,
    )
    return Seeded(due, {row[0] for row in never})


# --- what the database says -----------------------------------------------------------------


class Row(NamedTuple):
    """An outbox row as the tests read it."""

    key: str
    subject_id: int
    status: str
    attempts: int
    last_error: str | None


def outbox(engine: Engine) -> dict[str, Row]:
    """Every outbox row by key."""
    with engine.connect() as connection:
        found = connection.execute(
            select(
                OutboxRow.idempotency_key,
                OutboxRow.subject_id,
                OutboxRow.status,
                OutboxRow.attempts,
                OutboxRow.last_error,
            )
        ).all()
    return {row[0]: Row(*row) for row in found}


def settled(engine: Engine, keys: Iterable[str], status: str = Status.DELIVERED) -> bool:
    """Whether every key in ``keys`` has a row with ``status`` (and no row is in flight)."""
    try:
        rows = outbox(engine)
    except Exception:  # the database may be restarting: not settled yet
        return False
    wanted = set(keys)
    return all(k in rows and rows[k].status == status for k in wanted)


# --- receivers ------------------------------------------------------------------------------

_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)


class SmtpReceiver(RecordingSmtpServer):
    """The recording SMTP server; `received` counts the accepted messages by reminder key."""

    def headers(self) -> list[Any]:
        """The headers of every accepted message, in arrival order."""
        return [_HEADERS.parsebytes(mail.raw) for mail in list(self.messages)]

    def received(self) -> Counter[str]:
        """Accepted messages by ``X-Reminder-Key``."""
        return Counter(str(h["X-Reminder-Key"]) for h in self.headers())


class Answer(NamedTuple):
    """One request the webhook receiver answered: whose key, which status, when."""

    key: str
    status: int
    at: float  # time.monotonic()
    request: RecordedRequest


class WebhookReceiver(RecordingWebhookServer):
    """The recording webhook server, answering each key from its own script (then 200).

    ``scripts`` maps a key to the replies its successive requests get. `answers` logs every
    request with the status it was given; `received` counts keys answered 2xx.
    """

    def __init__(self, scripts: Mapping[str, list[Reply]] | None = None) -> None:
        super().__init__()
        self.scripts = {key: list(replies) for key, replies in (scripts or {}).items()}
        self.answers: list[Answer] = []

    def _record(self, request: RecordedRequest) -> Reply:
        super()._record(request)
        key = str(request.headers.get("webhook-id", ""))
        with self._changed:
            script = self.scripts.get(key)
            reply = script.pop(0) if script else Reply()
            self.answers.append(Answer(key, reply.status, time.monotonic(), request))
            self._changed.notify_all()
        return reply

    def answered(self, key: str) -> list[Answer]:
        """The requests for ``key``, in order."""
        return [a for a in list(self.answers) if a.key == key]

    def received(self) -> Counter[str]:
        """Keys answered with a 2xx status."""
        return Counter(a.key for a in list(self.answers) if 200 <= a.status <= 299)


def smtp_env(receiver: RecordingSmtpServer) -> dict[str, str]:
    """The variables that point the SMTP channel at ``receiver``."""
    return {
        "REMINDERS_CHANNEL": "smtp",
        "REMINDERS_SMTP_HOST": receiver.host,
        "REMINDERS_SMTP_PORT": str(receiver.port),
    }


def webhook_env(receiver: RecordingWebhookServer) -> dict[str, str]:
    """The variables that point the webhook channel at ``receiver``."""
    return {
        "REMINDERS_CHANNEL": "webhook",
        "REMINDERS_WEBHOOK_URL": receiver.url,
        "REMINDERS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "REMINDERS_WEBHOOK_ALLOW_HTTP_LOCALHOST": "true",
    }


def service_env(
    database_url: str, broker_url: str | None = None, **variables: str
) -> dict[str, str]:
    """A process environment: this database and broker, fast timings, plus ``variables``."""
    env = child_env(
        REMINDERS_DATABASE_URL=database_url,
        REMINDERS_MAIL_DOMAIN=MAIL_DOMAIN,
        **FAST,
    )
    if broker_url is not None:
        env["REMINDERS_BROKER_URL"] = broker_url
    env.update(variables)
    return env


# --- the verdict ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """What arrived against what was expected."""

    expected: int
    delivered: int
    missed: list[str]
    duplicated: dict[str, int]
    unexpected: dict[str, int]

    def line(self) -> str:
        """One line for humans."""
        return (
            f"expected {self.expected} / delivered {self.delivered} / missed {len(self.missed)} "
            f"/ duplicated {len(self.duplicated)} / unexpected {sum(self.unexpected.values())}"
        )


def tally(received: Counter[str], expected: Iterable[str]) -> Tally:
    """Compare keys received (with counts) with the keys expected once each."""
    wanted = set(expected)
    return Tally(
        expected=len(wanted),
        delivered=len(wanted & set(received)),
        missed=sorted(wanted - set(received)),
        duplicated={k: n for k, n in received.items() if k in wanted and n > 1},
        unexpected={k: n for k, n in received.items() if k not in wanted},
    )


def assert_each_exactly_once(
    received: Counter[str], expected: Iterable[str], *, may_repeat: Iterable[str] = ()
) -> Tally:
    """Every expected key arrived exactly once (``may_repeat`` keys: once or twice), and
    nothing else arrived."""
    result = tally(received, expected)
    repeat = set(may_repeat)
    assert result.missed == [], result.line()
    assert result.unexpected == {}, result.line()
    beyond = {k: n for k, n in result.duplicated.items() if k not in repeat or n > 2}
    assert beyond == {}, result.line()
    return result
