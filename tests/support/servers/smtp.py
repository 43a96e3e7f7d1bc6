"""A recording SMTP server: aiosmtpd on a free port, with scripted replies, TLS and AUTH."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import deque
from typing import Any, NamedTuple

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.servers.base import HOST, WAIT, Running


class ReceivedMail(NamedTuple):
    """One accepted message: the envelope, the raw bytes after DATA, and when it was accepted
    (``time.time()``)."""

    envelope_from: str
    rcpt_tos: list[str]
    raw: bytes
    received_at: float = 0.0
    #: The client's MAIL FROM parameters, e.g. ``["SMTPUTF8", "BODY=8BITMIME"]``.
    mail_options: tuple[str, ...] = ()


class RecordingSmtpServer(Running):
    """An aiosmtpd server on a free port of 127.0.0.1 recording accepted messages.

    Scripting: ``data_replies`` are answered, in order, to the next DATA commands instead
    of ``250`` (e.g. ``"451 4.3.0 try later"``; such messages are not recorded);
    ``rcpt_replies`` maps a recipient to the reply its RCPT gets. ``sessions`` counts TCP
    connections; ``data_commands`` counts DATA commands, accepted or not.
    ``credentials=(user, password)`` makes AUTH available (over plain text too, for tests);
    ``starttls`` offers STARTTLS with that context; ``implicit_tls`` wraps the port in TLS;
    ``smtputf8`` offers SMTPUTF8 (RFC 6531: international addresses).
    """

    def __init__(
        self,
        *,
        credentials: tuple[str, str] | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        smtputf8: bool = False,
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
        kwargs: dict[str, Any] = {
            "server_hostname": "mail.test",
            "ssl_context": implicit_tls,
            "enable_SMTPUTF8": smtputf8,
        }
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
            mail = ReceivedMail(
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                raw,
                time.time(),
                tuple(envelope.mail_options),
            )
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
        # aiosmtpd leaves its controller's methods unannotated.
        super()._trigger_server()  # type: ignore[no-untyped-call]
