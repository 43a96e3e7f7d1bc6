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

import pytest
from sqlalchemy import Engine

from tests.support import bursts
from tests.support.bursts import END, KEY
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import make_services
from tests.support.races import meeting, one_pending_digest, race

pytestmark = pytest.mark.postgres

HELD = 10
#: More than either relay's half, less than the ten: only counting both halves makes a burst.
THRESHOLD = 6


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
    assert sorted(member.key for member in one_pending_digest(services.engine, KEY)) == keys
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
