"""Create or upgrade the schema with the Alembic migrations shipped in this package."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from worker.db import long_statements

#: How long one migration statement may run: building an index on a large host table.
MIGRATION_STATEMENT_SECONDS = 3600


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "worker:migrations")
    return config


def head_revision() -> str | None:
    """The newest revision shipped with this version of the package."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Bring the database to the head revision; return (before, after). Idempotent."""
    before = current_revision(engine)
    config = _config()
    with engine.begin() as connection, long_statements(connection, MIGRATION_STATEMENT_SECONDS):
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return before, current_revision(engine)
