"""Lead-time error per schedule, by simulation: the real scan, a moved clock.

Tasks become eligible (due date minus the 24 h lookahead) at moments spread evenly
over one day. For each schedule the real `Services.scan` runs at every tick that
`worker.embedded.next_tick` (periodiq's cron) gives over that day, with that tick as
``now``; each outbox row then says when its reminder was queued (``created_at``) for
which due date (``subject_at``). Delay = queued - eligible; the reminder reaches its owner
``24 h - delay`` (minus delivery time) before the due date.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from benchmarks.common import progress
from benchmarks.database import Dataset, drop_database, migrated, reset
from benchmarks.report import Row, Table, percentile
from outbox.table import OutboxRow
from worker.bootstrap import bootstrap
from worker.embedded import next_tick
from worker.settings import load_settings, parse_cron

SCHEDULES = ("* * * * *", "*/5 * * * *", "0 * * * *", "0 */6 * * *")
NAIVE_SCHEDULE = "0 * * * *"  # the naive design's schedule: every hour at :00
START = datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC)  # the simulated day starts here
DAY = timedelta(days=1)

TASKS_SQL = """
INSERT INTO users (id, email) SELECT u, 'user' || u || '@example.com' FROM generate_series(1, 50) u;
INSERT INTO tasks (id, owner_id, title, due_date)
SELECT i, 1 + i % 50, 'task ' || i,
       :start + interval '1 day' + ((i * 7919) % 86400 + 0.5) * interval '1 second'
FROM generate_series(1, :count) AS i;
"""


@dataclass(frozen=True)
class Delays:
    """Queue delays (seconds) under one schedule, and how many scans the day took."""

    schedule: str
    seconds: list[float]
    scans: int

    @property
    def mean(self) -> float:
        """Mean delay."""
        return statistics.fmean(self.seconds)

    @property
    def p99(self) -> float:
        """99th percentile."""
        return percentile(self.seconds, 99)

    @property
    def worst(self) -> float:
        """Longest delay."""
        return max(self.seconds)


def build(count: int) -> Dataset:
    """A small database whose ``count`` tasks become eligible across the simulated day."""
    name, url = migrated("schedule")
    dataset = Dataset(name, url, count, START, "ours")
    engine = dataset.engine()
    with engine.begin() as connection:
        for statement in TASKS_SQL.strip().split(";\n"):
            connection.execute(text(statement), {"start": START, "count": count})
    engine.dispose()
    return dataset


def simulate(dataset: Dataset, schedule: str) -> Delays:
    """Run the real scan at each tick of ``schedule`` over the day; measure the delays."""
    reset(dataset)
    services = bootstrap(load_settings(database_url=dataset.url, scan_schedule=schedule))
    lookahead = services.settings.lookahead
    cron = parse_cron(schedule)
    tick, end, scans = next_tick(cron, START - timedelta(seconds=1)), START + DAY, 0
    while True:
        services.scan(tick)
        scans += 1
        if tick > end:
            break
        tick = next_tick(cron, tick)
    with services.session_factory() as session:
        rows = session.execute(select(OutboxRow.created_at, OutboxRow.subject_at)).all()
    services.engine.dispose()
    if len(rows) != dataset.size:
        raise RuntimeError(f"{schedule}: {len(rows)} reminders for {dataset.size} tasks")
    delays = [(queued - (due - lookahead)).total_seconds() for queued, due in rows if due]
    return Delays(schedule, delays, scans)


def run(count: int) -> tuple[Table, dict[str, Delays]]:
    """Simulate every schedule; the baseline is the naive design's hourly schedule."""
    dataset = build(count)
    try:
        results = {}
        for schedule in SCHEDULES:
            progress(f"schedule: {schedule}")
            results[schedule] = simulate(dataset, schedule)
    finally:
        drop_database(dataset.name)
    naive = results[NAIVE_SCHEDULE]
    table = Table("Lead-time error per schedule: delay from eligible to queued (minutes)")
    for schedule, delays in results.items():
        for label, ours, base in (
            ("mean", delays.mean, naive.mean),
            ("p99", delays.p99, naive.p99),
            ("max", delays.worst, naive.worst),
        ):
            table.add(Row(f"`{schedule}` ({delays.scans:,} scans/day): {label} delay",
                          base / 60, ours / 60, "min", "sooner"))  # fmt: skip
    table.notes.append(
        f"{count:,} tasks eligible at moments spread over one day; the real scan at each "
        "tick with the tick as now; baseline = the naive design's hourly schedule (0 * * * *)"
    )
    table.notes.append(
        "a reminder promised 24 h ahead arrives 24 h minus this delay before the due date "
        "(minus the relay's delivery time, see section 4)"
    )
    return table, results
