"""A recording webhook receiver: an HTTP/1.1 server with keep-alive and scripted replies."""

from __future__ import annotations

import email.message
import functools
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from tests.support.servers.base import HOST, WAIT, Running


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


class RecordingWebhookServer(Running):
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
