"""``reminders outbox list``, ``show``, ``replay`` and ``purge``: the outbox by hand.

Every command reads the database from REMINDERS_DATABASE_URL; ``--json`` prints exactly one
JSON document on stdout (datetimes ISO 8601 in UTC, durations in seconds). Errors are one
line on stderr: exit 1 when the command failed, 2 for bad usage.
"""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from outbox import admin
from outbox.masking import mask_emails_in
from outbox.table import OutboxRow, Status
from worker.cli import common
from worker.cli.common import JsonOption
from worker.errors import ReminderError, UsageError

StatusFilter = Annotated[
    str | None, typer.Option(help=f"Only rows in this status: {', '.join(Status)}.")
]
ReplayStatus = Annotated[str | None, typer.Option(help="dead or failed: replay every such row.")]
MAX_LIMIT = 10_000
#: `list` counts the rows it did not show up to this many, so a huge outbox stays cheap.
COUNT_CAP = 1_000_000
outbox_app = typer.Typer(
    help="Inspect and repair the outbox. Reads REMINDERS_DATABASE_URL.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the ``outbox`` group to the ``reminders`` app."""
    app.add_typer(outbox_app, name="outbox")


@outbox_app.command("list")
def list_rows(
    status: StatusFilter = None,
    task: Annotated[str | None, typer.Option(help="Only rows about this task id.")] = None,
    older_than: Annotated[
        str | None,
        typer.Option(help="Only rows created this long ago or more, with a unit (90m, 24h, 7d)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List outbox rows, newest first.

    When --limit cuts the list short, a last line (in --json: truncated and total) says how
    many rows matched.

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when done (also when no row matches), 1 when the database fails, 2 for bad usage.
    """
    wanted = _status(status, tuple(Status))
    subject = None if task is None else _row_id("--task", task)
    age = None
    if older_than is not None:
        age = common.duration("--older-than", older_than, unit_required=True)
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit: must be between 1 and {MAX_LIMIT}")
    services = common.ready_services()
    now = services.clock.now()
    with services.session_factory() as session:
        rows = admin.list_rows(
            session, status=wanted, subject_id=subject, older_than=age, now=now, limit=limit
        )
        total = len(rows)
        if total == limit:  # perhaps cut short: count what was left out
            total = admin.count_rows(
                session, status=wanted, subject_id=subject, older_than=age, now=now, cap=COUNT_CAP
            )
    truncated = total > len(rows)
    if as_json:
        common.print_json(
            {
                "rows": [_document(row) for row in rows],
                "truncated": truncated,
                "total": total,
                "total_exact": total < COUNT_CAP,
            }
        )
        return
    shown = f"{len(rows)} of {_count(total)}" if truncated else str(len(rows))
    title = f"{shown} outbox row(s), newest first, times in UTC"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for name in ("id", "status", "task", "tries", "next/lease", "created"):
        table.add_column(name, no_wrap=True)
    table.add_column("last error", overflow="fold")
    for row in rows:
        error = common.plain(mask_emails_in(row.last_error or "")[:80])
        table.add_row(
            str(row.id),
            row.status,
            str(row.subject_id),
            str(row.attempts),
            common.when(row.available_at, "%m-%d %H:%M"),
            common.when(row.created_at, "%m-%d %H:%M"),
            error,
        )
    common.out.print(table)
    if truncated:
        more = "raise --limit" if limit < MAX_LIMIT else "narrow it with --status, --task"
        common.out.print(f"showing {len(rows):,} of {_count(total)} rows; {more} to see more")


@outbox_app.command("show")
def show(
    row_id: Annotated[str, typer.Argument(metavar="ID", help="The row's id.")],
    as_json: JsonOption = False,
) -> None:
    """Every column of one row, lease owner and replay record included.

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when shown, 1 when no row has this id or the database fails, 2 for bad usage.
    """
    wanted = _row_id("ID", row_id)
    with common.ready_services().session_factory() as session:
        row = admin.get_row(session, wanted)
    if row is None:
        raise ReminderError(f"no outbox row has id {wanted}")
    document = _document(row)
    if as_json:
        common.print_json(document)
        return
    table = Table("column", "value", title=f"Outbox row {row.id}")
    due = "available_at (lease expiry)" if row.status == Status.CLAIMED else "available_at"
    for name, value in document.items():
        label = due if name == "available_at" else name
        table.add_row(label, common.plain("-" if value is None else str(value)))
    common.out.print(table)


@outbox_app.command("replay")
def replay(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID", help="Rows to replay.")] = None,
    status: ReplayStatus = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change.")] = False,
    by: Annotated[
        str | None,
        typer.Option(help="Who replays, recorded on each row (default: your OS user name)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Put rows back to pending: attempts 0, due now, same key; records who and when.

    Name rows by ID (dead, failed, delivered, cancelled or expired) or by --status dead|failed.

    A claimed row is in flight and is never replayed; last_error stays until the next attempt.

    The row keeps its expiry: one past it (expired, or its task now due) is left alone, since
    it could only expire again unsent.

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when every row named is replayed or already pending (or --status matches none).

    Exit 1 when an ID is unknown, claimed or past its expiry (the other rows are replayed all
    the same); with --status, rows past their expiry are listed as left alone, exit 0.

    Exit 2 for bad usage: IDs and --status together, neither, or another status.
    """
    row_ids = [_row_id("ID", value) for value in ids or []]
    wanted = _status(status, admin.REPLAYABLE_BY_STATUS)
    if bool(row_ids) == (wanted is not None):
        raise UsageError("name the rows to replay: give IDs or --status dead|failed, not both")
    who = by if by is not None else _os_user()
    if not who.strip():
        raise UsageError("--by: must not be empty")
    services = common.ready_services()
    with services.session_factory.begin() as session:
        changes = admin.replay(
            session, row_ids or None, wanted, by=who, now=services.clock.now(), dry_run=dry_run
        )
    failed = [
        c
        for c in changes
        if not c.replayed
        and c.status_before != Status.PENDING
        and not (c.past_expiry and wanted is not None)
    ]
    if as_json:
        common.print_json(
            {
                "dry_run": dry_run,
                "by": who,
                "replayed": [c.id for c in changes if c.replayed],
                "changes": [c.__dict__ for c in changes],
            }
        )
    elif not changes:
        common.out.print(f"nothing to replay: no {wanted} row")
    else:
        verb = "would replay" if dry_run else "replayed"
        table = Table("id", "key", "was", "result", title=common.plain(f"Replay by {who}"))
        for c in changes:
            result = verb if c.replayed else f"left alone: {c.reason}"
            table.add_row(
                str(c.id), common.plain(c.key or "-"), c.status_before or "-", common.plain(result)
            )
        common.out.print(table)
    if failed:
        shown = "; ".join(f"{c.id}: {c.reason}" for c in failed[:5])
        common.fail(
            f"{len(failed)} row(s) not replayed ({shown}{'; ...' if len(failed) > 5 else ''})"
        )


@outbox_app.command("purge")
def purge(
    older_than: Annotated[
        str | None,
        typer.Option(
            help="Required: delete delivered and cancelled rows last updated longer ago than "
            "this, a number with its unit: ms, s, m, h or d (24h, 30d)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows deleted per transaction.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Delete delivered and cancelled rows last updated longer ago than --older-than.

    Pending, claimed, failed, dead and expired rows are never deleted.

    Each batch is its own short transaction; progress goes to stderr when it is a terminal.

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when done (also when nothing was old enough), 1 when it failed, 2 for bad usage.
    """
    if older_than is None:
        raise UsageError("--older-than DURATION is required (for example 30d)")
    age = common.duration("--older-than", older_than, unit_required=True)
    if not 1 <= batch_size <= 100_000:
        raise UsageError("--batch-size: must be between 1 and 100000")
    services = common.ready_services()
    now = services.clock.now()
    err = Console(stderr=True, highlight=False)
    if err.is_terminal:
        with err.status("purging...") as spinner:
            deleted = admin.purge(
                services.session_factory,
                age,
                now,
                batch_size,
                lambda n: spinner.update(f"purged {n} row(s)..."),
            )
    else:
        deleted = admin.purge(services.session_factory, age, now, batch_size)
    cutoff = now - age
    if as_json:
        common.print_json(
            {"deleted": deleted, "cutoff": common.iso(cutoff), "batch_size": batch_size}
        )
        return
    common.out.print(
        f"purged {deleted} delivered or cancelled row(s) last updated before {common.when(cutoff)}"
    )


def _count(total: int) -> str:
    """A row count as shown: ``1,234``, or ``1,000,000+`` at the counting cap."""
    return f"{total:,}" if total < COUNT_CAP else f"{COUNT_CAP:,}+"


def _status(value: str | None, allowed: tuple[Status, ...]) -> Status | None:
    if value is None:
        return None
    for status in allowed:
        if value.strip().lower() == status.value:
            return status
    raise UsageError(f"--status: unknown status {value!r} (choose {', '.join(allowed)})")


def _row_id(name: str, value: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise UsageError(f"{name}: {value!r} is not a row id (a positive integer)")
    return int(value)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry, as in some containers
        return "unknown"


def _document(row: OutboxRow) -> dict[str, Any]:
    """Every column of a row, datetimes as ISO 8601 in UTC, any e-mail address masked."""
    values = {column.key: getattr(row, column.key) for column in OutboxRow.__table__.columns}
    return {
        k: common.iso(v)
        if isinstance(v, datetime)
        else mask_emails_in(v)
        if isinstance(v, str)
        else v
        for k, v in values.items()
    }
