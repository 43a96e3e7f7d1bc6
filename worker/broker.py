"""The broker and its middleware, built from settings before any actor is declared.

Dramatiq checks actor options when the decorator runs, so `PeriodiqMiddleware` (here its
subclass `ServerTimedTicks`) must be on the broker before `worker.actors` declares a periodic
actor.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pendulum
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from outbox.clock import Clock, SystemClock
from worker.message_clock import TOLERATED_SKEW, ServerTimedDelays, ServerTimedTicks
from worker.settings import Settings

# A tick processed later than this (on the server clock) is dropped; the next tick does its work.
SKIP_DELAY_SECONDS = 30
# Dramatiq's Redis broker takes a worker for dead when its heartbeat, stamped with its own
# wall clock, looks older than this on another's: cover two hosts skewed the other way.
HEARTBEAT_TIMEOUT_MS = int((60 + 2 * TOLERATED_SKEW.total_seconds()) * 1000)


@dataclass(frozen=True)
class BrokerTimeouts:
    """The bounds on every broker call, in seconds (`docs/operations.md`, timeout budget).

    dramatiq's Redis consumer polls with a short script and sleeps between polls on the
    client, never in a blocking command, so every Redis call is one reply that ``socket``
    bounds. redis-py retries a call that failed or timed out on a new connection, and
    retries connecting too, ``retries`` times each: a connection that went silent costs one
    ``socket`` timeout, and a server that accepts and never answers at most
    ``(retries + 1) * socket``. RabbitMQ's heartbeats find a silent connection within
    about one ``heartbeat`` and a little more; ``blocked`` bounds a publish the server holds
    back.
    """

    connect: float = 5.0
    socket: float = 5.0
    health_check: int = 30
    retries: int = 1
    keepalive_idle: int = 10
    keepalive_interval: int = 5
    keepalive_count: int = 3
    heartbeat: int = 30
    blocked: float = 30.0

    @property
    def tcp_user_timeout(self) -> int:
        """Unacknowledged bytes older than this close the socket, as failed keepalives do."""
        return self.keepalive_idle + self.keepalive_interval * self.keepalive_count

    def redis_options(self) -> dict[str, Any]:
        """The redis-py client options that carry these bounds."""
        keepalive = {
            socket.TCP_KEEPIDLE: self.keepalive_idle,
            socket.TCP_KEEPINTVL: self.keepalive_interval,
            socket.TCP_KEEPCNT: self.keepalive_count,
            socket.TCP_USER_TIMEOUT: self.tcp_user_timeout * 1000,
        }
        return {
            "socket_timeout": self.socket,
            "socket_connect_timeout": self.connect,
            "socket_keepalive": True,
            "socket_keepalive_options": keepalive,
            "health_check_interval": self.health_check,
            "retry": Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), self.retries),
        }

    def amqp_url(self, url: str) -> str:
        """``url`` with these bounds as pika's query parameters, where it sets none itself."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        tcp = {
            "TCP_KEEPIDLE": self.keepalive_idle,
            "TCP_KEEPINTVL": self.keepalive_interval,
            "TCP_KEEPCNT": self.keepalive_count,
            "TCP_USER_TIMEOUT": self.tcp_user_timeout * 1000,
        }
        defaults = {
            "heartbeat": str(self.heartbeat),
            "blocked_connection_timeout": f"{self.blocked:g}",
            "socket_timeout": f"{self.connect:g}",
            "stack_timeout": f"{3 * self.connect:g}",  # the whole connection handshake
            "tcp_options": repr(tcp),
        }
        return urlunsplit(parts._replace(query=urlencode({**defaults, **query})))


#: How long an idle Redis consumer waits before it looks at its queue again, at most
#: (dramatiq's own default is a second): a nudge's scan, and the relay it sends, are each
#: picked up within about this.
IDLE_POLL_MS = 100


class PromptRedisBroker(RedisBroker):
    """A Redis broker whose idle consumers poll every `IDLE_POLL_MS` at most."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        """A consumer of ``queue_name`` that waits at most `IDLE_POLL_MS` when idle."""
        return super().consume(queue_name, prefetch=prefetch, timeout=min(timeout, IDLE_POLL_MS))


class StopRelaysOnShutdown(dramatiq.Middleware):
    """Tell running relays to stop between rows when the worker shuts down."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Set the stop event; each relay releases the rows it has not attempted."""
        self.stop.set()


def build_broker(
    settings: Settings,
    stop: threading.Event,
    timeouts: BrokerTimeouts | None = None,
    *,
    clock: Clock | None = None,
) -> dramatiq.Broker:
    """Redis, RabbitMQ or an in-process broker, per ``REMINDERS_BROKER_URL``.

    Every call to a broker server is bounded by ``timeouts`` (the defaults unless given);
    ticks and delayed messages are timed on ``clock`` (the server-aligned one; this host's
    by default).
    """
    bounds = timeouts or BrokerTimeouts()
    # periodiq reads the wall clock with pendulum.now() in the local zone; the schedule is
    # documented as UTC, so make pendulum's local zone UTC whatever TZ the host has.
    pendulum.set_local_timezone(pendulum.UTC)
    url = settings.broker_url
    broker: dramatiq.Broker
    if url is None:
        broker = StubBroker()
    elif url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(url, **bounds.redis_options())
        # dramatiq's RedisBroker.__init__ has no annotations.
        broker = PromptRedisBroker(  # type: ignore[no-untyped-call]
            client=client, heartbeat_timeout=HEARTBEAT_TIMEOUT_MS
        )
    else:
        broker = RabbitmqBroker(url=";".join(bounds.amqp_url(one) for one in url.split(";")))
    if settings.metrics_port is not None and url is not None:
        from worker.metrics import ExposedPrometheus

        broker.add_middleware(ExposedPrometheus(settings.channel))
    clock = clock or SystemClock()
    broker.add_middleware(ServerTimedTicks(clock, skip_delay=SKIP_DELAY_SECONDS))
    broker.add_middleware(ServerTimedDelays(clock))
    broker.add_middleware(StopRelaysOnShutdown(stop))
    return broker


def build_sending_broker(url: str, timeouts: BrokerTimeouts | None = None) -> dramatiq.Broker:
    """A broker that only sends: no middleware, nothing set globally, no actor declared.

    ``url`` is ``redis://…`` or ``amqp://…``. Nothing connects before the first message;
    each call is then bounded as the workers' are (``timeouts``, the defaults unless given).
    """
    bounds = timeouts or BrokerTimeouts()
    if url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(url, **bounds.redis_options())
        # dramatiq's RedisBroker is not annotated.
        return RedisBroker(client=client, middleware=[])  # type: ignore[no-untyped-call]
    hosts = ";".join(bounds.amqp_url(one) for one in url.split(";"))
    return RabbitmqBroker(url=hosts, middleware=[], confirm_delivery=True)
