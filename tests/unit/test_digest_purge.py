"""Purging the outbox with digests in it (`outbox.admin.purge`, ``reminders outbox purge``):
a purged digest row takes its member links with it (ON DELETE CASCADE, SQLite's foreign
keys on), and a member's own cancelled row purged before its digest goes out loses nothing.

User 1 lives in Europe/Berlin with a digest at 18:00, 17:00 UTC on 28 November 2026 (the
tests' clock starts that day at 12:00 UTC); tasks are due after the slot, so their 24-hour
reminders are past when queued and merge at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update

from outbox import admin
from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import Services
from worker.reminders import preference_store
from worker.reminders.digest_slots import DIGEST_KIND, digest_key
from worker.reminders.digest_store import DigestMemberRow
from worker.reminders.preferences import PreferenceEdit
from worker.reminders.schema import Task

SLOT = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)
KEY = digest_key(1, SLOT)
HOUR = timedelta(hours=1)


@pytest.fixture
def services(sqlite_engine: Engine, clock: ManualClock, channel: RecordingChannel) -> Services:
    """User 1 with a digest at 18:00 and three reminders merged into the 18:00 digest."""
    built = make_services(sqlite_engine, clock, channel)
    add_user(built, 1, email="ada@example.com", timezone="Europe/Berlin")
    with built.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, built.host, 1, PreferenceEdit(digest="18:00"), now=clock.now()
        )
    for task_id in (11, 12, 13):
        add_task(built, task_id, 1, SLOT + HOUR + task_id * timedelta(minutes=1))
    built.scan()
    assert built.relay().relay_until_idle().counts == {"cancelled": 3}
    return built


def later_row(services: Services) -> str:
    """Another user's reminder, sent: a row newer than the digest, which SQLite's purge
    keeps as the newest (`outbox.admin.purge`); its key."""
    add_user(services, 2, email="bob@example.com")
    add_task(services, 99, 2, services.clock.now() + HOUR)
    services.scan()
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    (key,) = (k for k, status in keys(services).items() if status == Status.DELIVERED and "99" in k)
    return key


def links(services: Services) -> list[str]:
    with services.session_factory() as session:
        return sorted(session.scalars(select(DigestMemberRow.member_key)))


def keys(services: Services) -> dict[str, str]:
    with services.session_factory() as session:
        rows = session.execute(select(OutboxRow.idempotency_key, OutboxRow.status))
        return {key: status for key, status in rows}


def test_purging_a_sent_digest_deletes_its_member_links(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Once the digest is delivered and old enough, purge deletes it, its three cancelled
    members and the three links; nothing of it is left."""
    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert len(links(services)) == 3
    newest = later_row(services)
    clock.advance(48 * HOUR)
    assert admin.purge(services.session_factory, 24 * HOUR, clock.now()) == 4
    assert keys(services) == {newest: Status.DELIVERED} and links(services) == []


def test_a_waiting_digest_keeps_its_links_when_its_members_rows_are_purged(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """The members' own rows are cancelled, so purge may delete them before the slot; the
    pending digest and its links stay, and at the slot it lists all three."""
    member_keys = links(services)
    clock.set(SLOT - timedelta(minutes=1))
    assert admin.purge(services.session_factory, timedelta(minutes=30), clock.now()) == 3
    assert keys(services) == {KEY: Status.PENDING}
    assert links(services) == member_keys
    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    (sent,) = channel.sent
    assert sorted(k for line in sent.document["reminders"] for k in line["keys"]) == member_keys


def test_purging_a_cancelled_digest_deletes_its_links(
    services: Services, clock: ManualClock
) -> None:
    """A digest cancelled at its slot (no member left standing) is a finished row too: purge
    deletes it with its links."""
    with services.session_factory.begin() as session:
        session.execute(update(Task).values(completed_at=clock.now()))
    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    later_row(services)
    clock.advance(48 * HOUR)
    assert admin.purge(services.session_factory, 24 * HOUR, clock.now()) == 4
    with services.session_factory() as session:
        assert (
            session.scalars(select(OutboxRow.kind).where(OutboxRow.kind == DIGEST_KIND)).all() == []
        )
    assert links(services) == []


def test_a_purged_members_id_is_not_given_to_a_new_reminder(
    services: Services, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A member that joined after its digest row was made has the highest id; SQLite would
    give that id to the next row once it is purged, and the new reminder would find the old
    member's link and be taken for it: cancelled ``in digest`` but never listed. Purge
    keeps the newest row, so the next reminder gets an id of its own and is listed."""
    add_task(services, 14, 1, SLOT + 2 * HOUR)
    services.scan()
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    clock.set(SLOT - timedelta(minutes=1))
    assert admin.purge(services.session_factory, timedelta(minutes=30), clock.now()) == 3
    add_task(services, 15, 1, SLOT + 3 * HOUR)
    services.scan()
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    clock.set(SLOT)
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    (sent,) = channel.sent
    assert [line["task_id"] for line in sent.document["reminders"]] == [11, 12, 13, 14, 15]
