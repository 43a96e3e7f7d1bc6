"""``reminders status`` and ``reminders health``: how the outbox and its scan are doing."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError

from outbox import admin
from outbox.server_clock import Offset
from worker.cli import common
from worker.cli.common import JsonOption
from worker.errors import DatabaseNotReady
from worker.reminders.schema import ScanHeartbeat


def register(app: typer.Typer) -> None:
    """Add ``status`` and ``health`` to the ``reminders`` app."""
    app.command()(status)
    app.command()(health)


def status(as_json: JsonOption = False) -> None:
    """Rows per status, age of the oldest pending or failed row, time of the last scan, and
    how far this host's clock and the last scanning host's are from the database's.

    Reads REMINDERS_DATABASE_URL.

    Exit 0 when done, 1 when the database is unreachable or not migrated.
    """
    services = common.ready_services()
    now = services.clock.now()
    with services.session_factory() as session:
        counts = admin.count_by_status(session)
        oldest = admin.oldest_waiting(session, now)
        scan = session.get(ScanHeartbeat, 1)
    scanner_ms = None if scan is None else scan.clock_offset_ms
    clocks = _Clocks(services.clock_offset(), scanner_ms, services.settings.max_clock_offset)
    if as_json:
        last = (
            None
            if scan is None
            else {
                "at": common.iso(scan.scanned_at),
                "queued": scan.queued,
                "marked": scan.marked,
                "duration_ms": scan.duration_ms,
            }
        )
        common.print_json(
            {
                "now": common.iso(now),
                "counts": counts,
                "total": sum(counts.values()),
                "oldest_waiting_seconds": common.seconds(oldest),
                "last_scan": last,
                **clocks.fields(),
            }
        )
        return
    table = Table("status", "rows", title="Outbox")
    for name, count in counts.items():
        table.add_row(name, str(count))
    waited = "none waiting" if oldest is None else f"{common.human(oldest)} old"
    last_scan = (
        "never"
        if scan is None
        else (
            f"{common.when(scan.scanned_at)} "
            f"({common.human(max(now - scan.scanned_at, timedelta(0)))} ago), "
            f"queued {scan.queued}, marked {scan.marked}"
        )
    )
    common.out.print(
        table,
        f"oldest pending or failed row: {waited}",
        f"last scan: {last_scan}",
        clocks.line(),
        sep="\n",
    )


def health(
    max_pending_age: Annotated[
        str,
        typer.Option(
            help="Unhealthy when a pending or failed row has waited this long (90s, 15m, 2h).",
        ),
    ] = "15m",
    max_scan_age: Annotated[
        str | None,
        typer.Option(
            help="Unhealthy when the last scan is older than this (e.g. 5m); unchecked if unset.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Exit 0 when the database is migrated, the broker answers and nothing waits too long.

    Reads REMINDERS_DATABASE_URL and REMINDERS_BROKER_URL (checked only when set).

    The broker check is a redis PING, or an AMQP connection opened and closed (5 s timeout).

    Exit 1 with one line on stderr naming every problem; 2 for bad usage or configuration.
    """
    threshold = common.duration("--max-pending-age", max_pending_age)
    scan_limit = None if max_scan_age is None else common.duration("--max-scan-age", max_scan_age)
    settings = common.settings()
    broker_url = settings.broker_url
    problems: list[str] = []
    oldest: timedelta | None = None
    last_scan: datetime | None = None
    offset: Offset | None = None
    scan_offset_ms: float | None = None
    try:
        services = common.ready_services()
        with services.session_factory() as session:
            oldest = admin.oldest_waiting(session, services.clock.now())
            beat = session.execute(
                select(ScanHeartbeat.scanned_at, ScanHeartbeat.clock_offset_ms)
            ).first()
        if beat is not None:
            last_scan, scan_offset_ms = beat
        offset = services.clock_offset()
    except DatabaseNotReady as error:
        problems.append(str(error))
    except DBAPIError as error:
        what = "unreachable" if isinstance(error, OperationalError) else "error"
        problems.append(f"database {what}: {common.first_line(error.orig)}")
    if oldest is not None and oldest >= threshold:
        problems.append(
            f"the oldest pending row has waited {common.human(oldest)} "
            f"(limit {common.human(threshold)})"
        )
    if scan_limit is not None and not problems:
        now = services.clock.now()
        if last_scan is None or now - last_scan >= scan_limit:
            ago = "never" if last_scan is None else f"{common.human(now - last_scan)} ago"
            problems.append(f"the last scan ran {ago} (limit {common.human(scan_limit)})")
    broker = "not configured (in-process broker)"
    if broker_url:
        broker = _where(broker_url)
        error_line = _ping_broker(broker_url)
        if error_line is not None:
            problems.append(f"broker {broker} unreachable: {error_line}")
    clocks = _Clocks(offset, scan_offset_ms, settings.max_clock_offset)
    warnings = clocks.warnings()
    if as_json:
        common.print_json(
            {
                "healthy": not problems,
                "problems": problems,
                "warnings": warnings,
                "broker": broker,
                "oldest_waiting_seconds": common.seconds(oldest),
                "max_pending_age_seconds": threshold.total_seconds(),
                "last_scan_at": None if last_scan is None else common.iso(last_scan),
                **clocks.fields(),
            }
        )
    if problems:
        common.fail("unhealthy: " + "; ".join(problems))
    if not as_json:
        waited = "nothing waiting" if oldest is None else f"oldest pending {common.human(oldest)}"
        common.out.print(
            f"healthy: database migrated, broker {broker}, {waited} "
            f"(limit {common.human(threshold)})"
        )
        common.out.print(clocks.line())
        for warning in warnings:
            sys.stderr.write(f"reminders: warning: {warning}\n")


@dataclass(frozen=True)
class _Clocks:
    """This process's clock against the database's, and the one the last scan recorded."""

    mine: Offset | None
    scanner_ms: float | None  # the heartbeat's: the database's lead over the scanning host
    limit: timedelta  # REMINDERS_MAX_CLOCK_OFFSET

    @property
    def scanner(self) -> float | None:
        """The last scanning host's offset in seconds."""
        return None if self.scanner_ms is None else self.scanner_ms / 1000

    def fields(self) -> dict[str, float | None]:
        """The offsets in the JSON documents' form (seconds; positive: the database ahead)."""
        mine = self.mine
        return {
            "clock_offset_seconds": None if mine is None else mine.offset.total_seconds(),
            "clock_offset_error_seconds": None if mine is None else mine.error.total_seconds(),
            "last_scan_clock_offset_seconds": self.scanner,
            "max_clock_offset_seconds": self.limit.total_seconds(),
        }

    def warnings(self) -> list[str]:
        """One line per clock further from the database's than the limit."""
        mine = None if self.mine is None else self.mine.offset.total_seconds()
        limit = self.limit.total_seconds()
        return [
            f"{who} clock is {common.skew(seconds)} (more than REMINDERS_MAX_CLOCK_OFFSET, "
            f"{limit:g} s): time is corrected for it, but check the host's NTP"
            for who, seconds in (("this host's", mine), ("the last scanning host's", self.scanner))
            if seconds is not None and abs(seconds) > limit
        ]

    def line(self) -> str:
        """Both clocks in one line of text."""
        if self.mine is None:
            mine = "not measured"
        else:
            error = self.mine.error.total_seconds() * 1000
            mine = f"{common.skew(self.mine.offset.total_seconds())} (± {error:.1f} ms)"
        theirs = "not recorded" if self.scanner is None else common.skew(self.scanner)
        return f"clock: this host's is {mine}; the last scanning host's was {theirs}"


def _where(url: str) -> str:
    """Scheme, host and port of a URL: never its credentials."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or 'localhost'}{port}"


def _ping_broker(url: str) -> str | None:
    """None when the broker answers, else one line saying why not (credentials masked)."""
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            try:
                client.ping()
            finally:
                client.close()
        else:
            # pika ships no type hints (no py.typed marker).
            import pika  # type: ignore[import-untyped]

            logging.getLogger("pika").setLevel(logging.CRITICAL)  # it logs every failed step
            parameters = pika.URLParameters(url)
            parameters.socket_timeout = 5
            parameters.stack_timeout = 10
            parameters.connection_attempts = 1
            pika.BlockingConnection(parameters).close()
    except Exception as error:  # any failure to answer is the answer
        # pika's errors say nothing in str(); the cause is in their first argument's repr.
        text = str(error).strip() or (repr(error.args[0]) if error.args else "")
        line = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
        password = urlsplit(url).password
        return line.replace(password, "***") if password else line
    return None
