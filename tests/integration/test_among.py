"""`among`: a column among a list of ids, one array parameter on PostgreSQL, ``IN`` on
SQLite, with the same rows on both."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, event, insert, select

from worker.reminders.schema import User, among

IDS = [[], [2], [1, 3], list(range(1, 200))]


def _fill(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(User), [{"id": i, "email": f"user{i}@example.com"} for i in (1, 2, 3, 150)]
        )


def _found(engine: Engine, ids: list[int]) -> tuple[list[int], list[str]]:
    """The ids found, and the statements the database was sent."""
    sent: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    ids_column = User.__table__.c.id
    query = select(ids_column).where(among(ids_column, "ids")).order_by(ids_column)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        with engine.connect() as connection:
            found = list(connection.execute(query, {"ids": ids}).scalars())
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return found, sent


@pytest.mark.postgres
def test_postgres_gets_one_statement_text_for_any_number_of_ids(
    postgres_engine: Engine,
) -> None:
    _fill(postgres_engine)
    texts = set()
    for ids in IDS:
        found, sent = _found(postgres_engine, ids)
        assert found == [i for i in (1, 2, 3, 150) if i in ids]
        texts.update(sent)
    assert len(texts) == 1, texts
    assert "= ANY (%(ids)s::BIGINT[])" in texts.pop()


def test_sqlite_reads_the_same_rows_through_in(sqlite_engine: Engine) -> None:
    _fill(sqlite_engine)
    for ids in IDS:
        found, sent = _found(sqlite_engine, ids)
        assert found == [i for i in (1, 2, 3, 150) if i in ids]
        assert any(" IN (" in statement for statement in sent), sent
