"""The SMTP channel against a real aiosmtpd server: headers, reuse, TLS, classification."""

from __future__ import annotations

import email
import socket
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from email import policy
from email.message import EmailMessage
from pathlib import Path
from ssl import SSLContext
from typing import TypedDict, Unpack

import pytest

from outbox.channels.base import Channel, Message, Outcome
from outbox.channels.smtp import SUBJECT_LIMIT, SmtpChannel
from tests.support.channels import expect
from tests.support.clock import T0, ManualClock
from tests.support.servers.silent import SilentServer
from tests.support.servers.smtp import RecordingSmtpServer
from tests.support.servers.tls import Tls, self_signed_tls

NOW = T0
PASSWORD = "s3cret-Pa55"


def reminder(
    key: str = "rk-1",
    recipient: str = "alice@example.com",
    subject: str = "Reminder: file taxes",
    headers: dict[str, str] | None = None,
) -> Message:
    """A message shaped like the domain renders them (``headers``: the domain's by default)."""
    if headers is None:
        headers = {
            "Message-ID": f"<{key}@reminders.test>",
            "X-Reminder-Key": key,
            "X-Task-Id": "42",
        }
    text = "Your task “file taxes” is due 2026-11-29 09:00 (Europe/Paris).\n"
    return Message(key=key, recipient=recipient, subject=subject, text=text, headers=headers)


class TlsAndLogin(TypedDict, total=False):
    """The options of `SmtpChannel` that tests vary beyond the sender and the timeout."""

    username: str
    password: str
    starttls: bool
    ssl: bool
    ssl_context: SSLContext


def channel_for(
    server: RecordingSmtpServer | SilentServer,
    *,
    timeout: float = 5.0,
    **options: Unpack[TlsAndLogin],
) -> SmtpChannel:
    """A channel on ``server`` with a short timeout and a fixed clock."""
    return SmtpChannel(
        server.host,
        server.port,
        mail_from="reminders@reminders.test",
        timeout=timeout,
        clock=ManualClock(),
        **options,
    )


def parsed(raw: bytes) -> EmailMessage:
    """The received bytes as a message object."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_names(raw: bytes) -> list[str]:
    """The names of the header fields, read straight from the raw bytes."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line and line[0] not in " \t"]


@pytest.fixture
def server() -> Iterator[RecordingSmtpServer]:
    """A plain recording SMTP server."""
    with RecordingSmtpServer() as running:
        yield running


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A certificate for 127.0.0.1 and contexts trusting it."""
    return self_signed_tls(tmp_path)


def test_sends_reminder_with_its_identifying_headers(server: RecordingSmtpServer) -> None:
    """The e-mail carries From, To, Subject, Date, Message-ID, X-Reminder-Key and X-Task-Id."""
    with closing(channel_for(server)) as channel:
        assert channel.send(reminder()).outcome is Outcome.DELIVERED
    [mail] = server.wait_for_messages(1)
    assert mail.envelope_from == "reminders@reminders.test"
    assert mail.rcpt_tos == ["alice@example.com"]
    received = parsed(mail.raw)
    assert received["Message-ID"] == "<rk-1@reminders.test>"
    assert received["X-Reminder-Key"] == "rk-1"
    assert received["X-Task-Id"] == "42"
    assert received["From"] == "reminders@reminders.test"
    assert received["To"] == "alice@example.com"
    assert received["Subject"] == "Reminder: file taxes"
    assert received["Date"] == "Sat, 28 Nov 2026 12:00:00 +0000"
    assert received.get_content_type() == "text/plain"
    assert received.get_content_charset() == "utf-8"
    assert received.get_content().replace("\r\n", "\n") == reminder().text


def test_hostile_title_cannot_add_a_header(server: RecordingSmtpServer) -> None:
    """CR/LF and a fake "Bcc:" in the title stay inside the Subject; no header is added."""
    title = "Pay rent\r\nBcc: evil@x.example\r\n\r\nfake body"
    with closing(channel_for(server)) as channel:
        assert channel.send(reminder(subject=title)).outcome is Outcome.DELIVERED
    [mail] = server.wait_for_messages(1)
    assert mail.rcpt_tos == ["alice@example.com"]
    names = [name.lower() for name in header_names(mail.raw)]
    assert "bcc" not in names
    assert names.count("subject") == 1
    assert parsed(mail.raw)["Subject"] == "Pay rent  Bcc: evil@x.example    fake body"


def test_long_title_is_bounded(server: RecordingSmtpServer) -> None:
    """A huge title gives a subject of at most SUBJECT_LIMIT characters."""
    with closing(channel_for(server)) as channel:
        channel.send(reminder(subject="é" * 5000))
    subject = parsed(server.wait_for_messages(1)[0].raw)["Subject"]
    assert len(subject) == SUBJECT_LIMIT
    assert subject.endswith("…")


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Task-Id", "42\r\nBcc: evil@x.example"), ("X-Note", "a\nb"), ("X-Bad:Name", "v"),
     ("Bad Name", "v"), ("Bcc", "evil@x.example"), ("To", "evil@x.example")],
)  # fmt: skip
def test_bad_or_reserved_header_is_permanent_without_connecting(
    server: RecordingSmtpServer, name: str, value: str
) -> None:
    """A header with a line break, a bad name or a routing name is refused before any I/O."""
    with closing(channel_for(server)) as channel:
        delivery = channel.send(reminder(headers={name: value}))
    expect(delivery, Outcome.PERMANENT)
    assert server.sessions == 0


@pytest.mark.parametrize(
    "recipient",
    ["", "alice", "@example.com", "alice@", "a@b@example.com", "alice@example.com\r\nRCPT TO:<e@x>",
     "alice@example.com, bob@example.com", "alice@example.com,bob@example.com",
     "<alice@example.com>", "a lice@example.com", "émile@exämple.com, bob@example.com",
     "émile @exämple.com", "émile\u2028@exämple.com", "émile\uff20exämple.com",
     "émile@exämple.com\r\n", "é«mile»@exämple.com", "émile@exämple.com\u00a0"],
)  # fmt: skip
def test_invalid_recipient_is_permanent_without_connecting(
    server: RecordingSmtpServer, recipient: str
) -> None:
    """Anything but one plain address is refused for good, and no connection is opened: an
    international address too, when it has spaces, breaks, symbols or a second address."""
    with closing(channel_for(server)) as channel:
        expect(channel.send(reminder(recipient=recipient)), Outcome.PERMANENT, "recipient")
    assert server.sessions == 0


def html_reminder(key: str = "rk-1", recipient: str = "alice@example.com") -> Message:
    """`reminder` with an HTML alternative (non-ASCII, with an escaped title)."""
    message = reminder(key, recipient)
    html = "<p>Votre tâche <strong>Payer &lt;le loyer&gt;</strong> est due.</p>\n"
    return Message(message.key, message.recipient, message.subject, message.text, html,
                   message.headers)  # fmt: skip


def test_an_html_part_makes_a_multipart_alternative(server: RecordingSmtpServer) -> None:
    """With an HTML part the e-mail is multipart/alternative: text/plain first, then
    text/html, both UTF-8 and 7-bit clean on the wire."""
    with closing(channel_for(server)) as channel:
        assert channel.send(html_reminder()).outcome is Outcome.DELIVERED
    [mail] = server.wait_for_messages(1)
    assert all(byte < 128 for byte in mail.raw)
    received = parsed(mail.raw)
    assert received.get_content_type() == "multipart/alternative"
    text, html = received.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    assert text.get_content().replace("\r\n", "\n") == reminder().text
    assert html.get_content().replace("\r\n", "\n") == html_reminder().html


def test_the_sender_has_a_display_name_encoded_when_not_ascii(
    server: RecordingSmtpServer,
) -> None:
    """``mail_from_name`` is the From header's display name, RFC 2047-encoded when needed."""
    for name in ("Reminders", "Rappels d'Émile"):
        channel = SmtpChannel(server.host, server.port, mail_from="reminders@reminders.test",
                              mail_from_name=name, timeout=5, clock=ManualClock())  # fmt: skip
        with closing(channel):
            assert channel.send(reminder()).outcome is Outcome.DELIVERED
    plain, encoded = server.wait_for_messages(2)
    assert plain.raw.startswith(b"From: Reminders <reminders@reminders.test>\r\n")
    assert encoded.raw.startswith(b"From: Rappels =?utf-8?q?d=27=C3=89mile?= <reminders@")
    sender = parsed(encoded.raw)["From"]
    assert sender.addresses[0].display_name == "Rappels d'Émile"
    assert sender.addresses[0].addr_spec == "reminders@reminders.test"
    assert encoded.envelope_from == "reminders@reminders.test"


def test_an_international_address_is_sent_with_smtputf8_when_offered() -> None:
    """émile@exämple.com goes out with SMTPUTF8: envelope and To header in UTF-8."""
    with RecordingSmtpServer(smtputf8=True) as server:
        with closing(channel_for(server)) as channel:
            delivery = channel.send(html_reminder(recipient="émile@exämple.com"))
            assert delivery.outcome is Outcome.DELIVERED, delivery.error
            assert channel.send(reminder(key="rk-2")).outcome is Outcome.DELIVERED
        international, plain = server.wait_for_messages(2)
    assert international.rcpt_tos == ["émile@exämple.com"]
    assert "SMTPUTF8" in international.mail_options
    assert "To: émile@exämple.com\r\n".encode() in international.raw
    assert parsed(international.raw)["To"] == "émile@exämple.com"
    assert "SMTPUTF8" not in plain.mail_options and plain.rcpt_tos == ["alice@example.com"]
    assert server.sessions == 1


def test_an_international_address_is_dead_when_the_relay_lacks_smtputf8(
    server: RecordingSmtpServer,
) -> None:
    """Without SMTPUTF8 at the relay an international address is refused for good, saying
    why (address masked); nothing is sent, and the connection serves the next message."""
    with closing(channel_for(server)) as channel:
        delivery = channel.send(reminder(recipient="émile@exämple.com"))
        expect(delivery, Outcome.PERMANENT, "SMTPUTF8")
        assert delivery.error is not None and "émile" not in delivery.error
        assert "é***@exämple.com" in delivery.error
        assert channel.send(reminder(key="rk-2")).outcome is Outcome.DELIVERED
    assert server.data_commands == 1 and server.sessions == 1


def test_a_long_list_unsubscribe_url_survives_folding(server: RecordingSmtpServer) -> None:
    """A signed unsubscribe URL longer than a header line arrives whole (RFC 8058 headers)."""
    url = "https://reminders.example.com/u/" + "t0K3n" * 40
    headers = {"Message-ID": "<rk-1@reminders.test>", "List-Unsubscribe": f"<{url}>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}  # fmt: skip
    with closing(channel_for(server)) as channel:
        assert channel.send(reminder(headers=headers)).outcome is Outcome.DELIVERED
    received = parsed(server.wait_for_messages(1)[0].raw)
    assert "".join(str(received["List-Unsubscribe"]).split()) == f"<{url}>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_missing_message_id_gets_one(server: RecordingSmtpServer) -> None:
    """A message rendered without a Message-ID still gets one, in the sender's domain."""
    with closing(channel_for(server)) as channel:
        channel.send(reminder(headers={}))
    assert parsed(server.wait_for_messages(1)[0].raw)["Message-ID"].endswith("@reminders.test>")


def test_one_connection_serves_several_messages(server: RecordingSmtpServer) -> None:
    """Consecutive sends share one SMTP session; after close() the next send opens another."""
    channel: Channel = channel_for(server)
    try:
        for n in range(3):
            assert channel.send(reminder(key=f"rk-{n}")).outcome is Outcome.DELIVERED
        assert server.sessions == 1
        channel.close()
        assert channel.send(reminder(key="rk-3")).outcome is Outcome.DELIVERED
    finally:
        channel.close()
    assert server.sessions == 2
    keys = [parsed(mail.raw)["X-Reminder-Key"] for mail in server.wait_for_messages(4)]
    assert keys == ["rk-0", "rk-1", "rk-2", "rk-3"]


def test_connection_dropped_by_the_server_is_reopened_once(server: RecordingSmtpServer) -> None:
    """When the relay closed the idle connection, the send reconnects and succeeds."""
    with closing(channel_for(server)) as channel:
        assert channel.send(reminder(key="rk-1")).outcome is Outcome.DELIVERED
        server.drop_connections()
        assert channel.send(reminder(key="rk-2")).outcome is Outcome.DELIVERED
    assert server.sessions == 2
    assert len(server.wait_for_messages(2)) == 2


def test_4xx_reply_is_retried_and_next_attempt_delivers(server: RecordingSmtpServer) -> None:
    """A 451 to DATA is transient; the connection is dropped and the next send gets through."""
    server.data_replies.extend(["451 4.3.0 Mailbox busy, try later"] * 2)
    with closing(channel_for(server)) as channel:
        for _ in range(2):
            expect(channel.send(reminder()), Outcome.RETRY, "SMTP 451", "try later")
        assert channel.send(reminder()).outcome is Outcome.DELIVERED
    assert server.data_commands == 3
    assert server.sessions == 3  # each failure dropped the connection
    assert len(server.messages) == 1


def test_5xx_recipient_refusal_is_permanent_with_address_masked(
    server: RecordingSmtpServer,
) -> None:
    """A 550 for the recipient is permanent; the error names the code, not the address."""
    server.rcpt_replies["bob@example.com"] = "550 5.1.1 <bob@example.com>: no such user"
    with closing(channel_for(server)) as channel:
        error = expect(
            channel.send(reminder(recipient="bob@example.com")),
            Outcome.PERMANENT, "SMTP 550", "b***@example.com", "no such user",
        )  # fmt: skip
    assert "bob@" not in error
    assert server.messages == []


def test_4xx_recipient_refusal_is_retried(server: RecordingSmtpServer) -> None:
    """A 452 (insufficient storage) for the recipient is transient."""
    server.rcpt_replies["bob@example.com"] = "452 4.2.2 Mailbox full"
    with closing(channel_for(server)) as channel:
        expect(channel.send(reminder(recipient="bob@example.com")), Outcome.RETRY, "SMTP 452")


def test_5xx_data_reply_is_permanent(server: RecordingSmtpServer) -> None:
    """A 554 to DATA (content refused) is permanent."""
    server.data_replies.append("554 5.6.0 Message refused")
    with closing(channel_for(server)) as channel:
        expect(channel.send(reminder()), Outcome.PERMANENT, "SMTP 554", "Message refused")


def test_silent_server_times_out_as_retry() -> None:
    """A relay that accepts the connection but never greets is a transient timeout."""
    with SilentServer() as silent, closing(channel_for(silent, timeout=0.5)) as channel:
        expect(channel.send(reminder()), Outcome.RETRY, "timeout")


@contextmanager
def greeting_only(greeting: bytes) -> Iterator[int]:
    """A one-connection server that answers the greeting with ``greeting``; yields its port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def answer() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.sendall(greeting)
                connection.recv(1024)  # returns once the client has hung up

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            thread.join(5)


@pytest.mark.parametrize(
    ("greeting", "outcome"),
    [(b"421 4.3.2 Too busy, come back later\r\n", Outcome.RETRY),
     (b"554 5.3.2 No SMTP service here\r\n", Outcome.PERMANENT)],
)  # fmt: skip
def test_refused_greeting_is_classified_by_its_code(greeting: bytes, outcome: Outcome) -> None:
    """A 4xx greeting is transient, a 5xx greeting permanent, as RFC 5321 says."""
    with greeting_only(greeting) as port:
        channel = SmtpChannel("127.0.0.1", port, mail_from="r@reminders.test", timeout=5.0)
        with closing(channel):
            expect(channel.send(reminder()), outcome, f"SMTP {greeting[:3].decode()}")


def test_refused_connection_is_retry() -> None:
    """Nobody listening on the port is a transient connection error."""
    with socket.socket() as probe:  # a port that was free a moment ago and is closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = SmtpChannel("127.0.0.1", port, mail_from="r@reminders.test", timeout=2.0)
    with closing(channel):
        expect(channel.send(reminder()), Outcome.RETRY, f"127.0.0.1:{port}")


def test_login_with_right_credentials_delivers() -> None:
    """With a username the channel authenticates before sending."""
    with RecordingSmtpServer(credentials=("mailer", PASSWORD)) as server:
        options: TlsAndLogin = {"username": "mailer", "password": PASSWORD}
        with closing(channel_for(server, **options)) as channel:
            assert channel.send(reminder()).outcome is Outcome.DELIVERED
        assert server.logins == ["mailer"]


def test_wrong_password_is_permanent_and_never_shown() -> None:
    """A 535 authentication failure is permanent and its error does not contain the password."""
    with RecordingSmtpServer(credentials=("mailer", "the-right-one")) as server:
        options: TlsAndLogin = {"username": "mailer", "password": PASSWORD}
        with closing(channel_for(server, **options)) as channel:
            error = expect(channel.send(reminder()), Outcome.PERMANENT, "SMTP 535")
        assert PASSWORD not in error
        assert server.messages == []


def test_starttls_verifies_the_certificate_and_delivers(tls: Tls) -> None:
    """STARTTLS with a context trusting the relay's certificate delivers the message."""
    with RecordingSmtpServer(starttls=tls.server) as server:
        options: TlsAndLogin = {"starttls": True, "ssl_context": tls.client}
        with closing(channel_for(server, **options)) as channel:
            assert channel.send(reminder()).outcome is Outcome.DELIVERED
        assert len(server.wait_for_messages(1)) == 1


def test_starttls_refuses_an_untrusted_certificate(tls: Tls) -> None:
    """By default certificates are verified: a self-signed relay is a retry, nothing is sent."""
    with RecordingSmtpServer(starttls=tls.server) as server:
        with closing(channel_for(server, starttls=True)) as channel:
            expect(channel.send(reminder()), Outcome.RETRY, "CERTIFICATE_VERIFY_FAILED")
        assert server.data_commands == 0


def test_starttls_missing_on_the_relay_never_falls_back_to_plain_text() -> None:
    """A relay without STARTTLS gets no message in clear text; the send is retried."""
    with RecordingSmtpServer() as server:
        with closing(channel_for(server, starttls=True)) as channel:
            expect(channel.send(reminder()), Outcome.RETRY, "STARTTLS")
        assert server.data_commands == 0


def test_implicit_tls_delivers(tls: Tls) -> None:
    """With ssl=True the channel speaks TLS from the first byte (SMTPS)."""
    with RecordingSmtpServer(implicit_tls=tls.server) as server:
        options: TlsAndLogin = {"ssl": True, "ssl_context": tls.client}
        with closing(channel_for(server, **options)) as channel:
            assert channel.send(reminder()).outcome is Outcome.DELIVERED
        assert len(server.wait_for_messages(1)) == 1


def test_close_without_a_connection_is_harmless() -> None:
    """Closing a channel that never sent, or twice, does nothing."""
    channel = SmtpChannel("127.0.0.1", 9, mail_from="r@reminders.test", timeout=1.0)
    channel.close()
    channel.close()


def test_bad_configuration_is_refused_at_construction() -> None:
    """STARTTLS with implicit TLS, or a malformed sender, fail when the channel is built."""
    with pytest.raises(ValueError, match="not both"):
        SmtpChannel("h", 465, mail_from="r@x.test", starttls=True, ssl=True, timeout=1.0)
    with pytest.raises(ValueError, match="mail_from"):
        SmtpChannel("h", 25, mail_from="not an address", timeout=1.0)
