"""Alembic environment: runs on the connection `worker.migrate` hands in, or offline (``--sql``).

The worker's revisions are recorded in its own version table, never in the host's.
"""

from __future__ import annotations

from alembic import context

from outbox.table import OutboxBase
from worker.migrate import VERSION_TABLE
from worker.reminders import rule_store  # noqa: F401  (its tables join Base.metadata)
from worker.reminders.schema import Base

metadata = [Base.metadata, OutboxBase.metadata]
if context.is_offline_mode():
    dialect = context.config.attributes["dialect"]
    context.configure(
        dialect_name=dialect,
        output_buffer=context.config.output_buffer,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        render_as_batch=dialect == "sqlite",
    )
else:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
with context.begin_transaction():
    context.run_migrations()
