"""``reminders health``: whether the service works, as a container health check asks.

Each check of a reachable, migrated database is a function in `CHECKS`, given the services
and what `read` found; it names the problem it sees in one line, or returns None.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from periodiq import CronSpec
from sqlalchemy.exc import DBAPIError, OperationalError

from outbox import admin
from outbox.masking import one_line
from outbox.server_clock import Offset
from outbox.table import Status
from worker.bootstrap import Services
from worker.cli import common
from worker.cli.common import JsonOption
from worker.errors import DatabaseNotReady
from worker.reminders.heartbeat import Heartbeat, read_heartbeat
from worker.reminders.host import MappingMismatch
from worker.reminders.mapping import MappingError

#: The last scan is too old once this many ticks of the schedule passed without another...
SCHEDULE_TICKS = 3
#: ``--max-scan-age`` that turns the scan-age check off.
SCAN_AGE_OFF = "off"
#: ... and this long after the last of them, the time a tick has to be processed before a
#: worker drops it (`worker.broker.SKIP_DELAY_SECONDS`).
TICK_GRACE = timedelta(seconds=30)


def register(app: typer.Typer) -> None:
    """Add ``health`` to the ``reminders`` app."""
    app.command()(health)


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
            help="Unhealthy when the last scan is older than this (e.g. 5m); "
            "by default, when three ticks of REMINDERS_SCAN_SCHEDULE passed without one; "
            "'off': not checked (a worker's container, whose scans the scheduler starts).",
            show_default=False,
        ),
    ] = None,
    allow_dead: Annotated[
        bool, typer.Option("--allow-dead", help="Dead rows do not make the service unhealthy.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Exit 0 when the database is migrated, the last scan worked and is recent, no row is
    dead, nothing waits too long and the broker answers.

    Reads REMINDERS_DATABASE_URL, REMINDERS_SCAN_SCHEDULE and REMINDERS_BROKER_URL (if set).

    A scan is too old once three ticks of the schedule passed without another (--max-scan-age).

    A database never scanned is unhealthy: give a health check a start period of a tick or two.

    The broker check is a redis PING, or an AMQP connection opened and closed (5 s timeout).

    Exit 1 with one line on stderr naming every problem; 2 for bad usage or configuration.
    """
    settings = common.settings()
    limits = Limits(
        max_pending_age=common.duration("--max-pending-age", max_pending_age),
        max_scan_age=None
        if max_scan_age is None or max_scan_age.strip().lower() == SCAN_AGE_OFF
        else common.duration("--max-scan-age", max_scan_age),
        check_scan_age=max_scan_age is None or max_scan_age.strip().lower() != SCAN_AGE_OFF,
        schedule=settings.scan_cron,
        schedule_text=settings.scan_schedule,
        allow_dead=allow_dead,
    )
    broker_url = settings.broker_url
    problems: list[str] = []
    reading: Reading | None = None
    offset: Offset | None = None
    try:
        services = common.ready_services()
        reading = read(services)
        offset = services.clock_offset()
        problems += [problem for check in CHECKS if (problem := check(services, reading, limits))]
    except (DatabaseNotReady, MappingError, MappingMismatch) as error:
        problems.append(str(error))
    except DBAPIError as error:
        what = "unreachable" if isinstance(error, OperationalError) else "error"
        problems.append(f"database {what}: {common.first_line(error.orig)}")
    broker = "not configured (in-process broker)"
    if broker_url:
        broker = _where(broker_url)
        error_line = _ping_broker(broker_url)
        if error_line is not None:
            problems.append(f"broker {broker} unreachable: {error_line}")
    beat = None if reading is None else reading.beat
    clocks = common.Clocks(
        offset, None if beat is None else beat.clock_offset_ms, settings.max_clock_offset
    )
    warnings = clocks.warnings()
    if as_json:
        common.print_json(
            {
                "healthy": not problems,
                "problems": problems,
                "warnings": warnings,
                "broker": broker,
                **_fields(reading, limits),
                **clocks.fields(),
            }
        )
    if problems:
        common.fail("unhealthy: " + "; ".join(problems))
    if not as_json:
        assert reading is not None  # no problem: the database was read
        waited = (
            "nothing waiting"
            if reading.oldest is None
            else f"oldest pending {common.human(reading.oldest)}"
        )
        last = (
            ""
            if beat is None
            else f", last scan {common.human(max(reading.now - beat.scanned_at, timedelta(0)))} ago"
        )
        common.out.print(
            f"healthy: database migrated, broker {broker}, {waited} "
            f"(limit {common.human(limits.max_pending_age)}){last}"
        )
        common.out.print(clocks.line())
        for warning in warnings:
            sys.stderr.write(f"reminders: warning: {warning}\n")


@dataclass(frozen=True)
class Limits:
    """What ``health`` holds the service to."""

    max_pending_age: timedelta
    max_scan_age: timedelta | None  # None: three ticks of the schedule
    schedule: CronSpec
    schedule_text: str
    allow_dead: bool
    check_scan_age: bool = True

    def scan_overdue_at(self, last_scan: datetime) -> datetime:
        """When a scan at ``last_scan`` with none after it becomes too old."""
        if self.max_scan_age is not None:
            return last_scan + self.max_scan_age
        from worker.embedded import next_tick  # imports the scheduler's libraries

        moment = last_scan
        for _ in range(SCHEDULE_TICKS):
            moment = next_tick(self.schedule, moment)
        return moment + TICK_GRACE

    def scan_limit(self) -> str:
        """The scan-age limit in words."""
        if self.max_scan_age is not None:
            return f"limit {common.human(self.max_scan_age)}"
        return f"{SCHEDULE_TICKS} ticks of {self.schedule_text!r} missed"


@dataclass(frozen=True)
class Reading:
    """What ``health`` read from a reachable, migrated database."""

    now: datetime  # on the database server's clock
    oldest: timedelta | None  # the oldest pending or failed row's wait
    dead: int
    beat: Heartbeat | None  # None: no scan has succeeded yet


def read(services: Services) -> Reading:
    """Read what the checks judge, in one session."""
    now = services.clock.now()
    with services.session_factory() as session:
        return Reading(
            now=now,
            oldest=admin.oldest_waiting(session, now),
            dead=admin.count_with_status(session, Status.DEAD),
            beat=read_heartbeat(session),
        )


#: A check of a reachable, migrated database: the problem it finds, in one line, or None.
HealthCheck = Callable[[Services, Reading, Limits], str | None]


def _pending_age(services: Services, reading: Reading, limits: Limits) -> str | None:
    oldest, limit = reading.oldest, limits.max_pending_age
    if oldest is None or oldest < limit:
        return None
    return f"the oldest pending row has waited {common.human(oldest)} (limit {common.human(limit)})"


def _last_scan_failed(services: Services, reading: Reading, limits: Limits) -> str | None:
    beat = reading.beat
    if beat is None or not beat.failing or beat.failed_at is None:
        return None
    ago = common.human(max(reading.now - beat.failed_at, timedelta(0)))
    return f"the last scan failed {ago} ago: {one_line(beat.failure or 'no reason recorded')}"


def _scan_age(services: Services, reading: Reading, limits: Limits) -> str | None:
    if not limits.check_scan_age:
        return None
    beat = reading.beat
    if beat is None:
        return "no scan has completed yet (see the scheduler, and the workers' log for why)"
    if reading.now < limits.scan_overdue_at(beat.scanned_at):
        return None
    ago = common.human(max(reading.now - beat.scanned_at, timedelta(0)))
    return f"the last scan ran {ago} ago ({limits.scan_limit()})"


def _dead_rows(services: Services, reading: Reading, limits: Limits) -> str | None:
    if not reading.dead or limits.allow_dead:
        return None
    return (
        f"{reading.dead} dead row(s) (`reminders outbox list --status dead`; "
        "--allow-dead to accept them)"
    )


#: The checks, in the order their problems are named; each sees the services (its engine,
#: for a check that reads more) and the reading.
CHECKS: list[HealthCheck] = [_pending_age, _last_scan_failed, _scan_age, _dead_rows]


def _fields(reading: Reading | None, limits: Limits) -> dict[str, Any]:
    """The JSON document's fields of what was read and the limits it was held to."""
    beat = None if reading is None else reading.beat
    failed_at = None if beat is None else beat.failed_at
    return {
        "oldest_waiting_seconds": None if reading is None else common.seconds(reading.oldest),
        "max_pending_age_seconds": limits.max_pending_age.total_seconds(),
        "last_scan_at": None if beat is None else common.iso(beat.scanned_at),
        "last_scan_failed": None if beat is None else beat.failing,
        "last_failed_scan_at": None if failed_at is None else common.iso(failed_at),
        "last_scan_failure": None if beat is None else beat.failure,
        "max_scan_age_seconds": common.seconds(limits.max_scan_age),
        "scan_age_checked": limits.check_scan_age,
        "scan_overdue_at": None
        if beat is None or not limits.check_scan_age
        else common.iso(limits.scan_overdue_at(beat.scanned_at)),
        "dead_rows": None if reading is None else reading.dead,
        "allow_dead": limits.allow_dead,
    }


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
