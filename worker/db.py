"""Engines and sessions: the one place that opens a database connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from worker.pgdeadline import DeadlineConnection

#: The margin of the client's deadline over the server's statement_timeout.
DEADLINE_MARGIN_SECONDS = 5.0
#: Server settings of every worker connection beyond its bounds. Every statement the worker
#: sends is short and runs often, so compiling one with JIT costs more than running it; and
#: the planner, which cannot know how few tasks come due per offset in the scan's window,
#: estimates that statement far above ``jit_above_cost``.
SESSION_SETTINGS = "-c jit=off"


@dataclass(frozen=True)
class DatabaseTimeouts:
    """The bounds on every PostgreSQL call, in seconds (`docs/operations.md`, timeout budget).

    ``statement`` and ``idle_in_transaction`` are enforced by the server; the keepalives
    and the user timeout (their sum) by the kernel; the deadline (``statement + margin``)
    and the ping by the client, on connections that look alive but went silent.
    """

    connect: int = 10
    statement: float = 30.0
    idle_in_transaction: float = 30.0
    keepalive_idle: int = 10
    keepalive_interval: int = 5
    keepalive_count: int = 3
    margin: float = DEADLINE_MARGIN_SECONDS
    ping: float = 5.0

    @property
    def deadline(self) -> float:
        """How long the client waits for any answer: the server cancels at ``statement``."""
        return self.statement + self.margin

    @property
    def tcp_user_timeout(self) -> int:
        """Unacknowledged bytes older than this close the socket, as failed keepalives do."""
        return self.keepalive_idle + self.keepalive_interval * self.keepalive_count

    def connect_args(self) -> dict[str, Any]:
        """The libpq parameters that carry these bounds."""
        statement_ms = round(self.statement * 1000)
        idle_ms = round(self.idle_in_transaction * 1000)
        return {
            "connect_timeout": self.connect,
            "keepalives": 1,
            "keepalives_idle": self.keepalive_idle,
            "keepalives_interval": self.keepalive_interval,
            "keepalives_count": self.keepalive_count,
            "tcp_user_timeout": self.tcp_user_timeout * 1000,
            "options": (
                f"-c statement_timeout={statement_ms}"
                f" -c idle_in_transaction_session_timeout={idle_ms}"
            ),
        }


def make_engine(url: str, *, timeouts: DatabaseTimeouts | None = None, **options: Any) -> Engine:
    """Create an engine with timeouts, liveness checks and SQLite made safe for threads.

    On PostgreSQL every connection carries ``timeouts`` (the defaults unless given), and a
    pooled connection is pinged, within ``timeouts.ping``, each time it is checked out.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **options
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    bounds = timeouts or DatabaseTimeouts()
    connect_args = {"application_name": "reminders", **bounds.connect_args()}
    connect_args["options"] = f"{connect_args['options']} {SESSION_SETTINGS}"
    engine = create_engine(url, pool_recycle=1800, connect_args=connect_args, **options)
    _bound_connections(engine, bounds)
    return engine


def _bound_connections(engine: Engine, bounds: DatabaseTimeouts) -> None:
    """Open `DeadlineConnection`s, and ping each pooled one on checkout within the ping bound.

    SQLAlchemy's own pre-ping would wait as long as a statement may; a pooled connection
    that went silent is found out sooner with a bound of its own.
    """

    @event.listens_for(engine, "do_connect")
    def connect(_dialect: Any, record: Any, cargs: Any, cparams: Any) -> DeadlineConnection:
        connection = DeadlineConnection.connect(*cargs, **cparams)
        connection.deadline = bounds.deadline
        record.info["fresh"] = True  # just connected: nothing to ping
        return connection

    @event.listens_for(engine, "checkout")
    def ping(connection: Any, record: Any, _proxy: Any) -> None:  # a DeadlineConnection
        if record.info.pop("fresh", False):
            return
        try:
            with connection.deadline_of(bounds.ping):
                engine.dialect.do_ping(connection)  # the pre-ping's own statement
        except psycopg.Error as error:
            if not connection.closed:
                raise
            # Like a failed pre-ping: this connection and every older one are discarded.
            raise exc.InvalidatePoolError(str(error)) from error


@contextmanager
def long_statements(connection: Connection, seconds: float) -> Iterator[None]:
    """Let the statements of ``connection``'s transaction run up to ``seconds`` each.

    For migrations, which may build an index on a large host table; PostgreSQL only.
    """
    driver = connection.connection.driver_connection
    if not isinstance(driver, DeadlineConnection):
        yield
        return
    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {round(seconds * 1000)}")
    with driver.deadline_of(seconds + DEADLINE_MARGIN_SECONDS):
        yield


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module only opens a transaction before a statement it recognises as a
    # write; a write starting with WITH would commit on its own. Transactions are ours.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets the relay read while the scanner writes; busy_timeout queues writers.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (rows are read, then sent)."""
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front: a transaction that reads and then writes
    # cannot fail halfway because another process wrote in between.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
