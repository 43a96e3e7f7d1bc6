"""Alembic environment: runs on the connection `worker.migrate` hands in."""

from __future__ import annotations

from alembic import context

from outbox.table import OutboxBase
from worker.reminders.schema import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=[Base.metadata, OutboxBase.metadata],
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
