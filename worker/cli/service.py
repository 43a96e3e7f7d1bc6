"""``reminders config``, ``migrate``, ``scan``, ``relay``, ``run``, ``grant-role``, ``demo``."""

from __future__ import annotations

from typing import Annotated

import typer

from outbox.relay import Attempt
from worker import migrate as migrations
from worker.cli.common import JsonOption, out, print_json, ready_services, settings
from worker.db import make_engine
from worker.logs import configure_logging
from worker.reminders.mapping import load_mapping


def register(app: typer.Typer) -> None:
    """Add the commands that run the service and set it up to the ``reminders`` app."""
    for command in (config, migrate, scan, relay, run):
        app.command()(command)
    app.command("grant-role")(grant_role_command)
    app.command()(demo)


def config(as_json: JsonOption = False) -> None:
    """Print the settings in force, secrets as ***. Reads every REMINDERS_* variable."""
    shown = settings().describe()
    if as_json:
        print_json(shown)
        return
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        out.print(f"{name:<{width}}  {'' if value is None else value}", markup=False)


def migrate(
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL it would run, for a DBA; change nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create or upgrade the worker's schema (idempotent).

    Creates the worker's own tables, and adds to the host's tasks table only the columns the
    worker writes and its index. Its history is in its own version table,
    reminders_alembic_version. Reads REMINDERS_DATABASE_URL and REMINDERS_SCHEMA_FILE.

    Exit 0 when done, 1 when the database is unreachable, 2 when the mapping does not fit.
    """
    config = settings()
    mapping = load_mapping(config.schema_file)
    engine = make_engine(config.database_url)
    if sql:
        text = migrations.offline_sql(engine, mapping)
        if as_json:
            print_json({"sql": text})
        else:
            out.print(text.rstrip() or "-- nothing to do: the schema is up to date", markup=False)
        return
    migration = migrations.run(engine, mapping)
    before, after = migration.before, migration.after
    if as_json:
        print_json({"before": before, "after": after, "host_statements": migration.host})
        return
    if before == after:
        out.print(f"schema already at revision {after}")
    else:
        out.print(f"schema upgraded from {before or 'empty'} to revision {after}")
    if migration.host:
        out.print(f"{len(migration.host)} statement(s) on the host's tables:", markup=False)
        for statement in migration.host:
            out.print(f"  {statement};", markup=False)


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
        print_json(document)
        return
    out.print(
        f"queued {result.queued} reminder(s); {result.marked} task(s) marked, "
        f"{result.superseded} superseded reminder(s) cancelled"
    )


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
        print_json(document)
        return
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(report.counts.items()))
    out.print(f"relay done: {summary or 'nothing was due'}")


def run(
    threads: Annotated[int, typer.Option(min=1, max=64, help="Worker threads.")] = 2,
) -> None:
    """Run scheduler and workers in one process until SIGTERM or Ctrl-C.

    Reads every REMINDERS_* variable; REMINDERS_BROKER_URL empty means an in-process broker.
    """
    ready_services()
    from worker import actors
    from worker.embedded import run_embedded

    if actors.SETTINGS.metrics_port is not None:
        from worker.metrics import start_service_metrics

        start_service_metrics(actors.SETTINGS.channel)

    run_embedded(
        actors.broker,
        [actors.scan_due_tasks, actors.relay_outbox],
        actors.SETTINGS.scan_cron,
        actors.services().clock,
        actors.STOP,
        worker_threads=threads,
        metrics_port=actors.SETTINGS.metrics_port,
        metrics_host=actors.SETTINGS.metrics_host,
    )


def grant_role_command(
    role: Annotated[str, typer.Argument(help="An existing PostgreSQL role the workers log in as.")],
    as_json: JsonOption = False,
) -> None:
    """Grant a role exactly what the workers need, and nothing more (PostgreSQL).

    Run it as the schema owner after `reminders migrate`. Reads REMINDERS_DATABASE_URL and
    REMINDERS_SCHEMA_FILE (the mapped tables are the ones granted).
    """
    from worker.grants import grant_role

    config = settings()
    mapping = load_mapping(config.schema_file)
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        statements = grant_role(connection, role, mapping)
    if as_json:
        print_json({"role": role, "statements": statements})
        return
    for statement in statements:
        out.print(statement + ";")


def demo(
    database: Annotated[str, typer.Option(help="SQLite file to create afresh.")] = "demo.db",
) -> None:
    """Seed a SQLite database with sample users and tasks and run one full cycle."""
    import logging

    from worker.demo import run_demo

    configure_logging(logging.WARNING)  # the demo prints its own story
    run_demo(database, out)
