"""The naive hourly design (docs/design.md), implemented as written, to measure ours against.

- its schema: ``tasks.reminder_sent_at`` with a plain index on ``due_date``, and the
  ``reminder_log`` table it offers for "reminder sent" entries;
- its query, verbatim but for ``NOW()``, which becomes a bound ``:now`` so that both
  sides scan at the same instant;
- its loop: one task at a time, a log row and ``reminder_sent_at`` in one transaction,
  committed per task ("log error, continue with the next task").

It is written to be fast for what it is: Core SQL on one kept connection, no ORM.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text

NAIVE_SCHEMA_SQL = (
    """CREATE TABLE users (
        id BIGINT PRIMARY KEY, email TEXT NOT NULL, timezone TEXT NOT NULL DEFAULT 'UTC',
        notifications_enabled BOOLEAN NOT NULL DEFAULT TRUE)""",
    """CREATE TABLE tasks (
        id BIGINT PRIMARY KEY, owner_id BIGINT NOT NULL REFERENCES users(id),
        title TEXT NOT NULL, due_date TIMESTAMP WITH TIME ZONE NULL,
        completed_at TIMESTAMP WITH TIME ZONE NULL,
        reminder_sent_at TIMESTAMP WITH TIME ZONE NULL)""",
    "CREATE INDEX ix_tasks_owner_id ON tasks (owner_id)",
    # "Query should be efficient (index on due_date column)."
    "CREATE INDEX ix_tasks_due_date ON tasks (due_date)",
    """CREATE TABLE reminder_log (
        id BIGSERIAL PRIMARY KEY, task_id BIGINT NOT NULL,
        sent_at TIMESTAMP WITH TIME ZONE NOT NULL)""",
)

NAIVE_HISTORY_SQL = """
INSERT INTO reminder_log (task_id, sent_at)
SELECT id, reminder_sent_at FROM tasks WHERE reminder_sent_at IS NOT NULL
ORDER BY reminder_sent_at
"""

# The naive design's SQL, with NOW() bound to the scan's instant.
NAIVE_DUE_SQL = """SELECT * FROM tasks WHERE due_date >= :now AND due_date <= :now + INTERVAL '24 hours' AND (reminder_sent_at IS NULL OR reminder_sent_at < :now - INTERVAL '24 hours')"""  # noqa: E501

LOG_SQL = "INSERT INTO reminder_log (task_id, sent_at) VALUES (:task_id, :now)"
MARK_SQL = "UPDATE tasks SET reminder_sent_at = :now WHERE id = :task_id"


def create_naive_schema(engine: Engine) -> None:
    """Create the naive design's tables and its index on ``due_date``."""
    with engine.begin() as connection:
        for statement in NAIVE_SCHEMA_SQL:
            connection.execute(text(statement))


def naive_scan(engine: Engine, now: datetime) -> int:
    """Run the naive design's scan at ``now``: select the due tasks, then mark them one by one.

    Returns how many reminders it logged.
    """
    with engine.connect() as connection:
        tasks = connection.execute(text(NAIVE_DUE_SQL), {"now": now}).all()
        connection.commit()
        for task in tasks:
            connection.execute(text(LOG_SQL), {"task_id": task.id, "now": now})
            connection.execute(text(MARK_SQL), {"task_id": task.id, "now": now})
            connection.commit()
    return len(tasks)
