"""The SMTP channel: one e-mail per message through a relay, over a connection kept open.

Replies are classified as RFC 5321 defines them: 2xx accepted, 4xx transient, 5xx
permanent. Timeouts and connection errors are transient. Error texts name the code and
the server's words with addresses masked, and never contain the password.

An international recipient (``émile@exämple.com``) is sent with SMTPUTF8 (RFC 6531) when
the relay offers it, and is refused for good when it does not.
"""

from __future__ import annotations

import email.errors
import functools
import smtplib
import socket
import ssl as tls
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from email import policy
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from outbox.channels import mime
from outbox.channels.base import Delivery, Message
from outbox.clock import Clock, SystemClock
from outbox.deadline import Deadline, deadline
from outbox.masking import mask_email, mask_emails_in, one_line

SUBJECT_LIMIT = 200
_ERROR_LIMIT = 300


class _HeaderClasses(HeaderRegistry):
    """The email package's header registry, building each field's class once.

    The stock registry creates a new class for every field of every message (twice per
    field: once to check how often it may appear, once to parse it), a large share of
    the cost of a message's header. The class depends on the field's name alone.
    """

    @functools.lru_cache(maxsize=64)  # noqa: B019  (one registry, alive as long as the process)
    def __getitem__(self, name: str) -> type[BaseHeader]:
        return super().__getitem__(name)


# Strict: a defect while building the message is an error, never a silently odd e-mail.
_POLICY = policy.SMTP.clone(raise_on_defect=True, header_factory=_HeaderClasses())
# For an international address: headers in UTF-8, sent with SMTPUTF8.
_UTF8_POLICY = _POLICY.clone(utf8=True)
_UTF8_OPTIONS = ("SMTPUTF8", "BODY=8BITMIME")
# Headers the channel writes itself, or that would change who gets the message.
_RESERVED = frozenset(
    {"from", "to", "cc", "bcc", "subject", "date", "sender", "reply-to", "return-path"}
    | {"mime-version", "content-type", "content-transfer-encoding"}
)
_BUILD_ERRORS = (ValueError, TypeError, IndexError, email.errors.MessageError)


class _RelayUnusable(smtplib.SMTPException):
    """The relay lacks what the configuration requires; retrying after a fix will work."""


class _NoSmtpUtf8(smtplib.SMTPException):
    """The recipient's address needs SMTPUTF8, which the relay does not offer."""


class _WatchedSMTP(smtplib.SMTP):
    """An SMTP connection whose socket a deadline watches from the moment it connects.

    smtplib connects and reads the greeting inside the constructor; its `_get_socket`
    hook (the one `smtplib.SMTP_SSL` overrides) is the one place to see the socket first.
    """

    def __init__(self, host: str, port: int, *, timeout: float, limit: Deadline) -> None:
        self._limit = limit  # before the constructor connects
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # typeshed leaves out this private hook of smtplib.SMTP, which SMTP_SSL overrides too.
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        self._limit.watch(sock)
        return sock


class _WatchedSMTPSSL(smtplib.SMTP_SSL, _WatchedSMTP):
    """`_WatchedSMTP` with implicit TLS: the handshake, too, runs under the deadline."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        context: tls.SSLContext | None,
        limit: Deadline,
    ) -> None:
        self._limit = limit
        smtplib.SMTP_SSL.__init__(self, host, port, timeout=timeout, context=context)


class SmtpChannel:
    """Sends each message as a UTF-8 e-mail to ``message.recipient``: text/plain, or
    multipart/alternative with a text/html part when the message has one.

    ``mail_from_name`` is the display name of the From header (encoded as RFC 2047 asks
    when it is not ASCII).

    The connection opens on the first send and stays open until `close`; a send that
    finds it dropped by the server reconnects once. After any failure it is dropped, so
    the next send starts afresh. Each send as a whole, connecting included, ends within
    ``timeout`` seconds (`outbox.deadline`), as does each socket operation; one that runs
    out is retried later. Not thread-safe: give each thread its own channel.
    """

    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        mail_from: str,
        mail_from_name: str | None = None,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl: bool = False,
        timeout: float,
        ssl_context: tls.SSLContext | None = None,
        clock: Clock | None = None,
    ) -> None:
        if starttls and ssl:
            raise ValueError("choose STARTTLS or implicit TLS (ssl=True), not both")
        if _address_problem(mail_from) is not None or not mail_from.isascii():
            raise ValueError("mail_from is not a valid e-mail address")
        if mail_from_name is not None and not mail_from_name.isprintable():
            raise ValueError("mail_from_name must be one line of printable characters")
        self._host, self._port, self._timeout = host, port, timeout
        self._mail_from = mail_from
        # Parsed once: the same header object goes into every message.
        self._from = _POLICY.header_store_parse(
            "From", Address(display_name=mail_from_name or "", addr_spec=mail_from)
        )[1]
        self._username, self._password = username, password
        self._starttls, self._ssl = starttls, ssl
        # Certificates are verified unless the caller hands in a context that does not.
        self._tls = ssl_context or (tls.create_default_context() if starttls or ssl else None)
        self._clock = clock or SystemClock()
        self._domain = mail_from.rpartition("@")[2]
        self._connection: smtplib.SMTP | None = None
        self._date: tuple[datetime, BaseHeader] | None = None

    def send(self, message: Message) -> Delivery:
        """Send one e-mail and classify the relay's answer; never raises for a failure."""
        problem = _address_problem(message.recipient) or _header_problem(message.headers)
        if problem is not None:
            return Delivery.permanent(problem)
        international = not message.recipient.isascii()
        try:
            data = self._render(message, international)
        except _BUILD_ERRORS as exc:
            return Delivery.permanent(f"message cannot be built: {self._scrub(str(exc))}")
        with deadline(self._timeout) as limit:
            delivery = self._send_within(limit, message.recipient, data, international)
        if limit.expired:
            self._drop()  # its socket was shut down: it is never used again
        return delivery

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open (within the timeout)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with deadline(self._timeout) as limit:
            try:
                if connection.sock is not None:
                    limit.watch(connection.sock)
                connection.quit()
            except (smtplib.SMTPException, OSError):
                pass  # the server may be gone already; the socket is closed below either way
            finally:
                connection.close()

    def _send_within(
        self, limit: Deadline, recipient: str, data: bytes, international: bool
    ) -> Delivery:
        """Send on the open connection (reconnecting once if the relay dropped it idle), or
        on a new one, all before ``limit``; a failure drops the connection."""
        reused = self._connection is not None
        try:
            try:
                self._transmit(limit, recipient, data, international)
            except smtplib.SMTPException as exc:
                if not (reused and _dropped(exc)) or limit.expired:
                    raise
                # Relays close idle connections; that says nothing about this message.
                self._drop()
                self._transmit(limit, recipient, data, international)
        except _NoSmtpUtf8:  # nothing was sent: the connection is as good as before
            return Delivery.permanent(
                f"invalid recipient: {mask_email(recipient)} is an international address, "
                f"which needs SMTPUTF8; the relay {self._host}:{self._port} does not offer it"
            )
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            if limit.expired:
                where, seconds = f"{self._host}:{self._port}", self._timeout
                return Delivery.retry(
                    f"SMTP timeout: the send to {where} took over {seconds}s; connection dropped"
                )
            return self._classify(exc)
        return Delivery.delivered()

    def _render(self, message: Message, international: bool) -> bytes:
        # The header fields through the email package (strict: every value checked and
        # folded); the body's fixed MIME framing by `outbox.channels.mime`.
        mail = EmailMessage(policy=_UTF8_POLICY if international else _POLICY)
        mail["From"] = self._from
        mail["To"] = _to_field(message.recipient)
        mail["Subject"] = _subject(message.subject)
        mail["Date"] = self._date_field()
        for name, value in message.headers.items():
            mail[name] = value
        if "Message-ID" not in mail:
            mail["Message-ID"] = make_msgid(domain=self._domain)
        head = mail.as_bytes()  # the header fields, then the blank line that ends them
        return head[: -len(b"\r\n")] + mime.body(message.text, message.html)

    def _date_field(self) -> BaseHeader:
        """The Date field of a message built now: parsed once per second."""
        second = self._clock.now().replace(microsecond=0)
        if self._date is None or self._date[0] != second:
            field: BaseHeader = _POLICY.header_store_parse("Date", format_datetime(second))[1]
            self._date = second, field
        return self._date[1]

    def _transmit(self, limit: Deadline, recipient: str, data: bytes, international: bool) -> None:
        connection = self._connection
        if connection is None:
            connection = self._open(limit)
        elif connection.sock is not None:  # None once smtplib saw the server go
            limit.watch(connection.sock)
        options: tuple[str, ...] = ()
        if international:
            connection.ehlo_or_helo_if_needed()
            if not connection.has_extn("smtputf8"):
                raise _NoSmtpUtf8()
            options = _UTF8_OPTIONS
        connection.sendmail(self._mail_from, [recipient], data, mail_options=options)

    def _open(self, limit: Deadline) -> smtplib.SMTP:
        connection: smtplib.SMTP
        where, timeout = (self._host, self._port), self._timeout
        if self._ssl:
            connection = _WatchedSMTPSSL(*where, timeout=timeout, context=self._tls, limit=limit)
        else:
            connection = _WatchedSMTP(*where, timeout=timeout, limit=limit)
        try:
            if self._starttls:
                connection.ehlo()
                if not connection.has_extn("starttls"):
                    raise _RelayUnusable("the server does not offer STARTTLS")
                connection.starttls(context=self._tls)
                connection.ehlo()
            if self._username is not None:
                connection.ehlo_or_helo_if_needed()
                if not connection.has_extn("auth"):
                    raise _RelayUnusable("the server does not offer AUTH")
                connection.login(self._username, self._password or "")
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _classify(self, exc: smtplib.SMTPException | OSError) -> Delivery:
        where = f"{self._host}:{self._port}"
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            address, (code, reply) = next(iter(exc.recipients.items()))
            text = f"SMTP {code} for {mask_email(address)}: {self._scrub(reply)}"
            return _by_code(code, text)
        if isinstance(exc, smtplib.SMTPResponseException):
            return _by_code(exc.smtp_code, f"SMTP {exc.smtp_code}: {self._scrub(exc.smtp_error)}")
        # smtplib reports a read timeout as a disconnection; the timeout is its context.
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
            return Delivery.retry(f"SMTP timeout after {self._timeout}s talking to {where}")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return Delivery.retry(f"SMTP connection to {where} lost: {self._scrub(str(exc))}")
        if isinstance(exc, OSError):
            return Delivery.retry(f"SMTP connection to {where} failed: {self._scrub(str(exc))}")
        return Delivery.retry(f"SMTP error from {where}: {self._scrub(str(exc))}")

    def _scrub(self, text: str | bytes) -> str:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if self._password:
            text = text.replace(self._password, "***")
        return mask_emails_in(one_line(text))[:_ERROR_LIMIT]


def _by_code(code: int, text: str) -> Delivery:
    return Delivery.permanent(text) if 500 <= code <= 599 else Delivery.retry(text)


def _dropped(exc: smtplib.SMTPException) -> bool:
    """Tell whether ``exc`` says the connection is gone (421 is "closing channel")."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 421


def _subject(title: str) -> str:
    subject = one_line(title)
    return subject if len(subject) <= SUBJECT_LIMIT else subject[: SUBJECT_LIMIT - 1] + "…"


@functools.lru_cache(maxsize=1024)  # a recipient's reminders come in runs
def _to_field(address: str) -> BaseHeader:
    """The To field for ``address``, parsed once for its runs of reminders (a parsed field
    does not depend on the policy: it is folded by the message's own when sent)."""
    field: BaseHeader = _POLICY.header_store_parse("To", address)[1]
    return field


@functools.lru_cache(maxsize=1024)
def _address_problem(address: str) -> str | None:
    """Say why ``address`` is not one plain e-mail address, or None if it is.

    Beyond ASCII, letters, marks and digits pass (an international address, RFC 6531): the
    address is checked as if each of them were an ASCII letter.
    """
    if not address:
        return "invalid recipient: empty address"
    if not address.isprintable() or any(ch.isspace() for ch in address):
        return "invalid recipient: spaces, line breaks or control characters"
    if not all(ch.isascii() or unicodedata.category(ch)[0] in "LMN" for ch in address):
        return "invalid recipient: symbols or punctuation beyond ASCII"
    local, at, domain = address.rpartition("@")
    if not (local and at and domain):
        return "invalid recipient: not an e-mail address"
    try:
        parsed = Address(addr_spec="".join(ch if ch.isascii() else "a" for ch in address))
    except _BUILD_ERRORS:
        return "invalid recipient: not a single valid e-mail address"
    return None if parsed.username and parsed.domain else "invalid recipient address"


def _header_problem(headers: Mapping[str, str]) -> str | None:
    """Say why a caller's header cannot be sent as given, or None if all can."""
    for name, value in headers.items():
        if not name or not all(33 <= ord(ch) <= 126 and ch != ":" for ch in name):
            return f"invalid header name {one_line(name)!r}"
        if name.lower() in _RESERVED:
            return f"header {name} is set by the channel"
        if "\r" in value or "\n" in value:
            return f"header {name} contains a line break"
    return None
