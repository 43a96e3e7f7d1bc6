"""The server-aligned clock, against a fake server clock and a fake monotonic clock: no sleeps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from outbox.server_clock import Offset, Runner, ServerClock
from tests.support.clock import T0

SECOND = timedelta(seconds=1)
MICROSECOND = timedelta(microseconds=1)


@dataclass
class Timeline:
    """One true time, and the clocks that read it: the server's, this host's wall clock (off
    by ``local_skew``, stepped at will) and the monotonic clock, which only moves forward.

    A read of the server's clock takes ``outbound`` seconds to reach the server and ``inbound``
    to come back; ``down`` makes the server unreachable.
    """

    instant: float = 5_000.0  # the monotonic clock; the true time is T0 at 5000
    local_skew: timedelta = timedelta(0)
    server_step: timedelta = timedelta(0)
    outbound: float = 0.001
    inbound: float = 0.001
    trips: list[tuple[float, float]] = field(default_factory=list)  # scripted (out, in) per read
    down: bool = False
    connections: int = 0
    reads: int = 0

    def true(self) -> datetime:
        """The true time now."""
        return T0 + timedelta(seconds=self.instant - 5_000.0)

    def server(self) -> datetime:
        """The server's clock now (the true time, unless it was stepped)."""
        return self.true() + self.server_step

    def monotonic(self) -> float:
        """The monotonic clock."""
        return self.instant

    def advance(self, seconds: float) -> None:
        """Let time pass."""
        self.instant += seconds

    def now(self) -> datetime:
        """This host's wall clock (the `Clock` protocol)."""
        return self.true() + self.local_skew

    @contextmanager
    def connect(self) -> Iterator[Callable[[], datetime]]:
        """A connection to the server; each read takes a round trip."""
        if self.down:
            raise ConnectionError("connection refused")
        self.connections += 1

        def read() -> datetime:
            outbound, inbound = self.trips.pop(0) if self.trips else (self.outbound, self.inbound)
            self.advance(outbound)
            self.reads += 1
            answer = self.server()
            self.advance(inbound)
            return answer

        yield read


class Later:
    """A runner that keeps the measurements it is given until the test runs them."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[], None]] = []

    def __call__(self, measure: Callable[[], None]) -> None:
        self.waiting.append(measure)

    def run_all(self) -> None:
        """Run the measurements started so far."""
        waiting, self.waiting = self.waiting, []
        for measure in waiting:
            measure()


def close(value: timedelta, expected: timedelta, within: timedelta = MICROSECOND) -> bool:
    """Whether two durations differ by at most ``within``."""
    return abs(value - expected) <= within


def at_once(measure: Callable[[], None]) -> None:
    """A runner that measures in the caller's thread."""
    measure()


def clock_on(
    timeline: Timeline, *, run: Runner = at_once, samples: int = 1, **options: Any
) -> ServerClock:
    """A server clock reading ``timeline``, measuring in the caller's thread unless told."""
    return ServerClock(
        timeline.connect,
        local=timeline,
        monotonic=timeline.monotonic,
        run=run,
        samples=samples,
        **options,
    )


def test_the_first_now_measures_the_offset_and_answers_with_the_servers_time() -> None:
    """A host 150 s ahead measures an offset of -150 s and tells the server's time, not its own."""
    timeline = Timeline(local_skew=150 * SECOND)
    clock = clock_on(timeline)

    now = clock.now()

    assert clock.offset is not None
    assert abs(clock.offset.offset - (-150 * SECOND)) <= clock.offset.error
    assert abs(now - timeline.server()) <= clock.offset.error
    assert timeline.connections == 1


def test_between_measurements_time_follows_the_monotonic_clock_not_the_wall_clock() -> None:
    """A step of this host's wall clock changes nothing; the time moves as the monotonic one."""
    timeline = Timeline(local_skew=-150 * SECOND)
    clock = clock_on(timeline)
    first = clock.now()

    timeline.local_skew += timedelta(hours=1)  # someone sets the host's clock
    timeline.advance(10)

    assert close(clock.now() - first, 10 * SECOND)
    assert timeline.connections == 1


def test_it_measures_again_after_the_interval_and_never_makes_the_caller_wait() -> None:
    """After the interval `now` starts a measurement and answers from the last one until it ends."""
    timeline = Timeline(local_skew=20 * SECOND)
    later = Later()
    clock = clock_on(timeline, run=later, interval=60 * SECOND)
    clock.now()  # the first measurement is always made at once
    timeline.advance(59)
    clock.now()
    assert later.waiting == []

    timeline.advance(2)
    timeline.server_step = 3 * SECOND  # the server's clock was stepped meanwhile (its NTP)
    answered = clock.now()
    clock.now()  # a second call while it runs starts no second measurement

    assert len(later.waiting) == 1
    assert abs(answered - timeline.true()) < 0.01 * SECOND  # the last offset, not the new one
    later.run_all()
    assert abs(clock.now() - timeline.server()) < 0.01 * SECOND
    assert clock.offset is not None
    assert abs(clock.offset.offset - (-17 * SECOND)) < 0.01 * SECOND
    assert timeline.connections == 2


@pytest.mark.parametrize(
    ("outbound", "inbound"), [(0.1, 0.0), (0.0, 0.1), (0.09, 0.01), (0.05, 0.05)]
)
def test_the_error_is_at_most_half_the_round_trip(outbound: float, inbound: float) -> None:
    """However the round trip splits between the ways, the time is off by at most half of it."""
    timeline = Timeline(local_skew=-150 * SECOND, outbound=outbound, inbound=inbound)
    clock = clock_on(timeline)

    now = clock.now()

    assert clock.offset is not None
    assert close(clock.offset.round_trip, 0.1 * SECOND)
    assert clock.offset.error == clock.offset.round_trip / 2
    tolerance = clock.offset.error + MICROSECOND
    assert abs(now - timeline.server()) <= tolerance
    assert abs(clock.offset.offset - 150 * SECOND) <= tolerance


def test_of_several_samples_the_shortest_round_trip_is_kept() -> None:
    """Three reads on one connection: the one with the shortest round trip sets the offset."""
    timeline = Timeline(trips=[(0.2, 0.1), (0.01, 0.02), (0.1, 0.1)])
    clock = clock_on(timeline, samples=3)

    clock.now()

    assert clock.offset is not None
    assert close(clock.offset.round_trip, 0.03 * SECOND)
    assert (timeline.connections, timeline.reads) == (1, 3)


def test_a_round_trip_too_long_is_refused_unless_there_is_no_offset_yet() -> None:
    """A slow first measurement is used (nothing better is known); a slow later one is not."""
    timeline = Timeline(outbound=1.0, inbound=1.0)
    clock = clock_on(timeline, max_round_trip=SECOND, retry=5 * SECOND)
    clock.now()
    slow = clock.offset
    timeline.outbound = timeline.inbound = 0.001
    timeline.trips = [(0.8, 0.8)]
    timeline.advance(61)

    with capture_logs() as logs:
        clock.now()
    assert clock.offset == slow
    assert [entry["event"] for entry in logs] == ["clock_offset_unmeasured"]
    timeline.advance(5)
    clock.now()  # tried again after the retry interval: a quick trip, accepted
    assert clock.offset is not None and clock.offset.round_trip < 0.01 * SECOND


def test_an_unreachable_database_keeps_the_last_offset_and_says_so_once() -> None:
    """While the server cannot be read, the last offset stays in force; one warning, then one
    line when a measurement succeeds again."""
    timeline = Timeline(local_skew=150 * SECOND)
    clock = clock_on(timeline, retry=5 * SECOND)
    clock.now()
    measured = clock.offset
    timeline.down = True

    with capture_logs() as logs:
        for _ in range(3):
            timeline.advance(61)
            assert abs(clock.now() - timeline.server()) < 0.01 * SECOND
        timeline.down = False
        timeline.advance(61)
        clock.now()

    assert clock.offset == measured
    assert timeline.connections == 2  # measured again once the server answered
    events = [(entry["event"], entry["log_level"]) for entry in logs]
    assert events == [("clock_offset_unmeasured", "warning"), ("clock_offset", "info")]


def test_the_first_now_raises_while_the_server_was_never_read() -> None:
    """With no offset known there is no time to give: the reading's error reaches the caller."""
    timeline = Timeline(down=True)
    clock = clock_on(timeline)

    with pytest.raises(ConnectionError):
        clock.now()
    timeline.down = False
    assert abs(clock.now() - timeline.server()) < 0.01 * SECOND


def test_an_offset_beyond_the_limit_warns_once_and_every_measurement_is_reported() -> None:
    """Crossing the limit logs one warning, not one per measurement; coming back logs one line;
    ``on_measure`` hears of every measurement (the metric)."""
    timeline = Timeline(local_skew=150 * SECOND)
    heard: list[Offset] = []
    clock = clock_on(timeline, max_offset=2 * SECOND, on_measure=heard.append)

    with capture_logs() as logs:
        for _ in range(3):
            clock.now()
            timeline.advance(61)
        timeline.local_skew = 0.5 * SECOND  # NTP fixed the host
        for _ in range(2):
            clock.now()
            timeline.advance(61)

    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [entry["event"] for entry in warnings] == ["clock_offset_high"]
    assert warnings[0]["offset_seconds"] == pytest.approx(-150, abs=0.01)
    assert [entry["event"] for entry in logs if entry["log_level"] == "info"] == ["clock_offset"]
    assert len(heard) == 5
    assert close(heard[0].offset, -150 * SECOND, within=0.01 * SECOND)
    assert close(heard[-1].offset, -0.5 * SECOND, within=0.01 * SECOND)
