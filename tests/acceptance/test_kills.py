"""A worker SIGKILLed at each step of the pipeline: nothing is lost, and a reminder is repeated
only when the process died after the receiver accepted it and before the relay recorded it,
and then with the same key.

The relay records what a round sent when the next round starts (at most
``REMINDERS_RELAY_WINDOW`` later), so a kill mid-round repeats the round's accepted rows; with
a window of 0 every send is recorded before the next one, and only the victim can repeat.

The kill comes from ``faulty_worker`` at an exact step (no sleeping and hoping); the
`dramatiq` main process exits when its worker dies, and the test starts a fresh
``dramatiq worker.actors``, as a process manager would, with a fast stand-in for periodiq.

Every case runs on the reference schema. On a mapped schema (``todo_items`` with Berlin
wall-time deadlines and ``status = 'done'``, read through ``REMINDERS_SCHEMA_FILE``) run the
cases that cross what the mapping changes: the scan's uncommitted marks on the host's table,
the re-check that reads it, and a send accepted but unrecorded with a window of 0; the other
steps are the outbox's and the channel's, the same on any schema.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from outbox.signing import verify
from outbox.table import Status
from tests.acceptance.deployment import Deployment
from tests.acceptance.harness import (
    MAIL_DOMAIN,
    WEBHOOK_SECRET,
    SmtpReceiver,
    Waker,
    WebhookReceiver,
    assert_each_exactly_once,
    utc_now,
)
from tests.support.hosts import REFERENCE_APP, TODO_APP_BERLIN

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

COUNT = 8
VICTIM = 4  # the task whose reminder is in flight when the worker dies


CASES = [
    ("scan", "smtp", "100ms"),
    ("recheck", "smtp", "100ms"),
    ("before-send", "webhook", "100ms"),
    ("after-accept", "smtp", "100ms"),
    ("after-accept", "webhook", "100ms"),
    ("before-send", "smtp", "0"),
    ("after-accept", "webhook", "0"),
]
#: The cases run on the mapped schema too (see the module's docstring).
ON_THE_MAPPED_SCHEMA = [
    ("scan", "smtp", "100ms"),
    ("recheck", "smtp", "100ms"),
    ("after-accept", "webhook", "0"),
]


@pytest.mark.parametrize(
    ("host_app", "step", "channel", "window"),
    [pytest.param(REFERENCE_APP, *case, id="-".join(case)) for case in CASES]
    + [
        pytest.param(TODO_APP_BERLIN, *case, id="-".join((TODO_APP_BERLIN.name, *case)))
        for case in ON_THE_MAPPED_SCHEMA
    ],
)
def test_a_worker_killed_at_each_step_loses_nothing_and_repeats_only_an_unrecorded_key(
    step: str,
    channel: str,
    window: str,
    deployment: Deployment,
    smtp: SmtpReceiver,
    webhook: WebhookReceiver,
    tmp_path: Path,
) -> None:
    """SIGKILL at any step delays reminders; only accepted, unrecorded keys repeat, same key."""
    seeded = deployment.seed(utc_now(), COUNT)
    victim = seeded.key(VICTIM)
    receiver = smtp if channel == "smtp" else webhook
    env = deployment.env(receiver, REMINDERS_RELAY_WINDOW=window)
    mark = tmp_path / "fault.mark"

    # 1. A worker that dies at the step, woken once by a scan message.
    fault = f"{step}:{'*' if step == 'scan' else victim}"
    faulty = deployment.procs.faulty_dramatiq(env, fault, mark)
    waker = Waker(deployment.redis.url)
    waker.send("scan_due_tasks")
    code = faulty.wait_exit()
    assert mark.exists(), f"the fault never fired:\n{faulty.log()}"
    assert code != 0, faulty.log()

    rows = deployment.outbox()
    if step == "scan":
        # The scan's transaction died with it: no row, no task marked; the next scan redoes it.
        assert rows == {}
        table = deployment.app.tasks_table
        with deployment.db.connect() as connection:
            marked = connection.execute(
                text(f"SELECT count(*) FROM {table} WHERE reminder_sent_at IS NOT NULL")
            ).scalar_one()
        assert marked == 0
    elif step == "recheck":
        # The round's transaction claimed the batch and died re-checking it: nothing claimed.
        assert {row.status for row in rows.values()} == {Status.PENDING}, rows
        assert {row.attempts for row in rows.values()} == {0}
    else:
        assert rows[victim].status == Status.CLAIMED, rows[victim]
    before = receiver.received()
    assert before[victim] == (1 if step == "after-accept" else 0), before
    # Accepted by the receiver, never recorded: the rows the relay will send again.
    unrecorded = {key for key in before if rows[key].status == Status.CLAIMED}
    if window == "0":
        assert unrecorded == ({victim} if step == "after-accept" else set()), unrecorded

    # 2. A fresh worker and the schedule: every reminder arrives, the lease brings the rest back.
    worker = deployment.procs.dramatiq(env)
    with deployment.ticker():
        deployment.wait_settled(seeded.keys, "every reminder delivered", alive=[worker])
    assert worker.terminate() == 0, worker.log()
    waker.close()

    received = receiver.received()
    assert_each_exactly_once(received, seeded.keys, may_repeat=unrecorded)
    assert {received[key] for key in unrecorded} <= {2}, "never recorded, so sent again"
    rows = deployment.outbox()
    assert {rows[key].status for key in seeded.keys} == {Status.DELIVERED}
    assert {row.subject_id for row in rows.values()}.isdisjoint(seeded.never)
    if step in ("before-send", "after-accept"):
        assert rows[victim].attempts == 2  # the killed claim counted as an attempt
    if step == "recheck":
        assert rows[victim].attempts == 1  # the killed claim was never committed

    # Both copies carry the same key, so the receiver can drop the second one.
    if channel == "smtp":
        copies = [h for h in smtp.headers() if str(h["X-Reminder-Key"]) == victim]
        assert {str(h["Message-ID"]) for h in copies} == {f"<{victim}@{MAIL_DOMAIN}>"}
    else:
        for answer in webhook.answered(victim):
            headers = answer.request.headers
            assert headers["webhook-id"] == headers["Idempotency-Key"] == victim
            assert verify(
                WEBHOOK_SECRET,
                victim,
                headers["webhook-timestamp"],
                answer.request.body,
                headers["webhook-signature"],
            )
