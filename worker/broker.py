"""The broker and its middleware, built from settings before any actor is declared.

Dramatiq checks actor options when the decorator runs, so `PeriodiqMiddleware` (here its
subclass `ServerTimedTicks`) must be on the broker before `worker.actors` declares a periodic
actor.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import pendulum
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from outbox.clock import Clock, SystemClock
from worker.message_clock import TOLERATED_SKEW, ServerTimedDelays, ServerTimedTicks
from worker.settings import Settings

REDIS_TIMEOUT_SECONDS = 30
# A tick processed later than this (on the server clock) is dropped; the next tick does its work.
SKIP_DELAY_SECONDS = 30
# Dramatiq's Redis broker takes a worker for dead when its heartbeat, stamped with its own
# wall clock, looks older than this on another's: cover two hosts skewed the other way.
HEARTBEAT_TIMEOUT_MS = int((60 + 2 * TOLERATED_SKEW.total_seconds()) * 1000)


class StopRelaysOnShutdown(dramatiq.Middleware):
    """Tell running relays to stop between rows when the worker shuts down."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Set the stop event; each relay releases the rows it has not attempted."""
        self.stop.set()


def build_broker(
    settings: Settings, stop: threading.Event, *, clock: Clock | None = None
) -> dramatiq.Broker:
    """Redis, RabbitMQ or an in-process broker, per ``REMINDERS_BROKER_URL``; ticks and
    delayed messages are timed on ``clock`` (the server-aligned one; this host's by default)."""
    # periodiq reads the wall clock with pendulum.now() in the local zone; the schedule is
    # documented as UTC, so make pendulum's local zone UTC whatever TZ the host has.
    pendulum.set_local_timezone(pendulum.UTC)
    url = settings.broker_url
    broker: dramatiq.Broker
    if url is None:
        broker = StubBroker()
    elif url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            health_check_interval=REDIS_TIMEOUT_SECONDS,
        )
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            client=client, heartbeat_timeout=HEARTBEAT_TIMEOUT_MS
        )
    else:
        broker = RabbitmqBroker(url=url)
    if settings.metrics_port is not None and url is not None:
        from worker.metrics import ExposedPrometheus

        broker.add_middleware(ExposedPrometheus())
    clock = clock or SystemClock()
    broker.add_middleware(ServerTimedTicks(clock, skip_delay=SKIP_DELAY_SECONDS))
    broker.add_middleware(ServerTimedDelays(clock))
    broker.add_middleware(StopRelaysOnShutdown(stop))
    return broker
