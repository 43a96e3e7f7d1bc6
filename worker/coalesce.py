"""One scan at a time in a process: the requests that come while it runs share one more.

A scan message is a request to look at the database after its sender's change committed. A
scan that *starts* after the request arrived sees that change; one that was already running
may not. So a request that comes while this process scans waits for one more scan after it,
and every request that comes before that one starts is served by it too. A thousand nudges
(or ticks queued while the workers were down) cost a few scans, not a thousand, and no clock
is compared across hosts: the order is this process's own.

The follow-up scan waits until the requests have been quiet for ``settle`` (a burst arrives
as fast as the broker hands it over), but never longer than ``longest_wait`` after the first
of them. A process that has scanned for ``budget`` in one message, or is stopping, hands the
waiting requests over to a fresh message instead, which every worker may take.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Timing:
    """How long a follow-up scan waits for a burst of requests to end, and how long one
    message may go on scanning."""

    settle: timedelta
    longest_wait: timedelta
    budget: timedelta


class Coalescer:
    """Runs a callable for a request, or merges the request into the next run."""

    def __init__(
        self,
        timing: Timing,
        stop: threading.Event,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self._settle = timing.settle.total_seconds()
        self._longest = timing.longest_wait.total_seconds()
        self._budget = timing.budget.total_seconds()
        self._stop = stop
        self._monotonic = monotonic
        self._wait = wait or stop.wait
        self._lock = threading.Lock()
        self._running = False
        self._waiting = 0  # requests that arrived during the run under way
        self._first = 0.0  # monotonic arrival of the first of them
        self._last = 0.0  # and of the last

    def request(self, run: Callable[[int], None], hand_over: Callable[[], None]) -> int:
        """Run ``run`` now, again for the requests that arrive meanwhile, and return how
        many runs this call made; 0 when a run under way takes the request over.

        ``run`` is given how many requests it serves. ``hand_over`` sends one fresh request
        for those still waiting when this call stops running (budget spent, or stopping).
        """
        with self._lock:
            if self._running:
                now = self._monotonic()
                if not self._waiting:
                    self._first = now
                self._waiting += 1
                self._last = now
                return 0
            self._running = True
        started = self._monotonic()
        runs, serving = 0, 1
        try:
            while serving:
                run(serving)
                runs += 1
                serving = self._next(started, hand_over)
        except BaseException:
            self._give_up(hand_over)
            raise
        return runs

    def _next(self, started: float, hand_over: Callable[[], None]) -> int:
        """How many requests the next run serves, once they settled; 0 when none is left
        to this call (nothing waits, or the rest was handed over)."""
        while True:
            with self._lock:
                if not self._waiting:
                    self._running = False
                    return 0
                now = self._monotonic()
                if now - started >= self._budget or self._stop.is_set():
                    break
                quiet, waited = now - self._last, now - self._first
                if quiet >= self._settle or waited >= self._longest:
                    serving, self._waiting = self._waiting, 0
                    return serving
                pause = min(self._settle - quiet, self._longest - waited)
            self._wait(pause)
        self._give_up(hand_over)
        return 0

    def _give_up(self, hand_over: Callable[[], None]) -> None:
        """Stop running; leave the waiting requests, if any, to a fresh one."""
        with self._lock:
            waiting, self._waiting, self._running = self._waiting, 0, False
        if waiting:
            hand_over()
