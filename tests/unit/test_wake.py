"""The wake-up of a worker process (`worker.wake`): when it relays, how long it sleeps, and
that its thread outlives failures and stops when told."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from outbox.report import RelayReport
from tests.support.clock import T0, ManualClock
from worker.wake import HELD, PAST_THE_MOMENT, RECHECK, WakeUp

WAIT = 10.0  # seconds: the longest any condition below is waited for


def report(claimed: int = 0, *, out_of_budget: bool = False) -> RelayReport:
    """A relay run's report with ``claimed`` rows delivered."""
    return RelayReport(
        counts=Counter({"delivered": claimed} if claimed else {}), out_of_budget=out_of_budget
    )


class Database:
    """The next moments the wake-up reads, and the relay runs it asks for."""

    def __init__(self, clock: ManualClock, *moments: datetime) -> None:
        self.clock = clock
        self.moments = sorted(moments)
        self.reads = 0
        self.relays: list[datetime] = []
        self.next_report: RelayReport | None = None

    def next_due(self) -> datetime | None:
        """The earliest moment left."""
        self.reads += 1
        return self.moments[0] if self.moments else None

    def relay(self) -> RelayReport | None:
        """Deliver every moment passed (or answer ``next_report`` once, if set)."""
        self.relays.append(self.clock.now())
        if self.next_report is not None:
            answer, self.next_report = self.next_report, None
            return answer
        due = [m for m in self.moments if m <= self.clock.now()]
        self.moments = [m for m in self.moments if m > self.clock.now()]
        return report(len(due))


def wake_up(database: Database, clock: ManualClock, **options: timedelta) -> WakeUp:
    """A wake-up over ``database`` on ``clock``, never started."""
    return WakeUp(database.next_due, database.relay, clock, threading.Event(), **options)


def test_with_no_row_it_reads_again_after_the_recheck_and_relays_nothing() -> None:
    """Nothing due: sleep one recheck, no relay run."""
    clock = ManualClock()
    database = Database(clock)
    assert wake_up(database, clock).step() == RECHECK.total_seconds()
    assert database.relays == []


def test_it_sleeps_until_just_past_the_next_moment_then_relays_it() -> None:
    """A moment 300 ms ahead: sleep until a millisecond past it; then relay, not before."""
    clock = ManualClock()
    database = Database(clock, T0 + timedelta(milliseconds=300))
    alarm = wake_up(database, clock)
    assert alarm.step() == pytest.approx(0.3 + PAST_THE_MOMENT.total_seconds())
    assert database.relays == []
    clock.advance(timedelta(milliseconds=299))
    alarm.step()
    assert database.relays == []  # never early
    clock.advance(timedelta(milliseconds=2))
    alarm.step()
    assert database.relays == [clock.now()]
    assert database.moments == []


def test_a_moment_far_ahead_is_read_again_every_recheck() -> None:
    """The sleep never exceeds one recheck: a moment planned meanwhile is not missed."""
    clock = ManualClock()
    database = Database(clock, T0 + timedelta(hours=1))
    alarm = wake_up(database, clock)
    assert alarm.step() == RECHECK.total_seconds()
    database.moments.insert(0, T0 + timedelta(milliseconds=1500))
    clock.advance(RECHECK)
    assert alarm.step() == pytest.approx(0.5 + PAST_THE_MOMENT.total_seconds())


def test_after_a_relay_it_sleeps_until_the_next_moment() -> None:
    """Each run is followed by a read: the chain goes on from moment to moment, each relayed
    a millisecond after it, with no step in between."""
    clock = ManualClock()
    moments = [T0 + timedelta(milliseconds=100 * n) for n in range(1, 6)]
    database = Database(clock, *moments)
    alarm = wake_up(database, clock)
    for _ in range(len(moments) + 1):
        clock.advance(timedelta(seconds=alarm.step()))
    assert database.relays == [moment + PAST_THE_MOMENT for moment in moments]
    assert database.moments == []


def test_a_due_row_another_relay_is_claiming_is_looked_at_again_after_held() -> None:
    """The run claimed nothing although a row is due: not at once, after `HELD`."""
    clock = ManualClock()
    database = Database(clock, T0)
    database.next_report = report(0)
    assert wake_up(database, clock).step() == HELD.total_seconds()


def test_a_run_out_of_budget_goes_on_at_once_and_a_failed_one_after_the_recheck() -> None:
    """Work left: no sleep; the database failed (None): one recheck."""
    clock = ManualClock()
    database = Database(clock, T0)
    alarm = wake_up(database, clock)
    database.next_report = report(100, out_of_budget=True)
    assert alarm.step() == 0.0
    database.next_report = None
    database.relay = lambda: None  # type: ignore[method-assign]
    assert alarm.step() == RECHECK.total_seconds()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail after `WAIT`."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_the_thread_outlives_a_failure_wakes_when_poked_and_stops_when_halted() -> None:
    """A read that raises is logged and retried; a poke cuts the sleep; halt joins."""
    clock = ManualClock()
    reads: list[str] = []

    def next_due() -> datetime | None:
        reads.append("read")
        if len(reads) == 1:
            raise RuntimeError("the database said no")
        return None

    alarm = WakeUp(next_due, lambda: None, clock, threading.Event(), recheck=timedelta(hours=1))
    alarm.start()
    try:
        # The failure waits one recheck (an hour here): only a poke brings the next read.
        wait_for(lambda: len(reads) == 1, "the first read")
        alarm.poke()
        wait_for(lambda: len(reads) == 2, "the read after the poke")
        assert alarm.running
        alarm.poke()
        wait_for(lambda: len(reads) == 3, "the read after the second poke")
    finally:
        alarm.halt(timeout=WAIT)
    assert not alarm.running
