"""Outages in the middle of a run: Redis restarted, PostgreSQL restarted, the service down for
hours. Reminders are delayed, none is lost, and the running processes recover by themselves."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from outbox.store import Verdict, claim_due_rows, record
from outbox.table import Status
from tests.acceptance.deployment import Deployment
from tests.acceptance.harness import (
    STANDARD_USERS,
    PostgresCluster,
    Procs,
    RedisServer,
    SmtpReceiver,
    WebhookReceiver,
    assert_each_exactly_once,
    utc_now,
    wait_until,
)
from tests.support.clock import ManualClock
from tests.support.servers.webhook import Reply
from worker.bootstrap import bootstrap
from worker.db import make_engine
from worker.reminders.keys import reminder_key
from worker.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

HOUR = timedelta(hours=1)


def test_redis_restarted_mid_run_delays_but_loses_nothing(
    deployment: Deployment, webhook: WebhookReceiver
) -> None:
    """Redis killed and restarted empty mid-batch: the same worker delivers everything once."""
    now = utc_now()
    first = deployment.seed(now, 20)
    refused = [first.key(task_id) for task_id in (1, 2, 3)]
    victim = first.key(10)
    # Three rows are refused with Retry-After, so their wake-up waits in Redis when it dies;
    # one send is held open, so the relay is mid-batch while Redis restarts.
    webhook.scripts = {key: [Reply(503, {"Retry-After": "4"})] for key in refused}
    webhook.scripts[victim] = [Reply(200, hold=True)]
    env = deployment.env(webhook, REMINDERS_SEND_TIMEOUT="5s", REMINDERS_LEASE="15s")
    worker = deployment.procs.dramatiq(env)
    deployment.wake("scan_due_tasks")
    assert webhook.held.wait(30), worker.log()

    deployment.redis.restart()  # every queued and delayed message is gone
    webhook.release.set()
    later = deployment.seed(now + timedelta(minutes=5), 10, first=100, users=False)

    with deployment.ticker():  # the schedule, on the new Redis
        deployment.wait_settled(first.keys | later.keys, "every reminder delivered", alive=[worker])
    worker.check_alive()  # the same process all along: it reconnected by itself
    assert worker.terminate() == 0, worker.log()

    assert_each_exactly_once(webhook.received(), first.keys | later.keys)
    for key in refused:
        refusal, retry = webhook.answered(key)
        assert retry.at - refusal.at >= 4 - 0.1, "Retry-After: 4 was honoured"
    rows = deployment.outbox()
    assert {rows[key].attempts for key in refused} == {2}
    assert {row.subject_id for row in rows.values()}.isdisjoint(first.never | later.never)


def test_postgres_restarted_mid_run_delays_and_repeats_only_the_unrecorded_key(
    private_postgres: PostgresCluster,
    private_redis: RedisServer,
    webhook: WebhookReceiver,
    procs: Procs,
) -> None:
    """PostgreSQL stopped between a receiver's 200 and the commit, then started: the worker
    recovers without a restart, and only that one key arrives twice, with the same key."""
    url = private_postgres.create_database(f"acceptance_{uuid.uuid4().hex[:10]}")
    db = make_engine(url)
    deployment = Deployment(db, url, private_redis, procs)
    seeded = deployment.seed(utc_now(), 12)
    victim = seeded.key(5)
    webhook.scripts = {victim: [Reply(200, hold=True)]}
    env = deployment.env(webhook, REMINDERS_SEND_TIMEOUT="3s", REMINDERS_LEASE="4s")
    worker = procs.dramatiq(env)
    deployment.wake("scan_due_tasks")
    try:
        assert webhook.held.wait(30), worker.log()
        private_postgres.stop("fast")  # the database goes away while the message is on the wire
        webhook.release.set()  # the receiver accepts it; the relay cannot record that
        wait_until(
            lambda: worker.logged(r'"event": "relay_failed"'),
            "the relay to fail on the lost database", alive=[worker],
        )  # fmt: skip
        with deployment.ticker():
            wait_until(
                lambda: worker.logged(r'"event": "scan_failed"'),
                "a scheduled scan to fail while the database is down", alive=[worker],
            )  # fmt: skip
            private_postgres.start()
            deployment.wait_settled(seeded.keys, "every reminder delivered", alive=[worker])
        worker.check_alive()  # never restarted: the pool reconnected by itself
        assert worker.terminate() == 0, worker.log()

        received = webhook.received()
        assert_each_exactly_once(received, seeded.keys, may_repeat={victim})
        assert received[victim] == 2, "accepted, never recorded: sent again after the lease"
        copies = webhook.answered(victim)
        assert {a.request.headers["webhook-id"] for a in copies} == {victim}
        rows = deployment.outbox()
        assert {row.subject_id for row in rows.values()}.isdisjoint(seeded.never)
    finally:
        if not private_postgres.ready():
            private_postgres.start()
        db.dispose()


def test_a_service_down_for_hours_catches_up_on_start(
    deployment: Deployment, smtp: SmtpReceiver
) -> None:
    """After five hours down, `periodiq` + `dramatiq` deliver, on start, every reminder still
    ahead (queued, claimed or failed before the outage, or never scanned) once; the queued
    reminders of tasks that fell due during the outage expire unsent, and tasks whose due
    date passed unscanned get none."""
    now = utc_now()
    past = now - 5 * HOUR
    db = deployment.db
    deployment.add_users(STANDARD_USERS)
    # Before the outage: tasks due ahead, and two that will fall due during the outage.
    queued = {task_id: now + task_id * 10 * timedelta(minutes=1) for task_id in range(1, 11)}
    late = {11: now - 2 * HOUR, 12: now - HOUR}
    deployment.add_tasks([(i, 1, f"task {i}", when, None) for i, when in queued.items()])
    settings = Settings(database_url=deployment.database_url)
    before = bootstrap(settings, clock=ManualClock(past), engine=db)
    assert before.scan().queued == 10
    with before.session_factory.begin() as session:  # a worker died holding two rows ...
        held = claim_due_rows(session, past, past + timedelta(minutes=1), "gone:1:1", 2)
    with before.session_factory.begin() as session:  # ... and two failed, to retry at 4h ago
        for claim in claim_due_rows(session, past, past + timedelta(minutes=1), "gone:2:1", 2):
            failed = Verdict(claim, Status.FAILED, "SMTP 451 4.3.0 try later", past + HOUR)
            record(session, [failed], past)
    deployment.add_tasks([(i, 1, f"task {i}", when, None) for i, when in late.items()])
    assert before.scan().queued == 2
    # During the outage: new tasks ahead, and two that fell due before anyone scanned them.
    fresh = {20 + i: now + i * HOUR + timedelta(minutes=30) for i in range(10)}
    missed = {40: now - 3 * HOUR, 41: now - timedelta(minutes=10)}
    deployment.add_tasks(
        [(i, 2, f"task {i}", when, None) for i, when in {**fresh, **missed}.items()]
    )
    others = deployment.seed(now, 0, first=1000, users=False)  # five more that are never due

    env = deployment.env(smtp)
    worker = deployment.procs.dramatiq(env)
    scheduler = deployment.procs.periodiq(env)  # its first tick, at start, is the only wake-up
    expected = {reminder_key(i, when) for i, when in {**queued, **fresh}.items()}
    deployment.wait_settled(expected, "the catch-up", alive=[worker, scheduler])
    assert scheduler.terminate() in (0, -15), scheduler.log()
    assert worker.terminate() == 0, worker.log()

    assert_each_exactly_once(smtp.received(), expected)
    rows = deployment.outbox()
    assert {rows[c.key].attempts for c in held} == {2}
    assert {row.subject_id for row in rows.values()}.isdisjoint(set(missed) | others.never)
    with db.connect() as connection:
        last_scan = connection.execute(
            text("SELECT scanned_at FROM reminder_scan_heartbeat")
        ).scalar_one()
    assert last_scan > now - timedelta(minutes=1)
    # No longer useful: the task is due; expired, not sent late.
    assert {rows[reminder_key(i, when)].status for i, when in late.items()} == {Status.EXPIRED}
