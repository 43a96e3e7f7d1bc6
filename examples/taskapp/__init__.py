"""A small task app with its own schema and Alembic history, reminded by the service.

Its tables are ``accounts`` and ``todo_items`` (not the service's reference ``users`` and
``tasks``); ``schema.toml`` beside this file maps them for the workers, and every commit
that creates, moves or completes a task nudges them through `worker.api`.
"""
