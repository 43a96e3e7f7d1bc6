"""Prometheus metrics of the reminder service.

In ``dramatiq`` worker processes the metrics are written to Dramatiq's multiprocess
directory and served, with Dramatiq's own, by its exposition server (on
``REMINDERS_METRICS_HOST`` at ``REMINDERS_METRICS_PORT``). ``prometheus_client`` decides on
multiprocess mode when it is first imported, which must happen after the worker process
booted: hence the late imports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dramatiq.middleware import prometheus as dramatiq_prometheus
from dramatiq.middleware.prometheus import Prometheus

from outbox.relay import Attempt, AttemptOutcome
from worker.reminders.scan import ScanResult
from worker.reminders.unremindable import Unremindable

LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class ServiceMetrics:
    """The counters, histograms and gauges the service exports."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = registry if registry is not None else REGISTRY
        self.queued = Counter(
            "reminders_queued", "Reminders written to the outbox by scans.", registry=reg
        )
        self.marked = Counter(
            "reminders_scan_tasks_marked", "Tasks the scans marked as reminded.", registry=reg
        )
        self.scan_duration = Histogram(
            "reminders_scan_duration_seconds", "Duration of one whole scan.", registry=reg
        )
        self.deliveries = Counter(
            "reminders_deliveries",
            "Delivery attempts by channel and outcome.",
            ["channel", "outcome"],
            registry=reg,
        )
        self.expired = Counter(
            "reminders_expired",
            "Outbox rows that expired unsent: their task fell due (or their expiry passed) "
            "before a send could start.",
            registry=reg,
        )
        self.latency = Histogram(
            "reminders_delivery_latency_seconds",
            "From the moment a reminder became due to be sent to the receiver's acceptance.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.outbox_rows = Gauge(
            "reminders_outbox_rows",
            "Outbox rows by status, as of the last scan.",
            ["status"],
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.oldest_waiting = Gauge(
            "reminders_outbox_oldest_waiting_age_seconds",
            "Age of the oldest pending or failed row, as of the last scan (0 when none).",
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.unremindable = Gauge(
            "reminders_unremindable_tasks",
            "Tasks due within the lookahead that cannot be reminded, by reason (missing_owner, "
            "no_address), as of the last scan.",
            ["reason"],
            multiprocess_mode="mostrecent",
            registry=reg,
        )
        self.failures = Counter(
            "reminders_failures",
            "Scans and relay runs that failed, by action and kind (unreachable, "
            "not_migrated, error).",
            ["action", "kind"],
            registry=reg,
        )
        self.clock_offset = Gauge(
            "reminders_clock_offset_seconds",
            "How far the database server's clock is ahead of this host's (negative: behind), "
            "as last measured; time decisions are corrected for it.",
            multiprocess_mode="mostrecent",
            registry=reg,
        )

    def publish_channel(self, channel: str) -> None:
        """Export every outcome of ``channel``'s deliveries at zero, before any attempt.

        A series that appears only with its first increment makes ``rate()`` and
        ``increase()`` miss that increment, and an alert on it silent until then.
        """
        for outcome in AttemptOutcome:
            self.deliveries.labels(channel=channel, outcome=outcome)

    def observe_scan(self, result: ScanResult) -> None:
        """Count one scan."""
        self.queued.inc(result.queued)
        self.marked.inc(result.marked)
        self.scan_duration.observe(result.duration.total_seconds())

    def observe_attempt(
        self, channel: str, attempt: Attempt, now: datetime, lookahead: timedelta
    ) -> None:
        """Count one delivery attempt (an expired row also as expired); for an accepted one,
        how long after it became due.

        A reminder becomes due at its moment (its due moment less its offset; a row queued
        before rules: less ``lookahead``), or when the row was created if that is later (a
        task created or moved after the moment), or when the re-check let it go if it held it
        back (quiet hours: `Attempt.ready_at`).
        """
        self.deliveries.labels(channel=channel, outcome=attempt.outcome).inc()
        if attempt.outcome == AttemptOutcome.EXPIRED:
            self.expired.inc()
        if attempt.outcome != AttemptOutcome.DELIVERED or attempt.subject_at is None:
            return
        ahead = (
            lookahead
            if attempt.offset_seconds is None
            else timedelta(seconds=attempt.offset_seconds)
        )
        became_due = attempt.subject_at - ahead
        if attempt.created_at is not None:
            became_due = max(became_due, attempt.created_at)
        if attempt.ready_at is not None:  # held back by the domain (quiet hours) until then
            became_due = max(became_due, attempt.ready_at)
        self.latency.observe(max((now - became_due).total_seconds(), 0.0))

    def observe_unremindable(self, found: Unremindable) -> None:
        """Publish the count of tasks that cannot be reminded, by reason."""
        self.unremindable.labels(reason="missing_owner").set(found.missing_owner)
        self.unremindable.labels(reason="no_address").set(found.no_address)

    def observe_failure(self, action: str, kind: str) -> None:
        """Count one failed scan or relay run."""
        self.failures.labels(action=action, kind=kind).inc()

    def observe_clock_offset(self, offset: timedelta) -> None:
        """Publish this process's last measured offset to the database server's clock."""
        self.clock_offset.set(offset.total_seconds())

    def observe_outbox(self, counts: dict[str, int], oldest: timedelta | None) -> None:
        """Publish the outbox's rows by status and the age of its oldest waiting row."""
        for status, rows in counts.items():
            self.outbox_rows.labels(status=status).set(rows)
        self.oldest_waiting.set(0 if oldest is None else oldest.total_seconds())


_created: list[ServiceMetrics] = []
_creating = threading.Lock()


def service_metrics() -> ServiceMetrics:
    """This process's metrics, created once on first use (after the worker process booted).

    Worker threads may ask at the same moment; registering the metrics twice would fail.
    """
    with _creating:
        if not _created:
            _created.append(ServiceMetrics())
        return _created[0]


def start_service_metrics(channel: str) -> ServiceMetrics:
    """Create this process's metrics now, so that a scrape finds them before any message.

    The counters and histograms start at zero, and the deliveries of ``channel`` at zero
    for every outcome. A gauge has no reading before the first scan or clock measurement
    sets it: a ``dramatiq`` worker exports it from then on (``reminders run`` shows 0 until
    then, except for the rows by status, which only a scan creates).
    """
    metrics = service_metrics()
    metrics.publish_channel(channel)
    return metrics


def metrics_directory() -> str:
    """Where this ``dramatiq`` command's processes keep their metrics.

    Worker and exposition processes are children of the same command, so they agree on it;
    two commands on one host (or one run after another) never add up each other's counters.
    """
    return os.path.join(tempfile.gettempdir(), f"reminders-metrics-{os.getppid()}")


class ExposedPrometheus(Prometheus):
    """Dramatiq's Prometheus middleware, served on ``REMINDERS_METRICS_HOST``:``_PORT``.

    Dramatiq's own exposition process reads its address and directory from variables of its
    own when the ``dramatiq`` command starts, before our settings are read, and listens on
    every interface by default; ours reads the settings.
    """

    def __init__(self, channel: str) -> None:
        super().__init__()
        self.channel = channel

    @property
    def forks(self) -> list[Any]:
        """The exposition server, one process per ``dramatiq`` command."""
        return [serve_exposition]

    def after_process_boot(self, broker: Any) -> None:
        """Point Dramatiq's metrics and ours at this command's directory, then create them."""
        directory = metrics_directory()
        os.makedirs(directory, exist_ok=True)
        dramatiq_prometheus.DB_PATH = directory
        # dramatiq's Prometheus middleware has no annotations.
        super().after_process_boot(broker)  # type: ignore[no-untyped-call]
        start_service_metrics(self.channel)


def serve_exposition() -> int:
    """Serve every worker process's metrics (Dramatiq's and ours) until stopped."""
    from worker.settings import load_settings

    _remove_directories_of_stopped_commands()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_directory()
    os.makedirs(metrics_directory(), exist_ok=True)
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    # prometheus_client leaves this constructor unannotated.
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    settings = load_settings()
    assert settings.metrics_port is not None  # the middleware is only added when it is set
    start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    threading.Event().wait()  # the dramatiq command ends this process with a signal
    return 0


def _remove_directories_of_stopped_commands() -> None:
    for path in Path(tempfile.gettempdir()).glob("reminders-metrics-*"):
        pid = path.name.rpartition("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)
