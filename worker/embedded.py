"""``reminders run``: scheduler and worker threads in one process, stopped cleanly."""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from datetime import datetime
from types import FrameType
from typing import Any

import dramatiq
import pendulum
import structlog
from periodiq import CronSpec

from outbox.clock import Clock

log = structlog.get_logger("worker.embedded")

STOP_TIMEOUT_MS = 60_000


def next_tick(cron: CronSpec, after: datetime) -> datetime:
    """The first time strictly after ``after`` (to the minute) that ``cron`` fires, in UTC."""
    return datetime.fromisoformat(cron.next_valid_date(pendulum.instance(after)).isoformat())


def run_schedule(
    cron: CronSpec, actors: Sequence[Any], clock: Clock, stop: threading.Event
) -> None:
    """Send every actor at start (catch-up after downtime), then at each tick until stopped."""
    while not stop.is_set():
        for actor in actors:
            actor.send()
        wait = (next_tick(cron, clock.now()) - clock.now()).total_seconds()
        stop.wait(max(wait, 0.0))


def run_embedded(
    broker: dramatiq.Broker,
    actors: Sequence[Any],
    cron: CronSpec,
    clock: Clock,
    stop: threading.Event,
    *,
    worker_threads: int = 2,
    install_signals: bool = True,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Run a worker and the schedule in this process until SIGTERM, Ctrl-C or ``stop``.

    With ``metrics_port``, the process's metrics are served on ``metrics_host`` at that port.
    """
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
    if install_signals:

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("stopping", signal=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    # Without this event the TimeLimit middleware's watchdog never starts.
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=worker_threads, worker_timeout=200)
    worker.start()
    log.info("running", worker_threads=worker_threads, schedule=str(cron))
    scheduler = threading.Thread(
        target=run_schedule, args=(cron, actors, clock, stop), name="scheduler", daemon=True
    )
    scheduler.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        stop.set()
        scheduler.join()
        # Running relays see `stop`, release the rows they have not attempted and return.
        worker.stop(timeout=STOP_TIMEOUT_MS)
        broker.close()
        log.info("stopped")
