"""A server that never answers, for timeouts."""

from __future__ import annotations

import socket

from tests.support.servers.base import HOST, Running


class SilentServer(Running):
    """A listening socket that never accepts nor answers: every read from it times out."""

    def __init__(self) -> None:
        self._socket = socket.create_server((HOST, 0))
        self.host = HOST
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}/"

    def start(self) -> None:
        """Nothing to do: the kernel completes connections into the backlog."""

    def stop(self) -> None:
        """Close the socket, resetting the connections waiting in its backlog."""
        self._socket.close()
