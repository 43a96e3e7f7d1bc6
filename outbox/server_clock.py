"""A clock that follows the database server's: this host's offset to it, measured and applied.

Every time the relay and the scan compare (a row's ``available_at``, a lease's expiry, the due
window) was written by some host, so all hosts must read one clock: the database server's.
`ServerClock` measures this process's offset to it from a round trip (the server's reading
lies between the local send and receive instants, so taking it at their midpoint is off by at
most half the round trip), then advances with the monotonic clock, which a step of the local
wall clock does not move, and measures again every ``interval`` without making a caller wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine

from outbox.clock import Clock, SystemClock, require_utc

log = structlog.get_logger("outbox.server_clock")

#: Opens a connection to the reference clock and yields a function that reads it once.
Connect = Callable[[], AbstractContextManager[Callable[[], datetime]]]
#: Runs a measurement away from the caller of `ServerClock.now`.
Runner = Callable[[Callable[[], None]], None]


@dataclass(frozen=True)
class Offset:
    """How far the reference clock is ahead of this host's wall clock (negative: behind)."""

    offset: timedelta
    error: timedelta  # the offset is right to within this: half the round trip
    round_trip: timedelta


#: The offset of a database whose clock is this host's own (SQLite: a local file).
SAME_CLOCK = Offset(timedelta(0), timedelta(0), timedelta(0))


@dataclass(frozen=True)
class _Anchor:
    """The reference clock's time at one instant of the monotonic clock."""

    server: datetime
    at: float

    def time_at(self, instant: float) -> datetime:
        return self.server + timedelta(seconds=instant - self.at)


def in_thread(measure: Callable[[], None]) -> None:
    """Run ``measure`` in a daemon thread of its own."""
    threading.Thread(target=measure, name="clock-offset", daemon=True).start()


class ServerClock:
    """Now on the reference clock: the last measurement, advanced with the monotonic clock.

    The first `now` measures and waits for it (and raises the reading's error while none has
    succeeded: there is no time to give). Later calls never wait: once ``interval`` has passed
    they start a measurement on ``run`` and answer from the last one; a failed measurement
    keeps the last offset and is tried again after ``retry``. A measurement whose round trip is
    longer than ``max_round_trip`` is refused (unless there is none yet): its error would be
    larger than the drift of the monotonic clock since the last one.
    """

    def __init__(
        self,
        connect: Connect,
        *,
        local: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        run: Runner = in_thread,
        interval: timedelta = timedelta(seconds=60),
        retry: timedelta = timedelta(seconds=5),
        max_round_trip: timedelta = timedelta(seconds=1),
        max_offset: timedelta = timedelta(seconds=2),
        samples: int = 3,
        on_measure: Callable[[Offset], None] | None = None,
    ) -> None:
        self._connect = connect
        self._local = local or SystemClock()
        self._monotonic = monotonic
        self._run = run
        self._interval = interval.total_seconds()
        self._retry = retry.total_seconds()
        self._max_round_trip = max_round_trip
        self._max_offset = max_offset
        self._samples = max(1, samples)
        self._on_measure = on_measure
        self._lock = threading.Lock()  # guards the fields below
        self._first = threading.Lock()  # one first measurement at a time; the others wait
        self._anchor: _Anchor | None = None
        self._offset: Offset | None = None
        self._due = 0.0  # monotonic instant of the next measurement
        self._measuring = False
        self._failing = False
        self._over = False

    @property
    def offset(self) -> Offset | None:
        """The last offset accepted, or None before the first measurement."""
        return self._offset

    def now(self) -> datetime:
        """The reference clock's time now, in UTC."""
        if self._anchor is None:
            self._measure_first()
        elif self._monotonic() >= self._due:
            self._start_measuring()
        anchor = self._anchor
        assert anchor is not None  # set by the first measurement, or it raised
        return anchor.time_at(self._monotonic())

    def _measure_first(self) -> None:
        with self._first:
            if self._anchor is None:
                self._accept(*self._measure())

    def _start_measuring(self) -> None:
        with self._lock:
            if self._measuring:
                return
            self._measuring = True
        self._run(self._measure_again)

    def _measure_again(self) -> None:
        try:
            measured = self._measure()
        except Exception as error:  # the database may be down: keep the last offset
            self._failed(_first_line(error))
        else:
            self._accept(*measured)
        finally:
            with self._lock:
                self._measuring = False

    def _measure(self) -> tuple[_Anchor, Offset]:
        """Read the reference clock ``samples`` times; keep the reading of the shortest trip."""
        best: tuple[float, float, datetime, datetime] | None = None
        with self._connect() as read:
            for _ in range(self._samples):
                sent = self._monotonic()
                local = self._local.now()
                server = require_utc(read())
                trip = self._monotonic() - sent
                if best is None or trip < best[0]:
                    best = (trip, sent, local, server)
        assert best is not None
        trip, sent, local, server = best
        half = timedelta(seconds=trip / 2)
        anchor = _Anchor(server, sent + trip / 2)
        return anchor, Offset(server - (local + half), half, timedelta(seconds=trip))

    def _accept(self, anchor: _Anchor, offset: Offset) -> None:
        first = self._anchor is None
        if not first and offset.round_trip > self._max_round_trip:
            trip, limit = _ms(offset.round_trip), _ms(self._max_round_trip)
            self._failed(f"round trip of {trip} ms, longer than {limit} ms")
            return
        with self._lock:
            self._anchor, self._offset = anchor, offset
            self._due = anchor.at + self._interval
            recovered, self._failing = self._failing, False
        over = abs(offset.offset) > self._max_offset
        fields = {
            "offset_seconds": round(offset.offset.total_seconds(), 6),
            "error_ms": _ms(offset.error),
            "round_trip_ms": _ms(offset.round_trip),
        }
        if over and not self._over:
            limit = self._max_offset.total_seconds()
            log.warning("clock_offset_high", **fields, limit_seconds=limit, corrected=True)
        elif recovered or (self._over and not over):
            log.info("clock_offset", **fields)
        else:  # every minute: the metric shows it
            log.debug("clock_offset", **fields, first=first)
        self._over = over
        if self._on_measure is not None:
            self._on_measure(offset)

    def _failed(self, reason: str) -> None:
        """Keep the last offset, try again after ``retry``; say so once per run of failures."""
        with self._lock:
            self._due = self._monotonic() + self._retry
            first_failure, self._failing = not self._failing, True
        if first_failure:
            kept = None if self._offset is None else _s(self._offset.offset)
            log.warning("clock_offset_unmeasured", reason=reason, kept_offset_seconds=kept)


def database_clock(engine: Engine) -> Connect:
    """Read PostgreSQL's ``clock_timestamp()`` (the time now, not the transaction's start)
    on a connection of its own, never one a transaction holds."""

    @contextmanager
    def connect() -> Iterator[Callable[[], datetime]]:
        with engine.connect() as connection:

            def read() -> datetime:
                value = connection.exec_driver_sql("SELECT clock_timestamp()").scalar_one()
                assert isinstance(value, datetime)
                return value

            yield read

    return connect


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _ms(value: timedelta) -> float:
    return round(value.total_seconds() * 1000, 3)


def _s(value: timedelta) -> float:
    return round(value.total_seconds(), 6)
