"""The reference schema with a watchers table mapped as ``[recipients]``, on either dialect.

Tests of what the recipients change build their services with `watched_services`, then add
and remove watchers as the host application would (`watch`, `unwatch`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from outbox.channels.base import Channel
from tests.support.clock import ManualClock
from tests.support.db import make_services
from worker.bootstrap import Services

MAPPING = """\
[tasks]
table = "tasks"
id = "id"
owner = "owner_id"
title = "title"
due = "due_date"
completed_at = "completed_at"

[users]
table = "users"
id = "id"
email = "email"
timezone = "timezone"
enabled = "notifications_enabled"

[recipients]
table = "watchers"
task = "task_ref"
user = "account_ref"
"""

WATCHERS_DDL = (
    "CREATE TABLE watchers (task_ref BIGINT NOT NULL, account_ref BIGINT NOT NULL, "
    "PRIMARY KEY (task_ref, account_ref))"
)


def watched_services(
    engine: Engine, clock: ManualClock, channel: Channel, directory: Path, **settings: Any
) -> Services:
    """Services on ``engine`` reading the reference tables and a ``watchers`` table (created
    here) as the mapping's recipients; ``settings`` as for `make_services`."""
    with engine.begin() as connection:
        connection.execute(text(WATCHERS_DDL))
    path = directory / "watched-schema.toml"
    path.write_text(MAPPING)
    return make_services(engine, clock, channel, schema_file=str(path), **settings)


def watch(services: Services, task_id: int, user_id: int) -> None:
    """List ``user_id`` as a recipient of ``task_id``."""
    with services.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO watchers (task_ref, account_ref) VALUES (:task, :user)"),
            {"task": task_id, "user": user_id},
        )


def unwatch(services: Services, task_id: int, user_id: int) -> None:
    """Take ``user_id`` off ``task_id``'s recipients."""
    with services.engine.begin() as connection:
        connection.execute(
            text("DELETE FROM watchers WHERE task_ref = :task AND account_ref = :user"),
            {"task": task_id, "user": user_id},
        )
