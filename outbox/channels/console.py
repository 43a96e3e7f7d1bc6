"""The console channel: one line per reminder on a text stream (standard output by default)."""

from __future__ import annotations

import sys
from typing import IO

from outbox.channels.base import Delivery, Message
from outbox.masking import one_line


class ConsoleChannel:
    """Prints ``message.line`` (or the subject when the line is empty) and flushes.

    ``stream`` defaults to whatever ``sys.stdout`` is at send time, so output captured or
    redirected after construction still goes where the caller expects.
    """

    name = "console"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def send(self, message: Message) -> Delivery:
        """Write one line; only a failing stream (closed pipe, full disk) asks for a retry."""
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(one_line(message.line or message.subject) + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            return Delivery.retry(f"console write failed: {exc}")
        return Delivery.delivered()

    def close(self) -> None:
        """Nothing to close: the stream belongs to the caller."""
