"""What every section shares: a clean environment, production logging kept quiet, clocks."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from worker.logs import configure_logging
from worker.settings import Settings, load_settings

#: A signing secret of the length Standard Webhooks asks for (>= 24 bytes).
WEBHOOK_SECRET = "benchmark-signing-secret-0123456789abcdef"
MAIL = {"mail_from": "reminders@example.com", "mail_domain": "example.com"}


def clean_environment() -> None:
    """Start from the documented defaults, whatever the shell exported (as the tests do)."""
    for name in list(os.environ):
        if name.startswith("REMINDERS_") and not name.startswith("REMINDERS_TEST_"):
            del os.environ[name]


def production_logging() -> None:
    """Log as a deployed worker does (JSON lines at INFO), into /dev/null.

    Each delivery is formatted and written like in production, so its cost is measured,
    without flooding the benchmark's output.
    """
    devnull = open(os.devnull, "w")  # noqa: SIM115  (kept open for the process's life)
    with contextlib.redirect_stderr(devnull):
        configure_logging(logging.INFO, json=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def utc_now() -> datetime:
    """The current time in UTC, to the second (datasets are built around it)."""
    return datetime.now(UTC).replace(microsecond=0)


def channel_settings(
    database_url: str, channel: str, endpoints: dict[str, Any], **extra: Any
) -> Settings:
    """Settings for ``channel`` pointed at the benchmark's receivers."""
    if channel == "smtp":
        options: dict[str, Any] = {
            "channel": "smtp", "smtp_host": "127.0.0.1", "smtp_port": endpoints["smtp_port"],
        }  # fmt: skip
    elif channel == "webhook":
        options = {
            "channel": "webhook",
            "webhook_url": endpoints["webhook_url"],
            "webhook_secret": WEBHOOK_SECRET,
            "webhook_allow_http_localhost": True,
        }
    else:
        raise ValueError(f"unknown channel {channel!r}")
    return load_settings(database_url=database_url, **MAIL, **options, **extra)


def progress(message: str) -> None:
    """One line of progress on stderr, so that stdout keeps only the tables."""
    print(f"  {message}", file=sys.stderr, flush=True)


def timed_together(works: Sequence[Callable[[], None]]) -> float:
    """Run each of ``works`` in its own thread, started at once; return the wall seconds.

    The first exception a thread raised is raised here, after all have finished.
    """
    barrier = threading.Barrier(len(works) + 1)
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(work,)) for work in works]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed
