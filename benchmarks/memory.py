"""Section 3: peak RSS of a worker process while it scans and relays, at two sizes.

Each measurement is a fresh spawned process (so the peak is its own): it bootstraps the
services, scans at the dataset's instant (queuing every due reminder, 4 % of the
tasks), then relays through the real SMTP receiver until ``relay_cap`` reminders are
delivered or none is left. ``ru_maxrss`` is read after bootstrap, after the scan and at
the end. The baseline is the naive design's scan (its query and loop) in the same kind of process.
"""

from __future__ import annotations

import multiprocessing
import resource
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import channel_settings, production_logging, progress
from benchmarks.database import Dataset, Schema, reset
from benchmarks.receivers import Receivers
from benchmarks.report import Row, Table

FLAT_RATIO = 1.2


def peak_mib() -> float:
    """This process's peak resident set size since it started, in MiB.

    On Linux ``ru_maxrss`` survives ``exec``: a spawned child reports its parent's peak
    at fork time when that was higher. ``VmHWM`` (the high-water mark of this process's
    own memory map) does not, so it is read first; ``ru_maxrss`` is the fallback.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_peaks(
    dataset: Dataset,
    endpoints: dict[str, Any],
    relay_cap: int,
    settings: dict[str, Any],
    results: Any,
) -> None:
    """Child: bootstrap (default settings but ``settings``), scan, relay up to ``relay_cap``
    rows; report the peaks."""
    production_logging()
    from worker.bootstrap import bootstrap

    services = bootstrap(channel_settings(dataset.url, "smtp", endpoints, **settings))
    with services.engine.connect():
        pass
    idle = peak_mib()
    scanned = services.scan(dataset.now)
    after_scan = peak_mib()
    delivered = 0

    def count(attempt: Any) -> None:
        nonlocal delivered
        delivered += attempt.outcome == "delivered"
        if delivered >= relay_cap:
            services.stop.set()

    services.relay(on_attempt=count).relay_until_idle()
    results.put({"idle": idle, "scan": after_scan, "end": peak_mib(),
                 "queued": scanned.queued, "delivered": delivered})  # fmt: skip
    services.engine.dispose()


def _naive(dataset: Dataset, results: Any) -> None:
    """Child: the naive design's scan at the dataset's instant; report the peaks."""
    from benchmarks.baseline import naive_scan

    engine = dataset.engine()
    with engine.connect():
        pass
    idle = peak_mib()
    queued = naive_scan(engine, dataset.now)
    results.put({"idle": idle, "scan": peak_mib(), "end": peak_mib(), "queued": queued})
    engine.dispose()


def in_child(target: Any, *args: Any) -> dict[str, Any]:
    """Run ``target(*args, results)`` in a spawned process; return what it reported."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=target, args=(*args, results))
    child.start()
    report: dict[str, Any] = results.get(timeout=900)
    child.join(60)
    return report


def run(datasets: Mapping[tuple[Schema, int], Dataset], sizes: list[int], relay_cap: int) -> Table:
    """Measure ours and the naive design's at each size; the table compares peaks."""
    table = Table("3. Peak RSS of a worker process (MiB)")
    ours: dict[int, dict[str, Any]] = {}
    with Receivers() as receivers:
        for size in sizes:
            progress(f"memory: {size:,} tasks")
            reset(datasets["ours", size])
            ours[size] = in_child(
                worker_peaks, datasets["ours", size], receivers.endpoints, relay_cap, {}
            )
            reset(datasets["naive", size])
            naive = in_child(_naive, datasets["naive", size])
            mine = ours[size]
            table.add(Row(f"scan, {size:,} tasks ({mine['queued']:,} queued)",
                          naive["scan"], mine["scan"], "MiB"))  # fmt: skip
            table.add(Row(f"scan + relay {mine['delivered']:,}, {size:,} tasks (vs start-up)",
                          mine["idle"], mine["end"], "MiB"))  # fmt: skip
            table.notes.append(
                f"{size:,} tasks: after start-up (imports, engine, one connection) ours "
                f"{mine['idle']:.1f} MiB, the naive design's {naive['idle']:.1f} MiB"
            )
    small, large = sizes[0], sizes[-1]
    for stage in ("scan", "end"):
        label = "scan" if stage == "scan" else "scan + relay"
        row = Row(
            f"ours: {label} peak at {large:,} vs {small:,} tasks",
            ours[small][stage], ours[large][stage], "MiB", "of", f"≤ {FLAT_RATIO:g}x (flat)",
        )  # fmt: skip
        table.add(row.judged((row.ratio or 0) <= FLAT_RATIO))
    table.notes.append(
        "scan rows: baseline = the naive design's scan (SELECT * of every due task, then its loop) "
        "in the same kind of process; scan + relay rows: baseline = the same process right "
        f"after start-up; our relay stops after {relay_cap:,} deliveries (SMTP)"
    )
    return table
