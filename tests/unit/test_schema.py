"""The migrated schema is the model's: each index the migration made reads as the model's."""

from __future__ import annotations

from typing import cast

import pytest
from sqlalchemy import ColumnElement, Connection, Dialect, Engine, Index, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex

from outbox.table import outbox_table
from worker.reminders import rule_store
from worker.reminders.host import REFERENCE_SCHEMA
from worker.reminders.schema import Base, awaiting_reminder

# The rule tables are the worker's own, declared on the same metadata.
assert rule_store.RuleRow.__table__ in Base.metadata.sorted_tables

MODEL_INDEXES = sorted(
    (
        index
        for table in [
            *Base.metadata.sorted_tables,
            cast(Table, outbox_table),
            REFERENCE_SCHEMA.tasks.table,
        ]
        for index in table.indexes
    ),
    key=lambda index: str(index.name),
)
COPY = "ix_model_copy"


def index_definitions(connection: Connection) -> dict[str, str]:
    """Every index's definition as the database keeps it (PostgreSQL normalises it)."""
    if connection.dialect.name == "postgresql":
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    return {name: definition for name, definition in connection.execute(text(query))}


@pytest.mark.parametrize("index", MODEL_INDEXES, ids=lambda index: str(index.name))
def test_the_migrated_index_is_the_models(engine: Engine, index: Index) -> None:
    """The model's index, created beside the migrated one, is defined the same on each dialect."""
    assert index.name is not None
    model = str(CreateIndex(index).compile(dialect=engine.dialect))
    with engine.connect() as connection:
        connection.exec_driver_sql(model.replace(index.name, COPY, 1))
        found = index_definitions(connection)
        connection.rollback()
    assert found[COPY].replace(COPY, index.name) == found[index.name]


# SQLAlchemy exports each dialect module's `dialect` class without annotations.
DIALECTS = [postgresql.dialect(), sqlite.dialect()]  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda dialect: dialect.name)
def test_the_due_index_predicate_is_the_awaiting_reminder_rule(dialect: Dialect) -> None:
    """The partial index's predicate on each dialect is `awaiting_reminder`, compiled."""
    index = REFERENCE_SCHEMA.index
    where: ColumnElement[bool] = index.dialect_options[dialect.name]["where"]
    rule = awaiting_reminder(REFERENCE_SCHEMA.tasks)
    assert str(where.compile(dialect=dialect)) == str(rule.compile(dialect=dialect))
