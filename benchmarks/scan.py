"""Section 1: the scan on PostgreSQL at each size, ours against the naive design's loop.

Ours is the real `Services.scan` (``worker.reminders.scan.scan_due_tasks``) with an explicit
``now``, default settings (24 h lookahead, batches of 5,000, a backlog shared by two
connections). The naive design's is `benchmarks.baseline.naive_scan`. For each size and each side:
the first scan (queues every due reminder), the no-op scan right after it (nothing new is
due; the index still holds the entries the first scan made dead), and the steady no-op
scan (median of 5). Where the first scan is more than one batch, ours also runs it on one
connection (``REMINDERS_SCAN_CONNECTIONS=1``), interleaved, as the naive design's loop does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from benchmarks.baseline import naive_scan
from benchmarks.database import Dataset, Schema, reset
from benchmarks.report import Row, Table
from worker.bootstrap import Services, bootstrap
from worker.settings import load_settings

T = TypeVar("T")
NOOP_RUNS = 5
FIRST_SCAN_TARGET_S = 2.0
FIRST_SCAN_SPEEDUP = 20.0
FLAT_RATIO = 2.0  # "about the same": within a factor of 2 from 10k to the largest size
LONG_AGO = timedelta(days=400)  # no task is due then: warms connections and statements


@dataclass
class ScanFigures:
    """Seconds measured at one size for one side (ours or the naive design's)."""

    first: list[float] = field(default_factory=list)
    first_one_connection: list[float] = field(default_factory=list)
    queued: int = 0
    noop_after: float = 0.0
    noop_steady: float = 0.0

    @property
    def first_median(self) -> float:
        """The median first scan."""
        return statistics.median(self.first)


def services_for(dataset: Dataset, **settings: object) -> Services:
    """The worker's services on ``dataset`` with default settings but ``settings``."""
    return bootstrap(load_settings(database_url=dataset.url, **settings))


def timed(call: Callable[[], T]) -> tuple[float, T]:
    """Run ``call()`` and return (seconds, its result)."""
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def measure_ours(dataset: Dataset, runs: int) -> ScanFigures:
    """First scans (``runs`` of them, reset in between), then the no-op scans."""
    services = services_for(dataset)
    one_connection = services_for(dataset, scan_connections=1)
    figures = ScanFigures()
    try:
        services.scan(dataset.now - LONG_AGO)
        one_connection.scan(dataset.now - LONG_AGO)
        for run in range(runs):
            if run:
                reset(dataset)
            seconds, result = timed(lambda: services.scan(dataset.now))
            figures.first.append(seconds)
            figures.queued = result.queued
            if result.batches > 1:  # a backlog: the connections setting matters
                reset(dataset)
                figures.first_one_connection.append(
                    timed(lambda: one_connection.scan(dataset.now))[0]
                )  # it leaves the same state for the no-op scans below
        figures.noop_after, result = timed(lambda: services.scan(dataset.now))
        assert result.queued == 0, result
        figures.noop_steady = statistics.median(
            timed(lambda: services.scan(dataset.now))[0] for _ in range(NOOP_RUNS)
        )
    finally:
        services.engine.dispose()
        one_connection.engine.dispose()
    return figures


def measure_naive(dataset: Dataset, runs: int) -> ScanFigures:
    """The same figures for the naive design's query and loop."""
    engine = dataset.engine()
    figures = ScanFigures()
    try:
        naive_scan(engine, dataset.now - LONG_AGO)
        for run in range(runs):
            if run:
                reset(dataset)
            seconds, queued = timed(lambda: naive_scan(engine, dataset.now))
            figures.first.append(seconds)
            figures.queued = queued
        figures.noop_after, queued = timed(lambda: naive_scan(engine, dataset.now))
        assert queued == 0, queued
        figures.noop_steady = statistics.median(
            timed(lambda: naive_scan(engine, dataset.now))[0] for _ in range(NOOP_RUNS)
        )
    finally:
        engine.dispose()
    return figures


def runs_for(size: int) -> tuple[int, int]:
    """(our first-scan runs, the naive design's) at ``size``: fewer where one run takes long."""
    return (3, 1) if size >= 1_000_000 else (3, 3)


def scan_table(
    figures: dict[int, tuple[ScanFigures, ScanFigures]], largest_target: int = 1_000_000
) -> Table:
    """Turn {size: (ours, naive)} into the section's table."""
    table = Table(
        "1. Scan on PostgreSQL: ours vs the naive hourly design's query and loop (times in s)"
    )
    sizes = sorted(figures)
    for size in sizes:
        ours, naive = figures[size]
        first = Row(
            f"first scan, {size:,} tasks ({ours.queued:,} queued)",
            naive.first_median,
            ours.first_median,
            "s",
            "faster",
        )
        if size == largest_target:
            met = (
                ours.first_median < FIRST_SCAN_TARGET_S and (first.ratio or 0) >= FIRST_SCAN_SPEEDUP
            )
            first = Row(
                first.case, first.baseline, first.ours, "s", "faster",
                f"< {FIRST_SCAN_TARGET_S:g} s and ≥ {FIRST_SCAN_SPEEDUP:g}x faster", met,
            )  # fmt: skip
        table.add(first)
        if ours.first_one_connection:
            table.add(
                Row(
                    f"first scan, {size:,} tasks, ours on one connection",
                    naive.first_median,
                    statistics.median(ours.first_one_connection),
                    "s",
                    "faster",
                )
            )
        if naive.queued != ours.queued:
            table.notes.append(
                f"{size:,} tasks: the naive design queued {naive.queued:,}, ours {ours.queued:,}"
            )
        table.add(
            Row(
                f"no-op right after, {size:,} tasks",
                naive.noop_after,
                ours.noop_after,
                "s",
                "faster",
            )
        )
        table.add(
            Row(
                f"no-op steady (median of {NOOP_RUNS}), {size:,} tasks",
                naive.noop_steady,
                ours.noop_steady,
                "s",
                "faster",
            )
        )
    small, large = sizes[0], sizes[-1]
    if large != small:
        for label, attribute in (
            ("no-op steady", "noop_steady"),
            ("no-op right after", "noop_after"),
        ):

            def pick(f: ScanFigures, attribute: str = attribute) -> float:
                return float(getattr(f, attribute))

            ours_small, ours_large = pick(figures[small][0]), pick(figures[large][0])
            row = Row(
                f"ours: {label} at {large:,} vs {small:,} tasks",
                ours_small,
                ours_large,
                "s",
                "of",
                f"≤ {FLAT_RATIO:g}x (flat)",
            )
            table.add(row.judged((row.ratio or 0) <= FLAT_RATIO))
            naive_small, naive_large = pick(figures[small][1]), pick(figures[large][1])
            table.add(
                Row(
                    f"naive: {label} at {large:,} vs {small:,} tasks", naive_small, naive_large, "s"
                )
            )
    table.notes.append(
        "first scan: median of 3 runs (the naive design's: 1 run at 1M), each after a reset and "
        "VACUUM ANALYZE and CHECKPOINT; ratio = naive time / our time"
    )
    return table


def run(
    datasets: Mapping[tuple[Schema, int], Dataset], sizes: list[int]
) -> tuple[Table, dict[int, tuple[ScanFigures, ScanFigures]]]:
    """Measure every size on the datasets built for this run; return the table and figures."""
    figures: dict[int, tuple[ScanFigures, ScanFigures]] = {}
    for size in sizes:
        ours_runs, naive_runs = runs_for(size)
        print(f"  scan: {size:,} tasks, ours ...", flush=True)
        ours = measure_ours(datasets["ours", size], ours_runs)
        print(f"  scan: {size:,} tasks, naive ...", flush=True)
        naive = measure_naive(datasets["naive", size], naive_runs)
        figures[size] = (ours, naive)
    return scan_table(figures), figures
