"""Digests against real PostgreSQL: relays racing to merge members into the same digest.

The relays meet at a `threading.Barrier` once each holds its claimed batch, so both merge
into the digest of the same slot at the same time: the first to insert the digest row holds
its key until it commits, the other waits on it and then finds the row. Nothing sleeps.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outbox.channels.base import Message
from outbox.relay import Cancel, Relay
from outbox.store import Claim
from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import Services
from worker.reminders import preference_store
from worker.reminders.digest_slots import DIGEST_KIND, digest_key
from worker.reminders.digest_store import DigestMemberRow
from worker.reminders.preferences import PreferenceEdit

pytestmark = pytest.mark.postgres

SLOT = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)  # 18:00 in Berlin
KEY = digest_key(1, SLOT)
TASKS = 20
WAIT = 30.0


def meeting(relay: Relay, barrier: threading.Barrier) -> Relay:
    """``relay``, its first re-check held until the other relay's reaches the barrier."""
    prepare = relay.prepare
    met: list[bool] = []

    def prepared(session: Session, claims: Sequence[Claim]) -> Mapping[int, Message | Cancel]:
        if not met:
            met.append(True)
            barrier.wait(WAIT)
        return prepare(session, claims)

    relay.prepare = prepared
    return relay


@pytest.fixture
def services(postgres_engine: Engine, clock: ManualClock, channel: RecordingChannel) -> Services:
    """User 1 in Berlin with a digest at 18:00 and 20 tasks due after it, scanned."""
    built = make_services(postgres_engine, clock, channel, relay_batch=10)
    add_user(built, 1, email="ada@example.com", timezone="Europe/Berlin")
    with built.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, built.host, 1, PreferenceEdit(digest="18:00"), now=clock.now()
        )
    for task_id in range(1, TASKS + 1):
        add_task(built, task_id, 1, SLOT + timedelta(hours=1, minutes=task_id))
    assert built.scan().queued == TASKS
    return built


def test_two_relays_merging_into_one_slot_make_one_digest_with_each_member_once(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Both relays hold half the reminders and merge at once: one digest row, every
    reminder in it once, none sent alone; at the slot, one message lists all twenty."""
    barrier = threading.Barrier(2)
    relays = [meeting(services.relay(), barrier) for _ in range(2)]
    reports = []
    errors: list[BaseException] = []

    def run(relay: Relay) -> None:
        try:
            reports.append(relay.relay_until_idle())
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
        assert not thread.is_alive()
    assert not errors, errors
    assert all(report.claimed > 0 for report in reports)  # both took part
    assert sum(report.counts.get("cancelled", 0) for report in reports) == TASKS
    assert channel.sent == []

    with Session(services.engine) as session:
        digests = session.execute(
            select(OutboxRow.id, OutboxRow.idempotency_key, OutboxRow.status).where(
                OutboxRow.kind == DIGEST_KIND
            )
        ).all()
        members = session.execute(
            select(DigestMemberRow.member_id, DigestMemberRow.digest_id)
        ).all()
        reminders = session.execute(
            select(OutboxRow.id, OutboxRow.status, OutboxRow.last_error).where(
                OutboxRow.kind != DIGEST_KIND
            )
        ).all()
    ((digest_id, key, status),) = digests
    assert (key, status) == (KEY, Status.PENDING)
    assert Counter(member for member, _ in members) == Counter(r.id for r in reminders)
    assert {digest for _, digest in members} == {digest_id}
    assert {(r.status, r.last_error) for r in reminders} == {(Status.CANCELLED, f"in digest {KEY}")}

    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    (sent,) = channel.sent
    assert sent.key == KEY
    assert sorted(line["task_id"] for line in sent.document["reminders"]) == list(
        range(1, TASKS + 1)
    )
