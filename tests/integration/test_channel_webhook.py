"""The webhook channel against a real HTTP server: signing, keep-alive, classification."""

from __future__ import annotations

import base64
import concurrent.futures
import gc
import json
import socket
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from httpcore._backends.sync import SyncStream  # the socket's writer, to count its calls

from outbox.channels.base import Channel, Message, Outcome
from outbox.channels.webhook import WebhookChannel, retry_after
from outbox.signing import verify
from tests.support.channels import expect
from tests.support.clock import T0, ManualClock
from tests.support.servers.silent import SilentServer
from tests.support.servers.webhook import RecordingWebhookServer, Reply

NOW = T0
TIMESTAMP = int(NOW.timestamp())
SECRET = "whsec_" + base64.b64encode(b"reminders-test-key-32-bytes-long").decode()
OLD_SECRET = "a-raw-secret-being-rotated-out"


def reminder(key: str = "rk-1") -> Message:
    """A message shaped like the domain renders them."""
    document = {
        "type": "task.due_soon",
        "key": key,
        "task_id": 42,
        "owner_id": 7,
        "title": "Café: file taxes 🎉",
        "due_date": "2026-11-29T08:00:00+00:00",
    }
    return Message(key=key, recipient="alice@example.com", subject="", text="", document=document)


def channel_for(
    url: str, secrets: tuple[str, ...] = (SECRET,), timeout: float = 5.0
) -> WebhookChannel:
    """A channel on ``url`` with a fixed clock."""
    return WebhookChannel(url, secrets, timeout=timeout, clock=ManualClock())


@pytest.fixture
def server() -> Iterator[RecordingWebhookServer]:
    """A recording webhook receiver answering 200 unless scripted."""
    with RecordingWebhookServer() as running:
        yield running


def test_posts_compact_json_with_standard_webhooks_headers(server: RecordingWebhookServer) -> None:
    """The POST carries the document as compact UTF-8 JSON and a signature that verifies."""
    with closing(channel_for(server.url)) as channel:
        assert channel.send(reminder()).outcome is Outcome.DELIVERED
    [request] = server.wait_for_requests(1)
    assert request.method == "POST"
    assert request.path == "/hooks/reminders"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "rk-1"
    assert request.headers["idempotency-key"] == "rk-1"
    assert request.headers["webhook-timestamp"] == str(TIMESTAMP)
    expected = json.dumps(reminder().document, separators=(",", ":"), ensure_ascii=False)
    assert request.body == expected.encode()
    assert "Café: file taxes 🎉".encode() in request.body
    assert verify(SECRET, "rk-1", request.headers["webhook-timestamp"], request.body,
                  request.headers["webhook-signature"], now=TIMESTAMP)  # fmt: skip


def test_every_secret_signs_during_rotation(server: RecordingWebhookServer) -> None:
    """With two secrets two signatures are sent, each verifying with its own secret."""
    with closing(channel_for(server.url, (SECRET, OLD_SECRET))) as channel:
        channel.send(reminder())
    [request] = server.wait_for_requests(1)
    header = request.headers["webhook-signature"]
    assert len(header.split()) == 2
    assert all(part.startswith("v1,") for part in header.split())
    for secret in (SECRET, OLD_SECRET):
        assert verify(secret, "rk-1", TIMESTAMP, request.body, header, now=TIMESTAMP)
    assert not verify("another", "rk-1", TIMESTAMP, request.body, header, now=TIMESTAMP)


def test_one_connection_is_kept_alive_across_sends(server: RecordingWebhookServer) -> None:
    """Consecutive sends reuse one connection; after close() the next send opens another."""
    channel: Channel = channel_for(server.url)
    try:
        for n in range(3):
            assert channel.send(reminder(f"rk-{n}")).outcome is Outcome.DELIVERED
        assert server.connections == 1
        assert len({request.client_port for request in server.requests}) == 1
        channel.close()
        assert channel.send(reminder("rk-3")).outcome is Outcome.DELIVERED
    finally:
        channel.close()
    assert server.connections == 2
    assert [r.headers["webhook-id"] for r in server.wait_for_requests(4)] == [
        "rk-0", "rk-1", "rk-2", "rk-3"
    ]  # fmt: skip


def test_a_cookie_the_receiver_sets_is_never_sent_back(server: RecordingWebhookServer) -> None:
    """Each delivery stands alone: a Set-Cookie in one answer reaches no later request."""
    server.replies.append(Reply(200, {"Set-Cookie": "session=abc; Path=/"}))
    with closing(channel_for(server.url)) as channel:
        for n in range(2):
            assert channel.send(reminder(f"rk-{n}")).outcome is Outcome.DELIVERED
    requests = server.wait_for_requests(2)
    assert [r.headers["webhook-id"] for r in requests] == ["rk-0", "rk-1"]
    assert [r.headers.get("cookie") for r in requests] == [None, None]


def test_each_request_goes_out_in_one_write(
    server: RecordingWebhookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request's head and body are written to the socket at once, not in two calls."""
    writes: list[int] = []
    write = SyncStream.write

    def counted(stream: Any, buffer: bytes, timeout: float | None = None) -> None:
        writes.append(len(buffer))
        write(stream, buffer, timeout)

    monkeypatch.setattr(SyncStream, "write", counted)
    with closing(channel_for(server.url)) as channel:
        for n in range(3):
            assert channel.send(reminder(f"rk-{n}")).outcome is Outcome.DELIVERED
    requests = server.wait_for_requests(3)
    assert [json.loads(r.body)["key"] for r in requests] == ["rk-0", "rk-1", "rk-2"]
    assert len(writes) == 3, writes
    assert all(size > len(requests[0].body) for size in writes)


def answer_then_wait_for_the_end(listener: socket.socket, answers: int) -> bytes:
    """Accept one connection, answer ``answers`` requests 200 on it, then read until the
    client ends it (b"") or 2 s pass (what the last read gave, or b"timeout")."""
    connection, _ = listener.accept()
    with connection:
        connection.settimeout(2.0)
        for _ in range(answers):
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        try:
            return connection.recv(65536)
        except TimeoutError:
            return b"timeout"


def test_close_ends_the_connection_for_the_receiver() -> None:
    """After sends on one kept-alive connection, close() ends it: the receiver reads the end
    of the stream, nothing held open behind it (the deadlines' duplicate of the socket)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        channel = channel_for(url)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            ended = pool.submit(answer_then_wait_for_the_end, listener, 3)
            try:
                for n in range(3):
                    assert channel.send(reminder(f"rk-{n}")).outcome is Outcome.DELIVERED
            finally:
                channel.close()
            assert ended.result() == b""


def test_a_dropped_channel_holds_no_socket_of_the_callers_client() -> None:
    """A channel on a caller's client, dropped, keeps none of its sockets open: when the
    caller closes its client, the receiver reads the end of the stream."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            ended = pool.submit(answer_then_wait_for_the_end, listener, 2)
            with httpx.Client() as client:
                channel = WebhookChannel(url, [SECRET], timeout=5.0, client=client)
                for n in range(2):
                    assert channel.send(reminder(f"rk-{n}")).outcome is Outcome.DELIVERED
                channel.close()  # the caller's client, and its connection, stay open
                del channel
                gc.collect()
            assert ended.result() == b""


def test_429_with_retry_after_seconds_is_retried_later(server: RecordingWebhookServer) -> None:
    """A 429 is transient and its Retry-After in seconds is passed on."""
    server.replies.append(Reply(429, {"Retry-After": "120"}, b"slow down"))
    with closing(channel_for(server.url)) as channel:
        delivery = channel.send(reminder())
    expect(delivery, Outcome.RETRY, "HTTP 429: slow down")
    assert delivery.retry_after == timedelta(seconds=120)


def test_503_with_retry_after_date_is_retried_later(server: RecordingWebhookServer) -> None:
    """A 503 is transient and a Retry-After HTTP-date becomes a delay from now."""
    when = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    server.replies.append(Reply(503, {"Retry-After": when}, b"maintenance"))
    with closing(channel_for(server.url)) as channel:
        delivery = channel.send(reminder())
    expect(delivery, Outcome.RETRY, "HTTP 503: maintenance")
    assert delivery.retry_after == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, Outcome.DELIVERED), (202, Outcome.DELIVERED), (204, Outcome.DELIVERED),
     (408, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY), (502, Outcome.RETRY),
     (400, Outcome.PERMANENT), (401, Outcome.PERMANENT), (404, Outcome.PERMANENT),
     (410, Outcome.PERMANENT), (422, Outcome.PERMANENT)],
)  # fmt: skip
def test_status_codes_are_classified_as_the_contract_says(
    server: RecordingWebhookServer, status: int, outcome: Outcome
) -> None:
    """2xx delivered; 408, 429 and 5xx retried; any other 4xx permanent."""
    server.replies.append(Reply(status))
    with closing(channel_for(server.url)) as channel:
        delivery = channel.send(reminder())
    expect(delivery, outcome)
    if outcome is not Outcome.DELIVERED:
        assert delivery.error == f"HTTP {status}"
        assert delivery.retry_after is None


def test_redirect_is_not_followed(server: RecordingWebhookServer) -> None:
    """A 3xx is permanent and the signed request is not sent to the new location."""
    server.replies.append(Reply(301, {"Location": "http://elsewhere.test/hook"}))
    with closing(channel_for(server.url)) as channel:
        expect(channel.send(reminder()), Outcome.PERMANENT, "HTTP 301", "elsewhere.test")
    assert len(server.requests) == 1


def test_error_body_is_cut_to_one_masked_line(server: RecordingWebhookServer) -> None:
    """The error quotes at most 200 characters of the body, on one line, addresses masked."""
    body = b"owner alice@example.com\r\nis gone " + b"x" * 1000
    server.replies.append(Reply(500, {"Content-Type": "text/plain"}, body))
    with closing(channel_for(server.url)) as channel:
        error = expect(channel.send(reminder()), Outcome.RETRY, "HTTP 500: owner a***@example.com")
    assert "alice@" not in error and "\n" not in error and "\r" not in error
    assert len(error) <= len("HTTP 500: ") + 200


def test_slow_response_times_out_as_retry(server: RecordingWebhookServer) -> None:
    """A receiver that does not answer within the timeout is a transient failure."""
    server.replies.append(Reply(hold=True))
    with closing(channel_for(server.url, timeout=0.3)) as channel:
        expect(channel.send(reminder()), Outcome.RETRY, "timeout")
    assert server.held.is_set()


def test_silent_receiver_times_out_as_retry() -> None:
    """A receiver that accepts the connection and never reads is a transient timeout."""
    with SilentServer() as silent, closing(channel_for(silent.url, timeout=0.3)) as channel:
        expect(channel.send(reminder()), Outcome.RETRY, "timeout")


def test_refused_connection_is_retry() -> None:
    """Nobody listening on the port is a transient network error."""
    with socket.socket() as probe:  # a port that was free a moment ago and is closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with closing(channel_for(f"http://127.0.0.1:{port}/hook")) as channel:
        expect(channel.send(reminder()), Outcome.RETRY, "ConnectError")


def test_injected_client_is_used_and_left_open(server: RecordingWebhookServer) -> None:
    """A client handed in carries the requests and still works after the channel's close()."""
    with httpx.Client() as client:
        channel = WebhookChannel(server.url, [SECRET], timeout=5.0, client=client)
        assert channel.send(reminder()).outcome is Outcome.DELIVERED
        channel.close()
        assert not client.is_closed
        assert channel.send(reminder("rk-2")).outcome is Outcome.DELIVERED
    assert server.connections == 1


def test_unserialisable_document_is_permanent(server: RecordingWebhookServer) -> None:
    """A document that is not JSON (NaN, objects) is refused before any request."""
    message = Message(key="rk-1", recipient="", subject="", text="", document={"x": float("nan")})
    with closing(channel_for(server.url)) as channel:
        expect(channel.send(message), Outcome.PERMANENT, "not JSON")
    assert server.requests == []


@pytest.mark.parametrize(
    ("url", "secrets"),
    [("ftp://example.test/", [SECRET]), ("http://example.test/", []),
     ("http://example.test/", "whsec_c2VjcmV0"), ("http://example.test/", ["whsec_!!"]),
     ("http://[::1/", [SECRET]), ("/relative/path", [SECRET])],
)  # fmt: skip
def test_bad_configuration_is_refused_at_construction(url: str, secrets: list[str]) -> None:
    """A bad or non-HTTP URL, no secret, a bare string or a bad whsec_ secret fail at start."""
    with pytest.raises(ValueError):
        WebhookChannel(url, secrets, timeout=1.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", timedelta(0)), ("30", timedelta(seconds=30)), ("999999999", timedelta(days=1)),
     (format_datetime(NOW - timedelta(hours=1), usegmt=True), timedelta(0)),
     (format_datetime(NOW + timedelta(days=9), usegmt=True), timedelta(days=1)),
     ("-5", None), ("soon", None), ("", None), (None, None)],
)  # fmt: skip
def test_retry_after_is_read_and_clamped_to_a_day(
    value: str | None, expected: timedelta | None
) -> None:
    """Retry-After in seconds or as a date is clamped to [0, 1 day]; junk is ignored."""
    assert retry_after(value, NOW) == expected
