"""Engines and sessions: the one place that opens a database connection."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

CONNECT_TIMEOUT_SECONDS = 10


def make_engine(url: str, **options: Any) -> Engine:
    """Create an engine with timeouts, liveness checks and SQLite made safe for threads."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **options
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": "reminders",
        # A dead server must not hang a worker thread forever.
        "options": "-c statement_timeout=300000 -c idle_in_transaction_session_timeout=600000",
    }
    return create_engine(
        url, pool_pre_ping=True, pool_recycle=1800, connect_args=connect_args, **options
    )


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
