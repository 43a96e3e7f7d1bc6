"""The fault proxy: forwarding, and each fault it can inject, seen from a client's socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import FaultProxy, Mode

QUIET = 0.3  # how long a client listens to conclude that nothing comes back


class EchoServer:
    """A TCP server on 127.0.0.1 that sends back what it reads, one thread per connection."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            thread = threading.Thread(target=self._echo, args=(connection,))
            self._threads.append(thread)
            thread.start()

    def _echo(self, connection: socket.socket) -> None:
        with connection:
            try:
                while data := connection.recv(65536):
                    connection.sendall(data)
            except OSError:
                pass  # reset by the proxy

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    """An echo server, stopped after the test."""
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the echo server."""
    with FaultProxy("127.0.0.1", echo.port) as running:
        yield running


def connect(proxy: FaultProxy) -> socket.socket:
    """A client connection through the proxy, with a short read timeout."""
    client = socket.create_connection((proxy.host, proxy.port), timeout=5)
    client.settimeout(QUIET)
    return client


def round_trip(client: socket.socket, data: bytes = b"ping") -> bytes:
    """Send ``data`` and read back as many bytes (waiting up to 5 s)."""
    client.settimeout(5)
    client.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = client.recv(65536)
        if not chunk:
            break
        received += chunk
    client.settimeout(QUIET)
    return received


def test_forward_carries_bytes_both_ways_and_counts_the_connection(proxy: FaultProxy) -> None:
    """In forward mode a connection reaches the target and its bytes flow both ways."""
    with connect(proxy) as client:
        assert round_trip(client, b"x" * 300_000) == b"x" * 300_000
        counts = proxy.counts
    assert (counts.accepted, counts.forwarded, counts.open) == (1, 1, 1)


def test_a_client_close_closes_both_sides(proxy: FaultProxy, echo: EchoServer) -> None:
    """A client's close is passed on: the target sees the end, the proxy forgets the pair."""
    client = connect(proxy)
    assert round_trip(client) == b"ping"
    client.shutdown(socket.SHUT_WR)
    client.settimeout(5)
    assert client.recv(10) == b""  # the echo server closed in turn
    client.close()
    assert proxy.wait_for(lambda counts: counts.closed == 1).open == 0


def test_blackhole_accepts_but_never_answers_nor_reaches_the_target(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    """A blackholed connection is accepted, then nothing comes back and no target is dialled."""
    proxy.mode = Mode.BLACKHOLE
    with connect(proxy) as client:
        client.sendall(b"hello")
        with pytest.raises(TimeoutError):
            client.recv(10)
        counts = proxy.counts
    assert (counts.accepted, counts.forwarded, counts.silenced, counts.open) == (1, 0, 1, 1)
    assert echo.connections == 0


def test_blackhole_leaves_open_connections_flowing(proxy: FaultProxy) -> None:
    """Blackhole affects only new connections: one opened before keeps working."""
    with connect(proxy) as before:
        assert round_trip(before) == b"ping"
        proxy.mode = Mode.BLACKHOLE
        assert round_trip(before, b"still") == b"still"


def test_silent_freezes_open_connections_without_closing_them(proxy: FaultProxy) -> None:
    """A silenced connection gets no answer and no end of stream: it just goes quiet."""
    with connect(proxy) as client:
        assert round_trip(client) == b"ping"
        proxy.mode = Mode.SILENT
        client.sendall(b"anyone?")  # the proxy's kernel still acknowledges this
        with pytest.raises(TimeoutError):  # neither data nor an EOF (b"") comes back
            client.recv(10)
        assert proxy.counts.silenced == 1
        assert proxy.counts.open == 1


def test_after_silent_new_connections_flow_but_silenced_ones_stay_dead(
    proxy: FaultProxy,
) -> None:
    """Silent then forward is a NAT flush: the old connection stays silent, a new one works."""
    with connect(proxy) as old:
        assert round_trip(old) == b"ping"
        proxy.mode = Mode.SILENT
        with connect(proxy) as during:  # accepted and held while silent
            proxy.wait_for(lambda counts: counts.accepted == 2)
            proxy.mode = Mode.FORWARD
            with connect(proxy) as new:
                assert round_trip(new) == b"ping"
            old.sendall(b"x")
            during.sendall(b"x")
            for dead in (old, during):
                with pytest.raises(TimeoutError):
                    dead.recv(10)
    assert proxy.counts.silenced == 2


def test_reset_resets_held_connections_and_each_new_one(proxy: FaultProxy) -> None:
    """Reset closes every held connection with RST, silent ones too, and resets new ones."""
    with connect(proxy) as flowing, connect(proxy) as frozen:
        assert round_trip(flowing) == b"ping"
        assert round_trip(frozen) == b"ping"
        proxy.mode = Mode.SILENT
        proxy.mode = Mode.RESET
        for client in (flowing, frozen):
            client.settimeout(5)
            with pytest.raises(ConnectionResetError):
                client.recv(10)
        # The reset can come before connect() returns: either call may report it.
        with pytest.raises(ConnectionResetError), connect(proxy) as new:
            new.settimeout(5)
            new.recv(10)
    counts = proxy.counts
    assert (counts.reset, counts.open) == (3, 0)


def test_an_unreachable_target_resets_the_client() -> None:
    """When the target refuses, the client's connection is reset rather than left hanging."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with FaultProxy("127.0.0.1", port) as proxy:
        with pytest.raises(ConnectionResetError), connect(proxy) as client:
            client.settimeout(5)
            client.recv(10)
        assert proxy.counts.reset == 1


def test_close_stops_the_thread_and_closes_held_connections(echo: EchoServer) -> None:
    """Leaving the proxy ends its thread and closes every connection it held, silent or not."""
    with FaultProxy("127.0.0.1", echo.port) as proxy:
        client = connect(proxy)
        assert round_trip(client) == b"ping"
        proxy.mode = Mode.SILENT
    assert not any(t.name == "faultproxy" for t in threading.enumerate())
    client.settimeout(5)
    assert client.recv(10) == b""  # closed normally, not reset
    client.close()
