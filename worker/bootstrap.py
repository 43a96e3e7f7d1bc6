"""The one wiring point: settings in, everything a process needs out."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from outbox.channels.apprise import AppriseChannel
from outbox.channels.base import Channel
from outbox.channels.console import ConsoleChannel
from outbox.channels.smtp import SmtpChannel
from outbox.channels.webhook import WebhookChannel
from outbox.clock import Clock, SystemClock, require_utc
from outbox.relay import Attempt, Prepare, Relay
from outbox.retry import RetryPolicy
from outbox.server_clock import SAME_CLOCK, Offset, ServerClock, database_clock
from worker.db import DatabaseTimeouts, make_engine, make_session_factory
from worker.embedded import next_tick
from worker.reminders.due import DueQueries, due_queries
from worker.reminders.host import HostSchema, check_host
from worker.reminders.mapping import load_mapping
from worker.reminders.own_channels import requiring_channel_url
from worker.reminders.recheck import reminder_preparer
from worker.reminders.render import ReminderRenderer, renderer_for
from worker.reminders.scan import ScanResult, scan_due_tasks
from worker.seams import NO_SEAMS, Seams
from worker.settings import Settings

ChannelFactory = Callable[[], Channel]


def channel_factory(settings: Settings, clock: Clock | None = None) -> ChannelFactory:
    """Build the configured channel anew for each relay run (connections are per thread);
    ``clock`` dates the e-mails and timestamps the webhooks."""
    timeout = settings.send_timeout.total_seconds()
    if settings.channel == "smtp":
        password = settings.smtp_password
        return lambda: SmtpChannel(
            settings.smtp_host,
            settings.smtp_port,
            mail_from=settings.mail_from,
            mail_from_name=settings.mail_from_name or None,
            username=settings.smtp_username,
            password=None if password is None else password.get_secret_value(),
            starttls=settings.smtp_starttls,
            ssl=settings.smtp_ssl,
            timeout=timeout,
            clock=clock,
        )
    if settings.channel == "apprise":
        return lambda: AppriseChannel(timeout=timeout)
    if settings.channel == "webhook":
        assert settings.webhook_url is not None  # checked by Settings
        url, secrets = settings.webhook_url, settings.webhook_secrets
        return lambda: WebhookChannel(url, secrets, timeout=timeout, clock=clock)
    return ConsoleChannel


def aligned_clock(
    settings: Settings, engine: Engine, local: Clock | None = None
) -> tuple[Clock, Callable[[], Offset | None]]:
    """The clock of every time decision, the database server's, and this host's offset to it.

    On PostgreSQL this process measures its offset to the server's clock and corrects for it
    (`ServerClock`); ``local`` stands for this host's wall clock. A SQLite database is a file
    on this host: its clock is the local one, and there is nothing to measure.
    """
    if engine.dialect.name != "postgresql":
        return local or SystemClock(), lambda: SAME_CLOCK
    clock = ServerClock(
        database_clock(engine),
        local=local,
        max_offset=settings.max_clock_offset,
        on_measure=_export_offset,
    )
    return clock, lambda: clock.offset


def _export_offset(offset: Offset) -> None:
    from worker.metrics import service_metrics  # created after the worker process booted

    service_metrics().observe_clock_offset(offset.offset)


def _unknown_offset() -> Offset | None:
    return None


def check_mapping(settings: Settings) -> HostSchema:
    """Check the schema mapping against the database once, as a process starts.

    Raises what `bootstrap` raises for the mapping and the database.
    """
    mapping = load_mapping(settings.schema_file)
    engine = make_engine(settings.database_url, timeouts=database_timeouts(settings))
    try:
        with engine.connect() as connection:
            return check_host(connection, mapping)
    finally:
        engine.dispose()


#: How much later than the next tick the scan plans: time for that tick's scan to run.
PLAN_MARGIN = timedelta(seconds=30)


def plan_ahead(settings: Settings, now: datetime) -> timedelta:
    """How far ahead of ``now`` a scan plans reminders: past the tick after next, so that
    every moment is planned (and its wake-up set) one whole tick before it comes, even if
    one scan is late or lost."""
    first = next_tick(settings.scan_cron, now)
    second = next_tick(settings.scan_cron, first)
    return (second - now) + PLAN_MARGIN


def needs_address(settings: Settings) -> bool:
    """Whether the channel sends to the owner's e-mail address (a webhook's document
    carries the owner's id instead)."""
    return settings.channel == "smtp"


def database_timeouts(settings: Settings) -> DatabaseTimeouts:
    """The bounds of every statement and connection of a process."""
    return DatabaseTimeouts(statement=settings.db_statement_timeout.total_seconds())


def worker_id() -> str:
    """Who holds a lease: host, process and thread, for operators reading ``show``."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


@dataclass
class Services:
    """Everything the actors and commands use, built once per process."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    #: The host's tables, as the mapping gives them and the database showed them at start.
    host: HostSchema
    due_queries: DueQueries
    clock: Clock
    make_channel: ChannelFactory
    #: Renders each reminder; its templates were compiled and checked at start.
    renderer: ReminderRenderer
    stop: threading.Event = field(default_factory=threading.Event)
    seams: Seams = NO_SEAMS
    #: How far the database's clock is ahead of this host's, as last measured (None: unknown,
    #: as with a clock a test injects).
    clock_offset: Callable[[], Offset | None] = _unknown_offset

    def scan(self, now: datetime | None = None) -> ScanResult:
        """Queue every reminder due now (or at ``now``)."""
        now = require_utc(now or self.clock.now())
        offset = self.clock_offset()
        return scan_due_tasks(
            self.session_factory,
            self.due_queries,
            now,
            plan_ahead(self.settings, now),
            self.settings.scan_batch,
            connections=self.settings.scan_connections,
            clock_offset=None if offset is None else offset.offset,
        )

    def relay(self, on_attempt: Callable[[Attempt], None] | None = None) -> Relay:
        """A relay with a fresh channel, ready to deliver due rows."""
        settings = self.settings
        return Relay(
            session_factory=self.session_factory,
            channel=self.seams.wrap_channel(self.make_channel()),
            prepare=self.seams.wrap_prepare(self._prepare()),
            clock=self.clock,
            policy=RetryPolicy(
                settings.max_attempts,
                settings.retry_base,
                settings.retry_cap,
                cap_until_expiry=settings.retry_cap_until_expiry,
            ),
            owner=worker_id(),
            lease=settings.lease,
            batch_size=settings.relay_batch,
            window=settings.relay_window,
            send_timeout=settings.send_timeout,
            stop=self.stop,
            on_attempt=on_attempt,
            on_record=self.seams.on_record,
            subject_key="task_id",
        )

    def _prepare(self) -> Prepare:
        """The re-check; on the users' own channels, without a URL a reminder is cancelled."""
        lookahead = self.settings.lookahead
        prepare = reminder_preparer(
            self.renderer,
            self.host,
            clock=self.clock,
            lookahead=lookahead,
            digest_burst=self.settings.digest_burst,
        )
        return requiring_channel_url(prepare) if self.settings.channel == "apprise" else prepare


def bootstrap(
    settings: Settings,
    *,
    clock: Clock | None = None,
    local_clock: Clock | None = None,
    engine: Engine | None = None,
    make_channel: ChannelFactory | None = None,
    renderer: ReminderRenderer | None = None,
    seams: Seams = NO_SEAMS,
) -> Services:
    """Wire the services for ``settings``; tests pass their own clock, engine or channel.

    Checks the schema mapping (``REMINDERS_SCHEMA_FILE``, or the reference schema) against
    the database first (`worker.reminders.host.check_host`).

    ``renderer`` defaults to the one the settings describe (`renderer_for`), checked on a
    sample before anything else. ``seams`` wraps the parts built here (see `worker.seams`);
    production wraps nothing. Without ``clock``, time follows the database server's clock
    (`aligned_clock`), measured against ``local_clock`` (this host's wall clock unless a
    test shifts it).

    Raises:
        TemplateProblem: a message template fails to compile or to render a sample.
        MappingError, MappingMismatch: the mapping is invalid or does not fit the database.
        DatabaseNotReady: the worker's columns or tables are missing: run ``migrate``.
        sqlalchemy.exc.OperationalError: the database is unreachable.
    """
    renderer = renderer or renderer_for(settings)
    mapping = load_mapping(settings.schema_file)
    engine = engine or make_engine(settings.database_url, timeouts=database_timeouts(settings))
    with engine.connect() as connection:
        host = check_host(connection, mapping)
    offset = _unknown_offset
    if clock is None:
        clock, offset = aligned_clock(settings, engine, local_clock)
    return Services(
        settings=settings,
        engine=engine,
        session_factory=make_session_factory(engine),
        host=host,
        due_queries=seams.wrap_due_queries(
            due_queries(
                engine.dialect.name,
                host,
                needs_address=needs_address(settings),
                lookahead=settings.lookahead,
            )
        ),
        clock=clock,
        make_channel=make_channel or channel_factory(settings, clock),
        renderer=renderer,
        seams=seams,
        clock_offset=offset,
    )
