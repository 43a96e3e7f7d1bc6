"""`reminders demo` (what `make demo` runs) tells the whole story on SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REMINDERS = str(Path(sys.executable).parent / "reminders")


def test_the_demo_delivers_two_reminders_cancels_one_and_queues_nothing_twice(
    tmp_path: Path,
) -> None:
    """Two reminders delivered, the task completed after the scan cancelled, a rescan queues 0."""
    result = subprocess.run(
        [REMINDERS, "demo", "--database", str(tmp_path / "demo.db")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    delivered = [line for line in lines if line.startswith("reminder to ")]
    assert len(delivered) == 2
    assert any("task 101" in line and "GMT" in line for line in delivered)
    assert any("task 102" in line and "EST" in line for line in delivered)
    assert "queued 3 reminder(s)" in result.stdout
    assert "scan again: queued 0" in result.stdout
    assert "relay: {'cancelled': 1, 'delivered': 2}" in result.stdout
    assert "@example.com" not in "".join(delivered).replace("a***@example.com", "")
