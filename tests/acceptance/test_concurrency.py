"""Many schedulers and scanners at once: two `periodiq`, several `reminders scan`, two workers."""

from __future__ import annotations

import re

import pytest

from outbox.table import Status
from tests.acceptance.deployment import Deployment
from tests.acceptance.harness import (
    Proc,
    SmtpReceiver,
    assert_each_exactly_once,
    utc_now,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

COUNT = 600
SCANS = 3
# Small scan transactions, so that scanners running at once interleave batch by batch.
SCAN_BATCH = "10"


def test_two_schedulers_and_several_scans_at_once_send_each_reminder_once(
    deployment: Deployment, smtp: SmtpReceiver
) -> None:
    """Two periodiq, three `reminders scan` and two workers started together: one mail per task."""
    seeded = deployment.seed(utc_now(), COUNT)
    env = deployment.env(smtp, REMINDERS_SCAN_BATCH=SCAN_BATCH)

    procs = deployment.procs
    workers = [procs.dramatiq(env), procs.dramatiq(env)]
    schedulers = [procs.periodiq(env), procs.periodiq(env)]
    scans = [procs.reminders(env, "scan") for _ in range(SCANS)]

    for scan in scans:
        assert scan.wait_exit() == 0, scan.log()
    # Each scheduler sends both periodic actors as soon as it starts (within the minute).
    for scheduler in schedulers:

        def ticked(s: Proc = scheduler) -> bool:
            return len(re.findall(r"Scheduling .*(scan_due_tasks|relay_outbox)", s.log())) >= 2

        wait_until(ticked, "the scheduler's first tick", alive=[s for s in schedulers] + workers)
    wait_until(lambda: len(deployment.outbox()) >= COUNT, "every reminder queued", alive=workers)
    # The rows may all have been queued by the commands, after the ticks' relay found
    # nothing: the next tick's sweep delivers them (sent here instead of waiting a minute).
    deployment.wake("relay_outbox")
    deployment.wait_settled(seeded.keys, "every reminder delivered", alive=workers)
    for process in schedulers + workers:
        assert process.terminate() in (0, -15), process.log()

    assert_each_exactly_once(smtp.received(), seeded.keys)
    rows = deployment.outbox()
    assert len(rows) == COUNT
    assert {row.status for row in rows.values()} == {Status.DELIVERED}
    assert {row.attempts for row in rows.values()} == {1}
    queued = [int(m) for s in scans for m in re.findall(r"queued (\d+) reminder", s.log())]
    by_actor = [int(m) for w in workers for m in re.findall(r'"queued": (\d+)', w.log(tail=0))]
    assert len(queued) == SCANS
    assert sum(queued) + sum(by_actor) == COUNT, (queued, by_actor)
    print(f"\nrows queued by each `reminders scan`: {queued}; by the scan actor: {by_actor}")
