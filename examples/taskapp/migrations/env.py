"""Alembic environment of the task app: its own tables, its history in ``alembic_version``.

The same database also holds what ``reminders migrate`` created: the service's tables, its
version table ``reminders_alembic_version``, and two columns and an index on ``todo_items``.
They are the service's, not the app's, so autogenerate (``alembic revision --autogenerate``,
``alembic check``) compares only what the app's models declare and never proposes dropping
anything the database holds beyond them.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import create_engine

from examples.taskapp.models import Base
from examples.taskapp.settings import database_url

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def only_the_apps_own(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare what the models declare; leave alone what only the database holds."""
    return not (reflected and compare_to is None)


def run_offline() -> None:
    """``alembic upgrade head --sql``: print the DDL for a DBA."""
    context.configure(
        url=database_url(),
        target_metadata=Base.metadata,
        include_object=only_the_apps_own,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate the live database."""
    engine = create_engine(database_url())
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                include_object=only_the_apps_own,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
