"""Real servers on 127.0.0.1 that record what they receive and answer as a test scripts.

- `RecordingSmtpServer`: an aiosmtpd server (optionally with STARTTLS, implicit TLS, AUTH).
- `RecordingWebhookServer`: a threading HTTP/1.1 server with keep-alive.
- `SilentServer`: a socket that accepts connections and never says a word (timeouts).
- `self_signed_tls`: a certificate for 127.0.0.1 and the matching server/client contexts.

Each is a context manager; leaving it stops the server and closes every connection, so no
socket outlives a test (pytest turns ResourceWarnings into errors here).
"""

from __future__ import annotations

import asyncio
import email.message
import functools
import shutil
import socket
import ssl
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
WAIT = 10.0  # upper bound for waits on events; a healthy test never gets near it


class _Running:
    """Context-manager plumbing shared by the servers: ``start`` on enter, ``stop`` on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- SMTP ---------------------------------------------------------------------------------


class ReceivedMail(NamedTuple):
    """One accepted message: the envelope and the raw bytes after DATA."""

    envelope_from: str
    rcpt_tos: list[str]
    raw: bytes


class RecordingSmtpServer(_Running):
    """An aiosmtpd server on a free port of 127.0.0.1 recording accepted messages.

    Scripting: ``data_replies`` are answered, in order, to the next DATA commands instead
    of ``250`` (e.g. ``"451 4.3.0 try later"``; such messages are not recorded);
    ``rcpt_replies`` maps a recipient to the reply its RCPT gets. ``sessions`` counts TCP
    connections; ``data_commands`` counts DATA commands, accepted or not.
    ``credentials=(user, password)`` makes AUTH available (over plain text too, for tests);
    ``starttls`` offers STARTTLS with that context; ``implicit_tls`` wraps the port in TLS.
    """

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = HOST
        self.port = 0
        self.messages: list[ReceivedMail] = []
        self.sessions = 0
        self.data_commands = 0
        self.logins: list[str] = []
        self.data_replies: deque[str] = deque()
        self.rcpt_replies: dict[str, str] = {}
        self._credentials = credentials
        self._changed = threading.Condition()
        self._open: set[_RecordingSMTP] = set()
        kwargs: dict[str, Any] = {"server_hostname": "mail.test", "ssl_context": implicit_tls}
        if starttls is not None:
            kwargs["tls_context"] = starttls
        if credentials is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        self._controller = _Controller(self, _SmtpHandler(self), **kwargs)

    def start(self) -> None:
        """Listen and wait until the server answers."""
        self._controller.start()
        self.port = self._controller.port
        with self._changed:  # forget the controller's own readiness probe
            self.sessions = 0

    def stop(self) -> None:
        """Close every client connection, then stop the server's loop and thread."""
        self.drop_connections()
        self._controller.stop()

    def wait_for_messages(self, count: int) -> list[ReceivedMail]:
        """Return the messages once at least ``count`` were accepted."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, WAIT):
                raise AssertionError(f"{len(self.messages)} messages, expected {count}")
            return list(self.messages)

    def drop_connections(self) -> None:
        """Close every open connection from the server side; return once they are gone."""
        loop = self._controller.loop
        if loop.is_closed() or not loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._close_all(), loop).result(WAIT)

    async def _close_all(self) -> None:
        protocols = list(self._open)
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.close()
        await asyncio.gather(*(protocol.gone.wait() for protocol in protocols))

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self._credentials is not None
        given = (
            (data.login.decode(), data.password.decode())
            if isinstance(data, LoginPassword)
            else None
        )
        if given != self._credentials:
            return AuthResult(success=False, handled=False)
        with self._changed:
            self.logins.append(given[0])
        return AuthResult(success=True)

    def _connected(self, protocol: _RecordingSMTP) -> None:
        with self._changed:
            self.sessions += 1
            self._open.add(protocol)
            self._changed.notify_all()

    def _disconnected(self, protocol: _RecordingSMTP) -> None:
        with self._changed:
            self._open.discard(protocol)
            self._changed.notify_all()

    def _data(self, envelope: Envelope) -> str:
        with self._changed:
            self.data_commands += 1
            if self.data_replies:
                return self.data_replies.popleft()
            raw = envelope.original_content or b""
            mail = ReceivedMail(envelope.mail_from or "", list(envelope.rcpt_tos), raw)
            self.messages.append(mail)
            self._changed.notify_all()
        return "250 2.0.0 OK"


class _SmtpHandler:
    """aiosmtpd hooks, answering from the server's script."""

    def __init__(self, recorder: RecordingSmtpServer) -> None:
        self._recorder = recorder

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self._recorder.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self._recorder._data(envelope)


class _RecordingSMTP(SMTP):
    """aiosmtpd's protocol, telling the recorder when its connection ends."""

    def __init__(self, recorder: RecordingSmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gone = asyncio.Event()
        self._recorder = recorder
        recorder._connected(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._recorder._disconnected(self)
        self.gone.set()


class _Controller(Controller):
    """aiosmtpd's controller on a port the system picks (its own port 0 support is absent)."""

    def __init__(self, recorder: RecordingSmtpServer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, hostname=HOST, port=0, **kwargs)
        self._recorder = recorder

    def factory(self) -> SMTP:
        return _RecordingSMTP(self._recorder, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # The listening socket exists by now: learn its port before probing it.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


# --- HTTP ---------------------------------------------------------------------------------


class RecordedRequest(NamedTuple):
    """One request as the webhook server read it; ``headers`` are case-insensitive."""

    method: str
    path: str
    headers: email.message.Message
    body: bytes
    client_port: int


@dataclass
class Reply:
    """A scripted HTTP answer; ``hold`` waits for the server's ``release`` event first."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hold: bool = False


class RecordingWebhookServer(_Running):
    """An HTTP/1.1 server on a free port of 127.0.0.1 recording every request.

    ``replies`` are answered in order (then ``200``); a held reply waits until ``release``
    is set (leaving the server sets it). ``connections`` counts TCP connections accepted.
    """

    def __init__(self, *replies: Reply) -> None:
        self.requests: list[RecordedRequest] = []
        self.replies: deque[Reply] = deque(replies)
        self.connections = 0
        self.release = threading.Event()
        self.held = threading.Event()  # set when a held reply starts waiting
        self._changed = threading.Condition()
        self._server = _HttpServer((HOST, 0), _WebhookHandler)
        self._server.recorder = self
        # A short poll interval: shutdown() waits up to one interval, at every test's end.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, daemon=True)
        self.port: int = self._server.server_address[1]
        self.url = f"http://{HOST}:{self.port}/hooks/reminders"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Release held replies, stop serving and wait for every connection's thread."""
        self.release.set()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads
        self._thread.join(WAIT)

    def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Return the requests once at least ``count`` arrived."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, WAIT):
                raise AssertionError(f"{len(self.requests)} requests, expected {count}")
            return list(self.requests)

    def _record(self, request: RecordedRequest) -> Reply:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
            return self.replies.popleft() if self.replies else Reply()

    def _connected(self) -> None:
        with self._changed:
            self.connections += 1


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() waits for the handler threads
    recorder: RecordingWebhookServer


class _WebhookHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = WAIT  # an idle kept-alive connection cannot hold the server's exit forever
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.recorder._connected()

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        request = RecordedRequest(
            self.command, self.path, self.headers, body, self.client_address[1]
        )
        reply = self.server.recorder._record(request)
        if reply.hold:
            self.server.recorder.held.set()
            self.server.recorder.release.wait(WAIT)
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up (a timeout test): nothing to answer to
            self.close_connection = True

    do_POST = do_PUT = do_GET = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


# --- Silence and TLS ----------------------------------------------------------------------


class SilentServer(_Running):
    """A listening socket that never accepts nor answers: every read from it times out."""

    def __init__(self) -> None:
        self._socket = socket.create_server((HOST, 0))
        self.host = HOST
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}/"

    def start(self) -> None:
        """Nothing to do: the kernel completes connections into the backlog."""

    def stop(self) -> None:
        """Close the socket, resetting the connections waiting in its backlog."""
        self._socket.close()


@dataclass(frozen=True)
class Tls:
    """A self-signed certificate for 127.0.0.1 and contexts that use it."""

    certificate: Path
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts only this certificate, with hostname checks on


def self_signed_tls(directory: Path) -> Tls:
    """Make a certificate for 127.0.0.1 with the ``openssl`` command (skip if absent)."""
    import pytest

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    key, certificate = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(certificate), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certificate, key)
    client = ssl.create_default_context(cafile=str(certificate))
    return Tls(certificate, server, client)
