"""Reminder rules by hand: the real ``reminders rules`` script on SQLite and PostgreSQL, and on
a host schema that is not ours; bad input refused with one line, exit 2, nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import HostDatabase
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_user, make_services
from tests.support.hosts import TODO_APP_BERLIN
from worker.reminders import rule_store
from worker.reminders.rules import MAX_LEADS, Rule

REMINDERS = str(Path(sys.executable).parent / "reminders")
DUE = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def run(url: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``reminders ARGS`` on the database at ``url`` with only the variables given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    variables = clean | {"REMINDERS_DATABASE_URL": url} | env
    return subprocess.run(
        [REMINDERS, *args],
        env=variables,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a command that exited 0 and wrote nothing on stderr."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a command refused as bad usage (exit 2); nothing on stdout."""
    lines = result.stderr.splitlines()
    assert (result.returncode, len(lines), result.stdout) == (2, 1, ""), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def listed(url: str, cwd: Path, **env: str) -> Any:
    """The document of ``rules list --json``."""
    return json.loads(ok(run(url, "rules", "list", "--json", cwd=cwd, **env)))


def rows(engine: Engine) -> list[tuple[Any, ...]]:
    """Every row of both rule tables, and every task's marker, to see that nothing changed."""
    with engine.connect() as connection:
        return [
            *connection.execute(text("SELECT * FROM reminder_rules ORDER BY id")),
            *connection.execute(text("SELECT * FROM reminder_rule_leads ORDER BY 1, 2")),
            *connection.execute(text("SELECT id, reminder_due_at FROM tasks ORDER BY id")),
        ]


@pytest.fixture
def url(engine: Engine) -> str:
    """The URL of this test's migrated database, users 1 and 2 and a marked task each in it."""
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO users (id, email) VALUES (1, 'a@example.com'), (2, 'b@example.com')")
        )
        connection.execute(
            text(
                "INSERT INTO tasks (id, owner_id, title, due_date, reminder_due_at) "
                "VALUES (1, 1, 'one', :due, :due), (2, 2, 'two', :due, :due)"
            ),
            {"due": DUE},
        )
    return engine.url.render_as_string(hide_password=False)


def test_rules_are_set_listed_and_cleared(url: str, tmp_path: Path) -> None:
    """``set``, ``list --json`` and ``clear``, for the default rule and a user's."""
    document = listed(url, tmp_path)
    assert document["default"] == {
        "user_id": None,
        "stored": False,
        "before": ["1d"],
        "before_seconds": [86400],
        "overdue_every_seconds": None,
        "overdue_count": 0,
        "all_day_at": "09:00",
        "updated_at": None,
    }
    assert (document["users"], document["total"], document["truncated"]) == ([], 0, False)
    out = ok(
        run(
            url,
            "rules",
            "set",
            "--user",
            "1",
            "--before",
            "24h,1h,0m",
            "--overdue",
            "1d x3",
            cwd=tmp_path,
        )
    )
    assert out.splitlines() == [
        "rule of user 1 set: before 1d,1h,0m; overdue 1d x3; all-day at 09:00; "
        "1 open task(s) to plan again at the next scan"
    ]
    ok(
        run(
            url,
            "rules",
            "set",
            "--default",
            "--before",
            "2h",
            "--all-day-at",
            "08:30",
            cwd=tmp_path,
        )
    )
    document = listed(url, tmp_path)
    assert document["default"]["before"] == ["2h"]
    assert document["default"]["all_day_at"] == "08:30"
    assert document["default"]["stored"] is True
    [user] = document["users"]
    assert (user["user_id"], user["before_seconds"], user["overdue_every_seconds"]) == (
        1,
        [86400, 3600, 0],
        86400,
    )
    assert user["overdue_count"] == 3
    table = ok(run(url, "rules", "list", cwd=tmp_path))
    assert "user 1" in table and "1d,1h,0m" in table and "1d x3" in table
    cleared = ok(run(url, "rules", "clear", "--user", "1", cwd=tmp_path))
    assert cleared.startswith("rule of user 1 cleared: the default rule applies")
    assert ok(run(url, "rules", "clear", "--user", "1", cwd=tmp_path)).strip() == (
        "rule of user 1: none set, nothing cleared"
    )
    ok(run(url, "rules", "clear", "--default", cwd=tmp_path))
    assert listed(url, tmp_path)["default"]["stored"] is False


def test_options_left_out_keep_the_rules_values(url: str, tmp_path: Path) -> None:
    """A user's new rule starts from the default rule; a later set changes only what it names."""
    ok(
        run(
            url,
            "rules",
            "set",
            "--default",
            "--before",
            "3h",
            "--all-day-at",
            "07:00",
            cwd=tmp_path,
        )
    )
    ok(run(url, "rules", "set", "--user", "2", "--overdue", "1dx2", cwd=tmp_path))
    ok(run(url, "rules", "set", "--user", "2", "--before", "1h", cwd=tmp_path))
    [user] = listed(url, tmp_path)["users"]
    assert (user["before"], user["overdue_count"], user["all_day_at"]) == (["1h"], 2, "07:00")
    again = ok(run(url, "rules", "set", "--user", "2", "--before", "60m", cwd=tmp_path))
    assert again.strip().endswith("(unchanged)")
    ok(run(url, "rules", "set", "--user", "2", "--overdue", "none", cwd=tmp_path))
    [user] = listed(url, tmp_path)["users"]
    assert (user["overdue_every_seconds"], user["overdue_count"]) == (None, 0)


def test_the_default_rule_starts_from_the_lookahead(url: str, tmp_path: Path) -> None:
    """With REMINDERS_LOOKAHEAD=2h, the built-in rule and a new default start at 2 h."""
    document = listed(url, tmp_path, REMINDERS_LOOKAHEAD="2h")
    assert document["default"]["before"] == ["2h"]
    ok(
        run(
            url,
            "rules",
            "set",
            "--default",
            "--overdue",
            "1h",
            cwd=tmp_path,
            REMINDERS_LOOKAHEAD="2h",
        )
    )
    assert listed(url, tmp_path)["default"]["before"] == ["2h"]


TOO_MANY = ",".join(f"{n}m" for n in range(1000))
# The parsers' other refusals are the unit tests' (tests/unit/test_rules.py).
BAD_INPUT = {
    "negative lead time": (["--user", "1", "--before", "1h,-5m"], "--before: '-5m' is negative"),
    "zero overdue interval": (["--user", "1", "--overdue", "0d x3"], "interval of zero"),
    "25 o'clock": (["--user", "1", "--all-day-at", "25:00"], "'25:00' is not a time of day"),
    "unknown user": (["--user", "99", "--before", "1h"], "user 99 is not in table users"),
    "1,000 lead times": (["--user", "1", "--before", TOO_MANY], f"a rule has at most {MAX_LEADS}"),
    "a year and a day": (["--user", "1", "--before", "366d"], "longer than 365d"),
    "both scopes": (["--default", "--user", "1", "--before", "1h"], "not both"),
    "no scope": (["--before", "1h"], "--default or --user ID"),
    "not a user id": (["--user", "bob", "--before", "1h"], "'bob' is not a user id"),
    "a space in the list": (["--user", "1", "--before", "1h,", "2h"], "unexpected argument '2h'"),
}


@pytest.mark.parametrize(("args", "message"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_refused_with_one_line_and_changes_nothing(
    sqlite_engine: Engine, tmp_path: Path, args: list[str], message: str
) -> None:
    """Each bad input: one line on stderr naming it, exit 2, the tables as they were."""
    database = sqlite_engine.url.render_as_string(hide_password=False)
    services = make_services(sqlite_engine, ManualClock(), RecordingChannel())
    add_user(services, 1)
    with services.session_factory.begin() as session:
        rule = Rule(before=(timedelta(hours=3),))
        rule_store.set_rule(session, services.host, 1, rule, now=services.clock.now())
    before = rows(sqlite_engine)
    line = refused(run(database, "rules", "set", *args, cwd=tmp_path))
    assert line.startswith("reminders: ") and message in line, line
    assert rows(sqlite_engine) == before


def test_an_unknown_user_is_refused_on_postgresql_too(
    postgres_engine: Engine, tmp_path: Path
) -> None:
    """The users table is asked on each dialect: nothing is stored for a user it lacks."""
    database = postgres_engine.url.render_as_string(hide_password=False)
    before = rows(postgres_engine)
    line = refused(run(database, "rules", "set", "--user", "7", "--before", "1h", cwd=tmp_path))
    assert line == "reminders: user 7 is not in table users: no rule set"
    assert rows(postgres_engine) == before


def test_clear_needs_one_scope(url: str, tmp_path: Path) -> None:
    """``clear`` with neither or both of --default and --user is bad usage."""
    assert "which rule?" in refused(run(url, "rules", "clear", cwd=tmp_path))
    assert "not both" in refused(
        run(url, "rules", "clear", "--default", "--user", "1", cwd=tmp_path)
    )


def test_rules_need_a_migrated_database(tmp_path: Path) -> None:
    """On a database never migrated: exit 1 and one line saying to run migrate."""
    database = f"sqlite:///{tmp_path}/empty.db"
    result = run(database, "rules", "list", cwd=tmp_path)
    assert result.returncode == 1
    assert "run `reminders migrate`" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("host_app", [TODO_APP_BERLIN], ids=lambda app: app.name)
def test_rules_on_a_host_schema_ask_its_users_table(
    host_database: HostDatabase, tmp_path: Path
) -> None:
    """Through a mapping: the user is looked up in ``accounts``; the marker cleared on the
    user's open ``todo_items``."""
    app, engine = host_database.app, host_database.engine
    assert host_database.schema_file is not None
    with engine.begin() as connection:
        app.add_user(connection, 5)
        app.add_task(connection, 50, 5, DUE)
        app.add_task(connection, 51, 5, DUE, completed=True)
        connection.execute(text("UPDATE todo_items SET reminder_due_at = deadline"))
    env = {"REMINDERS_SCHEMA_FILE": host_database.schema_file}
    line = refused(run(host_database.url, "rules", "set", "--user", "6", cwd=tmp_path, **env))
    assert line == "reminders: user 6 is not in table accounts: no rule set"
    out = ok(
        run(
            host_database.url,
            "rules",
            "set",
            "--user",
            "5",
            "--before",
            "2h,30m",
            cwd=tmp_path,
            **env,
        )
    )
    assert "1 open task(s) to plan again" in out
    with engine.connect() as connection:
        found = connection.execute(text("SELECT id, reminder_due_at FROM todo_items"))
        marks: dict[int, Any] = {row[0]: row[1] for row in found}
    assert marks[50] is None and marks[51] is not None
    assert listed(host_database.url, tmp_path, **env)["users"][0]["before"] == ["2h", "30m"]


def test_help_names_the_rules_commands(tmp_path: Path) -> None:
    """``reminders rules --help`` lists set, list and clear."""
    result = run("sqlite:///unused.db", "rules", "--help", cwd=tmp_path)
    out = ok(result)
    assert all(name in out for name in ("set", "list", "clear"))
