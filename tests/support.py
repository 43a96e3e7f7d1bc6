"""Test helpers: a clock tests move by hand, and ways to build services on a database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from outbox.channels.base import Delivery, Message
from outbox.clock import require_utc
from worker.bootstrap import Services, bootstrap
from worker.reminders.schema import Task, User
from worker.settings import Settings

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@dataclass
class ManualClock:
    """A clock that only moves when the test says so."""

    current: datetime = T0

    def now(self) -> datetime:
        """The time the test has set."""
        return self.current

    def advance(self, delta: timedelta) -> datetime:
        """Move time forward and return the new now."""
        self.current = self.current + delta
        return self.current

    def set(self, when: datetime) -> None:
        """Jump to ``when``."""
        self.current = require_utc(when)


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


def make_services(
    engine: Engine, clock: ManualClock, channel: RecordingChannel, **settings: object
) -> Services:
    """Services on ``engine`` with the test's clock and channel."""
    config = Settings(database_url=str(engine.url), **settings)  # type: ignore[arg-type]
    return bootstrap(config, clock=clock, engine=engine, make_channel=lambda: channel)


def add_user(
    services: Services,
    user_id: int,
    *,
    email: str | None = None,
    timezone: str = "UTC",
    enabled: bool = True,
) -> None:
    """Insert a user as the host application would."""
    with services.session_factory.begin() as session:
        session.add(
            User(
                id=user_id,
                email=email or f"user{user_id}@example.com",
                timezone=timezone,
                notifications_enabled=enabled,
            )
        )


def add_task(
    services: Services,
    task_id: int,
    owner_id: int,
    due: datetime | None,
    *,
    title: str | None = None,
    completed: datetime | None = None,
) -> None:
    """Insert a task as the host application would."""
    with services.session_factory.begin() as session:
        session.add(
            Task(
                id=task_id,
                owner_id=owner_id,
                title=title or f"task {task_id}",
                due_date=due,
                completed_at=completed,
            )
        )


def statuses(services: Services) -> Iterator[tuple[str, str]]:
    """(key, status) of every outbox row, by id."""
    from sqlalchemy import select

    from outbox.table import OutboxRow

    with services.session_factory() as session:
        for row in session.execute(
            select(OutboxRow.idempotency_key, OutboxRow.status).order_by(OutboxRow.id)
        ):
            yield row[0], row[1]
