"""The burst rule against real PostgreSQL: relays racing on the reminders one quiet window
released.

Ten reminders of user 1 are held to 07:00 (`tests.support.bursts`). The relays meet at a
`threading.Barrier` once each holds its claimed batch, so both count and merge at once: each
sees the other's rows still live (their claims not committed), both make the burst, and the
first to insert the digest row holds its key until it commits. Nothing sleeps.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outbox.relay import Answer, Relay
from outbox.store import Claim
from outbox.table import OutboxRow, Status
from tests.support import bursts
from tests.support.bursts import END, KEY
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import make_services
from worker.reminders.digest_slots import DIGEST_KIND
from worker.reminders.digest_store import DigestMemberRow

pytestmark = pytest.mark.postgres

HELD = 10
#: More than either relay's half, less than the ten: only counting both halves makes a burst.
THRESHOLD = 6
WAIT = 30.0


def meeting(relay: Relay, barrier: threading.Barrier, *, once: bool) -> Relay:
    """``relay``, its first re-check held until the other relay's reaches the barrier;
    ``once``: it stops after that round."""
    prepare = relay.prepare
    met: list[bool] = []

    def prepared(session: Session, claims: Sequence[Claim]) -> Mapping[int, Answer]:
        if not met:
            met.append(True)
            barrier.wait(WAIT)
            if once:
                relay.stop.set()
        return prepare(session, claims)

    relay.prepare = prepared
    return relay


def race(relays: Sequence[Relay]) -> None:
    """Run the relays in threads until each is idle or stopped."""
    errors: list[BaseException] = []

    def run(relay: Relay) -> None:
        try:
            relay.relay_until_idle()
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
        assert not thread.is_alive()
    assert not errors, errors


def test_two_relays_racing_on_a_released_night_make_one_digest_with_each_once(
    postgres_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Each relay holds half the ten released reminders, neither more than the threshold
    (6): both count all ten, one digest row takes every reminder once, none is sent
    alone; it goes out at 07:00 listing all ten."""
    services = make_services(
        postgres_engine, clock, channel, relay_batch=HELD // 2, digest_burst=THRESHOLD
    )
    bursts.held_overnight(services, clock, HELD)
    keys = sorted(bursts.statuses(services))
    clock.set(END)
    barrier = threading.Barrier(2)
    race([meeting(services.relay(), barrier, once=True) for _ in range(2)])
    services.stop.clear()  # the relays share the services' stop
    assert channel.sent == []
    with Session(services.engine) as session:
        digests = session.execute(
            select(OutboxRow.id, OutboxRow.idempotency_key, OutboxRow.status).where(
                OutboxRow.kind == DIGEST_KIND
            )
        ).all()
        members = session.execute(
            select(DigestMemberRow.member_key, DigestMemberRow.digest_id)
        ).all()
    ((digest_id, key, status),) = digests
    assert (key, status) == (KEY, Status.PENDING)
    assert sorted(member for member, _ in members) == keys
    assert {digest for _, digest in members} == {digest_id}
    assert set(bursts.reasons(services).values()) == {f"in digest {KEY}"}

    assert services.relay().relay_until_idle().counts == {"delivered": 1}
    (sent,) = channel.sent
    assert sent.key == KEY
    assert sorted(k for line in sent.document["reminders"] for k in line["keys"]) == keys


def test_relays_running_freely_on_a_released_night_deliver_each_reminder_once(
    postgres_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Two relays claiming two rows a round, one racing the other to the digest row: every
    released reminder is delivered once, alone or in the one digest, never both."""
    services = make_services(postgres_engine, clock, channel, relay_batch=2)
    bursts.held_overnight(services, clock, HELD)
    keys = sorted(bursts.statuses(services))
    clock.set(END)
    barrier = threading.Barrier(2)
    race([meeting(services.relay(), barrier, once=False) for _ in range(2)])
    services.relay().relay_until_idle()
    delivered: Counter[str] = Counter()
    for message in channel.sent:
        if message.key == KEY:
            delivered.update(k for line in message.document["reminders"] for k in line["keys"])
        else:
            delivered[message.key] += 1
    assert sorted(delivered) == keys
    assert set(delivered.values()) == {1}
    assert [m.key for m in channel.sent].count(KEY) <= 1
