"""Where the task app's database is: ``TASKAPP_DATABASE_URL``."""

from __future__ import annotations

import os

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/taskapp"


def database_url() -> str:
    """The app's SQLAlchemy URL, the same database the reminder workers are given."""
    return os.environ.get("TASKAPP_DATABASE_URL") or DEFAULT_DATABASE_URL
