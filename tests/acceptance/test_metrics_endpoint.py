"""The metrics endpoint of `dramatiq worker.actors` listens on the address the settings give."""

from __future__ import annotations

import urllib.error
import urllib.request

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
