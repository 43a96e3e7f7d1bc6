"""The host application's side of an acceptance test: its tables, written as it would."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from tests.acceptance.harness import Row, add_tasks, add_users, outbox
from tests.support.hosts import REFERENCE_APP, HostApp
from worker.reminders.mapping import SETTING


@dataclass(frozen=True)
class HostDatabase:
    """A test's database: users and tasks written as the host ``app`` would, the outbox read
    back, and the schema mapping the processes read the host's tables through."""

    db: Engine
    app: HostApp = field(default=REFERENCE_APP, kw_only=True)
    #: The mapping's file (None: the reference schema).
    schema_file: str | None = field(default=None, kw_only=True)

    def schema_env(self) -> dict[str, str]:
        """The variable that points the processes at the mapping, if there is one."""
        return {} if self.schema_file is None else {SETTING: self.schema_file}

    def add_users(self, users: Iterable[tuple[int, str, str, bool]]) -> None:
        """Insert users ``(id, email, timezone, notifications_enabled)`` as the host would."""
        add_users(self.db, users, self.app)

    def add_tasks(
        self, tasks: Iterable[tuple[int, int, str, datetime | None, datetime | None]]
    ) -> None:
        """Insert tasks ``(id, owner, title, due, completed_at)`` as the host would."""
        add_tasks(self.db, tasks, self.app)

    def outbox(self) -> dict[str, Row]:
        """Every outbox row by key."""
        return outbox(self.db)
