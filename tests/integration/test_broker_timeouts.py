"""No broker call waits forever: with the fault proxy in front of Redis, a call on a silent
connection gives up within its socket timeout and retries on a new connection, a call
during a partition fails within its bound, and a dramatiq worker keeps consuming after
the fault ends. The bounds are short here (1 s socket and connect timeouts, one retry)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import dramatiq
import pytest
import redis

from tests.support.faultproxy import FaultProxy, Mode
from worker.broker import BrokerTimeouts, build_broker
from worker.settings import Settings

pytestmark = pytest.mark.redis

FAST = BrokerTimeouts(connect=1.0, socket=1.0, retries=1)
SLACK = 1.5  # what a loaded machine may add to a bound
BACKOFF = 1.0  # redis-py's backoff between retries, at most (ExponentialWithJitterBackoff cap)


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test Redis server."""
    target = urlsplit(redis_url)
    with FaultProxy(target.hostname or "127.0.0.1", target.port or 6379) as running:
        yield running


@pytest.fixture
def broker(proxy: FaultProxy, redis_url: str) -> Iterator[dramatiq.Broker]:
    """The worker's broker, built as the processes build it, on Redis through the proxy."""
    url = urlsplit(redis_url)._replace(netloc=f"{proxy.host}:{proxy.port}").geturl()
    built = build_broker(Settings(broker_url=url), threading.Event(), FAST)
    yield built
    built.close()


def timed_ping(client: redis.Redis) -> tuple[object, float]:
    """PING, measured: (the answer or the error, seconds)."""
    started = time.monotonic()
    try:
        answer: object = client.ping()
    except redis.RedisError as error:
        answer = error
    return answer, time.monotonic() - started


def test_a_call_on_a_silent_connection_retries_on_a_new_one(
    proxy: FaultProxy, broker: dramatiq.Broker
) -> None:
    """After a NAT flush the pooled connection is silent: the call times out after the
    socket timeout and succeeds on a new connection."""
    client = broker.client  # type: ignore[attr-defined]
    assert client.ping() is True
    proxy.mode = Mode.SILENT
    proxy.mode = Mode.FORWARD
    answer, elapsed = timed_ping(client)
    print(f"\nRedis call on a silent connection: answered after {elapsed:.2f}s "
          f"(socket timeout {FAST.socket:g}s)")  # fmt: skip
    assert answer is True
    assert FAST.socket <= elapsed < FAST.socket + BACKOFF + SLACK
    assert proxy.counts.forwarded == 2


def test_a_call_during_a_partition_fails_within_its_bound(
    proxy: FaultProxy, broker: dramatiq.Broker
) -> None:
    """While Redis accepts connections and never answers, a call fails after its attempts'
    socket timeouts instead of hanging, and works again once the fault ends."""
    client = broker.client  # type: ignore[attr-defined]
    assert client.ping() is True
    proxy.mode = Mode.SILENT
    bound = (FAST.retries + 1) * FAST.socket + BACKOFF
    answer, elapsed = timed_ping(client)
    print(f"\nRedis call during a partition: gave up after {elapsed:.2f}s (bound {bound:g}s)")
    assert isinstance(answer, redis.TimeoutError)
    assert elapsed < bound + SLACK
    proxy.mode = Mode.FORWARD
    assert client.ping() is True


def test_a_worker_keeps_consuming_after_a_silent_fault(
    proxy: FaultProxy, broker: dramatiq.Broker
) -> None:
    """A dramatiq worker whose Redis connections went silent gets its messages again once
    new connections flow: its consumer thread was not left waiting forever."""
    done: list[int] = []
    ran = threading.Condition()

    @dramatiq.actor(broker=broker, queue_name="timeouts", max_retries=0)
    def note(number: int) -> None:
        with ran:
            done.append(number)
            ran.notify_all()

    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        note.send(1)
        with ran:
            assert ran.wait_for(lambda: done == [1], 10)
        proxy.mode = Mode.SILENT
        proxy.mode = Mode.FORWARD
        started = time.monotonic()
        note.send(2)
        with ran:
            assert ran.wait_for(lambda: done == [1, 2], 30)
        elapsed = time.monotonic() - started
        print(f"\nworker consumed again {elapsed:.2f}s after a silent fault")
    finally:
        worker.stop()
    assert elapsed < 2 * (FAST.socket + BACKOFF) + SLACK
