"""Fixtures of the acceptance suite: processes, a private Redis, receivers, a database.

Each test gets its own ``redis-server`` (so a restart, or another test run on the machine,
never touches anybody else's messages) and, through ``host_database``, its own database on
the shared PostgreSQL: the reference schema's (``postgres_url``), or a mapped host's tables
for a test that parametrizes ``host_app`` (``TODO_APP_BERLIN``, `tests.support.hosts`).
Tests that restart PostgreSQL use a private cluster instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.acceptance.commandline import CommandLine
from tests.acceptance.deployment import Deployment
from tests.acceptance.harness import (
    PostgresCluster,
    Procs,
    RedisServer,
    SmtpReceiver,
    WebhookReceiver,
)
from tests.conftest import HostDatabase as HostTables
from tests.conftest import unavailable
from tests.support.hosts import REFERENCE_APP, HostApp


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Start processes here; whatever is still running at the end is killed and reaped."""
    started = Procs(tmp_path)
    yield started
    started.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, without persistence."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server", FileNotFoundError("no redis-server command"))
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    """A recording SMTP server on 127.0.0.1."""
    with SmtpReceiver() as server:
        yield server


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A recording webhook receiver on 127.0.0.1 (per-key scripts: set ``scripts``)."""
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def host_app() -> HostApp:
    """The reference schema, unless the test parametrizes ``host_app`` itself."""
    return REFERENCE_APP


@pytest.fixture
def db(host_database: HostTables) -> Engine:
    """An engine on this test's fresh, migrated database on the shared PostgreSQL."""
    return host_database.engine


@pytest.fixture
def command_line(host_database: HostTables, tmp_path: Path) -> CommandLine:
    """The `reminders` commands on this test's database, run from its directory."""
    host = host_database
    return CommandLine(host.engine, host.url, tmp_path, app=host.app, schema_file=host.schema_file)


@pytest.fixture
def deployment(host_database: HostTables, private_redis: RedisServer, procs: Procs) -> Deployment:
    """This test's database on the shared PostgreSQL, its private Redis and its processes."""
    host = host_database
    return Deployment(
        host.engine, host.url, private_redis, procs, app=host.app, schema_file=host.schema_file
    )


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this module's own, which its tests may stop and restart."""
    if shutil.which("pg_createcluster") is None:
        unavailable("pg_createcluster", FileNotFoundError("no pg_createcluster command"))
    cluster = PostgresCluster(f"reminders_acceptance_{os.getpid()}")
    cluster.drop()  # a leftover of a killed run with the same pid, if any
    try:
        cluster.create()
    except Exception as error:
        cluster.drop()
        unavailable("a private PostgreSQL cluster", error)
    yield cluster
    cluster.drop()
