"""The ``reminders`` command: migrate, scan, relay, run, demo, the outbox and the rules by hand."""

from __future__ import annotations

import typer
from sqlalchemy.exc import DBAPIError, OperationalError

from worker.cli import health, outbox, prefs, rules, serve, service, status
from worker.cli.common import fail, first_line
from worker.errors import ConfigError, ReminderError, UsageError
from worker.logs import configure_logging

app = typer.Typer(
    help="Due-date reminders: scan tasks, relay the outbox, operate it by hand.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# The order of registration is the order `reminders --help` lists the commands in.
service.register(app)
status.register(app)
health.register(app)
outbox.register(app)
rules.register(app)
prefs.register(app)
serve.register(app)


def main() -> None:
    """Entry point: run the app, turning known failures into one line and an exit code."""
    configure_logging()
    try:
        app()  # typer reports usage errors itself, with exit code 2
    except (ConfigError, UsageError) as error:
        fail(str(error), 2)
    except ReminderError as error:
        fail(str(error), 1)
    except OperationalError as error:
        fail(f"database unreachable: {first_line(error.orig)}", 1)
    except DBAPIError as error:
        fail(f"database error: {first_line(error.orig)}", 1)
