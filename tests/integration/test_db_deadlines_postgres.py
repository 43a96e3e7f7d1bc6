"""No database call waits forever: with the fault proxy in front of PostgreSQL, a statement,
a pooled connection's ping, a scan and a relay run each give up within their bounds, the
dead connections are discarded (never checked out again), and the next call works.

The bounds are short here (a 1 s statement timeout, a 1.5 s deadline, a 0.5 s ping, a 2 s
connect timeout) so that the faults cost seconds. Each test prints how long the call took
to give up against its bound (``pytest -s`` shows them).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import structlog
from sqlalchemy import Engine, event, exc, text
from sqlalchemy.engine import make_url

from outbox.table import Status
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services, statuses
from tests.support.faultproxy import FaultProxy, Mode
from worker.bootstrap import Services, bootstrap
from worker.db import DatabaseTimeouts, make_engine
from worker.logs import configure_logging
from worker.pgdeadline import DeadlineConnection
from worker.settings import Settings

pytestmark = pytest.mark.postgres

FAST = DatabaseTimeouts(connect=2, statement=1.0, idle_in_transaction=2.0, margin=0.5, ping=0.5)
SLACK = 1.5  # what a loaded machine may add to a bound
TASKS = 5


@dataclass
class Pool:
    """What the engine's pool did: every DBAPI connection made, checked out, invalidated."""

    made: list[Any] = field(default_factory=list)
    checked_out: list[Any] = field(default_factory=list)
    invalidated: list[Any] = field(default_factory=list)

    def watch(self, engine: Engine) -> None:
        """Listen to ``engine``'s pool events."""
        event.listen(engine, "connect", lambda dbapi, _record: self.made.append(dbapi))
        event.listen(
            engine, "checkout", lambda dbapi, _record, _proxy: self.checked_out.append(dbapi)
        )
        event.listen(
            engine, "invalidate", lambda dbapi, _record, _error: self.invalidated.append(dbapi)
        )


@dataclass
class Proxied:
    """An engine on the test's database whose every connection passes through the proxy."""

    proxy: FaultProxy
    engine: Engine
    pool: Pool


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[Proxied]:
    """A fault proxy in front of this test's PostgreSQL database and an engine through it."""
    direct = make_url(postgres_url)
    with FaultProxy(direct.host or "127.0.0.1", direct.port or 5432) as proxy:
        url = direct.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
        engine = make_engine(url, timeouts=FAST)
        pool = Pool()
        pool.watch(engine)
        yield Proxied(proxy, engine, pool)
        engine.dispose()


def bounded(work: Callable[[], object], limit: float) -> tuple[object, float]:
    """Run ``work`` in a thread; fail unless it ends within ``limit`` s. Returns what it
    returned or raised, and how long it took."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["value"] = work()
        except Exception as error:
            outcome["value"] = error
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, name="bounded-call")
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting after {limit}s"
    return outcome["value"], outcome["elapsed"]


def report(what: str, elapsed: float, bound: float) -> None:
    """Print a give-up time next to its bound."""
    print(f"\n{what}: gave up after {elapsed:.2f}s (bound {bound:.2f}s)")


def silence_before(engine: Engine, proxy: FaultProxy, marker: str) -> None:
    """Silence every connection right before the next statement containing ``marker``
    goes out, so that this statement is the one left hanging (once)."""

    fired = threading.Event()

    def before(*args: Any) -> None:
        statement: str = args[2]
        if marker in statement and not fired.is_set():
            fired.set()
            proxy.mode = Mode.SILENT

    event.listen(engine, "before_cursor_execute", before)


def test_the_bounds_reach_the_server_and_the_socket(proxied: Proxied) -> None:
    """The session carries the server-side timeouts, the socket its keepalives and user timeout."""
    with proxied.engine.connect() as connection:
        shown = connection.execute(
            text("SELECT current_setting('statement_timeout'), "
                 "current_setting('idle_in_transaction_session_timeout')")
        ).one()  # fmt: skip
        driver = connection.connection.driver_connection
        assert isinstance(driver, DeadlineConnection)
        with socket.socket(fileno=socket.dup(driver.pgconn.socket)) as sock:
            options = [
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            ]
    assert tuple(shown) == ("1s", "2s")
    assert options == [1, 10, 5, 3, 25_000]
    assert driver.deadline == FAST.deadline


def test_the_statement_timeout_setting_reaches_the_worker_engine(postgres_url: str) -> None:
    """REMINDERS_DB_STATEMENT_TIMEOUT sets the server's bound and, 5 s later, the client's."""
    services = bootstrap(Settings(database_url=postgres_url, db_statement_timeout="2s"))
    try:
        with services.engine.connect() as connection:
            shown = connection.execute(text("SHOW statement_timeout")).scalar()
            driver = connection.connection.driver_connection
    finally:
        services.engine.dispose()
    assert shown == "2s"
    assert isinstance(driver, DeadlineConnection)
    assert driver.deadline == 7.0


def test_the_worker_engine_never_compiles_a_statement_with_jit(postgres_url: str) -> None:
    """JIT is off on the worker's connections: the window statement, estimated far above
    ``jit_above_cost``, would spend longer compiling than running."""
    services = bootstrap(Settings(database_url=postgres_url))
    try:
        with services.engine.connect() as connection:
            shown = connection.execute(text("SHOW jit")).scalar()
            timeout = connection.execute(text("SHOW statement_timeout")).scalar()
    finally:
        services.engine.dispose()
    assert (shown, timeout) == ("off", "30s")


def test_a_slow_statement_is_cancelled_by_the_server_and_the_connection_kept(
    proxied: Proxied,
) -> None:
    """A statement past statement_timeout is cancelled by the server, before the client's
    deadline: the connection answered, so it stays in the pool."""
    with proxied.engine.connect() as connection:
        started = time.monotonic()
        with pytest.raises(exc.OperationalError) as raised:
            connection.execute(text("SELECT pg_sleep(10)"))
        elapsed = time.monotonic() - started
    assert isinstance(raised.value.orig, psycopg.errors.QueryCanceled)
    assert not raised.value.connection_invalidated
    assert FAST.statement <= elapsed < FAST.deadline
    assert proxied.pool.invalidated == []


def test_a_statement_on_a_silent_connection_ends_at_the_deadline(proxied: Proxied) -> None:
    """A statement whose connection went silent fails at the deadline, as a disconnect: the
    connection is invalidated, and the next one is new and works."""
    engine, proxy, pool = proxied.engine, proxied.proxy, proxied.pool

    def statement_then_silence() -> object:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            proxy.mode = Mode.SILENT
            return connection.execute(text("SELECT 2"))

    error, elapsed = bounded(statement_then_silence, FAST.deadline + SLACK)
    report("statement on a silent connection", elapsed, FAST.deadline)
    assert isinstance(error, exc.OperationalError)
    assert error.connection_invalidated
    assert FAST.deadline <= elapsed < FAST.deadline + SLACK
    proxy.mode = Mode.FORWARD
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 3")).scalar() == 3
    assert len(pool.invalidated) == 1
    assert pool.checked_out[-1] is not pool.invalidated[0]
    assert pool.invalidated[0].closed


def test_a_silent_pooled_connection_fails_its_ping_and_the_pool_is_renewed(
    proxied: Proxied,
) -> None:
    """After a NAT flush every pooled connection is dead: the first checkout's ping gives up
    within the ping bound, the pool discards all of them, and the call goes on, on a new
    connection, without an error."""
    engine, proxy, pool = proxied.engine, proxied.proxy, proxied.pool
    with engine.connect() as one, engine.connect() as two:  # two pooled connections
        one.execute(text("SELECT 1"))
        two.execute(text("SELECT 1"))
    dead = list(pool.made)
    proxy.mode = Mode.SILENT
    proxy.mode = Mode.FORWARD  # new connections flow, the pooled ones stay silent

    def query() -> object:
        with engine.connect() as connection:
            return connection.execute(text("SELECT 42")).scalar()

    answer, elapsed = bounded(query, FAST.ping + SLACK)
    report("checkout of a silent pooled connection (ping)", elapsed, FAST.ping)
    assert answer == 42
    assert FAST.ping <= elapsed < FAST.ping + SLACK
    for _ in range(3):
        assert query() == 42
    assert not any(c is d for c in pool.checked_out[-4:] for d in dead)
    assert len(pool.invalidated) == 1  # the pinged one; the other was discarded unpinged


@pytest.fixture
def services(proxied: Proxied, clock: ManualClock, channel: RecordingChannel) -> Services:
    """Services on the proxied engine, with owner 1 and tasks 1..TASKS due in an hour."""
    built = make_services(proxied.engine, clock, channel, lease=timedelta(seconds=10))
    add_user(built, 1)
    for task_id in range(1, TASKS + 1):
        add_task(built, task_id, 1, clock.now() + timedelta(hours=1))
    return built


def test_a_scan_on_a_silent_connection_gives_up_then_the_next_scan_works(
    proxied: Proxied, services: Services
) -> None:
    """A scan whose batch statement hangs on a silent connection raises at the deadline; once
    the network is back the next scan queues every reminder, on a new connection."""
    silence_before(proxied.engine, proxied.proxy, "INSERT INTO outbox")
    error, elapsed = bounded(services.scan, FAST.deadline + SLACK)
    report("scan on a silent connection", elapsed, FAST.deadline)
    assert isinstance(error, exc.OperationalError)
    assert FAST.deadline <= elapsed < FAST.deadline + SLACK

    proxied.proxy.mode = Mode.FORWARD
    result, _ = bounded(services.scan, FAST.ping + SLACK)
    assert result.queued == TASKS  # type: ignore[attr-defined]
    assert len(proxied.pool.invalidated) == 1
    dead = proxied.pool.invalidated[0]
    assert not any(c is dead for c in proxied.pool.checked_out[-2:])
    assert [t.name for t in threading.enumerate() if t.name == "bounded-call"] == []


@pytest.fixture
def production_logs() -> Iterator[None]:
    """Logs rendered as the processes render them (JSON, plain tracebacks), then restored:
    the development renderer takes seconds to draw a traceback, which would be timed too."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(logging.INFO, json=True)
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("production_logs")
def test_a_relay_on_a_silent_connection_gives_up_then_delivers_everything(
    proxied: Proxied, services: Services, channel: RecordingChannel, clock: ManualClock
) -> None:
    """The database goes silent while a relay sends: the run raises within its bounds
    instead of hanging, and once the network is back, a run after the lease delivers every
    row: nothing is lost."""
    services.scan()
    proxy = proxied.proxy
    channel.on_send = lambda _message: (
        setattr(proxy, "mode", Mode.SILENT) if proxy.mode is Mode.FORWARD else None
    )
    # The next checkout's ping, then the three connections the run tries to open (for its
    # round, the round's second try, and giving its rows back), each timing out.
    bound = FAST.ping + 3 * FAST.connect
    error, elapsed = bounded(lambda: services.relay().relay_until_idle(), bound + SLACK)
    report("relay on a silent connection", elapsed, bound)
    assert isinstance(error, exc.OperationalError)
    assert FAST.ping <= elapsed < bound + SLACK

    proxy.mode = Mode.FORWARD
    channel.on_send = None
    clock.advance(timedelta(seconds=11))  # the rows the stuck run held come back
    outcome, _ = bounded(lambda: services.relay().relay_until_idle(), FAST.ping + SLACK)
    assert outcome.counts["delivered"] == TASKS  # type: ignore[attr-defined]
    assert {status for _, status in statuses(services)} == {Status.DELIVERED}
    assert set(channel.keys) == {key for key, _ in statuses(services)}
    dead = proxied.pool.invalidated
    assert dead and not any(c is d for c in proxied.pool.checked_out[-3:] for d in dead)
    assert [t.name for t in threading.enumerate() if t.name == "bounded-call"] == []
