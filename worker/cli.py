"""The ``reminders`` command: migrate, scan, relay, run, demo, and the outbox by hand."""

from __future__ import annotations

import json
import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from sqlalchemy.exc import DBAPIError, OperationalError

from outbox.relay import Attempt
from worker import migrate as migrations
from worker.bootstrap import Services, bootstrap
from worker.cli_common import JsonOption
from worker.db import make_engine
from worker.errors import ConfigError, DatabaseNotReady, ReminderError, UsageError
from worker.logs import configure_logging
from worker.settings import Settings, load_settings

app = typer.Typer(
    help="Due-date reminders: scan tasks, relay the outbox, operate it by hand.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    sys.stderr.write(f"reminders: {message}\n")
    sys.exit(code)


def settings() -> Settings:
    """The settings, or exit 2 naming the bad variable."""
    try:
        return load_settings()
    except ConfigError as error:
        fail(str(error), 2)


def ready_services() -> Services:
    """Services on a reachable, migrated database, or exit 1 saying which it is not."""
    services = bootstrap(settings())
    current = migrations.current_revision(services.engine)
    if current != migrations.head_revision():
        raise DatabaseNotReady(
            f"the database is at revision {current or 'none'}, this version needs "
            f"{migrations.head_revision()}: run `reminders migrate`"
        )
    return services


@app.command()
def config(as_json: JsonOption = False) -> None:
    """Print the settings in force, secrets as ***. Reads every REMINDERS_* variable."""
    shown = settings().describe()
    if as_json:
        out.print_json(json.dumps(shown))
        return
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        out.print(f"{name:<{width}}  {'' if value is None else value}", markup=False)


@app.command()
def migrate(as_json: JsonOption = False) -> None:
    """Create or upgrade the schema (idempotent). Reads REMINDERS_DATABASE_URL."""
    engine = make_engine(settings().database_url)
    before, after = migrations.upgrade(engine)
    if as_json:
        out.print_json(json.dumps({"before": before, "after": after}))
    elif before == after:
        out.print(f"schema already at revision {after}")
    else:
        out.print(f"schema upgraded from {before or 'empty'} to revision {after}")


@app.command()
def scan(as_json: JsonOption = False) -> None:
    """Run one scan now (the code the periodic actor runs); print how many were queued.

    Reads REMINDERS_DATABASE_URL and REMINDERS_LOOKAHEAD.
    """
    result = ready_services().scan()
    if as_json:
        document = {
            "queued": result.queued,
            "marked": result.marked,
            "superseded": result.superseded,
            "batches": result.batches,
            "duration_ms": round(result.duration.total_seconds() * 1000, 1),
        }
        out.print_json(json.dumps(document))
        return
    out.print(
        f"queued {result.queued} reminder(s); {result.marked} task(s) marked, "
        f"{result.superseded} superseded reminder(s) cancelled"
    )


@app.command()
def relay(as_json: JsonOption = False) -> None:
    """Deliver due outbox rows now until none is left; print what happened to each.

    Reads REMINDERS_DATABASE_URL, REMINDERS_CHANNEL and the channel's variables.
    """
    attempts: list[Attempt] = []

    def show(attempt: Attempt) -> None:
        if as_json:
            attempts.append(attempt)
            return
        detail = f" ({attempt.detail})" if attempt.detail else ""
        to = f" to {attempt.recipient}" if attempt.recipient else ""
        out.print(f"{attempt.outcome:<9} #{attempt.outbox_id} {attempt.key}{to}{detail}")

    report = ready_services().relay(on_attempt=show).relay_until_idle()
    if as_json:
        document = {
            "counts": dict(report.counts),
            "attempts": [
                {
                    "outbox_id": a.outbox_id,
                    "key": a.key,
                    "attempt": a.attempt,
                    "outcome": a.outcome,
                    "detail": a.detail,
                    "recipient": a.recipient,
                }
                for a in attempts
            ],
        }
        out.print_json(json.dumps(document))
        return
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(report.counts.items()))
    out.print(f"relay done: {summary or 'nothing was due'}")


@app.command()
def run(
    threads: Annotated[int, typer.Option(min=1, max=64, help="Worker threads.")] = 2,
) -> None:
    """Run scheduler and workers in one process until SIGTERM or Ctrl-C.

    Reads every REMINDERS_* variable; REMINDERS_BROKER_URL empty means an in-process broker.
    """
    ready_services()
    from worker import actors
    from worker.embedded import run_embedded

    run_embedded(
        actors.broker,
        [actors.scan_due_tasks, actors.relay_outbox],
        actors.SETTINGS.scan_cron,
        actors.services().clock,
        actors.STOP,
        worker_threads=threads,
        metrics_port=actors.SETTINGS.metrics_port,
    )


@app.command("grant-role")
def grant_role_command(
    role: Annotated[str, typer.Argument(help="An existing PostgreSQL role the workers log in as.")],
    as_json: JsonOption = False,
) -> None:
    """Grant a role exactly what the workers need, and nothing more (PostgreSQL).

    Run it as the schema owner after `reminders migrate`. Reads REMINDERS_DATABASE_URL.
    """
    from worker.grants import grant_role

    engine = make_engine(settings().database_url)
    with engine.begin() as connection:
        statements = grant_role(connection, role)
    if as_json:
        out.print_json(json.dumps({"role": role, "statements": statements}))
        return
    for statement in statements:
        out.print(statement + ";")


@app.command()
def demo(
    database: Annotated[str, typer.Option(help="SQLite file to create afresh.")] = "demo.db",
) -> None:
    """Seed a SQLite database with sample users and tasks and run one full cycle."""
    import logging

    from worker.demo import run_demo

    configure_logging(logging.WARNING)  # the demo prints its own story
    run_demo(database, out)


from worker.cli_outbox import register  # noqa: E402  (status, health, outbox ...)

register(app)


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


def first_line(error: BaseException | None) -> str:
    """The first line of an error's message (drivers add details on more lines)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
