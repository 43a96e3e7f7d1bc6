"""Digests against real PostgreSQL: relays racing to merge members into the same digest.

The relays meet at a `threading.Barrier` once each holds its claimed batch, so both merge
into the digest of the same slot at the same time: the first to insert the digest row holds
its key until it commits, the other waits on it and then finds the row. Nothing sleeps.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session

from outbox.relay import Answer, Cancel
from outbox.store import CLAIM_COLUMNS, Claim
from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from tests.support.races import WAIT, meeting, one_pending_digest, race
from worker.bootstrap import Services
from worker.reminders import digest_store, preference_store
from worker.reminders.digest_slots import DIGEST_KIND, DigestSchedule, digest_key
from worker.reminders.preferences import PreferenceEdit

pytestmark = pytest.mark.postgres

SLOT = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)  # 18:00 in Berlin
KEY = digest_key(1, SLOT)
NEXT_SLOT = SLOT + timedelta(days=1)
SCHEDULE = DigestSchedule(clock_time(18, 0))
BERLIN = ZoneInfo("Europe/Berlin")
TASKS = 20


def with_a_digest_at_18(services: Services, clock: ManualClock) -> None:
    """User 1 in Berlin, with a digest at 18:00."""
    add_user(services, 1, email="ada@example.com", timezone="Europe/Berlin")
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, services.host, 1, PreferenceEdit(digest="18:00"), now=clock.now()
        )


@pytest.fixture
def services(postgres_engine: Engine, clock: ManualClock, channel: RecordingChannel) -> Services:
    """User 1 in Berlin with a digest at 18:00 and 20 tasks due after it, scanned."""
    built = make_services(postgres_engine, clock, channel, relay_batch=10)
    with_a_digest_at_18(built, clock)
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
    reports = race([meeting(services.relay(), barrier) for _ in range(2)])
    assert all(report.claimed > 0 for report in reports)  # both took part
    assert sum(report.counts.get("cancelled", 0) for report in reports) == TASKS
    assert channel.sent == []

    members = one_pending_digest(services.engine, KEY)
    with Session(services.engine) as session:
        reminders = session.execute(
            select(OutboxRow.id, OutboxRow.status, OutboxRow.last_error).where(
                OutboxRow.kind != DIGEST_KIND
            )
        ).all()
    assert Counter(member.id for member in members) == Counter(r.id for r in reminders)
    assert {(r.status, r.last_error) for r in reminders} == {(Status.CANCELLED, f"in digest {KEY}")}

    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    (sent,) = channel.sent
    assert sent.key == KEY
    assert sorted(line["task_id"] for line in sent.document["reminders"]) == list(
        range(1, TASKS + 1)
    )


def test_a_digest_being_joined_is_not_claimed_until_the_member_is_in(
    postgres_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """While one relay merges a reminder into a due digest (its transaction still open),
    another relay's claim skips that digest; once the merge commits, the digest goes out
    with the new member in it. Without the lock the second relay would send the digest
    without it, and the member's own row would already say ``in digest``."""
    services = make_services(postgres_engine, clock, channel, relay_batch=1)
    with_a_digest_at_18(services, clock)
    add_task(services, 1, 1, SLOT + timedelta(hours=2))
    services.scan()
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}  # the digest exists
    add_task(services, 2, 1, SLOT + timedelta(hours=24, minutes=-1))  # its moment: 16:59
    clock.set(SLOT - timedelta(minutes=1))
    services.scan()
    clock.set(SLOT)

    merged, claimed_by_other = threading.Event(), threading.Event()
    first = services.relay()
    prepare = first.prepare

    def merging(session: Session, claims: Sequence[Claim]) -> Mapping[int, Answer]:
        answers = prepare(session, claims)
        if not merged.is_set():
            assert [claim.kind for claim in claims] == ["due_soon"]
            merged.set()
            assert claimed_by_other.wait(WAIT)  # commit only after the other relay claimed
        return answers

    first.prepare = merging
    reports = []
    thread = threading.Thread(target=lambda: reports.append(first.relay_until_idle()))
    thread.start()
    assert merged.wait(WAIT)
    other = services.relay().relay_until_idle()
    claimed_by_other.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert other.claimed == 0  # the digest was locked, the reminder claimed by the first
    # The first relay, its merge committed, claims on and sends the digest it joined.
    assert reports[0].counts == {"cancelled": 1, "delivered": 1}
    (sent,) = channel.sent
    assert sent.key == KEY
    assert [line["task_id"] for line in sent.document["reminders"]] == [1, 2]


def test_a_member_merging_while_its_digest_is_being_sent_goes_to_the_next_slot(
    postgres_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A relay has claimed and re-checked the digest and not committed yet; a merge into it
    then waits for that commit, finds the digest claimed and joins the next slot's digest.
    Reading the digest unlocked, it would see it still pending, join it and be lost."""
    services = make_services(postgres_engine, clock, channel, relay_batch=1)
    with_a_digest_at_18(services, clock)
    add_task(services, 1, 1, SLOT + timedelta(hours=2))
    add_task(services, 2, 1, SLOT + timedelta(hours=3))
    services.scan()
    with services.session_factory.begin() as session:  # task 2's reminder waits, for now
        session.execute(
            update(OutboxRow)
            .where(OutboxRow.subject_id == 2)
            .values(available_at=SLOT + timedelta(hours=1))
        )
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    with services.session_factory() as session:
        member = session.execute(select(*CLAIM_COLUMNS).where(OutboxRow.subject_id == 2)).one()
    waiting = Claim(*member)
    clock.set(SLOT)

    rechecked, merging = threading.Event(), threading.Event()
    sender = services.relay()
    prepare = sender.prepare

    def holding(session: Session, claims: Sequence[Claim]) -> Mapping[int, Answer]:
        answers = prepare(session, claims)
        rechecked.set()
        assert merging.wait(WAIT)
        wait_for_a_lock_wait(services.engine)
        return answers

    sender.prepare = holding
    answers: list[Cancel] = []

    def merge() -> None:
        with services.session_factory.begin() as session:
            answers.append(
                digest_store.merge_into_digest(
                    session, waiting, 1, SLOT, schedule=SCHEDULE, zone=BERLIN, now=clock.now()
                )
            )

    merger = threading.Thread(target=merge)
    sending = threading.Thread(target=sender.relay_until_idle)
    sending.start()
    assert rechecked.wait(WAIT)
    merger.start()
    merging.set()
    for thread in (sending, merger):
        thread.join(WAIT)
        assert not thread.is_alive()
    assert answers == [Cancel(f"in digest {digest_key(1, NEXT_SLOT)}")]
    (sent,) = channel.sent
    assert [line["task_id"] for line in sent.document["reminders"]] == [1]


def wait_for_a_lock_wait(engine: Engine) -> None:
    """Return once some session of this database waits for a row lock."""
    deadline = time.monotonic() + WAIT
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(query).scalar_one():
                return
    raise AssertionError("no session waited for a lock")
