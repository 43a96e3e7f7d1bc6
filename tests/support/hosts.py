"""Host applications for tests: the reference schema, and one that is not ours.

A `HostApp` creates its own tables (as the host's migrations would), gives the mapping the
worker reads them through, and writes users and tasks as the host application would. Tests
of a guarantee take ``host`` and hold on either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, text

from worker.reminders.mapping import REFERENCE, SchemaMapping, load_mapping

#: The tables of a task app whose names are not the reference's: ``accounts`` and
#: ``todo_items``, a ``timestamp without time zone`` deadline (the Rails and Django default)
#: and completion as a status, a column of the same name on both tables, and the host's own
#: Alembic version table.
TODO_APP_DDL = [
    "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
    "INSERT INTO alembic_version VALUES ('4f2a9c1b7d3e')",
    "CREATE TABLE accounts (id BIGINT PRIMARY KEY, email_address TEXT NOT NULL, tz TEXT, "
    "wants_reminders BOOLEAN NOT NULL DEFAULT TRUE, lang TEXT, status TEXT DEFAULT 'active')",
    "CREATE TABLE todo_items (id BIGINT PRIMARY KEY, assignee_id BIGINT REFERENCES accounts, "
    "name TEXT NOT NULL, deadline TIMESTAMP, status TEXT NOT NULL DEFAULT 'open')",
]

TODO_APP_MAPPING = """\
[tasks]
table = "todo_items"
id = "id"
owner = "assignee_id"
title = "name"
due = "deadline"
due_timezone = "{zone}"
done = "status = 'done'"

[users]
table = "accounts"
id = "id"
email = "email_address"
timezone = "tz"
enabled = "wants_reminders"
locale = "lang"
"""


class HostTask(NamedTuple):
    """A task as the host application writes it (`HostApp.add_tasks`)."""

    id: int
    owner: int
    due: datetime | None
    title: str | None = None
    #: Done; where the schema keeps a completion time, True writes the present one.
    completed: bool | datetime = False


@dataclass(frozen=True)
class HostApp:
    """A host application's schema, its mapping, and how it writes its rows."""

    name: str
    #: The zone of the mapped ``timestamp without time zone`` deadline.
    zone: str = "UTC"

    @property
    def mapped(self) -> bool:
        """Whether this host's tables are not the reference schema's."""
        return self.name != "reference"

    @property
    def tasks_table(self) -> str:
        """The host's name for its tasks table."""
        return "todo_items" if self.mapped else "tasks"

    def create_tables(self, engine: Engine) -> None:
        """The host's own tables, as its migrations make them (the reference's: ``migrate``)."""
        if not self.mapped:
            return
        with engine.begin() as connection:
            for statement in TODO_APP_DDL:
                connection.execute(text(statement))

    def schema_file(self, directory: Path) -> str | None:
        """Write the mapping into ``directory``; its path (None for the reference schema)."""
        if not self.mapped:
            return None
        path = directory / f"{self.name}-schema.toml"
        path.write_text(TODO_APP_MAPPING.format(zone=self.zone))
        return str(path)

    def mapping(self, directory: Path) -> SchemaMapping:
        """The mapping the worker reads this host through."""
        return load_mapping(self.schema_file(directory)) if self.mapped else REFERENCE

    def add_user(
        self,
        connection: Connection,
        user_id: int,
        *,
        email: str | None = None,
        timezone: str = "UTC",
        enabled: bool = True,
    ) -> None:
        """Insert a user as the host application would."""
        values = {
            "id": user_id,
            "email": f"user{user_id}@example.com" if email is None else email,
            "zone": timezone,
            "on": enabled,
        }
        if self.mapped:
            statement = (
                "INSERT INTO accounts (id, email_address, tz, wants_reminders) "
                "VALUES (:id, :email, :zone, :on)"
            )
        else:
            statement = (
                "INSERT INTO users (id, email, timezone, notifications_enabled) "
                "VALUES (:id, :email, :zone, :on)"
            )
        connection.execute(text(statement), values)

    def add_task(
        self,
        connection: Connection,
        task_id: int,
        owner_id: int,
        due: datetime | None,
        *,
        title: str | None = None,
        completed: bool | datetime = False,
    ) -> None:
        """Insert a task as the host application would."""
        self.add_tasks(connection, [HostTask(task_id, owner_id, due, title, completed)])

    def add_tasks(self, connection: Connection, tasks: Iterable[HostTask]) -> None:
        """Insert tasks as the host application would, in one statement run for each."""
        rows = [
            {
                "id": task.id,
                "owner": task.owner,
                "title": f"task {task.id}" if task.title is None else task.title,
                "due": self.stored_due(task.due),
                "done": self._completion(task.completed),
            }
            for task in tasks
        ]
        if not rows:
            return
        if self.mapped:
            statement = (
                "INSERT INTO todo_items (id, assignee_id, name, deadline, status) "
                "VALUES (:id, :owner, :title, :due, :done)"
            )
        else:
            statement = (
                "INSERT INTO tasks (id, owner_id, title, due_date, completed_at) "
                "VALUES (:id, :owner, :title, :due, :done)"
            )
        connection.execute(text(statement), rows)

    def _completion(self, completed: bool | datetime) -> object:
        """What the host writes for a task done (``completed``) or not."""
        if self.mapped:
            return "done" if completed is not False else "open"
        if completed is True:
            return datetime.now(UTC)
        return completed or None

    def move(self, connection: Connection, task_id: int, due: datetime | None) -> None:
        """Give the task another due time."""
        column, table = ("deadline", "todo_items") if self.mapped else ("due_date", "tasks")
        connection.execute(
            text(f"UPDATE {table} SET {column} = :due WHERE id = :id"),
            {"due": self.stored_due(due), "id": task_id},
        )

    def complete(self, connection: Connection, task_id: int, done: bool = True) -> None:
        """Mark the task done (or open again)."""
        if self.mapped:
            statement = "UPDATE todo_items SET status = :status WHERE id = :id"
            values: dict[str, object] = {"status": "done" if done else "open", "id": task_id}
        else:
            statement = "UPDATE tasks SET completed_at = :at WHERE id = :id"
            values = {"at": datetime.now(UTC) if done else None, "id": task_id}
        connection.execute(text(statement), values)

    def delete(self, connection: Connection, task_id: int) -> None:
        """Delete the task."""
        connection.execute(text(f"DELETE FROM {self.tasks_table} WHERE id = :id"), {"id": task_id})

    def opt(self, connection: Connection, user_id: int, enabled: bool) -> None:
        """Turn the user's reminders on or off."""
        column, table = (
            ("wants_reminders", "accounts") if self.mapped else ("notifications_enabled", "users")
        )
        connection.execute(
            text(f"UPDATE {table} SET {column} = :on WHERE id = :id"),
            {"on": enabled, "id": user_id},
        )

    def stored_due(self, due: datetime | None) -> datetime | None:
        """``due`` as the host stores it: wall time in its zone where the column has none."""
        if due is None or not self.mapped:
            return due
        return due.astimezone(ZoneInfo(self.zone)).replace(tzinfo=None)

    def ambiguous(self, due: datetime) -> bool:
        """Whether the host cannot store ``due`` unambiguously: its wall time in the host's
        zone occurs twice (the hour repeated when the clocks go back), so that the column
        holds the same value for two instants."""
        if not self.mapped:
            return False
        zone = ZoneInfo(self.zone)
        wall = due.astimezone(zone).replace(tzinfo=None)
        return (
            wall.replace(tzinfo=zone, fold=0).utcoffset()
            != wall.replace(tzinfo=zone, fold=1).utcoffset()
        )


REFERENCE_APP = HostApp("reference")
TODO_APP = HostApp("todo_app")
#: The same app, its deadlines in wall time of a zone with summer time.
TODO_APP_BERLIN = HostApp("todo_app_berlin", zone="Europe/Berlin")
