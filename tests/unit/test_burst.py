"""The burst rule through the real scan, relay and re-check on SQLite: more than
``REMINDERS_DIGEST_BURST`` reminders held by one quiet window go out, when it ends, as one
digest; at or below it, one by one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from outbox.table import OutboxRow, Status
from tests.support import bursts
from tests.support.bursts import END, KEY
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import make_services
from worker.reminders import preference_store
from worker.reminders.digest_slots import DIGEST_KIND
from worker.reminders.digest_store import DigestMemberRow
from worker.reminders.preferences import PreferenceEdit


def listed(sent_document: Mapping[str, Any]) -> list[str]:
    """The reminder keys a digest message lists."""
    lines = sent_document["reminders"]
    return sorted(key for line in lines for key in line["keys"])


@pytest.mark.parametrize("batch", [100, 2])
@pytest.mark.parametrize("relay_at_night", [True, False])
def test_five_held_reminders_go_out_as_one_digest_when_the_window_ends(
    sqlite_engine: Engine,
    clock: ManualClock,
    channel: RecordingChannel,
    batch: int,
    relay_at_night: bool,
) -> None:
    """Five reminders in 22:00-07:00: nothing before 07:00, then one digest listing all five
    and none alone, whether the relay deferred them at night or claims them only at 07:00,
    and whether it claims them in one batch or in three."""
    services = make_services(sqlite_engine, clock, channel, relay_batch=batch)
    bursts.held_overnight(services, clock, 5, relay_at_night=relay_at_night)
    keys = sorted(bursts.statuses(services))
    clock.set(END - timedelta(seconds=1))
    assert services.relay().relay_until_idle().counts.get("delivered") is None
    assert channel.sent == []
    clock.set(END)
    report = services.relay().relay_until_idle()
    assert report.counts == {"cancelled": 5, "delivered": 1}
    (sent,) = channel.sent
    assert (sent.key, sent.recipient) == (KEY, "ada@example.com")
    assert listed(sent.document) == keys
    assert set(bursts.reasons(services).values()) == {f"in digest {KEY}"}
    with services.session_factory() as session:
        digest = session.execute(
            select(OutboxRow.status, OutboxRow.subject_at, OutboxRow.delivered_at).where(
                OutboxRow.kind == DIGEST_KIND
            )
        ).one()
        links = session.scalars(select(DigestMemberRow.member_key)).all()
    assert tuple(digest) == (Status.DELIVERED, END, END)
    assert sorted(links) == keys
    clock.advance(timedelta(hours=2))
    services.scan()
    assert services.relay().relay_until_idle().counts == {}
    assert len(channel.sent) == 1


def test_three_held_reminders_with_a_threshold_of_three_go_out_alone(
    sqlite_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Three is not more than three: each goes out alone at 07:00, no digest is made."""
    services = make_services(sqlite_engine, clock, channel, digest_burst=3)
    bursts.held_overnight(services, clock, 3)
    clock.set(END)
    assert services.relay().relay_until_idle().counts == {"delivered": 3}
    assert sorted(m.key for m in channel.sent) == sorted(bursts.statuses(services))
    assert all(m.ready_at == END for m in channel.sent)
    with services.session_factory() as session:
        assert (
            session.scalars(select(OutboxRow.id).where(OutboxRow.kind == DIGEST_KIND)).all() == []
        )


def test_the_threshold_comes_from_the_settings(
    sqlite_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """``REMINDERS_DIGEST_BURST=5``: five held go alone; with 4, the same five make a digest
    (the default, 3, is the first test's)."""
    services = make_services(sqlite_engine, clock, channel, digest_burst=5)
    bursts.held_overnight(services, clock, 5)
    clock.set(END)
    assert services.relay().relay_until_idle().counts == {"delivered": 5}
    assert DIGEST_KIND not in {m.key.split("-")[0] for m in channel.sent}


def test_a_user_who_refused_digests_gets_the_burst_one_by_one(
    sqlite_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """An opt-out of ``digest`` would cancel the burst digest, and its members with it: the
    released reminders go alone instead."""
    services = make_services(sqlite_engine, clock, channel)
    bursts.held_overnight(services, clock, 5)
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(
            session,
            services.host,
            1,
            PreferenceEdit(unsubscribe=True, kinds=DIGEST_KIND),
            now=clock.now(),
        )
    clock.set(END)
    assert services.relay().relay_until_idle().counts == {"delivered": 5}


def test_a_released_reminder_after_the_digest_went_out_goes_alone(
    sqlite_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """A reminder of the same night claimed after its burst digest was sent (it failed its
    first claim and waited) is not lost in a digest that went out: it goes alone, once."""
    services = make_services(sqlite_engine, clock, channel)
    bursts.held_overnight(services, clock, 5)
    with services.session_factory.begin() as session:
        late = session.scalars(select(OutboxRow).order_by(OutboxRow.id.desc()).limit(1)).one()
        late.available_at = END + timedelta(minutes=5)
        late_key = late.idempotency_key
    clock.set(END)
    assert services.relay().relay_until_idle().counts == {"cancelled": 4, "delivered": 1}
    (digest,) = channel.sent
    assert late_key not in listed(digest.document)
    clock.set(END + timedelta(minutes=5))
    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    assert channel.sent[1].key == late_key
