"""The schema file: the contract's keys are read, and every mistake gets one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.support.hosts import TODO_APP_MAPPING
from worker import migrate
from worker.db import make_engine
from worker.reminders.host import MappingMismatch, check_host
from worker.reminders.mapping import (
    REFERENCE,
    MappingError,
    RecipientsMapping,
    TasksMapping,
    UsersMapping,
    load_mapping,
)

M = TODO_APP_MAPPING

CONTRACT_EXAMPLE = """\
[tasks]
table = "todo_items"
id = "id"
owner = "assignee_id"          # the user id of the recipient
title = "name"
due = "deadline"
due_timezone = "UTC"
completed_at = "finished_at"
[users]
table = "accounts"
id = "id"
email = "email_address"
timezone = "tz"
enabled = "wants_reminders"
locale = "lang"
[recipients]
table = "todo_watchers"
task = "todo_id"
user = "account_id"
"""


def write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "schema.toml"
    path.write_text(content)
    return path


def test_no_file_is_the_reference_schema() -> None:
    """Without REMINDERS_SCHEMA_FILE the reference schema is the mapping."""
    assert load_mapping(None) is REFERENCE
    assert load_mapping("  ") is REFERENCE
    assert REFERENCE.where == "the reference schema"


def test_the_contracts_example_is_read(tmp_path: Path) -> None:
    """Every key of the contract's example lands where it says."""
    path = write(tmp_path, CONTRACT_EXAMPLE)
    mapping = load_mapping(path)
    assert mapping.tasks == TasksMapping(
        table="todo_items",
        id="id",
        owner="assignee_id",
        title="name",
        due="deadline",
        due_timezone="UTC",
        completed_at="finished_at",
    )
    assert mapping.users == UsersMapping(
        table="accounts",
        id="id",
        email="email_address",
        timezone="tz",
        enabled="wants_reminders",
        locale="lang",
    )
    assert mapping.recipients == RecipientsMapping("todo_watchers", "todo_id", "account_id")
    assert mapping.where == f"REMINDERS_SCHEMA_FILE {path}"


def test_a_done_condition_keeps_its_quotes(tmp_path: Path) -> None:
    """A condition's text is kept as written, a ';' or '--' inside a literal included."""
    content = TODO_APP_MAPPING.format(zone="UTC").replace(
        "status = 'done'", "status IN ('done', 'a;b', 'x--y')"
    )
    assert load_mapping(write(tmp_path, content)).tasks.done == "status IN ('done', 'a;b', 'x--y')"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[tasks\n", "not valid TOML"),
        ("[users]\ntable='a'\nid='id'\nemail='e'\n", "[tasks] required"),
        ("tasks = 1\n", "[tasks] must be a table"),
        ("[extra]\n", "unknown section [extra]"),
        (M.replace('title = "name"\n', ""), "[tasks] title: required"),
        (M.replace('email = "email_address"', 'mail = "x"'), "[users] unknown key 'mail'"),
        (M.replace('"assignee_id"', "3"), "[tasks] owner: must be a non-empty string"),
        (M.replace('"assignee_id"', '"a; DROP TABLE x"'), "is not a table or column name"),
        (M.replace('"todo_items"', '"todo items"'), "[tasks] table: 'todo items' is not"),
        (M.replace("done = \"status = 'done'\"", ""), "completed_at or done: required"),
        (M.replace("done = ", 'completed_at = "x"\ndone = '), "not both"),
        (M.replace("status = 'done'", "true; DROP TABLE accounts"), "without ';'"),
        (M.replace("status = 'done'", "true -- x"), "without ';' or comments"),
        (M.replace("status = 'done'", "(status = 'done'"), "unbalanced parentheses"),
        (M.replace("status = 'done'", "true) OR (1 = 1"), "unbalanced parentheses"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_line_naming_the_key(tmp_path: Path, content: str, message: str) -> None:
    """Each mistake raises MappingError: the file, the section and the key, on one line."""
    path = write(tmp_path, content.replace("{zone}", "UTC"))
    with pytest.raises(MappingError) as raised:
        load_mapping(path)
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"REMINDERS_SCHEMA_FILE {path}: ")
    assert "\n" not in str(raised.value)


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path) -> None:
    """A path that is not a readable UTF-8 file: one line naming it."""
    with pytest.raises(MappingError, match="cannot be read"):
        load_mapping(tmp_path / "missing.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MappingError, match="not UTF-8"):
        load_mapping(binary)


@pytest.fixture
def sqlite_host(tmp_path: Path) -> Engine:
    """The to-do app's tables in SQLite, as a host application would make them."""
    engine = make_engine(f"sqlite:///{tmp_path}/host.db")
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE accounts (id INTEGER PRIMARY KEY, "
                "email_address TEXT, tz TEXT, wants_reminders BOOLEAN, lang TEXT)"
            )
        )
        connection.execute(
            text(
                "CREATE TABLE todo_items (id INTEGER PRIMARY KEY, "
                "assignee_id INTEGER, name TEXT, deadline DATETIME, status TEXT)"
            )
        )
    return engine  # fmt: skip


def test_sqlite_takes_a_mapped_schema_with_utc_timestamps(
    sqlite_host: Engine, tmp_path: Path
) -> None:
    """On SQLite a mapped due column holds UTC timestamps: migrate adds the worker's part
    and the check passes; a zone other than UTC is refused, naming why."""
    mapping = load_mapping(write(tmp_path, TODO_APP_MAPPING.format(zone="UTC")))
    migrate.run(sqlite_host, mapping)
    with sqlite_host.connect() as connection:
        host = check_host(connection, mapping)
        assert host.tasks.table.name == "todo_items"
    berlin = tmp_path / "berlin.toml"
    berlin.write_text(TODO_APP_MAPPING.format(zone="Europe/Berlin"))
    with sqlite_host.connect() as connection, pytest.raises(MappingMismatch, match="SQLite"):
        check_host(connection, load_mapping(berlin))


def test_sqlite_upgrades_a_release_that_shared_alembic_version(tmp_path: Path) -> None:
    """A SQLite database of the release that kept its revision in alembic_version."""
    engine = make_engine(f"sqlite:///{tmp_path}/old.db")
    dump = (Path(__file__).parents[1] / "fixtures" / "release-0002-sqlite.sql").read_text()
    raw = engine.raw_connection()
    raw.driver_connection.executescript(dump)  # type: ignore[union-attr]
    raw.close()
    assert migrate.current_revision(engine) == "0002"
    done = migrate.run(engine)
    assert (done.before, done.after) == ("0002", migrate.head_revision())
    with engine.connect() as connection:
        tables = set(
            connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars()
        )
        check_host(connection, REFERENCE)
    assert "alembic_version" not in tables and "reminders_alembic_version" in tables
    assert migrate.run(engine).host == []


def test_migrate_sql_on_an_empty_database_prints_everything_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """``--sql`` on a database with nothing in it: the reference tables, the worker's tables
    and its index, all printed; the database stays empty."""
    engine = make_engine(f"sqlite:///{tmp_path}/empty.db")
    sql = migrate.offline_sql(engine)
    assert "CREATE TABLE users" in sql and "CREATE TABLE tasks" in sql
    assert "CREATE TABLE outbox" in sql and "ix_tasks_awaiting_reminder" in sql
    with engine.connect() as connection:
        tables = connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        assert list(tables) == []
