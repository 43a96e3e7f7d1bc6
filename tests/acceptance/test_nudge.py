"""A host application nudges the real workers: `dramatiq worker.actors` on Redis, no
scheduler running, and a task the host commits is mailed within seconds."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.acceptance.deployment import Deployment
from tests.acceptance.harness import SmtpReceiver, utc_now, wait_until
from worker import api
from worker.reminders.keys import reminder_key
from worker.reminders.schema import Task
from worker.settings import load_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.usefixtures("fresh_api")]

HOUR = timedelta(hours=1)
#: How soon after its commit a nudged task must be mailed: far below any schedule tick.
WITHIN_SECONDS = 15


def host_commits_task(engine: Engine, task_id: int, due: datetime) -> None:
    """The host adds a task in its own transaction and asks for a nudge after the commit."""
    with Session(engine) as session, session.begin():
        session.add(Task(id=task_id, owner_id=1, title=f"task {task_id}", due_date=due))
        api.nudge_after_commit(session)


def test_a_task_committed_with_a_nudge_is_mailed_without_any_scheduler(
    deployment: Deployment, smtp: SmtpReceiver
) -> None:
    """With only `dramatiq worker.actors` running, each nudged task is mailed once: the first
    as the worker comes up, the next within seconds of its commit."""
    deployment.add_users([(1, "ada@example.com", "UTC", True)])
    worker = deployment.procs.dramatiq(deployment.env(smtp))
    api.configure(load_settings(broker_url=deployment.redis.url))
    now = utc_now()

    host_commits_task(deployment.db, 1, now + HOUR)
    first = reminder_key(1, now + HOUR)
    deployment.wait_settled({first}, "the first nudged task mailed", alive=[worker])

    committed = time.monotonic()
    host_commits_task(deployment.db, 2, now + 2 * HOUR)
    second = reminder_key(2, now + 2 * HOUR)
    deployment.wait_settled(
        {second}, "the second nudged task mailed", alive=[worker], timeout=WITHIN_SECONDS
    )
    print(f"\nmailed {time.monotonic() - committed:.1f}s after the commit")

    assert worker.terminate() == 0, worker.log()
    assert smtp.received() == Counter({first: 1, second: 1})


BURST = 500


def test_a_burst_of_nudges_queued_while_no_worker_runs_costs_a_few_scans(
    deployment: Deployment, smtp: SmtpReceiver
) -> None:
    """Nudges sent while the workers are down all wait in Redis; the worker that starts then
    serves every one of them with at most three scans, and the task is mailed once."""
    deployment.add_users([(1, "ada@example.com", "UTC", True)])
    api.configure(load_settings(broker_url=deployment.redis.url))
    now = utc_now()
    host_commits_task(deployment.db, 1, now + HOUR)
    for _ in range(BURST - 1):
        api.nudge()

    worker = deployment.procs.dramatiq(deployment.env(smtp))

    def scans() -> list[dict[str, object]]:
        lines = [json.loads(x) for x in worker.log(tail=0).splitlines() if x.startswith("{")]
        return [line for line in lines if line["event"] == "scan"]

    def served() -> int:
        return sum(int(str(scan["requests"])) for scan in scans())

    wait_until(lambda: served() >= BURST, f"{BURST} nudges served", alive=[worker])
    deployment.wait_settled({reminder_key(1, now + HOUR)}, "the task mailed", alive=[worker])
    print(f"\n{BURST} nudges: {len(scans())} scans, requests {[s['requests'] for s in scans()]}")
    assert served() == BURST and len(scans()) <= 3
    assert worker.terminate() == 0, worker.log()
    assert smtp.received() == Counter({reminder_key(1, now + HOUR): 1})
