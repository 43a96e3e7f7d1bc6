"""A fake channel that records what the relay sent and answers from a script."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from outbox.channels.base import Delivery, Message, Outcome


@dataclass
class RecordingChannel:
    """A fake channel that satisfies the `Channel` protocol and records what it sent.

    ``script`` gives the answers in order (delivered once it is exhausted); ``on_send``
    runs inside send, before the answer, so a test can act in that exact window.
    """

    name: str = "recording"
    script: list[Delivery] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    closed: int = 0
    on_send: object = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: Message) -> Delivery:
        """Record the message, run the hook, answer from the script."""
        with self.lock:
            self.sent.append(message)
            answer = self.script.pop(0) if self.script else Delivery.delivered()
        if callable(self.on_send):
            self.on_send(message)
        return answer

    def close(self) -> None:
        """Count closes (one per batch)."""
        self.closed += 1

    @property
    def keys(self) -> list[str]:
        """The idempotency keys sent, in order."""
        return [m.key for m in self.sent]


def expect(delivery: Delivery, outcome: Outcome, *fragments: str) -> str:
    """Check a channel's answer: its outcome, and its error naming each fragment; return it."""
    assert delivery.outcome is outcome, delivery
    error = delivery.error or ""
    for fragment in fragments:
        assert fragment in error, error
    return error
