"""``reminders status``: the outbox's rows, the last scan, and the clocks, at a glance."""

from __future__ import annotations

from datetime import timedelta

import typer
from rich.table import Table
from rich.text import Text

from outbox import admin
from worker.bootstrap import needs_address
from worker.cli import common
from worker.cli.common import JsonOption
from worker.reminders.heartbeat import read_heartbeat
from worker.reminders.unremindable import count_unremindable


def register(app: typer.Typer) -> None:
    """Add ``status`` to the ``reminders`` app."""
    app.command()(status)


def status(as_json: JsonOption = False) -> None:
    """Rows per status, age of the oldest pending or failed row, time of the last scan (and
    of the last failed one, while scans fail), tasks that cannot be reminded, and how far this
    host's clock and the last scanning host's are from the database's.

    Reads REMINDERS_DATABASE_URL and REMINDERS_LOOKAHEAD.

    Cannot be reminded: due within the lookahead, not reminded, its owner row gone or address empty.

    Exit 0 when done, 1 when the database is unreachable or not migrated.
    """
    services = common.ready_services()
    now = services.clock.now()
    with services.session_factory() as session:
        counts = admin.count_by_status(session)
        oldest = admin.oldest_waiting(session, now)
        beat = read_heartbeat(session)
        stuck = count_unremindable(
            session,
            now,
            services.settings.lookahead,
            host=services.host,
            needs_address=needs_address(services.settings),
        )
    scanner_ms = None if beat is None else beat.clock_offset_ms
    clocks = common.Clocks(services.clock_offset(), scanner_ms, services.settings.max_clock_offset)
    if as_json:
        last = (
            None
            if beat is None
            else {
                "at": common.iso(beat.scanned_at),
                "queued": beat.queued,
                "marked": beat.marked,
                "duration_ms": beat.duration_ms,
            }
        )
        failed = None if beat is None or beat.failed_at is None else beat.failed_at
        common.print_json(
            {
                "now": common.iso(now),
                "counts": counts,
                "total": sum(counts.values()),
                "oldest_waiting_seconds": common.seconds(oldest),
                "last_scan": last,
                "unremindable": {
                    "total": stuck.total,
                    "missing_owner": stuck.missing_owner,
                    "no_address": stuck.no_address,
                    "lookahead_seconds": services.settings.lookahead.total_seconds(),
                },
                "last_scan_failed": None if beat is None else beat.failing,
                "last_failed_scan": (
                    None
                    if failed is None or beat is None
                    else {"at": common.iso(failed), "reason": beat.failure}
                ),
                **clocks.fields(),
            }
        )
        return
    table = Table("status", "rows", title="Outbox")
    for name, count in counts.items():
        table.add_row(name, str(count))
    waited = "none waiting" if oldest is None else f"{common.human(oldest)} old"
    lines: list[str | Text] = [f"oldest pending or failed row: {waited}"]
    if beat is None:
        lines.append("last scan: never")
    else:
        lines.append(
            f"last scan: {common.when(beat.scanned_at)} "
            f"({common.human(max(now - beat.scanned_at, timedelta(0)))} ago), "
            f"queued {beat.queued}, marked {beat.marked}"
        )
        if beat.failing and beat.failed_at is not None:
            lines.append(
                Text(f"last scan FAILED: {common.when(beat.failed_at)}: ").append(
                    common.plain(beat.failure or "no reason recorded")
                )
            )
    within = common.human(services.settings.lookahead)
    lines.append(
        f"tasks due within {within} that cannot be reminded: {stuck.total}"
        + (
            f" (owner row missing: {stuck.missing_owner}, no address: {stuck.no_address})"
            if stuck.total
            else ""
        )
    )
    common.out.print(table, *lines, clocks.line(), sep="\n")
