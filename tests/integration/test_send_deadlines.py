"""Each SMTP or webhook send ends within its timeout as a whole, and a connection that ran
out is dropped: a silent connection (behind the fault proxy) or a receiver that answers a
byte at a time cannot hold a relay thread."""

from __future__ import annotations

import email
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager

from outbox.channels.base import Message, Outcome
from outbox.channels.smtp import SmtpChannel
from outbox.channels.webhook import WebhookChannel
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.servers.smtp import RecordingSmtpServer
from tests.support.servers.webhook import RecordingWebhookServer

TIMEOUT = 1.0  # the channels' send timeout in these tests
SLACK = 1.0  # what a loaded machine may add to it
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw1Ubfg2Rk4Mo="


def reminder(key: str) -> Message:
    """A minimal message for either channel."""
    return Message(
        key=key,
        recipient="alice@example.com",
        subject="Reminder",
        text="Your task is due.\n",
        headers={"X-Reminder-Key": key},
        document={"type": "task.due_soon", "key": key},
    )


def timed(send: object, message: Message) -> tuple[Outcome, str | None, float]:
    """Send and measure: (outcome, error, seconds)."""
    started = time.monotonic()
    delivery = send(message)  # type: ignore[operator]
    return delivery.outcome, delivery.error, time.monotonic() - started


@contextmanager
def trickling_server(prefix: bytes) -> Iterator[int]:
    """A server that answers each connection with ``prefix`` and then one byte every 0.1 s,
    forever: each read gets data well within any timeout. Yields its port."""
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def answer() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.sendall(prefix)
                while not stop.wait(0.1):
                    try:
                        connection.sendall(b"x")
                    except OSError:
                        return  # the client gave up

        thread = threading.Thread(target=answer)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            stop.set()
            thread.join(10)


def test_smtp_send_on_a_silent_connection_ends_at_the_timeout_then_reconnects() -> None:
    """After a NAT flush the kept-open SMTP connection is silent: the send is retried after
    the timeout, and the next send opens a new connection that works."""
    with RecordingSmtpServer() as server, FaultProxy(server.host, server.port) as proxy:
        channel = SmtpChannel(proxy.host, proxy.port, mail_from="r@example.com", timeout=TIMEOUT)
        with closing(channel):
            assert channel.send(reminder("k1")).outcome is Outcome.DELIVERED
            proxy.mode = Mode.SILENT
            proxy.mode = Mode.FORWARD  # new connections flow, the open one stays dead
            outcome, error, elapsed = timed(channel.send, reminder("k2"))
            assert outcome is Outcome.RETRY
            assert error is not None and "timeout" in error
            assert TIMEOUT <= elapsed < TIMEOUT + SLACK
            assert channel.send(reminder("k3")).outcome is Outcome.DELIVERED
        keys = [email.message_from_bytes(m.raw)["X-Reminder-Key"] for m in server.messages]
        assert keys == ["k1", "k3"]  # k2 never got through
        assert server.sessions == 2
        assert proxy.counts.silenced == 1


def test_smtp_greeting_a_byte_at_a_time_cannot_outlast_the_timeout() -> None:
    """A server that keeps each read within the socket timeout is still cut off at the
    send's timeout: smtplib alone would read its greeting forever."""
    with trickling_server(b"220-") as port:
        channel = SmtpChannel("127.0.0.1", port, mail_from="r@example.com", timeout=TIMEOUT)
        with closing(channel):
            outcome, error, elapsed = timed(channel.send, reminder("k1"))
    assert outcome is Outcome.RETRY
    assert error is not None and "took over" in error
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK


def test_webhook_post_on_a_silent_connection_ends_at_the_timeout_then_reconnects() -> None:
    """After a NAT flush the kept-alive HTTP connection is silent: the post is retried after
    the timeout, and the next post opens a new connection that works."""
    with RecordingWebhookServer() as server, FaultProxy("127.0.0.1", server.port) as proxy:
        url = f"http://{proxy.host}:{proxy.port}/hooks/reminders"
        with closing(WebhookChannel(url, [SECRET], timeout=TIMEOUT)) as channel:
            assert channel.send(reminder("k1")).outcome is Outcome.DELIVERED
            proxy.mode = Mode.SILENT
            proxy.mode = Mode.FORWARD
            outcome, error, elapsed = timed(channel.send, reminder("k2"))
            assert outcome is Outcome.RETRY
            assert error is not None and "timeout" in error
            assert TIMEOUT <= elapsed < TIMEOUT + SLACK
            assert channel.send(reminder("k3")).outcome is Outcome.DELIVERED
        keys = [r.headers["webhook-id"] for r in server.requests]
        assert keys == ["k1", "k3"]  # k2 never got through
        assert server.connections == 2
        assert proxy.counts.silenced == 1


def test_webhook_answer_a_byte_at_a_time_cannot_outlast_the_timeout() -> None:
    """A receiver that trickles its answer's headers within httpx's read timeout is still
    cut off at the send's timeout."""
    with trickling_server(b"HTTP/1.1 200 OK\r\nX-Slow: ") as port:
        url = f"http://127.0.0.1:{port}/hook"
        with closing(WebhookChannel(url, [SECRET], timeout=TIMEOUT)) as channel:
            outcome, error, elapsed = timed(channel.send, reminder("k1"))
    assert outcome is Outcome.RETRY
    assert error is not None and "took over" in error
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK
