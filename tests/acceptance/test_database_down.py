"""A real `dramatiq worker.actors` ticked every second while its database is not migrated, not
there or silent: one log line per failure and no traceback, nothing piling up in Redis, and
the recovery said in one line once the database is migrated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from tests.acceptance.harness import (
    Procs,
    RedisServer,
    Ticker,
    database_copy,
    free_port,
    service_env,
    wait_until,
)
from tests.conftest import POSTGRES_URL
from tests.support.servers.silent import SilentServer
from worker import migrate
from worker.db import DatabaseTimeouts

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TICKS = 10
SILENT_TICKS = 30
CONNECT_TIMEOUT = int(DatabaseTimeouts().connect)
DEAD_KEYS = ("dramatiq:reminders.XQ", "dramatiq:reminders.XQ.msgs")


@pytest.fixture
def empty_database() -> Iterator[tuple[str, Engine]]:
    """A database on the shared PostgreSQL with none of the service's tables."""
    with database_copy(POSTGRES_URL, "template0") as created:
        yield created


def events(log: str) -> list[dict[str, Any]]:
    """The JSON lines of a worker's log."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


#: What the start-up check logs once, before any message, when the database is not ready.
START_UP = "database_not_ready"


def ours(log: str) -> list[tuple[str, str | None]]:
    """(event, kind) of each line the service's actors logged, the start-up check's aside."""
    return [
        (e["event"], e.get("kind"))
        for e in events(log)
        if e["logger"] == "worker.actors" and e["event"] != START_UP
    ]


class QueueWatch:
    """The Redis queue's length, polled, and whether the broker holds anything."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.at_tick: dict[int, int] = {}  # the longest seen after each tick sent

    def sample(self, tick: int = -1) -> bool:
        """Note the queue's length; True once nothing waits or is in flight."""
        length = int(self.client.llen("dramatiq:reminders"))
        self.at_tick[tick] = max(length, self.at_tick.get(tick, 0))
        return length == 0 and self.client.hlen("dramatiq:reminders.msgs") == 0

    def dead(self) -> int:
        """Messages in the dead-letter queue."""
        return int(self.client.zcard(DEAD_KEYS[0])) + int(self.client.hlen(DEAD_KEYS[1]))


def tick_while_down(
    env: dict[str, str], redis_server: RedisServer, procs: Procs, *, ticks: int = TICKS
) -> tuple[str, dict[int, int]]:
    """Run a worker through ``ticks`` ticks a second apart; return its whole log once the
    broker is empty again (its wake-up reads from the start), and the longest queue seen
    after each tick."""
    worker = procs.dramatiq(env)
    wait_until(lambda: worker.logged("ready for action"), "the worker up", alive=[worker])
    watch = QueueWatch(redis_server.url)
    with Ticker(redis_server.url) as ticker:

        def ticked() -> bool:
            watch.sample(ticker.sent)
            return ticker.sent >= ticks

        wait_until(ticked, f"{ticks} ticks", alive=[worker])
    wait_until(watch.sample, "every tick consumed", alive=[worker])
    assert watch.dead() == 0, "failed ticks were kept as dead messages"
    log = worker.log(tail=0)
    queue = {tick: length for tick, length in watch.at_tick.items() if tick >= 0}
    print(f"\n{ticker.sent} ticks: {len(log.encode())} bytes, {len(log.splitlines())} lines")
    print(f"longest queue after each tick: {list(queue.values())}")
    return log, queue


def assert_one_line_per_failure(log: str, kind: str) -> None:
    """One `scan_failed` and one `relay_failed` of ``kind`` for all the ticks, short lines,
    no traceback, nothing else at warning or above."""
    assert "Traceback" not in log
    assert sorted(ours(log)) == [("relay_failed", kind), ("scan_failed", kind)], log
    assert all(len(line.encode()) < 1000 for line in log.splitlines()), log
    loud = [e for e in events(log) if e["level"] in ("warning", "error", "critical")]
    assert len([e for e in loud if e["event"] != START_UP]) == 2, log


def test_an_unmigrated_database_logs_one_line_per_failure_then_its_recovery(
    empty_database: tuple[str, Engine], private_redis: RedisServer, procs: Procs
) -> None:
    """Ticks on a database without the tables: one line each for scan and relay naming the
    missing table and the fix; once migrated, one line each saying they recovered."""
    url, engine = empty_database
    log, queue = tick_while_down(service_env(url, private_redis.url), private_redis, procs)
    assert max(queue.values()) <= 4, queue  # two ticks' messages at most
    assert_one_line_per_failure(log, "not_migrated")
    reasons = [e["reason"] for e in events(log) if e["event"].endswith("_failed")]
    # The start-up check names the missing table before any statement could fail on it.
    assert all("table tasks not found" in r and "reminders migrate" in r for r in reasons), reasons

    migrate.upgrade(engine)
    (worker,) = procs.started
    with Ticker(private_redis.url):
        wait_until(
            lambda: {"scan_recovered", "relay_recovered"} <= {e for e, _ in ours(worker.log(0))},
            "the recovery logged",
            alive=[worker],
        )
    after = ours(worker.log(0))
    assert after.count(("scan_recovered", None)) == 1 and ("scan", None) in after


def test_an_unreachable_database_logs_one_line_per_failure(
    private_redis: RedisServer, procs: Procs
) -> None:
    """Ticks while nothing listens on the database's port: one line each, no traceback."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/reminders"
    log, queue = tick_while_down(service_env(url, private_redis.url), private_redis, procs)
    assert max(queue.values()) <= 4, queue
    assert_one_line_per_failure(log, "unreachable")
    assert all("Connection refused" in e["reason"] for e in events(log) if "reason" in e)


def test_a_silent_database_holds_one_worker_thread_and_nothing_piles_up(
    private_redis: RedisServer, procs: Procs
) -> None:
    """A database that accepts connections and never answers: each attempt waits for the
    connect timeout, but once one has failed only one at a time does, so the other thread
    keeps acknowledging the ticks: the queue that grew during the first timeout drains while
    the ticks go on. Each failing action says so once."""
    silent = SilentServer()
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{silent.port}/reminders"
        env = service_env(url, private_redis.url)
        log, queue = tick_while_down(env, private_redis, procs, ticks=SILENT_TICKS)
    finally:
        silent.stop()
    # The first attempts of both actors wait out one connect timeout side by side.
    assert max(queue.values()) <= 2 * (CONNECT_TIMEOUT + 3), queue
    assert max(queue[tick] for tick in range(SILENT_TICKS - 5, SILENT_TICKS + 1)) <= 4, queue
    assert "Traceback" not in log
    found = ours(log)
    assert found and set(found) <= {("scan_failed", "unreachable"), ("relay_failed", "unreachable")}
    assert len(found) == len(set(found)), log
