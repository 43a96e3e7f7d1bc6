"""``python -m benchmarks [--quick] [--only SECTION,...] [--markdown FILE]``.

Sections: scan (with the EXPLAIN of the due query), memory, relay, latency, schedule,
lateness, rules (the scan and memory with rules and recipients, and the EXPLAIN of the window),
quiet (the no-op scan with quiet hours for a tenth of the users, against none),
relay-rules (the relay with them), digests (reminders merged into digests and sent, against
sending them one by one).
Needs the PostgreSQL server (``BENCH_POSTGRES_URL``, default postgres on
127.0.0.1) and, for latency, Redis (``BENCH_REDIS_URL``, default database 11).
Every database is created for the run and dropped at its end.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import clean_environment, production_logging, progress, utc_now
from benchmarks.report import Table

SECTIONS = (
    "scan", "memory", "relay", "latency", "schedule", "lateness", "rules", "relay-rules",
    "digests", "quiet",
)  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """The sizes and counts of one run."""

    scan_sizes: list[int]
    memory_sizes: list[int]
    relay_count: int
    relay_repeats: int
    relay_cap: int
    latency_seconds: tuple[float, float]
    schedule_tasks: int = 2_000
    lateness: tuple[int, float] = (10_000, 180.0)
    digests: tuple[int, int] = (100_000, 10)  # users, reminders each


FULL = Plan([10_000, 100_000, 1_000_000], [10_000, 1_000_000], 2_000, 5, 2_000, (150, 30))
QUICK = Plan([10_000, 100_000], [10_000, 100_000], 300, 1, 500, (65, 15), lateness=(2_000, 60.0),
             digests=(10_000, 10))  # fmt: skip


def arguments() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10k and 100k tasks, fewer messages")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections: {', '.join(SECTIONS)}",
    )
    parser.add_argument("--markdown", type=Path, help="also write the tables and plans here")
    args = parser.parse_args()
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    return args


def show(table: Table, tables: list[Table]) -> None:
    """Print a section's table as soon as it is measured, and keep it for the summary."""
    tables.append(table)
    print(table.text(), flush=True)


def database_sections(
    plan: Plan, sections: list[str], tables: list[Table], plans: list[tuple[str, str]]
) -> None:
    """Scan, EXPLAIN, memory and rules: they share the generated databases."""
    from benchmarks import explain, memory, quiet, rules, scan
    from benchmarks.database import Schema, datasets

    sizes = sorted(
        set(plan.scan_sizes if {"scan", "rules", "quiet"} & set(sections) else [])
        | set(plan.memory_sizes if "memory" in sections else [])
    )
    schemas: tuple[Schema, ...] = (
        ("ours", "naive") if {"scan", "memory"} & set(sections) else ("ours",)
    )
    now = utc_now()
    started = time.perf_counter()
    progress(
        f"building databases of {', '.join(f'{s:,}' for s in sizes)} tasks ({', '.join(schemas)})"
    )
    with datasets(sizes, now, schemas) as built:
        progress(f"built in {time.perf_counter() - started:.0f} s")
        if "scan" in sections:
            table, _ = scan.run(built, plan.scan_sizes)
            show(table, tables)
            largest = plan.scan_sizes[-1]
            progress(f"explain: {largest:,} tasks")
            plans.extend(explain.plans(built["ours", largest], built["naive", largest]))
            for title, text in plans:
                print(f"\n== {title} ==\n{text}", flush=True)
        if "memory" in sections:
            show(memory.run(built, plan.memory_sizes, plan.relay_cap), tables)
        if "rules" in sections:
            found, window = rules.run(built, plan.scan_sizes, plan.relay_cap)
            for table in found:
                show(table, tables)
            plans.extend(window)
            for title, text in window:
                print(f"\n== {title} ==\n{text}", flush=True)
        if "quiet" in sections:
            show(quiet.run(built, plan.scan_sizes), tables)


def markdown(path: Path, tables: list[Table], plans: list[tuple[str, str]], header: str) -> None:
    """Write every table and plan as Markdown."""
    parts = [header, *(t.markdown() for t in tables)]
    parts += [f"### {title}\n\n```\n{text}\n```\n" for title, text in plans]
    path.write_text("\n".join(parts), encoding="utf-8")


def main() -> None:
    """Run the chosen sections and print one table per section."""
    args = arguments()
    clean_environment()
    production_logging()
    plan = QUICK if args.quick else FULL
    tables: list[Table] = []
    plans: list[tuple[str, str]] = []
    started, started_at = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M %Z")
    failed: list[str] = []

    def attempt(name: str, measure: Callable[[], None]) -> None:
        try:
            measure()
        except Exception:  # one broken section must not cost the others' figures
            failed.append(name)
            traceback.print_exc()

    if {"scan", "memory", "rules", "quiet"} & set(args.sections):
        attempt("scan/memory/rules", lambda: database_sections(plan, args.sections, tables, plans))
    if "relay" in args.sections:
        from benchmarks import relay

        attempt(
            "relay",
            lambda: show(relay.run(plan.relay_count, plan.relay_repeats, utc_now()), tables),
        )
    if "relay-rules" in args.sections:
        from benchmarks import relay, rules

        def relay_with_rules() -> None:
            with rules.mapping_file() as mapping:
                found = relay.run(plan.relay_count, plan.relay_repeats, utc_now(),
                                  schema_file=str(mapping))  # fmt: skip
            show(found, tables)

        attempt("relay-rules", relay_with_rules)
    if "latency" in args.sections:
        from benchmarks import latency

        attempt("latency", lambda: show(latency.run(*plan.latency_seconds), tables))
    if "schedule" in args.sections:
        from benchmarks import schedule

        attempt("schedule", lambda: show(schedule.run(plan.schedule_tasks)[0], tables))
    if "lateness" in args.sections:
        from benchmarks import lateness

        attempt("lateness", lambda: show(lateness.run(*plan.lateness), tables))
    if "digests" in args.sections:
        from benchmarks import digests

        attempt("digests", lambda: show(digests.run(*plan.digests, utc_now()), tables))
    elapsed = time.perf_counter() - started
    header = (
        f"Run of {started_at}: `python -m benchmarks"
        f"{' --quick' if args.quick else ''} --only {','.join(args.sections)}`, "
        f"{elapsed / 60:.1f} min\n"
    )
    print(f"\n{header}")
    if args.markdown:
        markdown(args.markdown, tables, plans, header)
    if failed:
        print(f"FAILED sections: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
