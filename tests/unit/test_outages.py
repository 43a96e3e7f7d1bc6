"""A failing database in few log lines: its kind, one line of reason, and runs of failures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import psycopg.errors
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from worker.errors import DatabaseNotReady
from worker.outages import (
    MAX_REASON,
    Failure,
    FailureKind,
    FailureLog,
    OutageGate,
    database_failure,
)

UNREACHABLE = Failure(FailureKind.UNREACHABLE, "OperationalError: connection refused")
MISSING = Failure(FailureKind.NOT_MIGRATED, "UndefinedTable: relation tasks does not exist")


class Lines:
    """A logger that keeps each line as (level, event, keys)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def error(self, event: str, **keys: Any) -> None:
        self.lines.append(("error", event, keys))

    def info(self, event: str, **keys: Any) -> None:
        self.lines.append(("info", event, keys))


class Monotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def wrapped(cause: Exception, kind: type[DBAPIError] = OperationalError) -> DBAPIError:
    """``cause`` as SQLAlchemy raises a driver's error."""
    return kind("SELECT 1", {}, cause)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (wrapped(psycopg.OperationalError("connection failed: refused")), "unreachable"),
        (wrapped(psycopg.errors.AdminShutdown("terminating connection")), "unreachable"),
        (wrapped(psycopg.errors.UndefinedTable("no tasks"), ProgrammingError), "not_migrated"),
        (wrapped(psycopg.errors.UndefinedColumn("no column"), ProgrammingError), "not_migrated"),
        (wrapped(psycopg.errors.InsufficientPrivilege("denied"), ProgrammingError), "error"),
        (wrapped(psycopg.errors.QueryCanceled("statement timeout")), "error"),
        (DatabaseNotReady(), "not_migrated"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value,
)
def test_a_database_error_is_given_its_kind(error: Exception, kind: str) -> None:
    """A lost connection is unreachable, a missing table or column not migrated, and the
    server's other refusals plain errors."""
    failure = database_failure(error)
    assert failure is not None and failure.kind == kind


def test_sqlite_without_the_schema_is_not_migrated(sqlite_engine: Engine) -> None:
    """SQLite reports a missing table as an OperationalError: it is still "not migrated"."""
    with sqlite_engine.connect() as connection, pytest.raises(DBAPIError) as raised:
        connection.execute(text("SELECT * FROM no_such_table"))
    failure = database_failure(raised.value)
    assert failure is not None and failure.kind == FailureKind.NOT_MIGRATED
    assert failure.reason.startswith("OperationalError: no such table: no_such_table")
    assert failure.reason.endswith("(run `reminders migrate`)")


def test_an_error_that_is_not_the_databases_is_left_alone() -> None:
    """A bug is not a database failure: it keeps its traceback."""
    assert database_failure(ValueError("bug")) is None


def test_the_reason_is_one_masked_bounded_line() -> None:
    """The driver's first line only, addresses and URL passwords masked, cut at the limit."""
    cause = psycopg.OperationalError(
        "failed for ada@example.com at postgresql://app:s3cret@db:5432/x\nDETAIL: more"
    )
    failure = database_failure(wrapped(cause))
    assert failure is not None
    assert "ada@" not in failure.reason and "s3cret" not in failure.reason
    assert "a***@example.com" in failure.reason and "app:***@db:5432" in failure.reason
    assert "DETAIL" not in failure.reason and "\n" not in failure.reason
    long = database_failure(wrapped(psycopg.OperationalError("x" * 1000)))
    assert long is not None and len(long.reason) == MAX_REASON


def test_a_run_of_failures_is_logged_at_its_start_then_every_interval() -> None:
    """The first failure is a line; repeats within the interval are counted, not logged;
    the next line carries the count since the last one."""
    lines, clock = Lines(), Monotonic()
    failures = FailureLog(lines, repeat_every=timedelta(minutes=5), monotonic=clock)

    for _ in range(10):
        failures.failed("scan", UNREACHABLE)
        clock.now += 20
    assert [event for _, event, _ in lines.lines] == ["scan_failed"]
    assert lines.lines[0][2] == {"kind": "unreachable", "reason": UNREACHABLE.reason}

    clock.now += 120  # 320 s after the first line
    failures.failed("scan", UNREACHABLE)
    assert len(lines.lines) == 2
    level, event, keys = lines.lines[1]
    assert (level, event, keys["failures_since_last_line"]) == ("error", "scan_failed", 10)
    assert keys["failing_for_seconds"] == 320


def test_a_new_kind_of_failure_is_logged_at_once() -> None:
    """The database coming back unmigrated (or going away) is news: one line at once."""
    lines, clock = Lines(), Monotonic()
    failures = FailureLog(lines, monotonic=clock)
    failures.failed("scan", UNREACHABLE)
    failures.failed("scan", MISSING)
    failures.failed("scan", MISSING)
    assert [keys["kind"] for _, _, keys in lines.lines] == ["unreachable", "not_migrated"]


def test_the_end_of_a_run_is_one_line_and_each_action_has_its_own() -> None:
    """Success after failures logs the recovery once; a success alone logs nothing; the relay's
    failures are not the scan's."""
    lines, clock = Lines(), Monotonic()
    failures = FailureLog(lines, monotonic=clock)
    failures.succeeded("scan")
    failures.failed("scan", UNREACHABLE)
    failures.failed("relay", UNREACHABLE)
    clock.now += 30
    failures.failed("scan", UNREACHABLE)
    failures.succeeded("scan")
    failures.succeeded("scan")
    events = [(level, event) for level, event, _ in lines.lines]
    assert events == [
        ("error", "scan_failed"),
        ("error", "relay_failed"),
        ("info", "scan_recovered"),
    ]
    assert lines.lines[-1][2] == {"failures": 2, "failing_for_seconds": 30}


def test_the_guard_swallows_database_failures_only() -> None:
    """A database failure in the block is logged and swallowed; any other error is reported
    to ``on_failure`` too, then raised."""
    lines = Lines()
    failures = FailureLog(lines)
    seen: list[Failure] = []
    with failures.guard("relay", on_failure=seen.append):
        raise wrapped(psycopg.OperationalError("connection refused"))
    with pytest.raises(ValueError), failures.guard("relay", on_failure=seen.append):
        raise ValueError("a bug")
    with failures.guard("relay", on_failure=seen.append):
        pass
    assert [failure.kind for failure in seen] == ["unreachable", "error"]
    assert seen[1].reason == "ValueError: a bug"
    assert [event for _, event, _ in lines.lines] == ["relay_failed", "relay_recovered"]


def test_while_unreachable_one_attempt_at_a_time() -> None:
    """After an attempt that could not reach the database, another starts only when none is
    under way; a success lets attempts run side by side again."""
    gate = OutageGate()
    assert gate.enter() and gate.enter()  # reachable: attempts side by side
    gate.leave(unreachable=False)
    gate.leave(unreachable=True)
    assert gate.enter()  # none under way: this one tries
    assert not gate.enter()  # while it is under way
    gate.leave(unreachable=True)
    assert gate.enter()
    gate.leave(unreachable=False)
    assert gate.enter() and gate.enter()


def test_the_guard_skips_the_block_the_gate_holds_back() -> None:
    """A message the gate holds back while another attempt is under way runs nothing and logs
    nothing: the lines are the failure and the recovery of the attempts that ran."""
    lines = Lines()
    failures, gate = FailureLog(lines), OutageGate()
    ran: list[bool] = []
    with failures.guard("scan", gate=gate) as admitted:
        ran.append(admitted)
        raise wrapped(psycopg.OperationalError("connection timeout expired"))
    with failures.guard("scan", gate=gate) as probe:  # the attempt under way...
        with failures.guard("relay", gate=gate) as admitted:  # ...holds this one back
            ran.append(admitted)
        ran.append(probe)
    assert ran == [True, False, True]
    assert [event for _, event, _ in lines.lines] == ["scan_failed", "scan_recovered"]
