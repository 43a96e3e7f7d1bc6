"""The deadline watchdog: blocked socket calls end at their deadline, and only then."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from outbox.deadline import Watchdog


@pytest.fixture
def watchdog() -> Watchdog:
    """A watchdog of the test's own, whose thread ends soon after its last deadline."""
    return Watchdog(linger=0.1, name="test-watchdog")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of sockets; the far end never writes unless the test says so."""
    near, far = socket.socketpair()
    with near, far:
        yield near, far


def test_a_blocked_read_ends_at_the_deadline(
    watchdog: Watchdog, pair: tuple[socket.socket, socket.socket]
) -> None:
    """A read with no timeout returns end-of-stream once its deadline passes."""
    near, _ = pair
    started = time.monotonic()
    with watchdog.deadline(0.3) as limit:
        limit.watch(near)
        assert near.recv(10) == b""  # shut down: the read ends instead of waiting forever
    elapsed = time.monotonic() - started
    assert limit.expired
    assert 0.3 <= elapsed < 2.0


def test_a_trickle_cannot_outlast_the_deadline(
    watchdog: Watchdog, pair: tuple[socket.socket, socket.socket]
) -> None:
    """A peer writing a byte at a time, each within the socket's timeout, is still cut off."""
    near, far = pair
    near.settimeout(0.5)  # the per-read timeout alone would never fire
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.05):
            try:
                far.send(b".")
            except OSError:
                return

    writer = threading.Thread(target=trickle)
    writer.start()
    received = b""
    started = time.monotonic()
    try:
        with watchdog.deadline(0.4) as limit:
            limit.watch(near)
            while chunk := near.recv(1):
                received += chunk
    finally:
        stop.set()
        writer.join(5)
    assert limit.expired
    assert received  # bytes did arrive until the deadline
    assert time.monotonic() - started < 2.0


def test_a_call_done_in_time_is_left_alone(
    watchdog: Watchdog, pair: tuple[socket.socket, socket.socket]
) -> None:
    """A deadline left before it passes shuts nothing down: the socket keeps working."""
    near, far = pair
    with watchdog.deadline(0.2) as limit:
        limit.watch(near)
        far.sendall(b"hi")
        assert near.recv(10) == b"hi"
    assert not limit.expired
    far.sendall(b"again")
    near.settimeout(5)
    assert near.recv(10) == b"again"  # well after the deadline would have passed


def test_a_socket_watched_after_the_deadline_is_shut_down_at_once(
    watchdog: Watchdog, pair: tuple[socket.socket, socket.socket]
) -> None:
    """A socket opened after the deadline passed (a slow connect) is shut down right away."""
    near, _ = pair
    with watchdog.deadline(0.05) as limit:
        assert limit.wait(5)
        limit.watch(near)
        near.settimeout(5)
        assert near.recv(10) == b""


def test_the_thread_ends_after_lingering_idle() -> None:
    """The watchdog's thread starts with a deadline and ends once none was armed for a while."""
    watchdog = Watchdog(linger=0.1, name="lingering-watchdog")
    with watchdog.deadline(0.5):  # left early: the thread ends 0.1 s after it would pass
        started = [t for t in threading.enumerate() if t.name == "lingering-watchdog"]
    assert len(started) == 1
    started[0].join(5)
    assert not started[0].is_alive()
    with watchdog.deadline(0.05) as limit:  # and a later deadline starts a new one
        assert limit.wait(5)
