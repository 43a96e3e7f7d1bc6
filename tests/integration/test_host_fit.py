"""A host schema that is not ours: the mapping is checked, and migrate respects the host."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from benchmarks.explain import captured_claim, explain
from outbox.table import OutboxRow
from tests.conftest import HostDatabase
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.support.hosts import TODO_APP, TODO_APP_MAPPING
from worker import migrate
from worker.bootstrap import Services, bootstrap
from worker.db import make_engine
from worker.errors import DatabaseNotReady
from worker.grants import WORKER_TABLES
from worker.reminders.host import MappingMismatch, check_host
from worker.reminders.keys import reminder_key
from worker.reminders.mapping import load_mapping
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def catalogue(connection: Connection) -> dict[str, Any]:
    """Every table, column (with its type and default), index and constraint of the schema."""
    columns = connection.execute(
        text(
            "SELECT table_name, column_name, data_type, column_default, is_nullable "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "ORDER BY 1, 2"
        )
    ).all()
    indexes = connection.execute(
        text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")
    ).all()
    constraints = connection.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = current_schema()::regnamespace"
        )
    ).all()
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return {
        "columns": sorted(map(tuple, columns)),
        "indexes": sorted(map(tuple, indexes)),
        "constraints": sorted(map(tuple, constraints)),
        "alembic_version": versions,
    }


#: The names the worker's rule tables give their indexes and constraints.
WORKER_PREFIXES = tuple(f"{kind}_reminder_" for kind in ("ix", "pk", "uq", "ck", "fk"))


def without_worker(found: dict[str, Any]) -> dict[str, Any]:
    """The catalogue less what belongs to the worker: its tables, columns and index."""
    worker_tables = {*WORKER_TABLES, "reminders_alembic_version"}
    worker_columns = {"reminder_sent_at", "reminder_due_at"}
    return {
        "columns": [
            c for c in found["columns"] if c[0] not in worker_tables and c[1] not in worker_columns
        ],
        "indexes": [
            i
            for i in found["indexes"]
            if "awaiting_reminder" not in i[0]
            and "open_due" not in i[0]
            and not i[0].startswith(("ix_outbox", "outbox"))
            and not i[0].startswith(("reminder", "uq_outbox", *WORKER_PREFIXES))
        ],
        "constraints": [
            c
            for c in found["constraints"]
            if not c[0].startswith(
                ("outbox", "reminder", "uq_outbox", "ck_outbox", *WORKER_PREFIXES)
            )
        ],
        "alembic_version": found["alembic_version"],
    }


@pytest.fixture
def todo_app(empty_postgres_url: str, tmp_path: Path) -> Iterator[tuple[Engine, str]]:
    """The to-do app's tables in an empty database (not migrated), and its schema file."""
    engine = make_engine(empty_postgres_url)
    TODO_APP.create_tables(engine)
    schema_file = TODO_APP.schema_file(tmp_path)
    assert schema_file is not None
    yield engine, schema_file
    engine.dispose()


def test_migrate_changes_only_what_is_the_workers(todo_app: tuple[Engine, str]) -> None:
    """On a host's schema, migrate creates its own tables, adds its two columns and its
    index to the tasks table, and leaves every other table, column, index, constraint and
    the host's alembic_version as they were."""
    engine, schema_file = todo_app
    with engine.connect() as connection:
        before = catalogue(connection)
    migration = migrate.run(engine, load_mapping(schema_file))
    with engine.connect() as connection:
        after = catalogue(connection)
        tables = set(
            connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
        )
        version = connection.execute(text("SELECT version_num FROM reminders_alembic_version"))
        assert version.scalar_one() == migrate.head_revision()
    assert migration.before is None and migration.after == migrate.head_revision()
    assert without_worker(after) == without_worker(before) == before
    assert after["alembic_version"] == [("4f2a9c1b7d3e",)]
    assert tables == {
        "accounts",
        "todo_items",
        "alembic_version",
        *WORKER_TABLES,
        "reminders_alembic_version",
    }
    added = {c[1]: c[2] for c in after["columns"] if c[0] == "todo_items"}
    assert added["reminder_sent_at"] == "timestamp with time zone"
    assert added["reminder_due_at"] == "timestamp without time zone"  # as the due column
    assert [i for i in after["indexes"] if "awaiting" in i[0]] == [
        (
            "ix_todo_items_awaiting_reminder",
            "CREATE INDEX ix_todo_items_awaiting_reminder ON public.todo_items USING btree "
            "(deadline) WHERE (((status = 'done'::text) IS NOT TRUE) AND (deadline IS NOT NULL) "
            "AND (reminder_due_at IS DISTINCT FROM deadline))",
        )
    ]
    assert [i for i in after["indexes"] if "open_due" in i[0]] == [
        (
            "ix_todo_items_open_due",
            "CREATE INDEX ix_todo_items_open_due ON public.todo_items USING btree "
            "(deadline) WHERE (((status = 'done'::text) IS NOT TRUE) AND (deadline IS NOT NULL))",
        )
    ]
    # Idempotent: a second run changes nothing, runs no statement on the host's tables.
    again = migrate.run(engine, load_mapping(schema_file))
    assert again.host == [] and again.before == again.after
    with engine.connect() as connection:
        assert catalogue(connection) == after


def test_migrate_sql_prints_the_ddl_and_changes_nothing(todo_app: tuple[Engine, str]) -> None:
    """``--sql`` prints what migrate would run and runs none of it; the printed SQL, run by
    a DBA, makes the schema migrate makes, after which migrate has nothing left to do."""
    engine, schema_file = todo_app
    mapping = load_mapping(schema_file)
    with engine.connect() as connection:
        before = catalogue(connection)
    sql = migrate.offline_sql(engine, mapping)
    with engine.connect() as connection:
        assert catalogue(connection) == before
    assert "ALTER TABLE todo_items ADD COLUMN reminder_sent_at TIMESTAMP WITH TIME ZONE;" in sql
    assert "CREATE TABLE outbox" in sql and "reminders_alembic_version" in sql
    assert "alembic_version (" not in sql.replace("reminders_alembic_version", "")
    with engine.begin() as connection:
        connection.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
    rerun = migrate.run(engine, mapping)
    assert rerun.before == migrate.head_revision() and rerun.host == []
    assert migrate.offline_sql(engine, mapping).strip() == ""


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("deadline", "deadlin"), "[tasks] due: column todo_items.deadlin not found"),
        (('"todo_items"', '"todos"'), "[tasks] table: todos not found"),
        (('title = "name"', 'title = "assignee_id"'), "[tasks] title: column todo_items"
         ".assignee_id is bigint, not a text column"),
        (('email = "email_address"', 'email = "wants_reminders"'), "[users] email: column "
         "accounts.wants_reminders is boolean, not a text column"),
        (('enabled = "wants_reminders"', 'enabled = "lang"'), "[users] enabled: column "
         "accounts.lang is text, not a boolean column"),
        (("status = 'done'", "state = 'done'"), '[tasks] done: column "state" does not exist'),
        (("status = 'done'", "status = 'done' or"), "[tasks] done: syntax error"),
        (("status = 'done'", "status"), "[tasks] done: argument of IS NOT TRUE must be"),
        (('due_timezone = "UTC"\n', ""), "is timestamp without time zone: set due_timezone"),
        (('due_timezone = "UTC"', 'due_timezone = "Mars/Olympus"'), "'Mars/Olympus' is not "
         "a time zone PostgreSQL knows"),
    ],
    ids=lambda value: value[0] if isinstance(value, tuple) else None,
)  # fmt: skip
def test_a_mapping_that_does_not_fit_is_named(
    todo_app: tuple[Engine, str], tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    """Each mismatch is one line naming the table, the column or the condition."""
    engine, _ = todo_app
    bad = tmp_path / "bad.toml"
    bad.write_text(TODO_APP_MAPPING.format(zone="UTC").replace(*edit, 1))
    with engine.connect() as connection, pytest.raises(MappingMismatch) as raised:
        check_host(connection, load_mapping(bad))
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"REMINDERS_SCHEMA_FILE {bad}: ")
    assert "\n" not in str(raised.value)


def test_unmigrated_worker_columns_say_run_migrate(todo_app: tuple[Engine, str]) -> None:
    """The host's tables fit, but the worker's columns are not there yet: not ready."""
    engine, schema_file = todo_app
    with engine.connect() as connection, pytest.raises(DatabaseNotReady, match="migrate"):
        check_host(connection, load_mapping(schema_file))


def test_a_table_the_role_cannot_read_is_named(
    todo_app: tuple[Engine, str], empty_postgres_url: str
) -> None:
    """The worker's role, given the grants for the mapping less one, is told which."""
    engine, schema_file = todo_app
    mapping = load_mapping(schema_file)
    migrate.run(engine, mapping)
    role = f"rw_{abs(hash(empty_postgres_url)) % 10**8}"
    from worker.grants import grant_role

    with engine.begin() as connection:
        connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        grant_role(connection, role, mapping)
    try:
        as_worker = make_engine(empty_postgres_url.replace("postgres@", f"{role}@", 1))
        with as_worker.connect() as connection:
            check_host(connection, mapping)  # the grants suffice
        with engine.begin() as connection:
            connection.execute(text(f'REVOKE SELECT ON accounts FROM "{role}"'))
        with as_worker.connect() as connection, pytest.raises(MappingMismatch) as raised:
            check_host(connection, mapping)
        assert "[users] table: permission denied for table accounts" in str(raised.value)
        as_worker.dispose()
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP OWNED BY "{role}"'))
            connection.execute(text(f'DROP ROLE "{role}"'))


def test_every_process_stops_with_exit_2_on_a_mismatch(
    todo_app: tuple[Engine, str], empty_postgres_url: str, tmp_path: Path
) -> None:
    """The CLI, the dramatiq worker and periodiq exit 2 with the one line naming it."""
    engine, schema_file = todo_app
    migrate.run(engine, load_mapping(schema_file))
    bad = tmp_path / "bad.toml"
    bad.write_text(TODO_APP_MAPPING.format(zone="UTC").replace("deadline", "deadlin", 1))
    env = {
        "PATH": str(Path(sys.executable).parent),
        "REMINDERS_DATABASE_URL": empty_postgres_url,
        "REMINDERS_SCHEMA_FILE": str(bad),
        "REMINDERS_BROKER_URL": "redis://127.0.0.1:6379/15",
    }
    bin_dir = Path(sys.executable).parent
    for command in (
        [str(bin_dir / "reminders"), "scan"],
        [str(bin_dir / "dramatiq"), "worker.actors", "--processes", "1", "--threads", "1"],
        [str(bin_dir / "periodiq"), "worker.actors"],
    ):
        done = subprocess.run(
            command, check=False, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, (command, done.stderr)
        ours = [line for line in done.stderr.splitlines() if line.startswith("reminders: ")]
        assert ours == [
            f"reminders: REMINDERS_SCHEMA_FILE {bad}: [tasks] due: "
            "column todo_items.deadlin not found"
        ]
        assert "Traceback" not in done.stderr


def services_on(
    host_database: HostDatabase, clock: ManualClock
) -> tuple[Services, RecordingChannel]:
    channel = RecordingChannel()
    settings = Settings(database_url=host_database.url, schema_file=host_database.schema_file)
    services = bootstrap(
        settings, clock=clock, engine=host_database.engine, make_channel=lambda: channel
    )
    return services, channel


def test_a_mapped_task_is_reminded_at_the_instant_of_its_wall_time(
    host_database: HostDatabase, clock: ManualClock
) -> None:
    """A deadline kept as wall time in the host's zone is due at that zone's instant: the
    key, the window and the message all use the instant, across a change of offset."""
    app = host_database.app
    services, channel = services_on(host_database, clock)
    lookahead = services.settings.lookahead
    # One reminder due now and one a minute later, after Berlin's clocks went forward (wall
    # times 01:59 CET and 03:01 CEST are two minutes apart): the second is planned for its
    # moment and sent then, not before.
    summer = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    clock.set(summer - lookahead + timedelta(minutes=30))
    inside = summer + timedelta(minutes=29)
    outside = summer + timedelta(minutes=31)
    with host_database.engine.begin() as connection:
        app.add_user(connection, 1, timezone="Europe/Berlin")
        app.add_task(connection, 1, 1, inside)
        app.add_task(connection, 2, 1, outside)
        app.add_task(connection, 3, 1, inside, completed=True)
    assert services.scan().queued == 2
    services.relay().relay_until_idle()
    assert [m.key for m in channel.sent] == [reminder_key(1, inside)]
    clock.advance(timedelta(minutes=2))
    assert services.scan().queued == 0
    with host_database.engine.begin() as connection:
        app.move(connection, 1, inside + timedelta(hours=1))  # out of the window: nothing
    services.relay().relay_until_idle()
    assert [m.key for m in channel.sent] == [reminder_key(1, inside), reminder_key(2, outside)]
    with services.session_factory() as session:
        assert session.query(OutboxRow).count() == 2


def test_the_scan_on_a_mapped_schema_uses_the_partial_index(
    host_database: HostDatabase, clock: ManualClock
) -> None:
    """The due query's plan reads the mapped tasks table through the worker's index, for a
    table where almost every task was reminded long ago."""
    app = host_database.app
    table = "todo_items" if app.mapped else "tasks"
    with host_database.engine.begin() as connection:
        app.add_user(connection, 1)
        due = "deadline" if app.mapped else "due_date"
        owner = "assignee_id" if app.mapped else "owner_id"
        title = "name" if app.mapped else "title"
        connection.execute(
            text(
                f"INSERT INTO {table} (id, {owner}, {title}, {due}, reminder_due_at) "
                f"SELECT g, 1, 't', :t - g * interval '1 minute', :t - g * interval '1 minute' "
                "FROM generate_series(1, 50000) g"
            ),
            {"t": app.stored_due(T0)},
        )
        connection.execute(text(f"ANALYZE {table}"))
    services, _ = services_on(host_database, clock)
    statement, parameters = captured_claim(
        host_database.engine, T0, timedelta(hours=24), 5000, services.due_queries
    )
    text_plan = explain(host_database.engine, statement, parameters)
    print(text_plan)  # shown with -s: the plan on this schema
    assert f"ix_{table}_awaiting_reminder" in text_plan, text_plan
    assert f"Seq Scan on {table}" not in text_plan, text_plan


def test_a_release_that_shared_alembic_version_upgrades_in_place(
    empty_postgres_url: str, clock: ManualClock
) -> None:
    """A database migrated by the release that kept its revision in ``alembic_version``:
    migrate moves the revision into the worker's own table, drops the table it had made,
    keeps the index it had built, and the rows queued before go out once."""
    engine = make_engine(empty_postgres_url)
    dump = (FIXTURES / "release-0002-postgresql.sql").read_text()
    with engine.begin() as connection:
        connection.connection.driver_connection.execute(dump)  # type: ignore[union-attr]
        connection.execute(text("INSERT INTO users VALUES (1, 'a@example.com', 'UTC', true)"))
        connection.execute(
            text("INSERT INTO tasks (id, owner_id, title, due_date) VALUES (1, 1, 'a', :due)"),
            {"due": T0 + timedelta(hours=1)},
        )
        oid = connection.execute(text("SELECT 'ix_tasks_awaiting_reminder'::regclass::oid"))
        index_before = oid.scalar_one()
    assert migrate.current_revision(engine) == "0002"
    channel = RecordingChannel()
    settings = Settings(database_url=empty_postgres_url)
    clock.set(T0)
    old = migrate.run(engine)
    assert (old.before, old.after) == ("0002", migrate.head_revision())
    with engine.connect() as connection:
        tables = set(
            connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
        )
        assert "alembic_version" not in tables
        oid = connection.execute(text("SELECT 'ix_tasks_awaiting_reminder'::regclass::oid"))
        assert oid.scalar_one() == index_before  # not rebuilt
    services = bootstrap(settings, clock=clock, engine=engine, make_channel=lambda: channel)
    assert services.scan().queued == 1
    services.relay().relay_until_idle()
    assert [m.key for m in channel.sent] == [reminder_key(1, T0 + timedelta(hours=1))]
    assert migrate.run(engine).host == []
    engine.dispose()


def test_a_host_sharing_alembic_version_keeps_its_row(empty_postgres_url: str) -> None:
    """Where the host's own revision sits beside the worker's in ``alembic_version``, only
    the worker's row moves; the host's table and row stay."""
    engine = make_engine(empty_postgres_url)
    dump = (FIXTURES / "release-0002-postgresql.sql").read_text()
    with engine.begin() as connection:
        connection.connection.driver_connection.execute(dump)  # type: ignore[union-attr]
        connection.execute(text("INSERT INTO alembic_version VALUES ('4f2a9c1b7d3e')"))
    migrate.run(engine)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        assert list(rows) == ["4f2a9c1b7d3e"]
    engine.dispose()


def test_a_changed_completion_rule_rebuilds_only_the_workers_index(
    todo_app: tuple[Engine, str], tmp_path: Path
) -> None:
    """The index follows the mapping: a new ``done`` condition rebuilds it on migrate."""
    engine, schema_file = todo_app
    migrate.run(engine, load_mapping(schema_file))
    changed = tmp_path / "changed.toml"
    changed.write_text(
        TODO_APP_MAPPING.format(zone="UTC").replace(
            "status = 'done'", "status IN ('done', 'dropped')"
        )
    )
    rerun = migrate.run(engine, load_mapping(changed))
    # Both of the worker's indexes hold the completion rule.
    assert [s.split(" ")[0:2] for s in rerun.host] == 2 * [
        ["DROP", "INDEX"],
        ["CREATE", "INDEX"],
        ["COMMENT", "ON"],
    ]
    with engine.connect() as connection:
        definitions = connection.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname LIKE 'ix_todo_items_%'")
        ).scalars()
        assert all("'dropped'" in definition for definition in definitions)
    assert migrate.run(engine, load_mapping(changed)).host == []


ALL_DAY_MAPPING = """\
[tasks]
table = "chores"
id = "id"
owner = "user_id"
title = "title"
due = "due_on"
completed_at = "done_at"

[users]
table = "people"
id = "id"
email = "email"
timezone = "zone"
"""


def test_an_all_day_task_is_due_at_nine_in_each_recipients_zone(
    empty_postgres_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    """A ``date`` due column: each task is due at 09:00 on its day in its owner's zone (UTC
    for a zone PostgreSQL does not know), and reminded 24 h (a day on the wall clock) before;
    the key holds the date, the re-check agrees."""
    engine = make_engine(empty_postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE people (id INT PRIMARY KEY, email TEXT, zone TEXT)"))
        connection.execute(
            text(
                "CREATE TABLE chores (id INT PRIMARY KEY, user_id INT, title TEXT, "
                "due_on DATE, done_at TIMESTAMPTZ)"
            )
        )
        zones = {1: "Pacific/Auckland", 2: "America/Los_Angeles", 3: "Mars/Olympus", 4: None}
        for user, zone in zones.items():
            connection.execute(
                text("INSERT INTO people VALUES (:id, :email, :zone)"),
                {"id": user, "email": f"p{user}@example.com", "zone": zone},
            )
            connection.execute(
                text("INSERT INTO chores VALUES (:id, :id, 'chore', '2026-12-10', NULL)"),
                {"id": user},
            )
    schema_file = tmp_path / "chores.toml"
    schema_file.write_text(ALL_DAY_MAPPING)
    migrate.run(engine, load_mapping(schema_file))
    channel = RecordingChannel()
    settings = Settings(database_url=empty_postgres_url, schema_file=str(schema_file))
    services = bootstrap(settings, clock=clock, engine=engine, make_channel=lambda: channel)
    day = datetime(2026, 12, 10, tzinfo=UTC)  # the key's due date: the date itself
    # 10:00 UTC on 12-09: past the moments of 1, 3, 4 (12-08 20:00, 12-09 09:00 twice).
    clock.set(datetime(2026, 12, 9, 10, 0, tzinfo=UTC))
    assert services.scan().queued == 3
    services.relay().relay_until_idle()
    assert sorted(m.key for m in channel.sent) == sorted(
        reminder_key(task, day) for task in (1, 3, 4)
    )
    # 09:00 PST on 12-09 is 17:00 UTC: planned by the scan before it, sent at it.
    clock.set(datetime(2026, 12, 9, 16, 59, tzinfo=UTC))
    assert services.scan().queued == 1
    services.relay().relay_until_idle()
    assert len(channel.sent) == 3
    clock.set(datetime(2026, 12, 9, 17, 0, tzinfo=UTC))
    services.relay().relay_until_idle()
    assert channel.sent[-1].key == reminder_key(2, day)
    assert "Thu, Dec 10, 2026, 9:00 AM PST" in channel.sent[-1].subject
    engine.dispose()
