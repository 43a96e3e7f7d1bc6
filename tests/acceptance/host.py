"""The host application's side of an acceptance test: its tables, written as it would."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from tests.acceptance.harness import Row, add_tasks, add_users, outbox


@dataclass(frozen=True)
class HostDatabase:
    """A test's database: users and tasks written as the host would, the outbox read back."""

    db: Engine

    def add_users(self, users: Iterable[tuple[int, str, str, bool]]) -> None:
        """Insert users ``(id, email, timezone, notifications_enabled)`` as the host would."""
        add_users(self.db, users)

    def add_tasks(
        self, tasks: Iterable[tuple[int, int, str, datetime | None, datetime | None]]
    ) -> None:
        """Insert tasks ``(id, owner, title, due, completed_at)`` as the host would."""
        add_tasks(self.db, tasks)

    def outbox(self) -> dict[str, Row]:
        """Every outbox row by key."""
        return outbox(self.db)
