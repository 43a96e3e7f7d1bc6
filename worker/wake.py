"""Every worker process wakes itself for the next row's moment and relays it in its own thread.

A reminder goes out at its moment, not at the next tick. The wake-up is not a delayed broker
message: Dramatiq's Redis broker hands a delayed message to one worker, which holds it in
memory until its eta, and a worker SIGKILLed takes it along until another worker's maintenance
gives it back, after the heartbeat timeout (11 minutes here, to tolerate skewed clocks). Each
process keeps instead one alarm of its own (`WakeUp`): it reads when the next row is due
(`outbox.store.earliest_due`, one indexed aggregate), sleeps until then, and relays. It reads
again at least every `RECHECK`, so that it also learns of the rows another process planned or
was waiting for: when a process dies, the others wake for its moments too. Two processes
waking for the same moment do no harm: the claim hands each row to one relay. The tick's relay
run stays the safety net.

Bounded: one pending wake-up per process, one read per `RECHECK` while idle, and a row due but
held by another relay's claim is looked at again after `HELD`, not at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import structlog

from outbox.clock import Clock
from outbox.report import RelayReport
from worker.outages import reason_of

log = structlog.get_logger("worker.wake")

#: An idle process reads the next row's moment at least this often.
RECHECK = timedelta(seconds=1)
#: A row due that this process's relay could not claim (another relay is claiming it) is
#: looked at again this much later.
HELD = timedelta(milliseconds=200)
#: A claim runs a millisecond past the moment, so that it finds the row due.
PAST_THE_MOMENT = timedelta(milliseconds=1)
#: How long a stopping worker waits for the wake-up's relay: it stops between rows, and each
#: send has its own timeout.
JOIN_SECONDS = 60.0


class WakeUp:
    """One process's alarm: relay at each row's moment, read the next one, sleep until it.

    ``next_due`` says when the next row is due (None: no row, or the database could not say);
    ``relay`` relays what is due and reports it (None: the database failed, already logged).
    """

    def __init__(
        self,
        next_due: Callable[[], datetime | None],
        relay: Callable[[], RelayReport | None],
        clock: Clock,
        stop: threading.Event,
        *,
        recheck: timedelta = RECHECK,
        held: timedelta = HELD,
    ) -> None:
        self._next_due = next_due
        self._relay = relay
        self._clock = clock
        self._stop = stop
        self._recheck = recheck.total_seconds()
        self._held = held.total_seconds()
        self._poked = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> float:
        """Relay if a row is due; return how many seconds to sleep before the next step."""
        due = self._next_due()
        if due is None or due > self._clock.now():
            return self._until(due)
        report = self._relay()
        if report is None:
            return self._recheck
        if report.out_of_budget:
            return 0.0
        if not report.claimed:
            return self._held
        return self._until(self._next_due())

    def _until(self, due: datetime | None) -> float:
        if due is None:
            return self._recheck
        left = (due + PAST_THE_MOMENT - self._clock.now()).total_seconds()
        return min(max(left, 0.0), self._recheck)

    def poke(self) -> None:
        """Have the alarm read the next moment now (this process may have learned of one)."""
        self._poked.set()

    def run(self) -> None:
        """Step until the stop event is set; a failure waits `RECHECK` and tries again."""
        while not self._stop.is_set():
            self._poked.clear()
            try:
                wait = self.step()
            except Exception as error:  # the wake-up must outlive any one failure
                log.warning("wake_up_failed", reason=reason_of(error))
                wait = self._recheck
            if wait > 0:
                self._poked.wait(wait)

    def start(self) -> None:
        """Run the alarm in a daemon thread of this process (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="wake-up", daemon=True)
            self._thread.start()

    def halt(self, timeout: float = JOIN_SECONDS) -> None:
        """Set the stop event and wait for the thread, at most ``timeout`` seconds."""
        self._stop.set()
        self._poked.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()


class WakeUpWithTheWorker(dramatiq.Middleware):
    """Start the process's wake-up when its worker boots; stop it when the worker stops.

    A process that only sends messages (periodiq, the commands) boots no worker and wakes for
    nothing.
    """

    def __init__(self, wake_up: WakeUp) -> None:
        self.wake_up = wake_up

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        """Start the alarm's thread."""
        self.wake_up.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        """Stop the alarm; its relay releases the rows it has not attempted."""
        self.wake_up.halt()
