"""A reminder goes out at its moment even when the worker that set its wake-up is SIGKILLed.

Real processes: two ``dramatiq worker.actors`` on a private Redis, the webhook receiver, and
no tick before the moment (the schedule fires once a year), so that only a wake-up can send
the reminder on time: the tick's sweep, the safety net, is months away.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outbox.table import Status
from tests.acceptance.deployment import Deployment
from tests.acceptance.harness import WebhookReceiver, run_reminders, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LEAD = timedelta(hours=1)
#: The moment comes this long after the task is written: the first worker scans and relays,
#: the second one starts, the first one is killed, all before it.
AHEAD = timedelta(seconds=30)
#: How late the reminder may arrive after its moment (the service's target is 2 s at p99).
LATE = 3.0


def test_a_reminder_is_sent_at_its_moment_after_the_worker_holding_its_wake_up_is_killed(
    deployment: Deployment, webhook: WebhookReceiver, tmp_path: Path
) -> None:
    """The only worker plans the reminder and sets its wake-up; a second one starts; the
    first is SIGKILLed before the moment: the reminder still arrives within `LATE` of its
    moment, never before it, once."""
    env = deployment.env(webhook, REMINDERS_SCAN_SCHEDULE="0 0 1 1 *")  # the next tick: months
    deployment.add_users([(1, "ada@example.com", "UTC", True)])
    done = run_reminders(env, "rules", "set", "--default", "--before", "1h", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    first = deployment.procs.dramatiq(env)
    wait_until(lambda: first.logged("ready for action"), "the first worker up", alive=[first])
    moment = datetime.now(UTC) + AHEAD
    deployment.add_tasks([(1, 1, "file the report", moment + LEAD, None)])
    deployment.wake("scan_due_tasks")

    def planned() -> bool:
        rows = deployment.outbox()
        return len(rows) == 1 and next(iter(rows.values())).status == Status.PENDING

    wait_until(planned, "the reminder planned", alive=[first])
    (key,) = deployment.outbox()
    # The scan woke a relay, which found nothing due yet and set the wake-up for the moment.
    wait_until(lambda: first.logged('"event": "relay"'), "the first relay run", alive=[first])

    second = deployment.procs.dramatiq(env)
    wait_until(lambda: second.logged("ready for action"), "the second worker up", alive=[second])
    first.kill()
    first.wait_exit()
    left = (moment - datetime.now(UTC)).total_seconds()
    assert left > 0, f"the moment passed before the kill ({-left:.1f} s ago): too slow a start"
    moment_monotonic = time.monotonic() + left

    wait_until(
        lambda: webhook.received()[key] >= 1,
        "the reminder delivered by the surviving worker",
        timeout=left + LATE + 1.0,
        alive=[second],
    )
    (answer,) = webhook.answered(key)
    after = answer.at - moment_monotonic
    assert -0.05 <= after <= LATE, f"arrived {after:.2f} s after its moment"
    deployment.wait_settled({key}, "the delivery recorded", alive=[second], timeout=10)
    assert second.terminate() == 0, second.log()
