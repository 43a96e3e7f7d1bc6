"""Dramatiq actors: thin shells over `Services.scan` and `Relay.relay_until_idle`.

Importing this module builds the broker from the environment (``dramatiq worker.actors``
and ``periodiq worker.actors`` find it here). Messages carry no data: they are wake-up
calls, and the database says what is due. Dramatiq's own retries are off: an outbox row
counts its attempts itself, and a lost tick is made good by the next one. For the same
reason a database that is unreachable or not migrated fails a message quietly: one log line
(`worker.outages`), no traceback, and no dead message left in the broker for each tick.
"""

from __future__ import annotations

import os
import sys
import threading
from datetime import datetime, timedelta

import dramatiq
import structlog
from sqlalchemy.exc import DBAPIError

from outbox.admin import count_by_status, oldest_waiting
from outbox.masking import one_line
from outbox.relay import Attempt
from outbox.report import RelayReport
from outbox.store import earliest_due
from worker.bootstrap import Services, bootstrap, check_mapping
from worker.bootstrap import needs_address as address_needed
from worker.coalesce import Coalescer, Timing
from worker.errors import ConfigError, DatabaseNotReady
from worker.logs import configure_logging
from worker.metrics import service_metrics
from worker.outages import Failure, FailureKind, FailureLog, OutageGate, reason_of
from worker.queues import QUEUE, SCAN_ACTOR
from worker.reminders.heartbeat import record_failure, record_unremindable
from worker.reminders.render import renderer_for
from worker.reminders.unremindable import count_unremindable, some_unremindable
from worker.seams import NO_SEAMS, Seams
from worker.settings import Settings, load_settings
from worker.wake import WakeUp, WakeUpWithTheWorker

log = structlog.get_logger("worker.actors")

#: A relay run hands over to a fresh message after this long, well inside TIME_LIMIT.
RELAY_BUDGET = timedelta(seconds=45)
TIME_LIMIT_MS = 10 * 60 * 1000
#: How many of the tasks that cannot be reminded the log line names.
UNREMINDABLE_SHOWN = 10
#: The scan requests that come while a scan runs share one more (`worker.coalesce`): it
#: starts once they have been quiet for ``settle``, at most ``longest_wait`` after the first.
SCAN_TIMING = Timing(
    settle=timedelta(milliseconds=250), longest_wait=timedelta(seconds=2), budget=RELAY_BUDGET
)


def _launcher() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv else ""


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as error:
        sys.stderr.write(f"reminders: {error}\n")
        raise SystemExit(2) from None
    if settings.broker_url is None and _launcher() in ("dramatiq", "periodiq"):
        # An in-process broker in a separate process would silently do nothing.
        sys.stderr.write(
            "reminders: REMINDERS_BROKER_URL: required for the dramatiq and periodiq commands "
            "(empty means in-process: use `reminders run`)\n"
        )
        raise SystemExit(2)
    return settings


def _check_mapping_at_start(settings: Settings) -> None:
    """Stop a ``dramatiq`` or ``periodiq`` process whose message templates fail or whose
    schema mapping does not fit the database (exit 2, one line); a database not reachable or
    not migrated yet is only logged: the actors keep saying so until it is."""
    try:
        renderer_for(settings)
        check_mapping(settings)
    except ConfigError as error:  # TemplateProblem, MappingError, MappingMismatch
        sys.stderr.write(f"reminders: {error}\n")
        raise SystemExit(2) from None
    except (DatabaseNotReady, DBAPIError) as error:
        reason = str(error.orig) if isinstance(error, DBAPIError) else str(error)
        log.warning("database_not_ready", reason=one_line(reason)[:300])


SETTINGS = _settings()
STOP = threading.Event()
if not os.environ.get("REMINDERS_NO_LOG_SETUP"):
    configure_logging()
if _launcher() in ("dramatiq", "periodiq"):
    _check_mapping_at_start(SETTINGS)

from worker.broker import build_broker  # noqa: E402  (after the settings check above)


class _ProcessClock:
    """This process's server-aligned clock, built with its services on first use."""

    def now(self) -> datetime:
        """The time on the database server's clock."""
        return services().clock.now()


broker = build_broker(SETTINGS, STOP, clock=_ProcessClock())
dramatiq.set_broker(broker)


FAILURES = FailureLog(log)
OUTAGE = OutageGate()
SCANS = Coalescer(SCAN_TIMING, STOP)

_built: list[Services] = []
_building = threading.Lock()
_seams: list[Seams] = [NO_SEAMS]


def configure_services(seams: Seams) -> None:
    """Have this process's services wired with ``seams`` (a test build's faults).

    Call it before the first actor runs, e.g. from the module ``dramatiq`` is given, which
    imports this one; production never calls it and runs a plain ``bootstrap(SETTINGS)``.
    """
    with _building:
        if _built:
            raise RuntimeError("configure_services: the services are built already")
        _seams[0] = seams


def services() -> Services:
    """This process's services, built on first use (never at import), then kept.

    The threads that find them not built yet build them side by side, not in turn: against a
    database that does not answer, the wake-up's first read and the first messages each wait
    out one connect timeout together. The first build is kept; another's engine is disposed.
    """
    with _building:
        if _built:
            return _built[0]
    built = bootstrap(SETTINGS, seams=_seams[0])
    built.stop = STOP
    with _building:
        if not _built:
            _built.append(built)
            return built
    built.engine.dispose()
    return _built[0]


@dramatiq.actor(
    actor_name=SCAN_ACTOR,
    queue_name=QUEUE,
    periodic=SETTINGS.scan_cron,
    max_retries=0,
    time_limit=TIME_LIMIT_MS,
)
def scan_due_tasks() -> None:
    """Queue reminders for every task due within the lookahead, then wake the relay.

    A request that comes while this process scans is served by the next scan it runs.
    """
    SCANS.request(_scan_once, hand_over=_hand_over_scan)


def _scan_once(requests: int) -> None:
    started: list[datetime] = []

    def failed(failure: Failure) -> None:
        service_metrics().observe_failure("scan", failure.kind)
        # For `reminders health`; writing to a database out of reach would only wait again.
        if started and failure.kind != FailureKind.UNREACHABLE:
            record_failure(services().session_factory, started[0], failure.reason)

    with FAILURES.guard("scan", on_failure=failed, gate=OUTAGE) as admitted:
        if admitted:
            built = services()
            started.append(built.clock.now())
            _scan(built, started[0], requests)


def _hand_over_scan() -> None:
    try:
        scan_due_tasks.send()
    except Exception as error:  # the broker is down: the next tick does the work
        log.warning("scan_hand_over_failed", reason=reason_of(error))


def _scan(built: Services, now: datetime, requests: int) -> None:
    result = built.scan(now)
    log.info(
        "scan",
        requests=requests,
        queued=result.queued,
        marked=result.marked,
        superseded=result.superseded,
        batches=result.batches,
        duration_ms=round(result.duration.total_seconds() * 1000, 1),
    )
    # Counted before the relay is woken: no delivery is ever counted before its scan.
    metrics = service_metrics()
    metrics.observe_scan(result)
    if result.queued:
        relay_outbox.send()
    with built.session_factory() as session:
        metrics.observe_outbox(count_by_status(session), oldest_waiting(session, built.clock.now()))
    _observe_unremindable(built, now)


def _observe_unremindable(built: Services, now: datetime) -> None:
    """Count the tasks in the scan's window that cannot be reminded; log a change once."""
    lookahead = built.settings.lookahead
    with built.session_factory.begin() as session:
        needs_address = address_needed(built.settings)
        found = count_unremindable(
            session, now, lookahead, host=built.host, needs_address=needs_address
        )
        change = record_unremindable(session, found.total)
        shown = change is not None and found.total > 0
        ids = (
            some_unremindable(
                session,
                now,
                lookahead,
                limit=UNREMINDABLE_SHOWN,
                host=built.host,
                needs_address=needs_address,
            )
            if shown
            else []
        )
    service_metrics().observe_unremindable(found)
    if change is None or (change.before is None and not found.total):
        return
    say = log.warning if found.total else log.info
    say(
        "unremindable_tasks",
        tasks=found.total,
        missing_owner=found.missing_owner,
        no_address=found.no_address,
        before=change.before,
        task_ids=ids,
    )


@dramatiq.actor(
    queue_name=QUEUE, periodic=SETTINGS.scan_cron, max_retries=0, time_limit=TIME_LIMIT_MS
)
def relay_outbox() -> None:
    """Deliver due outbox rows; the schedule makes this a sweep even if wake-ups are lost."""
    report = _relay_guarded()
    if report is not None and report.out_of_budget and not STOP.is_set():
        relay_outbox.send()  # the budget ran out with work left: hand over, do not hog
    else:
        WAKE.poke()  # the run may have rescheduled rows: the alarm reads the next moment


def _relay_failed(failure: Failure) -> None:
    service_metrics().observe_failure("relay", failure.kind)


def _relay_guarded(*, woken: bool = False) -> RelayReport | None:
    """One relay run, its database failures logged once per run of them (None then).

    A run of the wake-up (``woken``) that found nothing to claim logs nothing: two
    processes woken for the same moment are expected, one of them finds the rows taken.
    """
    with FAILURES.guard("relay", on_failure=_relay_failed, gate=OUTAGE) as admitted:
        if admitted:
            report = _relay(services())
            if report.claimed or not woken:
                log.info("relay", woken=woken, **dict(report.counts))
            return report
    return None


def _relay(built: Services) -> RelayReport:
    channel = built.settings.channel
    lookahead = built.settings.lookahead

    def observe(attempt: Attempt) -> None:
        service_metrics().observe_attempt(channel, attempt, built.clock.now(), lookahead)

    return built.relay(on_attempt=observe).relay_until_idle(budget=RELAY_BUDGET)


def _next_due() -> datetime | None:
    """When this process's wake-up should relay next (None: no row, or no database now).

    A failure is logged with the relay's (one line per run of them); it is not counted in
    the metrics, which count relay runs, not the alarm's reads.
    """
    with FAILURES.guard("relay", gate=OUTAGE) as admitted:
        if admitted:
            with services().session_factory() as session:
                return earliest_due(session)
    return None


#: This process's wake-up for the next row's moment (`worker.wake`), run by its worker.
WAKE = WakeUp(_next_due, lambda: _relay_guarded(woken=True), _ProcessClock(), STOP)
broker.add_middleware(WakeUpWithTheWorker(WAKE))
