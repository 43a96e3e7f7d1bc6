"""The least-privilege role: scan and relay work, nothing else is reachable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from tests.conftest import HostDatabase
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import bootstrap
from worker.db import make_engine
from worker.errors import UsageError
from worker.grants import grant_role
from worker.reminders import rule_store
from worker.reminders.rules import Rule
from worker.settings import Settings


@pytest.fixture
def worker_role(postgres_url: str, postgres_engine: Engine) -> Iterator[str]:
    """A fresh login role with the worker's grants, and a table it must not see."""
    role = f"reminders_worker_{uuid.uuid4().hex[:8]}"
    admin = create_engine(make_url(postgres_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        connection.execute(text("CREATE TABLE secrets (id int, value text)"))
        connection.execute(text("INSERT INTO secrets VALUES (1, 'the crown jewels')"))
    with postgres_engine.begin() as connection:
        grant_role(connection, role)
    yield role
    with admin.connect() as connection:
        connection.execute(text(f'DROP OWNED BY "{role}"'))
        connection.execute(text(f'DROP ROLE "{role}"'))
    admin.dispose()


def test_the_worker_role_can_scan_and_relay(
    postgres_url: str, postgres_engine: Engine, worker_role: str, clock: ManualClock
) -> None:
    """Scan, re-check, delivery and status work as the least-privilege role."""
    owner = make_services(postgres_engine, clock, RecordingChannel())
    add_user(owner, 1)
    add_task(owner, 1, 1, clock.now() + timedelta(hours=1))
    engine = make_engine(make_url(postgres_url).set(username=worker_role).render_as_string(False))
    channel = RecordingChannel()
    services = make_services(engine, clock, channel)
    assert services.scan().queued == 1
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert len(channel.sent) == 1
    engine.dispose()


def test_the_worker_role_can_set_and_clear_rules(
    postgres_url: str, postgres_engine: Engine, worker_role: str, clock: ManualClock
) -> None:
    """``reminders rules`` may run as the workers' role: a rule set (re-planning the owner's
    tasks) and cleared again."""
    owner = make_services(postgres_engine, clock, RecordingChannel())
    add_user(owner, 1)
    add_task(owner, 1, 1, clock.now() + timedelta(hours=1))
    engine = make_engine(make_url(postgres_url).set(username=worker_role).render_as_string(False))
    services = make_services(engine, clock, RecordingChannel())
    assert services.scan().queued == 1
    rule = Rule(before=(timedelta(hours=2), timedelta(0)))
    with services.session_factory.begin() as session:
        change = rule_store.set_rule(session, services.host, 1, rule, now=clock.now())
        assert change.replanned == 1
        assert rule_store.set_rule(session, services.host, None, rule, now=clock.now()).changed
    with services.session_factory.begin() as session:
        assert rule_store.clear_rule(session, services.host, 1).changed
        assert rule_store.rules(session) == {None: rule}
    engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM secrets",
        "UPDATE tasks SET title = 'pwned'",
        "UPDATE users SET email = 'evil@example.com'",
        "DELETE FROM tasks",
        "INSERT INTO users (id, email) VALUES (99, 'x@example.com')",
        "DROP TABLE outbox",
        "CREATE TABLE mine (id int)",
    ],
)
def test_the_worker_role_cannot_touch_anything_else(
    postgres_url: str, worker_role: str, statement: str
) -> None:
    """Reading other tables, changing the host's data and changing the schema are refused."""
    engine = create_engine(make_url(postgres_url).set(username=worker_role))
    with (
        pytest.raises(ProgrammingError, match=r"permission denied|must be owner"),
        engine.begin() as connection,
    ):
        connection.execute(text(statement))
    engine.dispose()


def test_granting_a_missing_role_says_how_to_create_it(postgres_engine: Engine) -> None:
    """A role that does not exist gives one clear line, not a database error."""
    with (
        pytest.raises(UsageError, match="does not exist: create it first"),
        postgres_engine.begin() as connection,
    ):
        grant_role(connection, "no_such_role_here")


@pytest.fixture
def mapped_worker_role(host_database: HostDatabase) -> Iterator[str]:
    """A login role with the grants ``grant-role`` gives on the host's mapped tables."""
    role = f"reminders_worker_{uuid.uuid4().hex[:8]}"
    with host_database.engine.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        grant_role(connection, role, host_database.mapping)
    yield role
    with host_database.engine.begin() as connection:
        connection.execute(text(f'DROP OWNED BY "{role}"'))
        connection.execute(text(f'DROP ROLE "{role}"'))


def test_the_worker_role_works_on_a_mapped_schema_and_touches_nothing_else(
    host_database: HostDatabase, mapped_worker_role: str, clock: ManualClock
) -> None:
    """On the host's own tables the role scans, re-checks and delivers; it cannot change a
    host column, read the host's version table or change the schema."""
    app = host_database.app
    with host_database.engine.begin() as connection:
        app.add_user(connection, 1)
        app.add_task(connection, 1, 1, clock.now() + timedelta(hours=1))
    url = make_url(host_database.url).set(username=mapped_worker_role)
    engine = make_engine(url.render_as_string(hide_password=False))
    channel = RecordingChannel()
    settings = Settings(database_url=host_database.url, schema_file=host_database.schema_file)
    services = bootstrap(settings, clock=clock, engine=engine, make_channel=lambda: channel)
    assert services.scan().queued == 1
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    tasks, users = ("todo_items", "accounts") if app.mapped else ("tasks", "users")
    title = "name" if app.mapped else "title"
    refused = [
        f"UPDATE {tasks} SET {title} = 'pwned'",
        f"DELETE FROM {users}",
        "ALTER TABLE outbox ADD COLUMN x int",
    ]
    if app.mapped:
        refused.append("SELECT * FROM alembic_version")  # the host's own history
    for statement in refused:
        with (
            pytest.raises(ProgrammingError, match=r"permission denied|must be owner"),
            engine.begin() as connection,
        ):
            connection.execute(text(statement))
    engine.dispose()
