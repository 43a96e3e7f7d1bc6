"""What the recording servers share: their address, their waits, start and stop as a context."""

from __future__ import annotations

from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
WAIT = 10.0  # upper bound for waits on events; a healthy test never gets near it


class Running:
    """Context-manager plumbing shared by the servers: ``start`` on enter, ``stop`` on exit."""

    def start(self) -> None:
        """Listen (each server says how)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop listening and close every connection (each server says how)."""
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
