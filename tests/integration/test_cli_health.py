"""`reminders health` on a real database: never scanned, scanned too long ago for the
schedule, failing, and with dead rows, each named in one line (and in the JSON document)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tests.conftest import HostDatabase
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import make_services
from worker.reminders.heartbeat import record_failure

REMINDERS = str(Path(sys.executable).parent / "reminders")
HOURLY = {"REMINDERS_SCAN_SCHEDULE": "0 * * * *"}


def run(engine: Engine, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``reminders ARGS`` on ``engine``'s database with only the variables given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    url = engine.url.render_as_string(hide_password=False)
    return subprocess.run(
        [REMINDERS, *args],
        env=clean | {"REMINDERS_DATABASE_URL": url} | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def unhealthy(result: subprocess.CompletedProcess[str]) -> str:
    """The one stderr line of an unhealthy answer."""
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("reminders: unhealthy: ")
    return line


def document(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON document ``health --json`` printed."""
    return json.loads(result.stdout)


def scan_at(engine: Engine, moment: datetime) -> None:
    """One scan, as if it had run at ``moment``."""
    make_services(engine, ManualClock(moment), RecordingChannel()).scan()


def test_a_database_never_scanned_is_unhealthy(engine: Engine, tmp_path: Path) -> None:
    """Freshly migrated, no scan yet: unhealthy, saying so."""
    line = unhealthy(run(engine, "health", cwd=tmp_path))
    assert "no scan has completed yet" in line
    found = document(run(engine, "health", "--json", cwd=tmp_path))
    assert (found["healthy"], found["last_scan_at"], found["scan_overdue_at"]) == (
        False,
        None,
        None,
    )


def test_the_scan_age_follows_the_schedule(engine: Engine, tmp_path: Path) -> None:
    """On an hourly schedule a scan two hours old is fine (two ticks missed at most); one of
    four hours is not; --max-scan-age still overrides the schedule."""
    now = datetime.now(UTC)
    scan_at(engine, now - timedelta(hours=2))
    healthy = run(engine, "health", "--json", cwd=tmp_path, **HOURLY)
    assert healthy.returncode == 0, healthy.stderr
    found = document(healthy)
    assert found["max_scan_age_seconds"] is None
    assert datetime.fromisoformat(found["scan_overdue_at"]) > now
    assert "last scan 2h ago" in run(engine, "health", cwd=tmp_path, **HOURLY).stdout
    line = unhealthy(run(engine, "health", "--max-scan-age", "90m", cwd=tmp_path, **HOURLY))
    assert "the last scan ran 2h ago (limit 1h 30m)" in line

    scan_at(engine, now - timedelta(hours=4))
    line = unhealthy(run(engine, "health", cwd=tmp_path, **HOURLY))
    assert "the last scan ran 4h ago (3 ticks of '0 * * * *' missed)" in line


def test_a_failed_scan_is_named_with_its_reason(engine: Engine, tmp_path: Path) -> None:
    """A failure recorded after the last success: unhealthy with its reason, in the line and
    the document; `status` shows it too."""
    now = datetime.now(UTC)
    scan_at(engine, now - timedelta(seconds=30))
    services = make_services(engine, ManualClock(now), RecordingChannel())
    assert record_failure(services.session_factory, now, "ProgrammingError: permission denied")

    result = run(engine, "health", "--json", cwd=tmp_path)
    line = unhealthy(result)
    assert "the last scan failed" in line and "permission denied" in line
    found = document(result)
    assert found["last_scan_failed"] is True
    assert found["last_scan_failure"] == "ProgrammingError: permission denied"
    assert datetime.fromisoformat(found["last_failed_scan_at"]) == now
    status = run(engine, "status", cwd=tmp_path, COLUMNS="200")
    assert "last scan FAILED" in status.stdout and "permission denied" in status.stdout

    scan_at(engine, now + timedelta(seconds=1))
    assert run(engine, "health", cwd=tmp_path).returncode == 0


def test_a_worker_container_can_leave_the_scan_age_to_the_scheduler(
    engine: Engine, tmp_path: Path
) -> None:
    """``--max-scan-age off``: never scanned, or scanned long ago, is not a problem there."""
    assert run(engine, "health", "--max-scan-age", "off", cwd=tmp_path).returncode == 0
    scan_at(engine, datetime.now(UTC) - timedelta(days=3))
    found = document(run(engine, "health", "--max-scan-age", "off", "--json", cwd=tmp_path))
    assert (found["healthy"], found["scan_age_checked"], found["scan_overdue_at"]) == (
        True,
        False,
        None,
    )


def test_a_mapping_that_does_not_fit_makes_health_fail_naming_it(
    host_database: HostDatabase, tmp_path: Path
) -> None:
    """A mapping that no longer fits the database: unhealthy (exit 1), the reason named."""
    scan_at_mapped = make_services(
        host_database.engine,
        ManualClock(datetime.now(UTC)),
        RecordingChannel(),
        schema_file=host_database.schema_file,
    )
    scan_at_mapped.scan()
    schema_file = host_database.schema_file or ""
    ok = run(host_database.engine, "health", cwd=tmp_path, REMINDERS_SCHEMA_FILE=schema_file)
    assert ok.returncode == 0, ok.stderr
    table, title = ("todo_items", "name") if host_database.app.mapped else ("tasks", "title")
    with host_database.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {table} RENAME COLUMN {title} TO heading"))
    line = unhealthy(
        run(host_database.engine, "health", cwd=tmp_path, REMINDERS_SCHEMA_FILE=schema_file)
    )
    assert f"column {table}.{title} not found" in line
