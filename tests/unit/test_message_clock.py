"""Ticks and delayed messages judged on the server clock, on the in-process StubBroker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from periodiq import PeriodiqMiddleware

from outbox.clock import Clock
from tests.support.clock import ManualClock
from worker.message_clock import (
    ETA_SERVER,
    SCHEDULED_AT_SERVER,
    TOLERATED_SKEW,
    ServerTimedDelays,
    ServerTimedTicks,
)
from worker.settings import parse_cron

QUEUE = "ticks"


class BrokenClock:
    """A clock that cannot be read (the database unreachable before any measurement)."""

    def now(self) -> datetime:
        """Fail as an unreachable database does."""
        raise ConnectionError("connection refused")


@dataclass
class Ticks:
    """A StubBroker with the tick middleware on ``clock``, a periodic actor and a worker."""

    broker: StubBroker
    clock: ManualClock
    ran: list[str]
    actor: Any

    @property
    def middleware(self) -> ServerTimedTicks:
        """The broker's tick middleware."""
        return next(m for m in self.broker.middleware if isinstance(m, ServerTimedTicks))

    def process(self, **options: Any) -> list[str]:
        """Hand the worker one message with ``options`` as another process (the scheduler) sent
        it, and wait until it is done; return what the actor ran meanwhile."""
        before = len(self.ran)
        message = self.actor.message_with_options(**options)
        self.broker.queues[QUEUE].put(message.encode())  # enqueued elsewhere: no local hook
        self.broker.join(QUEUE, timeout=10_000)
        return self.ran[before:]


def stamp(moment: datetime) -> str:
    """A time as periodiq writes ``scheduled_at`` (pendulum's ISO 8601 with its offset)."""
    return moment.replace(microsecond=0).isoformat()


@contextmanager
def ticks_on(clock: Clock) -> Iterator[Ticks]:
    """A broker whose tick middleware reads ``clock``, with one periodic actor and a worker."""
    broker = StubBroker()
    broker.add_middleware(ServerTimedTicks(clock, skip_delay=30))
    ran: list[str] = []

    @dramatiq.actor(broker=broker, queue_name=QUEUE, periodic=parse_cron("* * * * *"))
    def tick() -> None:
        ran.append("tick")

    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        manual = clock if isinstance(clock, ManualClock) else ManualClock()
        yield Ticks(broker, manual, ran, tick)
    finally:
        worker.stop()
        broker.close()


@pytest.fixture
def ticks() -> Iterator[Ticks]:
    """Ticks judged on a server clock that reads the real time now."""
    with ticks_on(ManualClock(datetime.now(UTC))) as started:
        yield started


def test_the_middleware_is_periodiqs_so_periodic_actors_stay_valid(ticks: Ticks) -> None:
    """`periodic=` is accepted: the broker has a `PeriodiqMiddleware` (ours is one)."""
    assert any(isinstance(m, PeriodiqMiddleware) for m in ticks.broker.middleware)
    assert "periodic" in ticks.actor.options


def test_a_tick_from_periodiq_is_stamped_with_the_servers_time(ticks: Ticks) -> None:
    """The scheduler's process adds the server clock's time next to periodiq's own stamp."""
    local = stamp(ticks.clock.now() - timedelta(minutes=2))  # the scheduler's host is behind
    message = ticks.actor.message_with_options(scheduled_at=local)

    ticks.middleware.before_enqueue(ticks.broker, message, None)

    assert message.options[SCHEDULED_AT_SERVER] == ticks.clock.now().isoformat()
    assert message.options["scheduled_at"] == local


def test_a_worker_whose_clock_is_minutes_off_runs_every_fresh_tick(ticks: Ticks) -> None:
    """periodiq's stamp 150 s off the worker's clock (which would drop it) does not matter:
    the server stamp says the tick is fresh."""
    server = ticks.clock.now()
    for skew in (-150, 150):
        scheduler = stamp(server + timedelta(seconds=skew))
        ran = ticks.process(scheduled_at=scheduler, **{SCHEDULED_AT_SERVER: server.isoformat()})
        assert ran == ["tick"], skew


def test_a_tick_older_than_the_skip_delay_on_the_server_clock_is_skipped(ticks: Ticks) -> None:
    """A tick that waited 31 s (server clock) is dropped, one that waited 29 s runs."""
    now = ticks.clock.now()
    for waited, expected in ((29, ["tick"]), (31, [])):
        sent = (now - timedelta(seconds=waited)).isoformat()
        ran = ticks.process(scheduled_at=stamp(now), **{SCHEDULED_AT_SERVER: sent})
        assert ran == expected, waited


def test_a_tick_without_the_server_stamp_is_given_the_tolerated_skew(ticks: Ticks) -> None:
    """A scheduler that could not read its clock sends periodiq's stamp only: it is judged with
    the tolerated skew added, so no worker drops it for its scheduler's clock."""
    now = ticks.clock.now()
    limit = timedelta(seconds=30) + TOLERATED_SKEW
    inside = ticks.process(scheduled_at=stamp(now - limit + timedelta(seconds=5)))
    beyond = ticks.process(scheduled_at=stamp(now - limit - timedelta(seconds=5)))
    assert (inside, beyond) == (["tick"], [])


def test_a_wake_up_sent_by_hand_always_runs(ticks: Ticks) -> None:
    """A message without ``scheduled_at`` is not a tick: it runs, however old."""
    assert ticks.process() == ["tick"]


def test_a_worker_that_cannot_read_its_clock_runs_the_tick() -> None:
    """With no time to judge by, the tick runs (a scan is idempotent) and is not stamped."""
    with ticks_on(BrokenClock()) as ticks:
        old = stamp(datetime.now(UTC) - timedelta(hours=1))
        assert ticks.process(scheduled_at=old) == ["tick"]
        message = ticks.actor.message_with_options(scheduled_at=old)
        ticks.middleware.before_enqueue(ticks.broker, message, None)
        assert SCHEDULED_AT_SERVER not in message.options


def test_a_delayed_message_is_due_at_its_time_on_the_server_clock() -> None:
    """Sent with a 5 s delay from a host 150 s ahead, a message is held about 5 s by a consumer
    150 s behind, not 305 s: the due time is re-expressed on the consumer's wall clock."""
    server = datetime.now(UTC)
    sender = ServerTimedDelays(ManualClock(server))
    consumer = ServerTimedDelays(ManualClock(server))
    message: dramatiq.Message[Any] = dramatiq.Message(QUEUE, "tick", (), {}, {})
    sender.before_enqueue(None, message, 5_000)
    message.options["eta"] = current_millis() + 150_000 + 5_000  # the sender's wall clock

    consumer.before_delay_message(None, message)

    assert ETA_SERVER not in message.options
    assert abs(message.options["eta"] - (current_millis() + 5_000)) < 1_000


def test_a_message_without_delay_is_left_alone() -> None:
    """Only delayed messages carry the server's due time."""
    delays = ServerTimedDelays(ManualClock(datetime.now(UTC)))
    message: dramatiq.Message[Any] = dramatiq.Message(QUEUE, "tick", (), {}, {})
    delays.before_enqueue(None, message, None)
    delays.before_delay_message(None, message)
    assert message.options == {}
