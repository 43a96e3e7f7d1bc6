"""Services on a test's database, and the users and tasks a host application writes into it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from outbox.channels.base import Channel
from outbox.table import OutboxRow
from tests.support.clock import ManualClock
from worker.bootstrap import Services, bootstrap
from worker.reminders.schema import Task, User
from worker.settings import Settings


def make_services(
    engine: Engine,
    clock: ManualClock,
    channel: Channel,
    *,
    channel_name: str | None = None,
    **settings: Any,
) -> Services:
    """Services on ``engine`` with the test's clock and channel; ``settings`` override the
    defaults by field name (``max_attempts=3``), parsed as the environment's would be;
    ``channel_name`` is the REMINDERS_CHANNEL the services act for (``channel`` sends)."""
    if channel_name is not None:
        settings["channel"] = channel_name
    config = Settings(database_url=str(engine.url), **settings)
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
    with services.session_factory() as session:
        for row in session.execute(
            select(OutboxRow.idempotency_key, OutboxRow.status).order_by(OutboxRow.id)
        ):
            yield row[0], row[1]
