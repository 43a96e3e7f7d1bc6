"""A psycopg connection whose every wait on the server has a deadline.

``statement_timeout`` bounds what the server runs, and TCP keepalives and
``tcp_user_timeout`` catch a peer that stopped acknowledging. Neither helps when the path to
the server goes silent while something in the middle still acknowledges (a NAT or firewall
that lost its state, a frozen pooler): the answer, or the server's cancellation, never
arrives and the kernel never reports an error. So each wait of psycopg on the server (a
statement, a commit or rollback, a ping) runs under a deadline; one that passes it closes
the connection and raises `DeadlineExceeded`, an ``OperationalError`` on a closed connection,
which SQLAlchemy treats as a disconnect: the connection is invalidated and never reused.

The deadline is enforced by psycopg's own wait loop in the waiting thread, so no other
thread ever touches the socket. Connecting is bounded by ``connect_timeout`` instead, which
psycopg enforces the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen

Result = TypeVar("Result")
#: How often psycopg's wait loop wakes up to check for Ctrl-C (its own default).
WAIT_INTERVAL = 0.1


class DeadlineExceeded(psycopg.OperationalError):
    """The database did not answer in time; the connection was closed."""


class DeadlineConnection(psycopg.Connection[Any]):
    """A psycopg connection whose waits on the server end after `deadline` seconds.

    ``deadline`` is None until the engine sets it: then waits are as long as psycopg's.
    A wait that asks for its own shorter timeout keeps it (a LISTEN loop would need more).
    """

    deadline: float | None = None

    def wait(
        self,
        gen: PQGen[Result],
        interval: float = WAIT_INTERVAL,
        timeout: float | None = None,
    ) -> Result:
        """Run ``gen`` as psycopg does, closing the connection once the deadline passes."""
        bound = self.deadline
        if bound is None or (timeout is not None and timeout <= bound):
            return super().wait(gen, interval, timeout)
        started = time.monotonic()
        try:
            return super().wait(gen, interval, bound)
        except psycopg.OperationalError as error:
            if self.closed or time.monotonic() - started < bound:
                raise  # the server's own error, or a connection already gone
            # Half a message may be on the wire: the connection can never be used again.
            self.pgconn.finish()
            raise DeadlineExceeded(
                f"the database did not answer within {bound:g}s; connection closed"
            ) from error

    @contextmanager
    def deadline_of(self, seconds: float | None) -> Iterator[None]:
        """Use ``seconds`` as the deadline inside the block (None: no deadline)."""
        saved, self.deadline = self.deadline, seconds
        try:
            yield
        finally:
            self.deadline = saved
