"""The database's timeout defaults reach libpq, and SQLite is left without deadlines."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from worker.db import DatabaseTimeouts, make_engine
from worker.settings import Settings


def test_database_defaults_bound_every_layer() -> None:
    """Connect, keepalives, user timeout and the server-side timeouts go to libpq."""
    timeouts = DatabaseTimeouts()
    assert timeouts.connect_args() == {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 25_000,
        "options": "-c statement_timeout=30000 -c idle_in_transaction_session_timeout=30000",
    }
    assert timeouts.deadline == 35.0
    assert timeouts.deadline < Settings().lease.total_seconds()  # a stuck relay gives up first


def test_sqlite_connections_get_no_deadline(tmp_path: Path) -> None:
    """An embedded SQLite database has no network: its connections are plain sqlite3 ones."""
    engine = make_engine(f"sqlite:///{tmp_path}/r.db")
    try:
        with engine.connect() as connection:
            assert type(connection.connection.driver_connection) is sqlite3.Connection
    finally:
        engine.dispose()
