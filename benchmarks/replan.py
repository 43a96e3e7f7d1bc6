"""``python -m benchmarks.replan [--tasks N]``: what a rule change costs on PostgreSQL.

A fresh database (dropped at the end) with ``N`` open tasks (100,000 by default) of ``N // 10``
users, every task marked as reminded, and a rule of their own for one user in 100. Measured,
each in its own transaction as ``reminders rules set`` runs it: one user's rule (its UPDATE
clears the marker of that user's 10 tasks), the default rule (the tasks of every user without
a rule of their own: 99 % of the table), and the same default again (nothing changes).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from benchmarks.database import drop_database, migrated
from worker.bootstrap import bootstrap
from worker.db import make_engine
from worker.reminders import rule_store
from worker.reminders.rules import Rule
from worker.settings import Settings

FILL = [
    "INSERT INTO users (id, email) SELECT u, 'user' || u || '@example.com' "
    "FROM generate_series(1, :users) AS u",
    "INSERT INTO tasks (id, owner_id, title, due_date, reminder_due_at) "
    "SELECT i, 1 + i % :users, 'task ' || i, :due + i * interval '1 second', "
    ":due + i * interval '1 second' FROM generate_series(1::bigint, :tasks) AS i",
]
OWN_RULES = (
    "INSERT INTO reminder_rules (user_id, overdue_count, all_day_at, updated_at) "
    "SELECT u, 0, '09:00', :now FROM generate_series(1, :users, 100) AS u"
)


def main() -> None:
    """Build the database, time the three changes, print one line each."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replan", description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    tasks = parser.parse_args().tasks
    users = max(tasks // 10, 1)
    now = datetime.now(UTC)
    name, url = migrated("replan")
    engine = make_engine(url)
    try:
        values = {"users": users, "tasks": tasks, "due": now + timedelta(days=1), "now": now}
        with engine.begin() as connection:
            for statement in [*FILL, OWN_RULES]:
                connection.execute(text(statement), values)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
        services = bootstrap(Settings(database_url=url), engine=engine)
        three = Rule(before=(timedelta(days=1), timedelta(hours=1), timedelta(0)))
        for what, user_id in (
            ("one user's rule", 1),
            ("default rule", None),
            ("default again", None),
        ):
            started = time.perf_counter()
            with services.session_factory.begin() as session:
                change = rule_store.set_rule(session, services.host, user_id, three, now=now)
            elapsed = (time.perf_counter() - started) * 1000
            print(f"{what:16} {change.replanned:>9,} tasks re-planned  {elapsed:9.1f} ms")
    finally:
        engine.dispose()
        drop_database(name)


if __name__ == "__main__":
    main()
