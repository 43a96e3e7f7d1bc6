"""``make demo``: a SQLite database with sample users and tasks, one full cycle, the result."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import select, update

from outbox.channels.console import ConsoleChannel
from outbox.clock import SystemClock
from outbox.table import OutboxRow
from worker import migrate
from worker.bootstrap import bootstrap
from worker.db import make_engine
from worker.reminders.schema import Task, User
from worker.settings import load_settings

USERS = [
    (1, "ada@example.com", "Europe/London", True),
    (2, "grace@example.org", "America/New_York", True),
    (3, "linus@example.net", "Asia/Tokyo", True),
    (4, "quiet@example.com", "Europe/Paris", False),
]


def sample_tasks(now: datetime) -> list[tuple[int, int, str, datetime | None, bool, str]]:
    """(id, owner, title, due date, completed, what the service does with it)."""
    hour = timedelta(hours=1)
    return [
        (101, 1, "Send the quarterly report", now + 2 * hour, False, "reminded"),
        (102, 2, "Renew the TLS certificate", now + 20 * hour, False, "reminded"),
        (103, 3, "Book the team offsite", now + 30 * hour, False, "later: beyond 24 h"),
        (104, 1, "Pay the invoice", now + 3 * hour, True, "skipped: completed"),
        (105, 2, "File expenses", now - 5 * hour, False, "skipped: overdue"),
        (106, 3, "Read the RFC", None, False, "skipped: no due date"),
        (107, 4, "Water the plants", now + 4 * hour, False, "skipped: owner opted out"),
        (108, 3, "Call the bank", now + 6 * hour, False, "cancelled: completed after scan"),
    ]


def run_demo(database: str, out: Console) -> None:
    """Seed ``database`` afresh, scan, complete one task, relay, and print what happened."""
    path = Path(database)
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    settings = load_settings(database_url=f"sqlite:///{path}", channel="console", broker_url="")
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine)
    services = bootstrap(settings, engine=engine, make_channel=lambda: ConsoleChannel(out.file))
    now = SystemClock().now().replace(second=0, microsecond=0)
    tasks = sample_tasks(now)
    with services.session_factory.begin() as session:
        session.add_all(
            User(id=i, email=e, timezone=z, notifications_enabled=n) for i, e, z, n in USERS
        )
        session.flush()
        session.add_all(
            Task(id=i, owner_id=o, title=t, due_date=d, completed_at=now if c else None)
            for i, o, t, d, c, _ in tasks
        )

    table = Table(title=f"Seeded {len(USERS)} users and {len(tasks)} tasks in {path}")
    for column in ("task", "owner", "title", "due (UTC)", "expected"):
        table.add_column(column)
    zones = {i: z for i, _, z, _ in USERS}
    for i, o, t, d, c, expected in tasks:
        due = "-" if d is None else f"{d:%a %H:%M}"
        table.add_row(str(i), f"{o} ({zones[o]})", t + (" (done)" if c else ""), due, expected)
    out.print(table)

    result = services.scan()
    out.print(f"\n[bold]1. scan[/]: queued {result.queued} reminder(s) in one transaction")
    with services.session_factory.begin() as session:
        session.execute(update(Task).where(Task.id == 108).values(completed_at=now))
    out.print("[bold]2. host app[/]: task 108 completed before its reminder went out")
    out.print("[bold]3. relay[/]: delivering through the console channel\n")
    report = services.relay().relay_until_idle()
    out.print(f"\nrelay: {dict(sorted(report.counts.items()))}")
    again = services.scan()
    out.print(
        f"[bold]4. scan again[/]: queued {again.queued} — a reminder exists once per task and "
        "due date, however often the scan runs\n"
    )

    status = Table(title="Outbox")
    for column in ("id", "task", "key", "status", "attempts", "note"):
        status.add_column(column, no_wrap=column != "note")
    with services.session_factory() as session:
        for row in session.scalars(select(OutboxRow).order_by(OutboxRow.id)):
            note = row.last_error or ""
            status.add_row(
                str(row.id),
                str(row.subject_id),
                row.idempotency_key,
                row.status,
                str(row.attempts),
                note,
            )
    out.print(status)
    out.print(
        f"\nInspect it: REMINDERS_DATABASE_URL=sqlite:///{path} .venv/bin/reminders status"
        "\n(or `outbox list`, `outbox show ID`; `reminders --help` lists every command)"
    )
    engine.dispose()
