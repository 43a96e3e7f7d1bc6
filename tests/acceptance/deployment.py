"""One test's deployment of the service: its database, its private Redis, the processes it runs.

The acceptance tests ask it for the processes' environment, write the host's rows through it,
read the outbox and wait for rows to settle, instead of handing the database, its URL, the
Redis and the process list to every helper of the harness.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from outbox.table import Status
from tests.acceptance.harness import (
    WAIT,
    Proc,
    Procs,
    RedisServer,
    Seeded,
    SmtpReceiver,
    Ticker,
    WebhookReceiver,
    seed,
    service_env,
    settled,
    smtp_env,
    wait_until,
    wake,
    webhook_env,
)
from tests.acceptance.host import HostDatabase


@dataclass(frozen=True)
class Deployment(HostDatabase):
    """A database, a Redis and the processes started on them, for one test."""

    database_url: str
    redis: RedisServer
    procs: Procs

    def env(self, receiver: SmtpReceiver | WebhookReceiver, **variables: str) -> dict[str, str]:
        """The processes' environment: this database (through its mapping) and Redis, fast
        timings, ``receiver`` as the channel, plus ``variables``."""
        if isinstance(receiver, SmtpReceiver):
            channel = smtp_env(receiver)
        else:
            channel = webhook_env(receiver)
        variables = {**self.schema_env(), **channel, **variables}
        return service_env(self.database_url, self.redis.url, **variables)

    def seed(self, now: datetime, count: int, *, first: int = 1, users: bool = True) -> Seeded:
        """``count`` tasks due from now + 1h and five never due (see `harness.seed`)."""
        return seed(self.db, now, count, first=first, users=users, app=self.app)

    def wait_settled(
        self,
        keys: Iterable[str],
        what: str,
        *,
        alive: Iterable[Proc],
        status: str = Status.DELIVERED,
        timeout: float = WAIT,
    ) -> None:
        """Wait until every key in ``keys`` has a row with ``status``; fail after ``timeout`` or
        when a process in ``alive`` has exited."""
        wanted = set(keys)
        wait_until(lambda: settled(self.db, wanted, status), what, alive=alive, timeout=timeout)

    def wake(self, *actors: str) -> None:
        """Send one wake-up per actor name through this deployment's Redis."""
        wake(self.redis.url, *actors)

    def ticker(self) -> Ticker:
        """A fast stand-in for periodiq on this deployment's Redis (a context manager)."""
        return Ticker(self.redis.url)
