"""Fresh benchmark databases on PostgreSQL, filled in-database and dropped afterwards.

Every database is created for one run (``bench_<label>_<pid>``), migrated with the real
migrations (or the naive design's schema for the baseline), filled by one ``INSERT ... SELECT
generate_series(...)`` per table, vacuumed and analysed, then dropped.

The task mix (``size`` tasks, ``size // 10`` owners, all opted in), by ``i % 25``:

- ``12``: due in (now, now + 24 h], open, never reminded: exactly 4 % of the table;
- below ``12``: due in the past 12 days, 70 % completed, all reminded for that date
  (with a delivered outbox row, or a reminder_log row for the naive design), as a service that
  has been running would have left them;
- above ``12``: due 1 to 13 days ahead, 10 % completed, not reminded yet;
- one task in 20 has no due date (never in bucket 12): 45 % past, 46 % ahead, 5 % undated.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from worker import migrate
from worker.db import long_statements, make_engine

ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
Schema = Literal["ours", "naive"]
FILL_SECONDS = 3600
_created: set[str] = set()

USERS_SQL = """
INSERT INTO users (id, email, timezone, notifications_enabled)
SELECT u, 'user' || u || '@example.com',
       (ARRAY['UTC', 'Europe/Paris', 'America/New_York', 'Asia/Tokyo'])[1 + u % 4], TRUE
FROM generate_series(1, :users) AS u
"""

# One statement for the whole table; ``{extra}`` adds the worker's own column for ours.
TASKS_SQL = """
INSERT INTO tasks (id, owner_id, title, due_date, completed_at, reminder_sent_at{extra_col})
SELECT i, 1 + i % :users, 'task ' || i || ': prepare the quarterly report', d.due,
       CASE WHEN d.due <= :now AND i % 10 < 7 THEN d.due - interval '1 hour'
            WHEN d.due > :now + interval '1 day' AND i % 10 = 0 THEN :now - interval '1 hour'
       END,
       CASE WHEN d.due <= :now THEN d.due - interval '12 hours' END{extra_val}
FROM generate_series(1::bigint, :size) AS i
CROSS JOIN LATERAL (
    SELECT CASE WHEN i % 20 = 0 THEN NULL
           ELSE :now + (i % 25 - 12) * interval '1 day'
                     + (1 + (i * 7919) % 86400) * interval '1 second'
           END AS due
) AS d
"""

# The delivered reminders of the past tasks, as the outbox holds them until a purge.
OUTBOX_HISTORY_SQL = """
INSERT INTO outbox (idempotency_key, kind, subject_id, subject_at, status, attempts,
                    available_at, lease_token, created_at, updated_at, last_attempt_at,
                    delivered_at, replay_count)
SELECT 'due_soon-' || to_char(reminder_due_at AT TIME ZONE 'UTC',
       'YYYYMMDD"T"HH24MISS') || 'Z-' || id, 'due_soon', id, reminder_due_at, 'delivered', 1,
       reminder_sent_at, 1, reminder_sent_at, reminder_sent_at, reminder_sent_at,
       reminder_sent_at, 0
FROM tasks WHERE reminder_due_at IS NOT NULL ORDER BY reminder_sent_at
"""


@dataclass(frozen=True)
class Dataset:
    """A filled benchmark database: its URL, its size and the moment it was built around."""

    name: str
    url: str
    size: int
    now: datetime
    schema: Schema

    def engine(self) -> Engine:
        """A new engine on this database, with the product's connection options."""
        return make_engine(self.url)


def admin_engine() -> Engine:
    """An autocommit engine on the maintenance database."""
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")


def database_url(name: str) -> str:
    """The URL of database ``name`` on the benchmark server."""
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def create_database(label: str) -> tuple[str, str]:
    """Create an empty database for this run; return (name, url)."""
    name = f"bench_{label}_{os.getpid()}"
    admin = admin_engine()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    _created.add(name)
    return name, database_url(name)


def drop_database(name: str) -> None:
    """Drop database ``name`` (closing what still holds it)."""
    admin = admin_engine()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
    _created.discard(name)


@atexit.register
def _drop_leftovers() -> None:
    for name in list(_created):
        with contextlib.suppress(Exception):  # the server may be gone: nothing more to do
            drop_database(name)


def migrated(label: str) -> tuple[str, str]:
    """A fresh database with the worker's schema (``reminders migrate``)."""
    name, url = create_database(label)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return name, url


def vacuum(url: str, *tables: str, checkpoint: bool = True) -> None:
    """``VACUUM ANALYZE`` the tables, as autovacuum would have on a live database.

    Then ``CHECKPOINT``, so that no checkpoint started by the writes so far is still
    flushing during the next measurement: every run starts from the same state.
    """
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"VACUUM ANALYZE {', '.join(tables)}"))
        if checkpoint:
            connection.execute(text("CHECKPOINT"))
    engine.dispose()


def fill(engine: Engine, size: int, now: datetime, schema: Schema) -> None:
    """Write the users, tasks and history of a ``size``-task database in-database."""
    ours = schema == "ours"
    tasks = TASKS_SQL.format(
        extra_col=", reminder_due_at" if ours else "",
        extra_val=", CASE WHEN d.due <= :now THEN d.due END" if ours else "",
    )
    users = max(size // 10, 10)
    # Filling 1M tasks is one statement that may outlast the worker's statement timeout.
    with engine.begin() as connection, long_statements(connection, FILL_SECONDS):
        connection.execute(text(USERS_SQL), {"users": users})
        connection.execute(text(tasks), {"users": users, "size": size, "now": now})
        if ours:
            connection.execute(text(OUTBOX_HISTORY_SQL))
        else:
            from benchmarks.baseline import NAIVE_HISTORY_SQL

            connection.execute(text(NAIVE_HISTORY_SQL))


def build_dataset(size: int, now: datetime, schema: Schema) -> Dataset:
    """A database of ``size`` tasks around ``now``, with our schema or the naive design's."""
    label = f"{schema}_{size}"
    if schema == "ours":
        name, url = migrated(label)
    else:
        from benchmarks.baseline import create_naive_schema

        name, url = create_database(label)
    engine = make_engine(url)
    try:
        if schema == "naive":
            create_naive_schema(engine)
        fill(engine, size, now, schema)
    finally:
        engine.dispose()
    tables = (
        ("users", "tasks", "outbox") if schema == "ours" else ("users", "tasks", "reminder_log")
    )
    vacuum(url, *tables)
    return Dataset(name, url, size, now, schema)


def reset(dataset: Dataset) -> None:
    """Undo every scan made at or after ``dataset.now``: back to the state just built."""
    engine = make_engine(dataset.url)
    params = {"now": dataset.now}
    with engine.begin() as connection:
        if dataset.schema == "ours":
            connection.execute(
                text(
                    "UPDATE tasks SET reminder_sent_at = NULL, reminder_due_at = NULL "
                    "WHERE reminder_sent_at >= :now"
                ),
                params,
            )
            connection.execute(text("DELETE FROM outbox WHERE created_at >= :now"), params)
            connection.execute(text("DELETE FROM reminder_scan_heartbeat"))
        else:
            connection.execute(
                text("UPDATE tasks SET reminder_sent_at = NULL WHERE reminder_sent_at >= :now"),
                params,
            )
            connection.execute(text("DELETE FROM reminder_log WHERE sent_at >= :now"), params)
    engine.dispose()
    vacuum(dataset.url, "tasks", "outbox" if dataset.schema == "ours" else "reminder_log")


@contextmanager
def datasets(
    sizes: list[int], now: datetime, schemas: tuple[Schema, ...]
) -> Iterator[dict[tuple[Schema, int], Dataset]]:
    """Build one dataset per (schema, size); drop them all on the way out."""
    built: dict[tuple[Schema, int], Dataset] = {}
    try:
        for size in sizes:
            for schema in schemas:
                built[schema, size] = build_dataset(size, now, schema)
        yield built
    finally:
        for dataset in built.values():
            drop_database(dataset.name)
