"""The plan of the scan's window and pull-forward statements on PostgreSQL, with rules and a
recipients table: tasks read by due date per offset, each task's recipients by index, neither
table in full."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from worker.db import make_session_factory
from worker.reminders.due import PostgresDueQueries
from worker.reminders.host import check_host
from worker.reminders.mapping import REFERENCE, RecipientsMapping

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TASKS = 50_000
USERS = 5_000
AHEAD = timedelta(minutes=2)
PULL_TICK = datetime(2026, 12, 1, 21, 58, tzinfo=UTC)

FILL = [
    "INSERT INTO users (id, email) SELECT u, 'user' || u || '@example.com' "
    "FROM generate_series(1, :users) AS u",
    # Open tasks due every 30 s from 10 days back to 7 days ahead, marked as planned.
    "INSERT INTO tasks (id, owner_id, title, due_date, reminder_due_at) "
    "SELECT g, 1 + g % :users, 'task ' || g, d.due, d.due FROM generate_series(1, :tasks) AS g, "
    "LATERAL (SELECT CAST(:now AS timestamptz) - interval '10 days' + g * interval '30 s' "
    "AS due) AS d",
    "CREATE TABLE watchers (task_ref BIGINT, account_ref BIGINT, "
    "PRIMARY KEY (task_ref, account_ref))",
    # One watcher other than the owner for every second task.
    "INSERT INTO watchers SELECT g, 1 + (g + 1) % :users FROM generate_series(2, :tasks, 2) AS g",
    # One user with quiet hours (UTC): the scan's pull-forward reads the window's tasks.
    "INSERT INTO reminder_preferences (user_id, quiet_start, quiet_end, digest_workdays, "
    "updated_at) VALUES (1, '22:00', '07:00', FALSE, :now)",
]
RULES = [
    "INSERT INTO reminder_rules (user_id, overdue_count, all_day_at, updated_at) "
    "VALUES (NULL, 0, '09:00', :now)",
    "INSERT INTO reminder_rule_leads (rule_id, lead_seconds) "
    "SELECT id, lead FROM reminder_rules, (VALUES (86400), (3600), (0)) AS l (lead)",
]


@pytest.mark.parametrize("leads", [3, 1], ids=["rule-of-three-leads", "no-rule-set"])
def test_the_window_reads_tasks_per_offset_and_recipients_by_index(
    postgres_engine: Engine, leads: int
) -> None:
    """With a rule of three lead times (or none set: the built-in lead, the rules' tables
    empty and never analysed) and a watcher for every second task, the window plans its
    reminders through ix_tasks_open_due and probes the watchers' and the users' indexes per
    task and recipient: no sequential read of the tasks, the recipients or the users,
    however many the planner expects the per-offset ranges or the rules to hold."""
    values = {"users": USERS, "tasks": TASKS, "now": NOW}
    with postgres_engine.begin() as connection:
        for statement in FILL + (RULES if leads == 3 else []):
            connection.execute(text(statement), values)
    with postgres_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE users, tasks, watchers"))
    recipients = RecipientsMapping(table="watchers", task="task_ref", user="account_ref")
    with postgres_engine.connect() as connection:
        host = check_host(connection, dataclasses.replace(REFERENCE, recipients=recipients))
    queries = PostgresDueQueries.build(host)
    plans: list[str] = []

    def explain_the_window(
        conn: Connection, cursor: Any, statement: str, parameters: Any, *_: object
    ) -> None:
        if "reminder_hit" in statement:
            with cursor.connection.cursor() as explain:
                explain.execute("EXPLAIN " + statement, parameters)
                plans.append("\n".join(row[0] for row in explain.fetchall()))

    event.listen(postgres_engine, "before_cursor_execute", explain_the_window)
    try:
        with make_session_factory(postgres_engine).begin() as session:
            queued = queries.plan_window(session, NOW, AHEAD)
        # No quiet window's pull is in reach at noon: the window statement alone.
        assert len(plans) == 1, "the scan's window statement was not seen"
        # At 21:58 the pull to 21:59 of the 22:00 window is: the pull-forward's read (the
        # same join, over the window's moments, for the recipients with that setting).
        with make_session_factory(postgres_engine)() as session:
            queries.plan_window(session, PULL_TICK, AHEAD)
            session.rollback()
    finally:
        event.remove(postgres_engine, "before_cursor_execute", explain_the_window)

    # Due every 30 s, three lead times or one, 1.5 recipients: 2 minutes hold 4 x 3 x 1.5
    # moments, or 4 x 1 x 1.5.
    assert queued == 4 * leads * 3 // 2
    assert len(plans) == 3, "the window and pull-forward statements were not seen"
    plans = [plans[0], plans[2]]
    for name, plan in zip(("window", "pull-forward"), plans, strict=True):
        print(f"\nEXPLAIN of the {name} statement ({TASKS:,} tasks):\n{plan}")
        assert "ix_tasks_open_due" in plan
        assert "Seq Scan on tasks" not in plan
        assert "Seq Scan on watchers" not in plan
        assert "Seq Scan on users" not in plan


def test_planning_the_window_again_writes_and_locks_nothing(postgres_engine: Engine) -> None:
    """The window starts at the last scan, so each scan plans its moments again: the keys
    planned already are left out before the insert, no row is locked (its ``xmax`` stays 0)
    and nothing is queued twice."""
    near = (
        "INSERT INTO tasks (id, owner_id, title, due_date) SELECT g, 1 + g % :users, "
        "'task ' || g, CAST(:now AS timestamptz) - interval '1 hour' + g * interval '30 s' "
        "FROM generate_series(1, :tasks) AS g"
    )
    with postgres_engine.begin() as connection:
        for statement in (FILL[0], near, *RULES):  # users, tasks, the rule
            connection.execute(text(statement), {"users": 50, "tasks": 2_000, "now": NOW})
    queries = PostgresDueQueries.build()
    factory = make_session_factory(postgres_engine)
    with factory.begin() as session:
        first = queries.plan_window(session, NOW, AHEAD)
    with factory.begin() as session:
        again = queries.plan_window(session, NOW, AHEAD)
    with postgres_engine.connect() as connection:
        rows, locked = connection.execute(
            text("SELECT count(*), count(*) FILTER (WHERE xmax <> 0) FROM outbox")
        ).one()
    # Due every 30 s: 2 minutes hold 4 moments of the 0 m lead time and 4 of the 1 h one.
    assert (first, again) == (8, 0)
    assert (rows, locked) == (8, 0)
