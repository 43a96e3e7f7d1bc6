"""The `reminders` command line on one database, run from one directory, as an operator runs it.

The acceptance tests that drive the one-shot commands (``scan``, ``relay``, ``outbox``) ask it
for the environment, the host's rows and the outbox, instead of importing a helper for each.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from tests.acceptance.harness import (
    Row,
    SmtpReceiver,
    WebhookReceiver,
    add_tasks,
    add_users,
    database_copy,
    outbox,
    run_reminders,
    service_env,
    smtp_env,
    webhook_env,
)
from tests.conftest import POSTGRES_URL


@dataclass(frozen=True)
class CommandLine:
    """A database, and the `reminders` commands run on it from ``cwd``."""

    db: Engine
    database_url: str
    cwd: Path

    def env(
        self, receiver: SmtpReceiver | WebhookReceiver | None = None, **variables: str
    ) -> dict[str, str]:
        """The commands' environment: this database, fast timings, ``receiver`` as the channel
        (none: the variables say), plus ``variables``."""
        if isinstance(receiver, SmtpReceiver):
            variables = {**smtp_env(receiver), **variables}
        elif isinstance(receiver, WebhookReceiver):
            variables = {**webhook_env(receiver), **variables}
        return service_env(self.database_url, **variables)

    def run(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``reminders ARGS`` to its end and return what it did."""
        return run_reminders(env, *args, cwd=self.cwd)

    def ok(self, env: dict[str, str], *args: str) -> str:
        """Run ``reminders ARGS``; fail with its output unless it exits 0; return its stdout."""
        done = self.run(env, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

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


@contextlib.contextmanager
def fresh_command_line(template: str, cwd: Path) -> Iterator[CommandLine]:
    """The command line on a fresh copy of ``template`` (for module-scoped fixtures)."""
    with database_copy(POSTGRES_URL, template) as (url, engine):
        yield CommandLine(engine, url, cwd)
