"""`worker.api.nudge` against a real Redis: the message it leaves is the one the workers of
`worker.actors` consume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from worker import api
from worker.queues import QUEUE, SCAN_ACTOR
from worker.settings import load_settings

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("fresh_api")]

# Takes one message off the queue with the broker `dramatiq worker.actors` builds, looks its
# actor up by name as a worker does, acknowledges it, and says what it found.
CONSUME_AS_THE_WORKERS = """
import json
from worker import actors

consumer = actors.broker.consume(actors.QUEUE, prefetch=1, timeout=1000)
message = None
for _ in range(10):
    message = next(consumer)
    if message is not None:
        break
actor = actors.broker.get_actor(message.actor_name)
consumer.ack(message)
consumer.close()
print(json.dumps({"actor": actor.actor_name, "queue": actor.queue_name, "fn": actor.fn.__name__}))
"""


def queued(client: redis.Redis) -> list[dict[str, object]]:
    """The messages waiting on Dramatiq's ``reminders`` queue in Redis, oldest first."""
    ids = client.lrange(f"dramatiq:{QUEUE}", 0, -1)
    bodies = [client.hget(f"dramatiq:{QUEUE}.msgs", message_id) for message_id in ids]
    return [json.loads(body) for body in bodies if body is not None]


def test_a_nudge_leaves_one_message_the_workers_consume_as_a_scan(
    redis_url: str, tmp_path: Path
) -> None:
    """One nudge is one message on the reminders queue naming the scan actor; the broker of
    worker.actors takes it off the queue and finds the scan actor by that name."""
    api.configure(load_settings(broker_url=redis_url))
    api.nudge()
    client = redis.Redis.from_url(redis_url)
    try:
        (message,) = queued(client)
        assert (message["queue_name"], message["actor_name"]) == (QUEUE, SCAN_ACTOR)
        assert (message["args"], message["kwargs"]) == ([], {})
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
        env.update(REMINDERS_BROKER_URL=redis_url, REMINDERS_NO_LOG_SETUP="1")
        done = subprocess.run(
            [sys.executable, "-c", CONSUME_AS_THE_WORKERS],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        found = json.loads(done.stdout.splitlines()[-1])
        assert found == {"actor": SCAN_ACTOR, "queue": QUEUE, "fn": "scan_due_tasks"}
        assert queued(client) == []
    finally:
        client.close()


def test_threads_nudging_at_once_share_one_lazily_built_broker(redis_url: str) -> None:
    """Eight threads nudging at once through the broker built on first use: every message
    arrives, no thread sees an error."""
    api.configure(load_settings(broker_url=redis_url))
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def nudge_ten_times() -> None:
        start.wait()
        try:
            for _ in range(10):
                api.nudge()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=nudge_ten_times) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client = redis.Redis.from_url(redis_url)
    try:
        assert errors == []
        messages = queued(client)
        assert len(messages) == 80
        assert {m["actor_name"] for m in messages} == {SCAN_ACTOR}
    finally:
        client.close()
