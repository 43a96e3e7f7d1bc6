"""Section 7: the scan with reminder rules and recipients, against the scan without them.

On the scan section's databases (`benchmarks.database`), two more things: a recipients table
(``task_recipients``: one watcher, other than the owner, for every second task, so 1.5
recipients per task on average) read through a schema file with a ``[recipients]`` mapping,
and a default rule of three lead times, ``24h,1h,0m``, for every user. The baseline is the
scan of the same database with neither (the reference mapping, no rule: one reminder 24 h
ahead, to the owner), run interleaved with ours, each first scan after a reset.

With the rule, a first scan plans, for each task due in the next day and each recipient,
the 24 h reminder whose moment has passed (sent at once) and every moment up to the
horizon (the 1 h and 0 m reminders of the tasks due in the next minutes), then the window
of moments up to the horizon of every open task. The no-op scan right after, at the same
instant, finds nothing more. The next tick's scan, a minute later, plans the moments of
that minute (a window read by due date per offset through ``ix_tasks_open_due``).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text

from benchmarks.common import progress
from benchmarks.database import Dataset, Schema, reset, vacuum
from benchmarks.explain import explain
from benchmarks.memory import FLAT_RATIO as MEMORY_FLAT_RATIO
from benchmarks.memory import in_child, worker_peaks
from benchmarks.receivers import Receivers
from benchmarks.report import Row, Table
from benchmarks.scan import LONG_AGO, NOOP_RUNS, services_for, timed
from tests.support.watchers import watched_mapping, watchers_ddl
from worker.bootstrap import Services, plan_ahead
from worker.reminders.mapping import RecipientsMapping

FIRST_SCAN_RATIO = 3.0
FLAT_RATIO = 2.0
NEXT_TICK = timedelta(minutes=1)
LEADS = (86_400, 3_600, 0)

#: The recipients table, read as ``[recipients]`` beside the reference tables.
RECIPIENTS = RecipientsMapping(table="task_recipients", task="task_id", user="user_id")
RECIPIENTS_SQL = [
    *watchers_ddl(RECIPIENTS),
    # A watcher other than the owner (1 + id % users) for every second task.
    "INSERT INTO task_recipients (task_id, user_id) "
    "SELECT id, 1 + (id + 1 + id % (:users - 1)) % :users FROM tasks WHERE id % 2 = 0 "
    "ON CONFLICT DO NOTHING",
]
RULE_SQL = [
    "INSERT INTO reminder_rules (user_id, overdue_every_seconds, overdue_count, all_day_at, "
    "updated_at) VALUES (NULL, NULL, 0, '09:00', now())",
    "INSERT INTO reminder_rule_leads (rule_id, lead_seconds) "
    "SELECT id, lead FROM reminder_rules, unnest(CAST(:leads AS int[])) AS lead "
    "WHERE user_id IS NULL",
]
NO_RULE_SQL = ["DELETE FROM reminder_rule_leads", "DELETE FROM reminder_rules"]


@dataclass
class RuleFigures:
    """Seconds measured at one size: the baseline's first scans and ours."""

    baseline_first: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    baseline_queued: int = 0
    queued: int = 0
    noop_after: float = 0.0
    noop_steady: float = 0.0
    next_tick: float = 0.0
    next_tick_queued: int = 0


def execute(engine: Engine, statements: list[str], **values: Any) -> None:
    """Run ``statements`` in one transaction."""
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement), values)


def add_recipients(dataset: Dataset) -> None:
    """The recipients table, filled (once per database)."""
    engine = dataset.engine()
    try:
        execute(engine, RECIPIENTS_SQL, users=max(dataset.size // 10, 10))
    finally:
        engine.dispose()
    vacuum(dataset.url, "task_recipients")


def with_rule(dataset: Dataset, present: bool) -> None:
    """Store the default rule ``24h,1h,0m`` (``present``) or no rule, as if always so."""
    engine = dataset.engine()
    try:
        execute(engine, NO_RULE_SQL)
        if present:
            execute(engine, RULE_SQL, leads=list(LEADS))
    finally:
        engine.dispose()


def first_scan(dataset: Dataset, services: Services, *, rule: bool) -> tuple[float, int]:
    """A first scan from the built state, with the rule or without; (seconds, queued)."""
    with_rule(dataset, present=rule)
    reset(dataset)
    seconds, result = timed(lambda: services.scan(dataset.now))
    return seconds, result.queued


def measure(dataset: Dataset, mapping: Path, runs: int) -> RuleFigures:
    """Interleaved first scans (the baseline's, then ours), then our no-op and next tick."""
    baseline = services_for(dataset)
    ours = services_for(dataset, schema_file=str(mapping))
    figures = RuleFigures()
    try:
        baseline.scan(dataset.now - LONG_AGO)
        ours.scan(dataset.now - LONG_AGO)
        for _ in range(runs):
            seconds, figures.baseline_queued = first_scan(dataset, baseline, rule=False)
            figures.baseline_first.append(seconds)
            seconds, figures.queued = first_scan(dataset, ours, rule=True)
            figures.first.append(seconds)
        figures.noop_after, result = timed(lambda: ours.scan(dataset.now))
        assert result.queued == 0, result
        figures.noop_steady = statistics.median(
            timed(lambda: ours.scan(dataset.now))[0] for _ in range(NOOP_RUNS)
        )
        figures.next_tick, result = timed(lambda: ours.scan(dataset.now + NEXT_TICK))
        figures.next_tick_queued = result.queued
    finally:
        baseline.engine.dispose()
        ours.engine.dispose()
    return figures


def window_plan(dataset: Dataset, mapping: Path) -> tuple[str, str]:
    """EXPLAIN of the window statement at the next tick after a first scan (rolled back)."""
    services = services_for(dataset, schema_file=str(mapping))
    try:
        with_rule(dataset, present=True)
        reset(dataset)
        services.scan(dataset.now)
        at = dataset.now + NEXT_TICK
        statement, parameters = captured_window(services, at)
        text_ = f"{statement}\n\n{explain(services.engine, statement, parameters)}"
    finally:
        services.engine.dispose()
    return f"EXPLAIN, rules and recipients, {dataset.size:,} tasks, the next tick's window", text_


def captured_window(services: Services, at: Any) -> tuple[str, Any]:
    """The SQL and parameters of the scan's window statement at ``at`` (rolled back)."""
    seen: list[tuple[str, Any]] = []

    def listener(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "reminder_hit" in statement:
            seen.append((statement, parameters))

    event.listen(services.engine, "before_cursor_execute", listener)
    try:
        with services.session_factory() as session:
            services.due_queries.plan_window(session, at, plan_ahead(services.settings, at))
            session.rollback()
    finally:
        event.remove(services.engine, "before_cursor_execute", listener)
    if not seen:
        raise RuntimeError("the scan sent no window statement")
    return seen[0]


@contextmanager
def mapping_file() -> Iterator[Path]:
    """The schema file with the ``[recipients]`` mapping, in a directory removed after."""
    with tempfile.TemporaryDirectory(prefix="bench_rules_") as directory:
        path = Path(directory) / "schema.toml"
        path.write_text(watched_mapping(RECIPIENTS), encoding="utf-8")
        yield path


def run(
    datasets: Mapping[tuple[Schema, int], Dataset], sizes: list[int], relay_cap: int
) -> tuple[list[Table], list[tuple[str, str]]]:
    """Measure every size; return the tables (scan, memory) and the window's plan at the
    largest size. Leaves every database without the rule, reset to its built state."""
    figures: dict[int, RuleFigures] = {}
    with mapping_file() as mapping:
        try:
            for size in sizes:
                progress(f"rules: {size:,} tasks")
                dataset = datasets["ours", size]
                add_recipients(dataset)
                figures[size] = measure(dataset, mapping, 3 if size < 1_000_000 else 2)
            largest = datasets["ours", sizes[-1]]
            progress(f"rules: explain at {largest.size:,} tasks")
            plans = [window_plan(largest, mapping)]
            progress("rules: memory")
            memory_table = peak_memory(datasets, [sizes[0], sizes[-1]], mapping, relay_cap)
        finally:
            for size in sizes:
                with_rule(datasets["ours", size], present=False)
                reset(datasets["ours", size])
    return [rules_table(figures), memory_table], plans


def peak_memory(
    datasets: Mapping[tuple[Schema, int], Dataset], sizes: list[int], mapping: Path,
    relay_cap: int,
) -> Table:  # fmt: skip
    """Peak RSS of a worker process scanning and relaying with the rule and recipients."""
    table = Table("7b. Peak RSS of a worker process with rules and recipients (MiB)")
    peaks: dict[int, dict[str, Any]] = {}
    extra = {"schema_file": str(mapping)}
    with Receivers() as receivers:
        for size in sizes:
            dataset = datasets["ours", size]
            with_rule(dataset, present=True)
            reset(dataset)
            peaks[size] = in_child(worker_peaks, dataset, receivers.endpoints, relay_cap, extra)
            found = peaks[size]
            case = (
                f"scan ({found['queued']:,} queued) + relay {found['delivered']:,}, "
                f"{size:,} tasks (vs start-up)"
            )
            table.add(Row(case, found["idle"], found["end"], "MiB"))
    small, large = sizes[0], sizes[-1]
    for stage, label in (("scan", "scan"), ("end", "scan + relay")):
        row = Row(f"ours: {label} peak at {large:,} vs {small:,} tasks", peaks[small][stage],
                  peaks[large][stage], "MiB", "of", f"≤ {MEMORY_FLAT_RATIO:g}x (flat)")  # fmt: skip
        table.add(row.judged((row.ratio or 0) <= MEMORY_FLAT_RATIO))
    table.notes.append(
        f"a fresh process per size, as in section 3; the relay stops after {relay_cap:,} "
        "deliveries (SMTP)"
    )
    return table


def rules_table(figures: dict[int, RuleFigures]) -> Table:
    """Turn {size: figures} into the section's table."""
    table = Table(
        "7. Scan with rules (24h,1h,0m) and 1.5 recipients per task vs without (times in s)"
    )
    sizes = sorted(figures)
    for size in sizes:
        f = figures[size]
        row = Row(
            f"first scan, {size:,} tasks ({f.queued:,} vs {f.baseline_queued:,} queued)",
            statistics.median(f.baseline_first), statistics.median(f.first), "s", "of",
            f"≤ {FIRST_SCAN_RATIO:g}x",
        )  # fmt: skip
        table.add(row.judged((row.ratio or 0) <= FIRST_SCAN_RATIO))
        table.add(Row(f"no-op right after / steady, {size:,} tasks", f.noop_after,
                      f.noop_steady, "s"))  # fmt: skip
        table.add(Row(f"next tick, {size:,} tasks ({f.next_tick_queued:,} planned)", None,
                      f.next_tick, "s"))  # fmt: skip
    small, large = sizes[0], sizes[-1]
    if large != small:
        for label, attribute in (("no-op steady", "noop_steady"), ("no-op right after",
                                                                   "noop_after")):  # fmt: skip
            row = Row(
                f"ours: {label} at {large:,} vs {small:,} tasks",
                float(getattr(figures[small], attribute)),
                float(getattr(figures[large], attribute)),
                "s", "of", f"≤ {FLAT_RATIO:g}x (flat)",
            )  # fmt: skip
            table.add(row.judged((row.ratio or 0) <= FLAT_RATIO))
    table.notes.append(
        "first scan: baseline = the same database without rule or recipients mapping (one "
        "reminder 24 h ahead, to the owner), interleaved; ratio = our time / baseline time; "
        "median of 3 runs (2 at 1M), each after a reset and VACUUM ANALYZE and CHECKPOINT"
    )
    table.notes.append(
        "no-op row: baseline column = right after the first scan, ours column = steady "
        f"(median of {NOOP_RUNS}); next tick: the scan a minute later, which plans that minute's "
        "moments"
    )
    return table
