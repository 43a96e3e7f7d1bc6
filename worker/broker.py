"""The broker and its middleware, built from settings before any actor is declared.

Dramatiq checks actor options when the decorator runs, so `PeriodiqMiddleware` must be on
the broker before `worker.actors` declares a periodic actor.
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
from periodiq import PeriodiqMiddleware

from worker.settings import Settings

REDIS_TIMEOUT_SECONDS = 30
# A tick processed later than this is dropped by periodiq; the next tick does its work.
SKIP_DELAY_SECONDS = 30


class StopRelaysOnShutdown(dramatiq.Middleware):
    """Tell running relays to stop between rows when the worker shuts down."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Set the stop event; each relay releases the rows it has not attempted."""
        self.stop.set()


def build_broker(settings: Settings, stop: threading.Event) -> dramatiq.Broker:
    """Redis, RabbitMQ or an in-process broker, per ``REMINDERS_BROKER_URL``."""
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
        broker = RedisBroker(client=client)  # type: ignore[no-untyped-call]
    else:
        broker = RabbitmqBroker(url=url)
    if settings.metrics_port is not None and url is not None:
        from worker.metrics import ExposedPrometheus

        broker.add_middleware(ExposedPrometheus())
    broker.add_middleware(PeriodiqMiddleware(skip_delay=SKIP_DELAY_SECONDS))
    broker.add_middleware(StopRelaysOnShutdown(stop))
    return broker


def build_sending_broker(url: str, timeout: float) -> dramatiq.Broker:
    """A broker that only sends: no middleware, nothing set globally, no actor declared.

    ``url`` is ``redis://…`` or ``amqp://…``. Nothing connects before the first message;
    then each attempt gives up after ``timeout`` seconds: on Redis a send is tried twice at
    most, on RabbitMQ as often as Dramatiq's broker retries a closed connection.
    """
    if url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One retry on a fresh connection: the default retries for tens of seconds.
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), retries=1),
        )
        return RedisBroker(client=client, middleware=[])  # type: ignore[no-untyped-call]
    broker = RabbitmqBroker(url=url, middleware=[], confirm_delivery=True)
    hosts = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
    for parameters in hosts:
        parameters.socket_timeout = timeout
        parameters.stack_timeout = timeout
        parameters.blocked_connection_timeout = timeout
        parameters.connection_attempts = 1
    return broker
