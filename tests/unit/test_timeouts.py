"""The timeout budget's defaults reach the drivers, and SQLite is left without deadlines."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from worker.broker import BrokerTimeouts, build_broker
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


def test_redis_client_carries_the_broker_bounds() -> None:
    """The Redis client the broker builds has socket, connect and keepalive bounds and retries."""
    broker = build_broker(Settings(broker_url="redis://127.0.0.1:1/0"), threading.Event())
    options = broker.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert (options["socket_timeout"], options["socket_connect_timeout"]) == (5.0, 5.0)
    assert options["socket_keepalive"] is True
    assert sorted(options["socket_keepalive_options"].values()) == [3, 5, 10, 25_000]
    assert options["retry"].get_retries() == 1


def test_amqp_url_gains_bounds_but_keeps_its_own() -> None:
    """pika's timeouts are added to a RabbitMQ URL; values the URL sets itself win."""
    broker = build_broker(
        Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=10"),
        threading.Event(),
    )
    parameters = broker.parameters  # type: ignore[attr-defined]
    assert parameters.heartbeat == 10
    assert parameters.blocked_connection_timeout == 30.0
    assert (parameters.socket_timeout, parameters.stack_timeout) == (5.0, 15.0)
    assert parameters.tcp_options["TCP_USER_TIMEOUT"] == BrokerTimeouts().tcp_user_timeout * 1000
