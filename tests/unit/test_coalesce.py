"""Scan requests that come while a scan runs share one more scan, started after all of them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from worker.coalesce import Coalescer, Timing

TIMING = Timing(
    settle=timedelta(seconds=0.25), longest_wait=timedelta(seconds=2), budget=timedelta(seconds=45)
)
WAIT = 10.0  # seconds: a bound on the test's own waits, never reached when it passes


class Clock:
    """A monotonic clock the test moves; the coalescer's waits move it too."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self.during_wait: Callable[[], None] = lambda: None

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        self.during_wait()


class Runs:
    """The runs a coalescer made, in order, each with the number of requests it served; the
    first one blocks until the test releases it."""

    def __init__(self) -> None:
        self.served: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.hand_overs = 0

    def run(self, serving: int) -> None:
        self.served.append(serving)
        if len(self.served) == 1:
            self.started.set()
            assert self.release.wait(WAIT)

    def hand_over(self) -> None:
        self.hand_overs += 1


def first_request(coalescer: Coalescer, runs: Runs) -> tuple[threading.Thread, list[int]]:
    """A request in a thread of its own, its first run held until ``runs.release``."""
    made: list[int] = []
    thread = threading.Thread(
        target=lambda: made.append(coalescer.request(runs.run, runs.hand_over))
    )
    thread.start()
    assert runs.started.wait(WAIT)
    return thread, made


def test_a_request_with_nothing_running_runs_at_once() -> None:
    """Alone, a request is one run serving one request, with no wait."""
    clock, runs = Clock(), Runs()
    runs.release.set()
    coalescer = Coalescer(TIMING, threading.Event(), monotonic=clock, wait=clock.wait)
    assert coalescer.request(runs.run, runs.hand_over) == 1
    assert coalescer.request(runs.run, runs.hand_over) == 1
    assert runs.served == [1, 1] and clock.waits == []


def test_requests_during_a_run_share_one_run_after_it() -> None:
    """Three requests while a run is under way return at once; one run serves all three after
    the first, once they have been quiet for the settle time."""
    clock, runs = Clock(), Runs()
    coalescer = Coalescer(TIMING, threading.Event(), monotonic=clock, wait=clock.wait)
    thread, made = first_request(coalescer, runs)

    assert [coalescer.request(runs.run, runs.hand_over) for _ in range(3)] == [0, 0, 0]
    runs.release.set()
    thread.join(WAIT)

    assert made == [2] and runs.served == [1, 3]
    assert sum(clock.waits) == pytest.approx(0.25)
    assert coalescer.request(runs.run, runs.hand_over) == 1  # nothing runs now: at once


def test_requests_during_the_settle_wait_join_the_same_run() -> None:
    """Requests that arrive while the follow-up waits for quiet are served by it too."""
    clock, runs = Clock(), Runs()
    coalescer = Coalescer(TIMING, threading.Event(), monotonic=clock, wait=clock.wait)
    thread, made = first_request(coalescer, runs)
    coalescer.request(runs.run, runs.hand_over)
    more = iter(range(4))

    def arrive() -> None:
        if next(more, None) is not None:
            assert coalescer.request(runs.run, runs.hand_over) == 0

    clock.during_wait = arrive
    runs.release.set()
    thread.join(WAIT)
    assert made == [2] and runs.served == [1, 5]


def test_a_stream_of_requests_waits_no_longer_than_the_longest_wait() -> None:
    """Requests that never stop coming still get their run within ``longest_wait``."""
    clock, runs = Clock(), Runs()
    coalescer = Coalescer(TIMING, threading.Event(), monotonic=clock, wait=clock.wait)
    thread, made = first_request(coalescer, runs)
    coalescer.request(runs.run, runs.hand_over)
    stop_at = 2

    def arrive() -> None:
        if len(runs.served) < stop_at:
            coalescer.request(runs.run, runs.hand_over)

    clock.during_wait = arrive
    runs.release.set()
    thread.join(WAIT)
    assert made == [2] and runs.served[0] == 1 and runs.served[1] > 1
    assert sum(clock.waits) == pytest.approx(2.0)


def test_a_run_past_its_budget_hands_the_waiting_requests_over() -> None:
    """After scanning for the whole budget, the call stops and sends one fresh request for
    those still waiting, instead of running again; the next request runs at once."""
    clock, runs = Clock(), Runs()
    coalescer = Coalescer(TIMING, threading.Event(), monotonic=clock, wait=clock.wait)
    thread, made = first_request(coalescer, runs)
    coalescer.request(runs.run, runs.hand_over)
    coalescer.request(runs.run, runs.hand_over)
    clock.now += 45
    runs.release.set()
    thread.join(WAIT)
    assert made == [1] and runs.served == [1] and runs.hand_overs == 1
    assert coalescer.request(runs.run, runs.hand_over) == 1


def test_a_stopping_process_hands_the_waiting_requests_over() -> None:
    """When the worker stops, the requests that wait are sent on for another worker."""
    clock, runs, stop = Clock(), Runs(), threading.Event()
    coalescer = Coalescer(TIMING, stop, monotonic=clock, wait=clock.wait)
    thread, made = first_request(coalescer, runs)
    coalescer.request(runs.run, runs.hand_over)
    stop.set()
    runs.release.set()
    thread.join(WAIT)
    assert made == [1] and runs.served == [1] and runs.hand_overs == 1


def test_a_run_that_raises_hands_over_and_lets_the_next_request_run() -> None:
    """An error in a run propagates; the requests it would have served are handed over, and
    the coalescer does not stay busy."""
    clock, runs = Clock(), Runs()
    coalescer = Coalescer(TIMING, threading.Event(), monotonic=clock, wait=clock.wait)
    started, release = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def failing(serving: int) -> None:
        started.set()
        assert release.wait(WAIT)
        raise RuntimeError("a bug")

    def first() -> None:
        try:
            coalescer.request(failing, runs.hand_over)
        except RuntimeError as error:
            raised.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(WAIT)
    coalescer.request(runs.run, runs.hand_over)
    release.set()
    thread.join(WAIT)
    assert len(raised) == 1 and runs.hand_overs == 1
    runs.release.set()
    assert coalescer.request(runs.run, runs.hand_over) == 1
