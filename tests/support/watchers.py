"""A watchers table beside the reference schema, mapped as ``[recipients]``, on either dialect.

A watchers table holds (task, user) pairs: more recipients of a task's reminders than its
owner. `watched_mapping` is the schema file that reads one beside the reference tables and
`watchers_ddl` creates it; the chaos soak (`tests.chaos.soak`) and the rules benchmark
(`benchmarks.rules`) use them with names of their own. Tests of what the recipients change
build their services with `watched_services`, then add and remove watchers as the host
application would (`watch`, `unwatch`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from outbox.channels.base import Channel
from tests.support.clock import ManualClock
from tests.support.db import make_services
from worker.bootstrap import Services
from worker.reminders.mapping import (
    REFERENCE,
    RecipientsMapping,
    SchemaMapping,
    TasksMapping,
    UsersMapping,
)

#: The watchers table of `watched_services`, its columns named unlike the reference's.
WATCHERS = RecipientsMapping(table="watchers", task="task_ref", user="account_ref")


def schema_file_text(mapping: SchemaMapping) -> str:
    """``mapping`` as the TOML of a schema file: each section it has, each key it sets."""
    sections: dict[str, TasksMapping | UsersMapping | RecipientsMapping | None] = {
        "tasks": mapping.tasks,
        "users": mapping.users,
        "recipients": mapping.recipients,
    }
    blocks = []
    for name, section in sections.items():
        if section is not None:
            keys = [f"{k} = {json.dumps(v)}" for k, v in asdict(section).items() if v is not None]
            blocks.append("\n".join([f"[{name}]", *keys]))
    return "\n\n".join(blocks) + "\n"


def watched_mapping(watchers: RecipientsMapping = WATCHERS) -> str:
    """The schema file's text: the reference tables, and ``watchers`` as ``[recipients]``."""
    return schema_file_text(replace(REFERENCE, recipients=watchers))


def watchers_ddl(watchers: RecipientsMapping = WATCHERS) -> list[str]:
    """The statements that create ``watchers`` unless it exists: one row per (task, user)
    pair, and an index on the user, as a host application would keep it."""
    table, task, user = watchers.table, watchers.task, watchers.user
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ({task} BIGINT NOT NULL, {user} BIGINT NOT NULL, "
        f"PRIMARY KEY ({task}, {user}))",
        f"CREATE INDEX IF NOT EXISTS ix_{table}_{user} ON {table} ({user})",
    ]


def watched_services(
    engine: Engine, clock: ManualClock, channel: Channel, directory: Path, **settings: Any
) -> Services:
    """Services on ``engine`` reading the reference tables and a ``watchers`` table (created
    here) as the mapping's recipients; ``settings`` as for `make_services`."""
    with engine.begin() as connection:
        for statement in watchers_ddl():
            connection.execute(text(statement))
    path = directory / "watched-schema.toml"
    path.write_text(watched_mapping())
    return make_services(engine, clock, channel, schema_file=str(path), **settings)


def watch(services: Services, task_id: int, user_id: int) -> None:
    """List ``user_id`` as a recipient of ``task_id``."""
    with services.engine.begin() as connection:
        connection.execute(
            text(f"INSERT INTO {WATCHERS.table} ({WATCHERS.task}, {WATCHERS.user}) "
                 "VALUES (:task, :user)"),
            {"task": task_id, "user": user_id},
        )  # fmt: skip


def unwatch(services: Services, task_id: int, user_id: int) -> None:
    """Take ``user_id`` off ``task_id``'s recipients."""
    with services.engine.begin() as connection:
        connection.execute(
            text(f"DELETE FROM {WATCHERS.table} "
                 f"WHERE {WATCHERS.task} = :task AND {WATCHERS.user} = :user"),
            {"task": task_id, "user": user_id},
        )  # fmt: skip
