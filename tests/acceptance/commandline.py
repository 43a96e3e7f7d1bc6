"""The `reminders` command line on one database, run from one directory, as an operator runs it.

The acceptance tests that drive the one-shot commands (``scan``, ``relay``, ``outbox``) ask it
for the environment, the host's rows and the outbox, instead of importing a helper for each.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.acceptance.harness import (
    SmtpReceiver,
    WebhookReceiver,
    database_copy,
    run_reminders,
    service_env,
    smtp_env,
    webhook_env,
)
from tests.acceptance.host import HostDatabase
from tests.conftest import POSTGRES_URL


@dataclass(frozen=True)
class CommandLine(HostDatabase):
    """A database, and the `reminders` commands run on it from ``cwd``."""

    database_url: str
    cwd: Path

    def env(
        self, receiver: SmtpReceiver | WebhookReceiver | None = None, **variables: str
    ) -> dict[str, str]:
        """The commands' environment: this database (through its mapping), fast timings,
        ``receiver`` as the channel (none: the variables say), plus ``variables``."""
        if isinstance(receiver, SmtpReceiver):
            variables = {**smtp_env(receiver), **variables}
        elif isinstance(receiver, WebhookReceiver):
            variables = {**webhook_env(receiver), **variables}
        return service_env(self.database_url, **{**self.schema_env(), **variables})

    def run(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``reminders ARGS`` to its end and return what it did."""
        return run_reminders(env, *args, cwd=self.cwd)

    def ok(self, env: dict[str, str], *args: str) -> str:
        """Run ``reminders ARGS``; fail with its output unless it exits 0; return its stdout."""
        done = self.run(env, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@contextlib.contextmanager
def fresh_command_line(template: str, cwd: Path) -> Iterator[CommandLine]:
    """The command line on a fresh copy of ``template`` (for module-scoped fixtures)."""
    with database_copy(POSTGRES_URL, template) as (url, engine):
        yield CommandLine(engine, url, cwd)
