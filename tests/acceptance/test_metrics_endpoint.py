"""The metrics endpoint of `dramatiq worker.actors`: the service's series from the start, on the
address the settings give.

No message is ever sent (no periodiq, a private Redis of the test's own): what a scrape finds
is what the worker exports before it has processed anything.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import Engine

from tests.acceptance.harness import Proc, Procs, RedisServer, child_env, free_port, wait_until

#: A loopback address besides 127.0.0.1 (Linux routes all of 127.0.0.0/8 to the loopback):
#: a server bound to 127.0.0.1 alone does not answer on it; one bound to every address does.
OTHER_LOOPBACK = "127.0.0.2"


def get(host: str, port: int) -> str | None:
    """The metrics page at ``host:port``, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())
    except (urllib.error.URLError, ConnectionError):
        return None


def booted_worker(
    procs: Procs, redis: RedisServer, engine: Engine, port: int, **variables: str
) -> Proc:
    """`dramatiq worker.actors` with metrics on ``port``, once its worker process has booted
    (the middleware's boot hook has run: dramatiq logs this line after it)."""
    env = child_env(
        REMINDERS_DATABASE_URL=str(engine.url),
        REMINDERS_BROKER_URL=redis.url,
        REMINDERS_METRICS_PORT=str(port),
        **variables,
    )
    worker = procs.dramatiq(env, threads=1)
    wait_until(
        lambda: worker.logged("Worker process is ready for action"), "the worker's boot",
        alive=[worker],
    )  # fmt: skip
    return worker


def test_the_service_series_are_served_before_any_message(
    procs: Procs, private_redis: RedisServer, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """A scrape after boot and before any message finds the reminders_* series at zero,
    the deliveries of the configured channel for every outcome included."""
    port = free_port()
    worker = booted_worker(procs, private_redis, sqlite_engine, port, REMINDERS_CHANNEL="smtp")
    page: list[str] = []

    def served() -> bool:
        page[:] = [text] if (text := get("127.0.0.1", port)) is not None else []
        return bool(page)

    wait_until(served, "the exposition server", alive=[worker])
    metrics = page[0]
    assert "dramatiq_messages_total{" not in metrics, "no message was processed"
    for series in (
        "reminders_queued_total 0.0",
        "reminders_scan_tasks_marked_total 0.0",
        "reminders_scan_duration_seconds_count 0.0",
        "reminders_expired_total 0.0",
        "reminders_delivery_latency_seconds_count 0.0",
        'reminders_deliveries_total{channel="smtp",outcome="delivered"} 0.0',
        'reminders_deliveries_total{channel="smtp",outcome="dead"} 0.0',
        'reminders_deliveries_total{channel="smtp",outcome="retry"} 0.0',
        'reminders_deliveries_total{channel="smtp",outcome="expired"} 0.0',
    ):
        assert series in metrics.splitlines(), f"{series!r} not served:\n{metrics}"


def test_the_endpoint_listens_on_loopback_only_by_default(
    procs: Procs, private_redis: RedisServer, sqlite_engine: Engine
) -> None:
    """Without REMINDERS_METRICS_HOST the endpoint answers on 127.0.0.1 and on no other
    address."""
    port = free_port()
    worker = booted_worker(procs, private_redis, sqlite_engine, port)
    wait_until(lambda: get("127.0.0.1", port) is not None, "the exposition server", alive=[worker])
    assert get(OTHER_LOOPBACK, port) is None


def test_the_endpoint_listens_on_the_configured_host(
    procs: Procs, private_redis: RedisServer, sqlite_engine: Engine
) -> None:
    """REMINDERS_METRICS_HOST moves the endpoint to that address (and off 127.0.0.1)."""
    port = free_port()
    worker = booted_worker(
        procs, private_redis, sqlite_engine, port, REMINDERS_METRICS_HOST=OTHER_LOOPBACK
    )
    wait_until(
        lambda: get(OTHER_LOOPBACK, port) is not None, "the exposition server", alive=[worker]
    )
    assert get("127.0.0.1", port) is None
