"""EXPLAIN (ANALYZE, BUFFERS) of the scan's due query, exactly as the worker sends it.

The statement is captured from the real `PostgresDueQueries.queue_batch`, the one
statement per batch that the scan sends on PostgreSQL (the SQL and the parameters SQLAlchemy
hands to psycopg), then explained in a transaction that is rolled back, so the database is left
as it was (but for dead tuples, which a VACUUM clears).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, text

from benchmarks.baseline import NAIVE_DUE_SQL
from benchmarks.database import Dataset
from worker.db import make_session_factory
from worker.reminders.due import DueQueries, due_queries
from worker.reminders.scan import scan_due_tasks

PLAN_OPTIONS = "ANALYZE, BUFFERS, WAL, SETTINGS"


def captured_claim(
    engine: Engine,
    now: datetime,
    lookahead: timedelta,
    limit: int,
    queries: DueQueries | None = None,
) -> tuple[str, Any]:
    """The SQL and parameters of one batch of the scan (rolled back); ``queries`` are the
    reference schema's unless given (a mapped schema's, from its `Services`)."""
    seen: list[tuple[str, Any]] = []

    def listener(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("WITH MARKED AS"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        with make_session_factory(engine)() as session:
            chosen = queries or due_queries(engine.dialect.name)
            chosen.queue_batch(session, now, lookahead, limit)
            session.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    if not seen:
        raise RuntimeError("the scan's batch sent no batch statement")
    return seen[0]


def explain(engine: Engine, statement: str, parameters: Any) -> str:
    """The plan of ``statement`` as PostgreSQL ran it (inside a rolled-back transaction)."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN ({PLAN_OPTIONS}) {statement}", parameters)
        plan = "\n".join(row[0] for row in rows)
        connection.rollback()
    return plan


def claim_plan(engine: Engine, now: datetime, lookahead: timedelta, limit: int) -> str:
    """EXPLAIN of our batch statement (due query, UPDATE, outbox INSERT) at ``now``."""
    statement, parameters = captured_claim(engine, now, lookahead, limit)
    return f"{statement}\n\n{explain(engine, statement, parameters)}"


def naive_plan(engine: Engine, now: datetime) -> str:
    """EXPLAIN of the naive design's SELECT at ``now``."""
    with engine.connect() as connection:
        rows = connection.execute(text(f"EXPLAIN ({PLAN_OPTIONS}) {NAIVE_DUE_SQL}"), {"now": now})
        plan = "\n".join(row[0] for row in rows)
        connection.rollback()
    return f"{NAIVE_DUE_SQL}\n\n{plan}"


def mark_naive_reminded(engine: Engine, now: datetime) -> None:
    """The state the naive design's loop leaves, in one statement (its loop takes long at 1M)."""
    due = NAIVE_DUE_SQL.replace("SELECT * FROM tasks WHERE", "", 1)
    with engine.begin() as connection:
        connection.execute(
            text(f"UPDATE tasks SET reminder_sent_at = :now WHERE {due}"), {"now": now}
        )


def plans(ours: Dataset, naive: Dataset) -> list[tuple[str, str]]:
    """Plans of both due queries at ``ours.size`` tasks, with many due and with none.

    Leaves both databases reset to the state they were built in.
    """
    from benchmarks.database import reset

    lookahead, batch = timedelta(hours=24), 5_000
    ours_engine, naive_engine = ours.engine(), naive.engine()
    size = f"{ours.size:,} tasks"
    try:
        reset(ours)
        many = claim_plan(ours_engine, ours.now, lookahead, batch)
        queries = due_queries(ours_engine.dialect.name)
        scan_due_tasks(make_session_factory(ours_engine), queries, ours.now, lookahead, batch)
        none_due = claim_plan(ours_engine, ours.now, lookahead, batch)
        reset(naive)
        naive_many = naive_plan(naive_engine, naive.now)
        mark_naive_reminded(naive_engine, naive.now)
        naive_none = naive_plan(naive_engine, naive.now)
    finally:
        ours_engine.dispose()
        naive_engine.dispose()
        reset(ours)
        reset(naive)
    return [
        (f"EXPLAIN, ours, {size}, first batch of a first scan (many due)", many),
        (f"EXPLAIN, ours, {size}, no-op scan right after (nothing due)", none_due),
        (f"EXPLAIN, naive, {size}, first scan (many due)", naive_many),
        (f"EXPLAIN, naive, {size}, no-op scan right after (nothing due)", naive_none),
    ]
