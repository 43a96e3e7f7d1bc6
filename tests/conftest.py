"""Fixtures: a migrated database per test (SQLite file, or a fresh PostgreSQL database)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.hosts import REFERENCE_APP, TODO_APP_BERLIN, HostApp
from worker import migrate
from worker.db import make_engine
from worker.reminders.mapping import SchemaMapping

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get(
    "REMINDERS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _redis_url_of_this_process() -> str:
    """The test Redis database; each pytest-xdist worker after the first (gw1, gw2, ...) takes
    the one below it, so that no worker empties another's."""
    url = os.environ.get("REMINDERS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    base, _, database = url.rpartition("/")
    if not worker:
        return url
    if not database.isdigit() or int(database) < worker:
        raise RuntimeError(f"test worker {worker}: no Redis database below {url}")
    return f"{base}/{int(database) - worker}"


REDIS_URL = _redis_url_of_this_process()
# One template per test session, so that sessions running at once do not drop each other's.
TEMPLATE = f"reminders_test_template_{os.getpid()}"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from the documented defaults, whatever the shell exported."""
    for name in list(os.environ):
        if name.startswith("REMINDERS_") and not name.startswith("REMINDERS_TEST_"):
            monkeypatch.delenv(name)


def unavailable(what: str, error: Exception) -> None:
    """Skip outside CI; fail in CI, where every service must be up."""
    message = f"{what} unreachable: {error}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def fresh_api() -> Iterator[None]:
    """`worker.api` as a host process starts with it: nothing configured; reset afterwards."""
    from worker import api

    api.configure()
    yield
    api.close()
    api.configure()


@pytest.fixture
def clock() -> ManualClock:
    """A clock at 2026-11-28 12:00 UTC that tests move by hand."""
    return ManualClock()


@pytest.fixture
def channel() -> RecordingChannel:
    """A fake channel recording every message."""
    return RecordingChannel()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database in a file of its own."""
    engine = make_engine(f"sqlite:///{tmp_path}/reminders.db")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test's database is copied from."""
    admin_url = make_url(POSTGRES_URL)
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {TEMPLATE}"))
            connection.execute(text(f"CREATE DATABASE {TEMPLATE}"))
    except Exception as error:
        unavailable("PostgreSQL", error)
    engine = make_engine(admin_url.set(database=TEMPLATE).render_as_string(hide_password=False))
    migrate.upgrade(engine)
    engine.dispose()
    yield TEMPLATE
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
    admin.dispose()


@contextlib.contextmanager
def database_from(template: str) -> Iterator[str]:
    """The URL of a fresh copy of the database ``template``, dropped at the end."""
    name = f"reminders_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name} TEMPLATE {template}"))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    with database_from(postgres_template) as url:
        yield url


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on this test's PostgreSQL database."""
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def redis_url() -> str:
    """The test Redis database, emptied first."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except Exception as error:
        unavailable("Redis", error)
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """The same test on SQLite and on PostgreSQL."""
    chosen: Engine = request.getfixturevalue(f"{request.param}_engine")
    return chosen


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database (nothing migrated), dropped after."""
    name = f"reminders_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except Exception as error:
        unavailable("PostgreSQL", error)
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@dataclass(frozen=True)
class HostDatabase:
    """A PostgreSQL database holding a host application's tables, migrated for its mapping."""

    app: HostApp
    url: str
    engine: Engine
    mapping: SchemaMapping
    schema_file: str | None


@pytest.fixture(params=[REFERENCE_APP, TODO_APP_BERLIN], ids=lambda app: app.name)
def host_app(request: pytest.FixtureRequest) -> HostApp:
    """The same test on the reference schema and on a host schema that is not ours."""
    app: HostApp = request.param
    return app


@pytest.fixture(scope="session")
def host_templates(postgres_template: str) -> Iterator[Callable[[HostApp], str]]:
    """The template database of each host application: its tables, migrated through its
    mapping (the reference schema's is `postgres_template`), made when first asked for."""
    made: dict[str, str] = {}
    admin = create_engine(make_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")

    def template(app: HostApp) -> str:
        if not app.mapped:
            return postgres_template
        if app.name not in made:
            name = f"{TEMPLATE}_{app.name}"
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
                connection.execute(text(f"CREATE DATABASE {name}"))
            made[app.name] = name
            url = make_url(POSTGRES_URL).set(database=name)
            engine = make_engine(url.render_as_string(hide_password=False))
            with tempfile.TemporaryDirectory() as directory:
                app.create_tables(engine)
                migrate.upgrade(engine, app.mapping(Path(directory)))
            engine.dispose()
        return made[app.name]

    yield template
    with admin.connect() as connection:
        for name in made.values():
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def host_database(
    host_app: HostApp, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[HostDatabase]:
    """``host_app``'s tables in a fresh PostgreSQL database, migrated through its mapping
    (the reference schema's: the database of `postgres_url`)."""
    with contextlib.ExitStack() as stack:
        if host_app.mapped:
            templates: Callable[[HostApp], str] = request.getfixturevalue("host_templates")
            url = stack.enter_context(database_from(templates(host_app)))
        else:
            url = request.getfixturevalue("postgres_url")
        engine = make_engine(url)
        stack.callback(engine.dispose)
        schema_file = host_app.schema_file(tmp_path)
        yield HostDatabase(host_app, url, engine, host_app.mapping(tmp_path), schema_file)
