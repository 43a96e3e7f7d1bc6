"""`reminders health` and `status` report how far the clocks are from the database's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.support.clock import ShiftedClock
from worker.bootstrap import bootstrap
from worker.settings import Settings

pytestmark = pytest.mark.postgres

REMINDERS = str(Path(sys.executable).parent / "reminders")


def run(url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``reminders ARGS`` on the database at ``url`` (this host's clock is not skewed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    return subprocess.run(
        [REMINDERS, *args],
        env=env | {"REMINDERS_DATABASE_URL": url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def scan_from_a_host_behind(engine: Engine, url: str) -> None:
    """One scan by a process whose host's clock is 150 s behind: its offset goes on record."""
    services = bootstrap(
        Settings(database_url=url), local_clock=ShiftedClock(-timedelta(seconds=150)), engine=engine
    )
    services.scan()


def document(result: subprocess.CompletedProcess[str]) -> Any:
    """The command's one JSON document, after it exited 0."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_health_reports_both_offsets_and_warns_of_the_scanners(
    postgres_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    """This process's offset (about 0, with its error) and the last scanner's (+150 s, over the
    threshold: a warning, and still healthy, as the offset is corrected for)."""
    scan_from_a_host_behind(postgres_engine, postgres_url)

    found = document(run(postgres_url, "health", "--json", cwd=tmp_path))
    text = run(postgres_url, "health", cwd=tmp_path)

    assert found["healthy"] is True
    assert abs(found["clock_offset_seconds"]) < 0.5
    assert 0 <= found["clock_offset_error_seconds"] < 0.5
    assert abs(found["last_scan_clock_offset_seconds"] - 150) < 0.5
    assert found["max_clock_offset_seconds"] == 2
    assert len(found["warnings"]) == 1
    assert "last scanning host's clock is 150." in found["warnings"][0]
    assert "s behind the database's" in found["warnings"][0]
    assert text.returncode == 0, text.stderr
    assert "clock: this host's is " in text.stdout
    assert "the last scanning host's was 150." in text.stdout
    assert text.stderr.startswith("reminders: warning: the last scanning host's clock is 150.")


def test_status_shows_the_offsets(
    postgres_engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    """`status` shows the last scanner's offset next to the last scan, and this process's."""
    scan_from_a_host_behind(postgres_engine, postgres_url)

    found = document(run(postgres_url, "status", "--json", cwd=tmp_path))
    text = run(postgres_url, "status", cwd=tmp_path)

    assert abs(found["last_scan_clock_offset_seconds"] - 150) < 0.5
    assert abs(found["clock_offset_seconds"]) < 0.5
    assert "the last scanning host's was 150." in text.stdout
