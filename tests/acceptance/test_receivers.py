"""Receivers that refuse, defer and stall: transient answers are retried (woken by the relay's
own delayed messages and by the schedule's sweep), permanent ones end the row dead with the
answer, and the other reminders keep flowing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from outbox.table import Status
from tests.acceptance.deployment import Deployment
from tests.acceptance.harness import (
    SmtpReceiver,
    WebhookReceiver,
    assert_each_exactly_once,
    utc_now,
    wait_until,
)
from tests.support.servers.webhook import Reply
from worker.reminders.keys import reminder_key

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

DEFERRALS = 5  # DATA commands answered 451 before the server accepts again


def test_smtp_451_for_a_while_then_250_and_a_550_address_end_delivered_or_dead(
    deployment: Deployment, smtp: SmtpReceiver
) -> None:
    """451 for a while then 250: each mail once; a 550 address: dead with the answer."""
    now = utc_now()
    seeded = deployment.seed(now, 10)
    deployment.add_users([(50, "nobody@example.com", "UTC", True)])
    deployment.add_tasks([(50, 50, "refused", now + timedelta(hours=2), None)])
    refused = reminder_key(50, now + timedelta(hours=2))
    smtp.data_replies.extend(["451 4.3.0 mailbox busy, try later"] * DEFERRALS)
    smtp.rcpt_replies["nobody@example.com"] = "550 5.1.1 no such user here"
    env = deployment.env(smtp)

    worker = deployment.procs.dramatiq(env)
    with deployment.ticker():
        deployment.wait_settled(seeded.keys, "every mail accepted", alive=[worker])
        deployment.wait_settled({refused}, "the row dead", alive=[worker], status=Status.DEAD)
    assert worker.terminate() == 0, worker.log()

    assert_each_exactly_once(smtp.received(), seeded.keys)
    assert smtp.data_commands == len(seeded.keys) + DEFERRALS
    rows = deployment.outbox()
    assert sum(rows[key].attempts for key in seeded.keys) == len(seeded.keys) + DEFERRALS
    dead = rows[refused]
    assert (dead.attempts, dead.status) == (1, Status.DEAD)
    assert dead.last_error is not None and "550" in dead.last_error
    assert "nobody@" not in dead.last_error  # addresses are masked in stored errors


def test_webhook_429_500_410_and_a_timeout_are_retried_or_dead_as_the_contract_says(
    deployment: Deployment, webhook: WebhookReceiver
) -> None:
    """429 with Retry-After waits that long, 500 and a timeout are retried, 410 is dead at once."""
    seeded = deployment.seed(utc_now(), 10)
    throttled, failing, gone, slow = (seeded.key(task_id) for task_id in (2, 4, 6, 8))
    webhook.scripts = {
        throttled: [Reply(429, {"Retry-After": "3"})],
        failing: [Reply(500, body=b"oops"), Reply(500, body=b"oops again")],
        gone: [Reply(410, body=b"endpoint retired")],
        slow: [Reply(504, hold=True)],  # never answers within REMINDERS_SEND_TIMEOUT (1 s)
    }
    env = deployment.env(webhook)

    worker = deployment.procs.dramatiq(env)
    delivered = seeded.keys - {gone}
    with deployment.ticker():
        wait_until(lambda: len(webhook.answered(slow)) >= 2, "the slow retry", alive=[worker])
        webhook.release.set()  # let the stalled handler finish; its client is long gone
        deployment.wait_settled(delivered, "every other reminder", alive=[worker])
        deployment.wait_settled({gone}, "the 410 row dead", alive=[worker], status=Status.DEAD)
    assert worker.terminate() == 0, worker.log()

    assert_each_exactly_once(webhook.received(), delivered)
    first, second = webhook.answered(throttled)
    assert second.at - first.at >= 3 - 0.1, "Retry-After: 3 was honoured"
    assert [a.status for a in webhook.answered(failing)] == [500, 500, 200]
    assert [a.status for a in webhook.answered(gone)] == [410]
    assert [a.status for a in webhook.answered(slow)] == [504, 200]
    rows = deployment.outbox()
    assert (rows[gone].status, rows[gone].attempts) == (Status.DEAD, 1)
    assert rows[gone].last_error == "HTTP 410: endpoint retired"
    assert rows[slow].attempts == 2 and rows[failing].attempts == 3


def test_each_retry_is_woken_at_its_own_time_without_waiting_for_a_tick(
    deployment: Deployment, webhook: WebhookReceiver
) -> None:
    """Two rows told to come back after 1 s and 4 s are retried on time, not at the next tick."""
    seeded = deployment.seed(utc_now(), 4)
    soon, later = seeded.key(1), seeded.key(2)
    webhook.scripts = {
        soon: [Reply(503, {"Retry-After": "1"})],
        later: [Reply(503, {"Retry-After": "4"})],
    }
    env = deployment.env(webhook)
    env["REMINDERS_SCAN_SCHEDULE"] = "0 0 1 1 *"  # the next tick is months away
    worker = deployment.procs.dramatiq(env)
    deployment.wake("scan_due_tasks")  # the only wake-up: no scheduler runs in this test
    deployment.wait_settled({soon}, "the 1 s retry", alive=[worker], timeout=10)
    deployment.wait_settled({later}, "the 4 s retry", alive=[worker], timeout=10)
