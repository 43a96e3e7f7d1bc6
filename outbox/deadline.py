"""Deadlines for blocking socket work: a watchdog shuts the sockets down when one passes.

A per-operation socket timeout does not bound a whole exchange: a server that sends a byte
every few seconds, or a connection that went silent behind a middlebox that still
acknowledges, keeps each read within its timeout, or waits on a timeout that restarts with
every read, and the exchange never ends. A `Deadline` bounds it as a whole. The caller
registers each socket it opens (`Deadline.watch`); when the deadline passes, the watchdog
shuts them down, which wakes the blocked call with an error or an end of stream, and the
caller learns from `Deadline.expired` why. The socket itself is never closed by the
watchdog: it works on a duplicate of the descriptor, taken while the caller surely owned
the socket, so a descriptor number reused by another thread is never touched. A caller that
sends many times on one connection can keep one duplicate for the connection's life
(`Deadline.watch_duplicate`) instead of one per deadline.

One daemon thread serves every deadline of the process. It starts with the first deadline
and ends once none was armed for `Watchdog.linger` seconds; a deadline left early does not
wake it (that would cost a wake-up per send), so it notices at the latest when that
deadline would have passed. A forked child starts its own.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from types import TracebackType
from typing import Self


class Deadline:
    """``seconds`` from now, the watched sockets are shut down (use it as a context manager)."""

    def __init__(self, watchdog: Watchdog, seconds: float) -> None:
        self.started = time.monotonic()
        self.at = self.started + seconds
        self.expired = False  # set (under the watchdog's lock) before the sockets are shut
        self._watchdog = watchdog
        self._duplicates: list[int] = []  # descriptors, duplicated from the watched sockets'
        self._kept: list[int] = []  # duplicates the caller keeps open past this deadline

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once, if it passed already)."""
        duplicate = os.dup(sock.fileno())
        with self._watchdog.changed:
            self._duplicates.append(duplicate)
            if self.expired:
                self._shut_down()

    def watch_duplicate(self, duplicate: int) -> None:
        """Shut down the socket behind ``duplicate`` when the deadline passes: a duplicated
        descriptor of it that the caller keeps open until this deadline's block has ended."""
        with self._watchdog.changed:
            self._kept.append(duplicate)
            if self.expired:
                self._shut_down()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the deadline passed, at most ``timeout`` seconds; say whether it did."""
        with self._watchdog.changed:
            return self._watchdog.changed.wait_for(lambda: self.expired, timeout)

    def __enter__(self) -> Self:
        self._watchdog.arm(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._watchdog.disarm(self)
        with self._watchdog.changed:
            duplicates, self._duplicates, self._kept = self._duplicates, [], []
        for duplicate in duplicates:
            os.close(duplicate)  # only the duplicate: the caller's socket stays as it is

    def _shut_down(self) -> None:
        """Called with the watchdog's lock held, so no duplicate is closed meanwhile."""
        self.expired = True  # first: the woken caller reads it to learn why
        for duplicate in self._duplicates + self._kept:
            sock = socket.socket(fileno=duplicate)
            with contextlib.suppress(OSError):  # already closed by its peer: nothing to wake
                sock.shutdown(socket.SHUT_RDWR)
            sock.detach()  # the descriptor stays open until the deadline's block ends


class Watchdog:
    """The thread that expires `Deadline`\\ s; `deadline` makes one."""

    def __init__(self, linger: float = 5.0, name: str = "deadline-watchdog") -> None:
        self.linger = linger
        self.name = name  # of its thread
        self.changed = threading.Condition()
        self._armed: set[Deadline] = set()
        self._wake_at = float("inf")
        self._busy_at = 0.0  # when a deadline was last armed, or seen armed
        self._thread: threading.Thread | None = None

    def deadline(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, armed when its ``with`` block starts."""
        return Deadline(self, seconds)

    def arm(self, deadline: Deadline) -> None:
        """Start watching ``deadline``."""
        with self.changed:
            self._armed.add(deadline)
            self._busy_at = deadline.started
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name)
                self._thread.daemon = True
                self._thread.start()
            elif deadline.at < self._wake_at:
                self.changed.notify()

    def disarm(self, deadline: Deadline) -> None:
        """Stop watching ``deadline``; the thread is not woken for it."""
        with self.changed:
            self._armed.discard(deadline)

    def _run(self) -> None:
        with self.changed:
            while True:
                now = time.monotonic()
                passed = [d for d in self._armed if d.at <= now]
                for deadline in passed:
                    self._armed.discard(deadline)
                    deadline._shut_down()
                if passed:
                    self.changed.notify_all()  # for `Deadline.wait`
                if self._armed:
                    self._busy_at = now
                    self._wake_at = min(d.at for d in self._armed)
                elif now - self._busy_at >= self.linger:
                    self._thread = None
                    return
                else:
                    self._wake_at = self._busy_at + self.linger
                self.changed.wait(self._wake_at - now)


#: The process's watchdog.
WATCHDOG = Watchdog()


def deadline(seconds: float) -> Deadline:
    """A deadline on the process's watchdog; see `Deadline`."""
    return WATCHDOG.deadline(seconds)


def _forget_after_fork() -> None:
    # The child has no watchdog thread, and the lock may have been held when it forked.
    WATCHDOG.changed = threading.Condition()
    WATCHDOG._armed.clear()
    WATCHDOG._thread = None


os.register_at_fork(after_in_child=_forget_after_fork)
