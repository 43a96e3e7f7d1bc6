"""The count of tasks that cannot be reminded reads the partial index, on 100,000 tasks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.support.clock import ManualClock
from worker.reminders.host import REFERENCE_SCHEMA
from worker.reminders.unremindable import Unremindable, count_unremindable, counting_query

pytestmark = pytest.mark.postgres

TASK_COUNT = 100_000
LOOKAHEAD = timedelta(hours=24)


def expected() -> Unremindable:
    """What the seeded rows hold, worked out from the rules that made them."""
    window = [g for g in range(1, TASK_COUNT + 1) if g % 50 == 0]
    missing = [g for g in window if g % 500 == 0]
    blank = [g for g in window if g % 500 != 0 and 1 + g % 1000 > 900]
    return Unremindable(missing_owner=len(missing), no_address=len(blank))


def seed(engine: Engine, clock: ManualClock) -> None:
    """1,000 users (the last 100 without an address) and 100,000 tasks: 2% due within the
    lookahead, a tenth of those owned by nobody; the rest completed, reminded, later or past."""
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE tasks DROP CONSTRAINT tasks_owner_id_fkey"))
        connection.execute(
            text(
                "INSERT INTO users (id, email) SELECT g, "
                "CASE WHEN g > 900 THEN '' ELSE 'user' || g || '@example.com' END "
                "FROM generate_series(1, 1000) AS g"
            )
        )
        connection.execute(
            text(
                """
                INSERT INTO tasks (id, owner_id, title, due_date, completed_at,
                                   reminder_sent_at, reminder_due_at)
                SELECT g, CASE WHEN g % 500 = 0 THEN 100000 + g ELSE 1 + g % 1000 END,
                       'task ' || g, d.due,
                       CASE WHEN g % 50 <> 0 AND g % 5 IN (0, 1, 2) THEN d.past END,
                       CASE WHEN g % 50 <> 0 AND g % 5 = 3 THEN d.past END,
                       CASE WHEN g % 50 <> 0 AND g % 5 = 3 THEN d.due END
                FROM generate_series(1, :count) AS g,
                LATERAL (SELECT
                    CASE WHEN g % 50 = 0
                         THEN CAST(:now AS timestamptz) + (1 + g % 1439) * interval '1 min'
                         WHEN g % 5 = 4
                         THEN CAST(:now AS timestamptz) + interval '2 days'
                              + (g % 40000) * interval '1 min'
                         ELSE CAST(:now AS timestamptz) - (g % 40000) * interval '1 min'
                    END AS due,
                    CAST(:now AS timestamptz) - interval '30 days' AS past) AS d
                """
            ),
            {"now": clock.now(), "count": TASK_COUNT},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE users"))
        connection.execute(text("ANALYZE tasks"))


def test_the_count_is_one_statement_on_the_partial_index(
    postgres_engine: Engine, clock: ManualClock
) -> None:
    """The counts are right, and the plan reads a range of a partial index of open tasks, never
    the table. Both partial indexes on the due date serve the statement (the awaiting-reminder
    predicate implies the open-due one) and, here, hold the same rows of the window: which one
    the planner takes is the noise of ANALYZE's sample, so either passes."""
    seed(postgres_engine, clock)
    now = clock.now()
    with postgres_engine.connect() as connection:
        with Session(bind=connection) as session:
            assert count_unremindable(session, now, LOOKAHEAD) == expected()
        compiled = counting_query(REFERENCE_SCHEMA.tasks, REFERENCE_SCHEMA.users).compile(
            dialect=postgres_engine.dialect
        )
        values = {**compiled.params, "now": now, "until": now + LOOKAHEAD}
        rows = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}", values)
        plan = "\n".join(row[0] for row in rows)
    print(f"\nEXPLAIN ANALYZE of the unremindable count ({TASK_COUNT:,} tasks):\n{plan}")
    assert "ix_tasks_awaiting_reminder" in plan or "ix_tasks_open_due" in plan
    assert "Seq Scan on tasks" not in plan
