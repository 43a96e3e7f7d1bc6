"""Receivers that refuse, defer and stall: transient answers are retried (woken by the relay's
own delayed messages and by the schedule's sweep), permanent ones end the row dead with the
answer, and the other reminders keep flowing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from outbox.table import Status
from tests.acceptance.harness import (
    Procs,
    RedisServer,
    SmtpReceiver,
    Ticker,
    WebhookReceiver,
    add_tasks,
    add_users,
    assert_each_exactly_once,
    outbox,
    seed,
    service_env,
    settled,
    smtp_env,
    utc_now,
    wait_until,
    wake,
    webhook_env,
)
from tests.integration._servers import Reply
from worker.reminders.keys import reminder_key

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

DEFERRALS = 5  # DATA commands answered 451 before the server accepts again


def test_smtp_451_for_a_while_then_250_and_a_550_address_end_delivered_or_dead(
    db: Engine,
    postgres_url: str,
    private_redis: RedisServer,
    smtp: SmtpReceiver,
    procs: Procs,
) -> None:
    """451 for a while then 250: each mail once; a 550 address: dead with the answer."""
    now = utc_now()
    seeded = seed(db, now, 10)
    add_users(db, [(50, "nobody@example.com", "UTC", True)])
    add_tasks(db, [(50, 50, "refused", now + timedelta(hours=2), None)])
    refused = reminder_key(50, now + timedelta(hours=2))
    smtp.data_replies.extend(["451 4.3.0 mailbox busy, try later"] * DEFERRALS)
    smtp.rcpt_replies["nobody@example.com"] = "550 5.1.1 no such user here"
    env = service_env(postgres_url, private_redis.url, **smtp_env(smtp))

    worker = procs.dramatiq(env)
    with Ticker(private_redis.url):
        wait_until(lambda: settled(db, seeded.keys), "every mail accepted", alive=[worker])
        wait_until(lambda: settled(db, {refused}, Status.DEAD), "the row dead", alive=[worker])
    assert worker.terminate() == 0, worker.log()

    assert_each_exactly_once(smtp.received(), seeded.keys)
    assert smtp.data_commands == len(seeded.keys) + DEFERRALS
    rows = outbox(db)
    assert sum(rows[key].attempts for key in seeded.keys) == len(seeded.keys) + DEFERRALS
    dead = rows[refused]
    assert (dead.attempts, dead.status) == (1, Status.DEAD)
    assert dead.last_error is not None and "550" in dead.last_error
    assert "nobody@" not in dead.last_error  # addresses are masked in stored errors


def test_webhook_429_500_410_and_a_timeout_are_retried_or_dead_as_the_contract_says(
    db: Engine,
    postgres_url: str,
    private_redis: RedisServer,
    webhook: WebhookReceiver,
    procs: Procs,
) -> None:
    """429 with Retry-After waits that long, 500 and a timeout are retried, 410 is dead at once."""
    seeded = seed(db, utc_now(), 10)
    throttled, failing, gone, slow = (seeded.key(task_id) for task_id in (2, 4, 6, 8))
    webhook.scripts = {
        throttled: [Reply(429, {"Retry-After": "3"})],
        failing: [Reply(500, body=b"oops"), Reply(500, body=b"oops again")],
        gone: [Reply(410, body=b"endpoint retired")],
        slow: [Reply(504, hold=True)],  # never answers within REMINDERS_SEND_TIMEOUT (1 s)
    }
    env = service_env(postgres_url, private_redis.url, **webhook_env(webhook))

    worker = procs.dramatiq(env)
    delivered = seeded.keys - {gone}
    with Ticker(private_redis.url):
        wait_until(lambda: len(webhook.answered(slow)) >= 2, "the slow retry", alive=[worker])
        webhook.release.set()  # let the stalled handler finish; its client is long gone
        wait_until(lambda: settled(db, delivered), "every other reminder", alive=[worker])
        wait_until(lambda: settled(db, {gone}, Status.DEAD), "the 410 row dead", alive=[worker])
    assert worker.terminate() == 0, worker.log()

    assert_each_exactly_once(webhook.received(), delivered)
    first, second = webhook.answered(throttled)
    assert second.at - first.at >= 3 - 0.1, "Retry-After: 3 was honoured"
    assert [a.status for a in webhook.answered(failing)] == [500, 500, 200]
    assert [a.status for a in webhook.answered(gone)] == [410]
    assert [a.status for a in webhook.answered(slow)] == [504, 200]
    rows = outbox(db)
    assert (rows[gone].status, rows[gone].attempts) == (Status.DEAD, 1)
    assert rows[gone].last_error == "HTTP 410: endpoint retired"
    assert rows[slow].attempts == 2 and rows[failing].attempts == 3


def test_each_retry_is_woken_at_its_own_time_without_waiting_for_a_tick(
    db: Engine,
    postgres_url: str,
    private_redis: RedisServer,
    webhook: WebhookReceiver,
    procs: Procs,
) -> None:
    """Two rows told to come back after 1 s and 4 s are retried on time, not at the next tick."""
    seeded = seed(db, utc_now(), 4)
    soon, later = seeded.key(1), seeded.key(2)
    webhook.scripts = {
        soon: [Reply(503, {"Retry-After": "1"})],
        later: [Reply(503, {"Retry-After": "4"})],
    }
    env = service_env(postgres_url, private_redis.url, **webhook_env(webhook))
    env["REMINDERS_SCAN_SCHEDULE"] = "0 0 1 1 *"  # the next tick is months away
    worker = procs.dramatiq(env)
    wake(private_redis.url, "scan_due_tasks")  # the only wake-up: no scheduler runs in this test
    wait_until(lambda: settled(db, {soon}), "the 1 s retry", alive=[worker], timeout=10)
    wait_until(lambda: settled(db, {later}), "the 4 s retry", alive=[worker], timeout=10)
