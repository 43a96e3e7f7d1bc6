"""Section 8: the no-op scan with quiet hours for a tenth of the users, against none.

On the scan section's databases (`benchmarks.database`, users in four zones), users with
``id % 40 < 4`` (a tenth, in every zone) get one of `SETTINGS`' quiet windows, some on
selected weekdays only. Each size is measured in phases, interleaved: no quiet users, then
the quiet users (after one scan that plans their reminders pulled forward), twice; each
phase's figure is the median of `NOOP_RUNS` no-op scans at the dataset's instant.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from benchmarks.common import progress
from benchmarks.database import Dataset, Schema, reset, vacuum
from benchmarks.report import Row, Table
from benchmarks.rules import execute
from benchmarks.scan import FLAT_RATIO, LONG_AGO, NOOP_RUNS, services_for, timed
from worker.bootstrap import Services

#: (start, end, days as the preferences' bit mask, bit 0 Monday; NULL every day).
SETTINGS = (
    ("22:00", "07:00", None),
    ("23:00", "06:30", 31),
    ("21:30", "08:00", 96),
    ("12:00", "13:30", None),
    ("00:30", "06:00", None),
    ("20:00", "02:00", 42),
)
_VALUES = ", ".join(
    f"({n}, TIME '{start}', TIME '{end}', {'NULL' if days is None else days})"
    for n, (start, end, days) in enumerate(SETTINGS)
)
QUIET_SQL = [
    "INSERT INTO reminder_preferences (user_id, quiet_start, quiet_end, quiet_days, "
    "digest_workdays, updated_at) "
    f"SELECT u.id, s.start, s.stop, CAST(s.days AS smallint), false, now() "
    f"FROM users AS u JOIN (VALUES {_VALUES}) AS s (n, start, stop, days) "
    f"ON s.n = (u.id / 40) % {len(SETTINGS)} WHERE u.id % 40 < 4"
]
NO_QUIET_SQL = ["DELETE FROM reminder_preferences"]


def with_quiet(dataset: Dataset, present: bool) -> None:
    """A tenth of the users with quiet hours (``present``), or none."""
    engine = dataset.engine()
    try:
        execute(engine, NO_QUIET_SQL)
        if present:
            execute(engine, QUIET_SQL)
    finally:
        engine.dispose()
    vacuum(dataset.url, "reminder_preferences", checkpoint=False)


def noop(services: Services, dataset: Dataset) -> float:
    """The median of `NOOP_RUNS` no-op scans at the dataset's instant (asserted no-ops)."""
    seconds = []
    for _ in range(NOOP_RUNS):
        took, result = timed(lambda: services.scan(dataset.now))
        assert result.queued == 0, result
        seconds.append(took)
    return statistics.median(seconds)


def measure(dataset: Dataset) -> tuple[float, float, int]:
    """(no-op without quiet users, with them, rows the first scan with them planned)."""
    services = services_for(dataset)
    none: list[float] = []
    quiet: list[float] = []
    pulled = 0
    try:
        services.scan(dataset.now - LONG_AGO)
        reset(dataset)
        services.scan(dataset.now)
        for _ in range(2):
            with_quiet(dataset, present=False)
            none.append(noop(services, dataset))
            with_quiet(dataset, present=True)
            pulled = services.scan(dataset.now).queued or pulled
            quiet.append(noop(services, dataset))
    finally:
        services.engine.dispose()
        with_quiet(dataset, present=False)
        reset(dataset)
    return statistics.median(none), statistics.median(quiet), pulled


def run(datasets: Mapping[tuple[Schema, int], Dataset], sizes: list[int]) -> Table:
    """Measure every size; leave every database without quiet users, reset."""
    table = Table("8. No-op scan with quiet hours for 10 % of the users vs none (times in s)")
    figures: dict[int, tuple[float, float, int]] = {}
    for size in sizes:
        progress(f"quiet: {size:,} tasks")
        figures[size] = measure(datasets["ours", size])
        none, quiet, pulled = figures[size]
        table.add(Row(f"no-op steady, {size:,} tasks ({pulled:,} pulled forward first)",
                      none, quiet, "s"))  # fmt: skip
    small, large = sizes[0], sizes[-1]
    if large != small:
        row = Row(f"quiet users: no-op at {large:,} vs {small:,} tasks", figures[small][1],
                  figures[large][1], "s", "of", f"≤ {FLAT_RATIO:g}x (flat)")  # fmt: skip
        table.add(row.judged((row.ratio or 0) <= FLAT_RATIO))
        row = Row(f"no quiet users: no-op at {large:,} vs {small:,} tasks", figures[small][0],
                  figures[large][0], "s")  # fmt: skip
        table.add(row)
    table.notes.append(
        f"baseline = the same database with no quiet users; each figure the median of two "
        f"interleaved phases, each the median of {NOOP_RUNS} no-op scans; ratio = ours / baseline"
    )
    return table
