"""The example host app (examples/taskapp) end to end, as its README runs it: its own Alembic
history, `reminders migrate` on its mapped schema, the app under uvicorn, `dramatiq
worker.actors` and an SMTP server, all real processes, driven over HTTP.

No scheduler runs and the schedule is hourly: a reminder that arrives within seconds of the
request was started by the app's nudge.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import OperationalError

from outbox.table import ACTIVE, Status
from tests.acceptance.harness import (
    BIN,
    ROOT,
    Proc,
    Procs,
    SmtpReceiver,
    child_env,
    database_copy,
    outbox,
    run_reminders,
    service_env,
    smtp_env,
    utc_now,
    wait_until,
)
from tests.conftest import POSTGRES_URL, unavailable
from worker.reminders.languages import language_for
from worker.reminders.render import local_due

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

EXAMPLE = ROOT / "examples" / "taskapp"
ALEMBIC_INI = EXAMPLE / "alembic.ini"
SCHEMA_FILE = EXAMPLE / "schema.toml"
#: How soon after the request that created or moved a task its reminder must be accepted.
WITHIN_SECONDS = 5.0
HOURLY = "0 * * * *"
PARIS = ZoneInfo("Europe/Paris")
_MAIL = email.parser.BytesParser(policy=email.policy.default)


@dataclass(frozen=True)
class AppDatabase:
    """The app's database: its URL, an engine on it, and where to run commands from."""

    url: str
    db: Engine
    cwd: Path

    def alembic(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The app's own ``alembic -c examples/taskapp/alembic.ini ARGS``."""
        return subprocess.run(
            [str(BIN / "alembic"), "-c", str(ALEMBIC_INI), *args],
            env=child_env(TASKAPP_DATABASE_URL=self.url),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def service_env(self, redis_url: str, smtp: SmtpReceiver) -> dict[str, str]:
        """The workers' environment: the app's database read through ``schema.toml``."""
        return service_env(
            self.url,
            redis_url,
            **smtp_env(smtp),
            REMINDERS_SCHEMA_FILE=str(SCHEMA_FILE),
            REMINDERS_SCAN_SCHEDULE=HOURLY,
            REMINDERS_LOOKAHEAD="24h",
        )

    def migrate(self, env: dict[str, str]) -> None:
        """The app's ``alembic upgrade head``, then the service's ``reminders migrate``."""
        done = self.alembic("upgrade", "head")
        assert done.returncode == 0, done.stdout + done.stderr
        migrated = run_reminders(env, "migrate", cwd=self.cwd)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    def tables(self) -> set[str]:
        """The tables of the database's public schema."""
        return set(inspect(self.db).get_table_names())

    def columns(self, table: str) -> set[str]:
        """The column names of ``table``."""
        return {column["name"] for column in inspect(self.db).get_columns(table)}


@pytest.fixture
def app_database(tmp_path: Path) -> Iterator[AppDatabase]:
    """A fresh, empty PostgreSQL database: nothing of the app's, nothing of the service's."""
    with contextlib.ExitStack() as stack:
        try:
            url, engine = stack.enter_context(database_copy(POSTGRES_URL, "template0"))
        except OperationalError as error:
            unavailable("PostgreSQL", error)
        yield AppDatabase(url, engine, tmp_path)


class TaskApp:
    """The app under uvicorn, on a port of its choosing, and an HTTP client for it."""

    def __init__(self, procs: Procs, database_url: str, broker_url: str) -> None:
        env = child_env(TASKAPP_DATABASE_URL=database_url, REMINDERS_BROKER_URL=broker_url)
        self.proc = procs.start(
            "taskapp",
            [sys.executable, "-m", "uvicorn", "--factory", "examples.taskapp.app:create_app",
             "--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", "0"],
            env,
        )  # fmt: skip
        running = r"Uvicorn running on (http://127\.0\.0\.1:\d+)"
        wait_until(partial(self.proc.logged, running), "the app listening", alive=[self.proc])
        found = re.search(running, self.proc.log(tail=0))
        assert found is not None
        self.http = httpx.Client(base_url=found.group(1), timeout=10)

    def call(self, method: str, path: str, body: dict[str, Any], expect: int) -> dict[str, Any]:
        """One request; its JSON answer, which must come with status ``expect``."""
        answer = self.http.request(method, path, json=body)
        assert answer.status_code == expect, answer.text
        document: dict[str, Any] = answer.json()
        return document

    def account(self, address: str) -> int:
        """A new account in Paris, speaking French; its id."""
        body = {"email_address": address, "tz": "Europe/Paris", "lang": "fr"}
        return int(self.call("POST", "/accounts", body, 201)["id"])

    def task(self, title: str, assignee: int, due: datetime) -> int:
        """A new task due at ``due``; its id."""
        body = {"title": title, "assignee_id": assignee, "due": due.isoformat()}
        return int(self.call("POST", "/tasks", body, 201)["id"])

    def change(self, task_id: int, **fields: str) -> dict[str, Any]:
        """PATCH the task; its new state."""
        return self.call("PATCH", f"/tasks/{task_id}", fields, 200)

    def close(self) -> None:
        """Close the client (the process is the fixture's)."""
        self.http.close()


def mails(smtp: SmtpReceiver, task_id: int) -> list[tuple[EmailMessage, float]]:
    """The accepted messages about ``task_id`` and when each was accepted, in order."""
    found = []
    for mail in list(smtp.messages):
        message = _MAIL.parsebytes(mail.raw)
        assert isinstance(message, EmailMessage)
        if message["X-Task-Id"] == str(task_id):
            found.append((message, mail.received_at))
    return found


def body(message: EmailMessage) -> str:
    """The plain-text part of a reminder."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def mailed_within(
    smtp: SmtpReceiver, task_id: int, count: int, sent_at: float, alive: list[Proc]
) -> tuple[EmailMessage, float]:
    """Wait until the ``count``-th message about ``task_id`` is accepted, at most
    `WITHIN_SECONDS` after ``sent_at``; that message and its latency in seconds."""
    wait_until(
        lambda: len(mails(smtp, task_id)) >= count,
        f"reminder {count} of task {task_id}",
        timeout=WITHIN_SECONDS,
        alive=alive,
        interval=0.02,
    )
    message, accepted_at = mails(smtp, task_id)[count - 1]
    return message, accepted_at - sent_at


def rows_of(db: Engine, task_id: int) -> dict[str, tuple[str, int]]:
    """The outbox rows about ``task_id``: (status, attempts) by key."""
    return {k: (r.status, r.attempts) for k, r in outbox(db).items() if r.subject_id == task_id}


def statuses(db: Engine, task_id: int) -> list[str]:
    """The statuses of the outbox rows about ``task_id``."""
    return [status for status, _ in rows_of(db, task_id).values()]


def idle(db: Engine) -> bool:
    """Whether no outbox row is waiting or being sent."""
    return not any(row.status in ACTIVE for row in outbox(db).values())


def test_reminders_migrate_leaves_the_apps_schema_and_history_alone(
    app_database: AppDatabase, redis_url: str, smtp: SmtpReceiver
) -> None:
    """After the app's `alembic upgrade head` and `reminders migrate` with its schema file
    (twice), the app's `alembic_version` still holds the app's head, no reference `users` or
    `tasks` table exists, `todo_items` gained only the worker's two columns, and the app's
    `alembic check` finds nothing to change."""
    env = app_database.service_env(redis_url, smtp)
    app_database.migrate(env)
    before = (app_database.tables(), app_database.columns("todo_items"))
    again = run_reminders(env, "migrate", cwd=app_database.cwd)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (app_database.tables(), app_database.columns("todo_items")) == before

    head = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    with app_database.db.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert [row[0] for row in versions] == [head]
    tables = app_database.tables()
    assert {"accounts", "todo_items", "alembic_version", "reminders_alembic_version"} <= tables
    assert not {"users", "tasks"} & tables
    assert app_database.columns("accounts") == {
        "id", "email_address", "tz", "wants_reminders", "lang",
    }  # fmt: skip
    assert app_database.columns("todo_items") == {
        "id", "assignee_id", "name", "deadline", "status", "reminder_sent_at", "reminder_due_at",
    }  # fmt: skip
    checked = app_database.alembic("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_tasks_created_moved_and_completed_over_http_are_reminded_as_they_stand(
    app_database: AppDatabase, redis_url: str, smtp: SmtpReceiver, procs: Procs
) -> None:
    """A task created over HTTP due in an hour is mailed within seconds; moving its deadline
    mails a reminder for the new time and never the old one again; a task marked done while
    its reminder waits for a retry is never mailed, its row cancelled."""
    env = app_database.service_env(redis_url, smtp)
    app_database.migrate(env)
    worker = procs.dramatiq(env)
    app = TaskApp(procs, app_database.url, redis_url)
    alive = [worker, app.proc]
    try:
        wait_until(partial(worker.logged, "ready for action"), "the worker up", alive=alive)
        ada = app.account("ada@example.com")

        # Created: the nudge after the app's commit has it mailed within seconds.
        due = utc_now() + timedelta(hours=1)
        sent_at = time.time()
        first_task = app.task("File taxes", ada, due)
        first, latency = mailed_within(smtp, first_task, 1, sent_at, alive)
        print(f"\ncreated: mailed {latency:.2f}s after the request")
        assert first["To"] == "ada@example.com"
        assert "File taxes" in body(first)
        assert "Votre tâche arrive bientôt à échéance." in body(first)  # the owner's "fr"
        assert local_due(due, PARIS, language_for("fr")) in body(first)

        # Moved within the lookahead: re-armed for the new deadline.
        moved = utc_now() + timedelta(hours=23)
        sent_at = time.time()
        assert app.change(first_task, due=moved.isoformat())["due"] is not None
        second, latency = mailed_within(smtp, first_task, 2, sent_at, alive)
        print(f"moved: mailed {latency:.2f}s after the request")
        assert local_due(moved, PARIS, language_for("fr")) in body(second)
        assert second["X-Reminder-Key"] != first["X-Reminder-Key"]

        # Done while its reminder waits: Bob's mailbox answers "try later", so the row is
        # failed and waiting for its retry when the app marks the task done.
        smtp.rcpt_replies["bob@example.org"] = "451 4.2.1 mailbox busy, try later"
        bob = app.account("bob@example.org")
        second_task = app.task("Renew passport", bob, utc_now() + timedelta(hours=2))
        wait_until(
            lambda: statuses(app_database.db, second_task) == [Status.FAILED],
            "the second task's reminder refused once and waiting for its retry",
            alive=alive,
        )
        listed = run_reminders(env, "outbox", "list", "--task", str(second_task), "--json",
                               cwd=app_database.cwd)  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert [row["status"] for row in json.loads(listed.stdout)["rows"]] == ["failed"]
        assert app.change(second_task, status="done")["status"] == "done"
        wait_until(
            lambda: statuses(app_database.db, second_task) == [Status.CANCELLED],
            "the done task's reminder cancelled",
            alive=alive,
        )

        wait_until(partial(idle, app_database.db), "no row left waiting", alive=alive)
    finally:
        app.close()
    assert list(smtp.received().values()) == [1, 1], smtp.received()
    assert len(mails(smtp, first_task)) == 2
    assert mails(smtp, second_task) == []
    assert set(statuses(app_database.db, first_task)) == {Status.DELIVERED}
    assert worker.terminate() == 0, worker.log()
