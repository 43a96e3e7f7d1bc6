"""The real receivers, in a process of their own, noting when each message is accepted.

The recording aiosmtpd server and HTTP/1.1 webhook server of the tests (``tests/support``) are
reused as they are (imported; the webhook's subclassed only to timestamp acceptances, which
the SMTP server records itself). They run in a separate process so that they do not share the
benchmark's interpreter lock: the receiver's own CPU time is then the same for the raw loop
and for the relay.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from tests.support.servers.smtp import RecordingSmtpServer
from tests.support.servers.webhook import RecordedRequest, RecordingWebhookServer, Reply

WAIT_SECONDS = 120.0


class TimedWebhookServer(RecordingWebhookServer):
    """The recording webhook server, also noting when each request was answered 200."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted_at: list[float] = []

    def _record(self, request: RecordedRequest) -> Reply:
        with self._changed:  # a re-entrant lock: keeps both lists in the same order
            reply = super()._record(request)
            self.accepted_at.append(time.time())
        return reply


def _serve(conn: Connection) -> None:
    """Run both servers and answer the parent's commands until told to stop."""
    smtp, hook = RecordingSmtpServer(), TimedWebhookServer()
    smtp.start()
    hook.start()
    conn.send({"smtp_port": smtp.port, "webhook_url": hook.url})
    lock = threading.Lock()
    while True:
        command, argument = conn.recv()
        with lock:
            if command == "reset":
                smtp.messages.clear()
                hook.requests.clear()
                hook.accepted_at.clear()
                conn.send(None)
            elif command == "wait":
                channel, count = argument
                accepted = smtp.messages if channel == "smtp" else hook.accepted_at
                deadline = time.monotonic() + WAIT_SECONDS
                while len(accepted) < count and time.monotonic() < deadline:
                    time.sleep(0.01)
                conn.send(len(accepted))
            elif command == "webhook_arrivals":
                arrivals = [
                    (at, json.loads(request.body)["task_id"])
                    for at, request in zip(hook.accepted_at, hook.requests, strict=False)
                ]
                conn.send(arrivals)
            elif command == "webhook_keys":
                keyed = [
                    (at, request.headers.get("webhook-id"))
                    for at, request in zip(hook.accepted_at, hook.requests, strict=False)
                ]
                conn.send(keyed)
            elif command == "stop":
                smtp.stop()
                hook.stop()
                conn.send(None)
                return


class Receivers:
    """Handle on the receivers' process: endpoints, counts, arrival times."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        self.endpoints: dict[str, Any] = self._conn.recv()

    def _ask(self, command: str, argument: Any = None) -> Any:
        self._conn.send((command, argument))
        return self._conn.recv()

    def reset(self) -> None:
        """Forget everything received so far."""
        self._ask("reset")

    def wait(self, channel: str, count: int) -> int:
        """Wait until ``count`` messages were accepted on ``channel``; return the count."""
        return int(self._ask("wait", (channel, count)))

    def webhook_arrivals(self) -> list[tuple[float, int]]:
        """(accepted at, task id) of every webhook request since the last reset."""
        return list(self._ask("webhook_arrivals"))

    def webhook_keys(self) -> list[tuple[float, str]]:
        """(accepted at, idempotency key) of every webhook request since the last reset."""
        return list(self._ask("webhook_keys"))

    def close(self) -> None:
        """Stop the servers and their process."""
        try:
            self._ask("stop")
        finally:
            self._process.join(30)

    def __enter__(self) -> Receivers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
