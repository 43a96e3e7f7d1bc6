"""A TCP proxy for tests that can lose connections the way real networks lose them.

`FaultProxy` listens on 127.0.0.1 (a port the system picks) and forwards each connection to
a target (PostgreSQL, an SMTP server, Redis). Its `mode` changes at run time:

- ``forward``: new connections are forwarded.
- ``blackhole``: new connections are accepted and held, and nothing is forwarded either way
  (no connection to the target is even opened); open connections carry on. A client sees a
  connect that succeeds and a server that never says a word.
- ``silent``: as ``blackhole``, and every open connection stops forwarding in both
  directions too, held open and never closed: what a NAT or firewall that flushed its state,
  or a frozen pooler, does. The proxy's kernel still acknowledges what the client sends, so
  TCP keepalives and ``tcp_user_timeout`` on the client cannot see the fault; only an
  application-level deadline can.
- ``reset``: every held connection, forwarding or silent, is closed with a reset
  (``SO_LINGER`` 0), and so is each new one as soon as it is accepted.

A silenced connection stays silent after a switch back to ``forward`` (its state is lost for
good); only new connections flow again. So ``silent`` then ``forward`` is a NAT flush: the
open connections are dead, new ones work.

One thread runs a selector loop; `close` (or leaving the ``with`` block) stops it and
closes every socket. Standard library only: the module depends on nothing of the project.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
#: Bytes buffered per direction before the proxy stops reading the sending side.
BUFFER_LIMIT = 256 * 1024
_CHUNK = 64 * 1024
_WAIT = 10.0  # bound on waiting for the loop thread; a healthy proxy answers in microseconds
_RESET_LINGER = struct.pack("ii", 1, 0)


class Mode(StrEnum):
    """What the proxy does with connections (see the module's docstring)."""

    FORWARD = "forward"
    BLACKHOLE = "blackhole"
    SILENT = "silent"
    RESET = "reset"


@dataclass(frozen=True)
class Counts:
    """How many connections the proxy saw, by what happened to them."""

    accepted: int  # connections accepted from clients
    forwarded: int  # of those, connected to the target
    silenced: int  # held without forwarding: blackholed at accept, or silenced while open
    reset: int  # closed with a reset by the proxy
    closed: int  # closed because a peer closed or failed
    open: int  # held right now (forwarding or silent)


class _Pipe:
    """One client connection, its connection to the target, and what is in flight."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.connecting = False
        self.silent = False
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        self.client_eof = False  # the client sent FIN
        self.upstream_eof = False
        self.shut = set[socket.socket]()  # sockets whose write side the proxy shut down

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class FaultProxy:
    """A TCP proxy to ``(target_host, target_port)`` whose faults a test switches on and off."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((HOST, 0))
        self._listener.setblocking(False)
        self.host = HOST
        self.port: int = self._listener.getsockname()[1]
        self._mode = Mode.FORWARD
        self._pipes: set[_Pipe] = set()
        self._counts = {"accepted": 0, "forwarded": 0, "silenced": 0, "reset": 0, "closed": 0}
        self._changed = threading.Condition()  # guards the counters and the command queue
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, None)
        self._running = False
        self._thread = threading.Thread(target=self._loop, name="faultproxy", daemon=True)

    # --- the test's side ----------------------------------------------------------------

    def start(self) -> None:
        """Start forwarding in the proxy's thread."""
        self._running = True
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and close every socket (held connections close normally)."""
        if self._thread.is_alive():
            self._call(self._stop)
            self._thread.join(_WAIT)
        for pipe in list(self._pipes):
            self._close(pipe)
        self._selector.close()
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def mode(self) -> Mode:
        """The mode in force."""
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        """Switch modes; the new mode holds for every connection once this returns."""
        self._call(lambda: self._switch(Mode(mode)))

    @property
    def counts(self) -> Counts:
        """A snapshot of the connection counters."""
        with self._changed:
            return self._snapshot()

    def wait_for(self, condition: Callable[[Counts], bool], timeout: float = _WAIT) -> Counts:
        """Wait until the counters satisfy ``condition`` and return them.

        A client's connect returns once the kernel completed the handshake, before the proxy
        accepted it: tests that switch modes around a new connection wait for it here.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self._snapshot()), timeout):
                raise AssertionError(f"the proxy's counts stayed at {self._snapshot()}")
            return self._snapshot()

    def _snapshot(self) -> Counts:
        return Counts(**self._counts, open=len(self._pipes))

    # --- the loop's side ----------------------------------------------------------------

    def _call(self, command: Callable[[], None]) -> None:
        """Run ``command`` in the loop thread and wait until it ran."""
        done = threading.Event()
        with self._changed:
            self._commands.append((command, done))
        self._wake_writer.send(b"x")
        if not done.wait(_WAIT):
            raise RuntimeError("the fault proxy's thread did not answer")

    def _stop(self) -> None:
        self._running = False

    def _count(self, what: str) -> None:
        with self._changed:
            self._counts[what] += 1
            self._changed.notify_all()

    def _loop(self) -> None:
        while self._running:
            for key, events in self._selector.select():
                if key.fileobj is self._wake_reader:
                    self._run_commands()
                elif key.fileobj is self._listener:
                    self._accept()
                else:
                    pipe = key.data
                    if pipe in self._pipes:
                        self._serve(pipe, key.fileobj, events)  # type: ignore[arg-type]

    def _run_commands(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._changed:
            commands, self._commands = self._commands, []
        for command, done in commands:
            try:
                command()
            finally:
                done.set()

    def _switch(self, mode: Mode) -> None:
        self._mode = mode
        if mode is Mode.SILENT:
            for pipe in list(self._pipes):
                if not pipe.silent:
                    self._silence(pipe)
        elif mode is Mode.RESET:
            for pipe in list(self._pipes):
                self._reset(pipe)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                return
            client.setblocking(False)
            pipe = _Pipe(client)
            with self._changed:
                self._pipes.add(pipe)
            self._count("accepted")
            if self._mode is Mode.RESET:
                self._reset(pipe)
            elif self._mode in (Mode.BLACKHOLE, Mode.SILENT):
                self._silence(pipe)
            else:
                self._connect(pipe)

    def _connect(self, pipe: _Pipe) -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe.upstream = upstream
        code = upstream.connect_ex(self.target)
        if code not in (0, errno.EINPROGRESS):
            self._reset(pipe)
            return
        pipe.connecting = code != 0
        if not pipe.connecting:
            self._count("forwarded")
        self._watch(pipe)

    def _silence(self, pipe: _Pipe) -> None:
        for sock in pipe.sockets():
            self._unwatch(sock)
        pipe.silent = True
        pipe.to_client.clear()
        pipe.to_upstream.clear()
        self._count("silenced")

    def _serve(self, pipe: _Pipe, sock: socket.socket, events: int) -> None:
        try:
            if sock is pipe.upstream and pipe.connecting:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    self._reset(pipe)
                    return
                pipe.connecting = False
                self._count("forwarded")
            elif events & selectors.EVENT_READ:
                self._read(pipe, sock)
            if events & selectors.EVENT_WRITE and pipe in self._pipes:
                self._write(pipe, sock)
        except OSError:
            self._reset(pipe)  # a peer reset: pass it on
            return
        if pipe in self._pipes:
            self._finish_or_watch(pipe)

    def _read(self, pipe: _Pipe, sock: socket.socket) -> None:
        data = sock.recv(_CHUNK)
        from_client = sock is pipe.client
        if not data:
            if from_client:
                pipe.client_eof = True
            else:
                pipe.upstream_eof = True
        elif from_client:
            pipe.to_upstream += data
        else:
            pipe.to_client += data

    def _write(self, pipe: _Pipe, sock: socket.socket) -> None:
        buffer = pipe.to_client if sock is pipe.client else pipe.to_upstream
        if buffer:
            sent = sock.send(buffer)
            del buffer[:sent]

    def _finish_or_watch(self, pipe: _Pipe) -> None:
        """Pass a half-close on once its direction is drained; close when both are done."""
        assert pipe.upstream is not None
        if pipe.client_eof and not pipe.to_upstream:
            _shutdown_write(pipe, pipe.upstream)
        if pipe.upstream_eof and not pipe.to_client:
            _shutdown_write(pipe, pipe.client)
        if pipe.client_eof and pipe.upstream_eof and not (pipe.to_client or pipe.to_upstream):
            self._count("closed")
            self._close(pipe)
        else:
            self._watch(pipe)

    def _watch(self, pipe: _Pipe) -> None:
        """Register each socket for what it can do now: read while there is room, write
        while something waits for it."""
        assert pipe.upstream is not None
        if pipe.connecting:
            self._want(pipe, pipe.client, 0)
            self._want(pipe, pipe.upstream, selectors.EVENT_WRITE)
            return
        for sock, eof, outgoing, incoming in (
            (pipe.client, pipe.client_eof, pipe.to_upstream, pipe.to_client),
            (pipe.upstream, pipe.upstream_eof, pipe.to_client, pipe.to_upstream),
        ):
            events = 0
            if not eof and len(outgoing) < BUFFER_LIMIT:
                events |= selectors.EVENT_READ
            if incoming:
                events |= selectors.EVENT_WRITE
            self._want(pipe, sock, events)

    def _want(self, pipe: _Pipe, sock: socket.socket, events: int) -> None:
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            if events:
                self._selector.register(sock, events, pipe)
            return
        if not events:
            self._selector.unregister(sock)
        elif key.events != events:
            self._selector.modify(sock, events, pipe)

    def _unwatch(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):  # not registered
            self._selector.unregister(sock)

    def _reset(self, pipe: _Pipe) -> None:
        for sock in pipe.sockets():
            with contextlib.suppress(OSError):  # already failed: closing it is all that is left
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
        self._count("reset")  # before the client can see it
        self._close(pipe)

    def _close(self, pipe: _Pipe) -> None:
        with self._changed:
            self._pipes.discard(pipe)
            self._changed.notify_all()
        for sock in pipe.sockets():
            self._unwatch(sock)
            sock.close()


def _shutdown_write(pipe: _Pipe, sock: socket.socket) -> None:
    if sock in pipe.shut:
        return
    pipe.shut.add(sock)
    with contextlib.suppress(OSError):  # the peer is gone: its close or reset ends the pipe
        sock.shutdown(socket.SHUT_WR)
