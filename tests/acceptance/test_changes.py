"""The host application changes tasks between the scan and the delivery, and the real
`reminders scan` / `reminders relay` commands deliver exactly what is still true."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from outbox.table import Status
from tests.acceptance.commandline import CommandLine, fresh_command_line
from tests.acceptance.harness import SmtpReceiver, assert_each_exactly_once, utc_now
from worker.reminders.keys import reminder_key

pytestmark = pytest.mark.postgres

HOUR = timedelta(hours=1)


def host(engine: Engine, sql: str, **values: object) -> None:
    """One statement as the host application would run it."""
    with engine.begin() as connection:
        connection.execute(text(sql), values)


def test_moves_completions_deletions_and_opt_outs_between_scan_and_delivery(
    command_line: CommandLine, smtp: SmtpReceiver
) -> None:
    """Changed between scan and relay: moved tasks get one reminder for the new date, completed,
    deleted and opted-out ones none, untouched ones theirs; every cancelled row says why."""
    now, db = utc_now(), command_line.db
    command_line.add_users(
        [(1, "ada@example.com", "UTC", True), (4, "dan@example.com", "UTC", True)]
    )
    due = {
        1: now + HOUR, 2: now + HOUR, 3: now + HOUR, 4: now + HOUR, 5: now + HOUR,
        6: now + 5 * HOUR, 7: now + 2 * HOUR, 8: now + 4 * HOUR, 9: now + 2 * HOUR,
    }  # fmt: skip
    command_line.add_tasks(
        [(i, 4 if i == 4 else 1, f"task {i}", when, None) for i, when in due.items()]
    )
    env = command_line.env(smtp)
    moved = {
        1: now + 3 * HOUR, 6: now + timedelta(minutes=30), 7: now + 30 * HOUR, 8: now + 6 * HOUR
    }  # fmt: skip

    assert "queued 9 reminder(s)" in command_line.ok(env, "scan")
    # Task 8 moves and a scan sees it before any relay: the scan cancels the old row.
    host(db, "UPDATE tasks SET due_date = :d WHERE id = 8", d=moved[8])
    assert "1 superseded" in command_line.ok(env, "scan")
    # The rest change after the scan, before the relay: the relay's re-check must see it.
    for task_id in (1, 6, 7):
        host(db, "UPDATE tasks SET due_date = :d WHERE id = :id", d=moved[task_id], id=task_id)
    host(db, "UPDATE tasks SET completed_at = :now WHERE id = 2", now=now)
    host(db, "DELETE FROM tasks WHERE id = 3")
    host(db, "UPDATE users SET notifications_enabled = FALSE WHERE id = 4")
    host(db, "UPDATE tasks SET due_date = :d WHERE id = 9", d=now + 7 * HOUR)  # and back:
    host(db, "UPDATE tasks SET due_date = :d WHERE id = 9", d=due[9])
    command_line.ok(env, "relay")
    assert "queued 2 reminder(s)" in command_line.ok(env, "scan")  # 1 and 6, not 7
    command_line.ok(env, "relay")

    key = {i: reminder_key(i, when) for i, when in due.items()}
    new = {i: reminder_key(i, when) for i, when in moved.items()}
    assert_each_exactly_once(smtp.received(), {key[5], key[9], new[1], new[6], new[8]})
    rows = command_line.outbox()
    reasons = {
        key[1]: "due date moved",
        key[2]: "task completed",
        key[3]: "task deleted",
        key[4]: "owner turned notifications off",
        key[6]: "due date moved",
        key[7]: "due date moved",
        key[8]: "superseded: the due date moved",
    }
    assert {k: (rows[k].status, rows[k].last_error) for k in reasons} == {
        k: (Status.CANCELLED, reason) for k, reason in reasons.items()
    }
    assert new[7] not in rows  # beyond the lookahead: not yet
    assert len(rows) == len(reasons) + 5


# --- undoing a change after the relay cancelled the row ----------------------------------------


@dataclass(frozen=True)
class Undone:
    """The outcome of undoing each change after the relay had cancelled the reminder."""

    received: Counter[str]
    keys: dict[str, str]  # case -> the key of the reminder that is due again
    rows: dict[str, str]  # key -> status


@pytest.fixture(scope="module")
def undone(postgres_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Undone]:
    """Three tasks whose reminder the relay cancels, then whose change is undone: reopened,
    moved back from beyond the lookahead, owner opted back in; then scan and relay again."""
    with fresh_command_line(postgres_template, tmp_path_factory.mktemp("undone")) as commands:
        yield undo_changes(commands)


def undo_changes(command_line: CommandLine) -> Undone:
    """Scan; complete, move away, opt out; relay (cancels); undo all three; scan and relay."""
    now, db = utc_now(), command_line.db
    due = now + 2 * HOUR
    command_line.add_users(
        [(1, "ada@example.com", "UTC", True), (2, "bob@example.com", "UTC", True)]
    )
    command_line.add_tasks([(1, 1, "reopened", due, None), (2, 1, "moved back", due, None),
                            (3, 2, "opted back in", due, None)])  # fmt: skip
    with SmtpReceiver() as smtp:
        env = command_line.env(smtp)
        command_line.ok(env, "scan")
        host(db, "UPDATE tasks SET completed_at = :now WHERE id = 1", now=now)
        host(db, "UPDATE tasks SET due_date = :d WHERE id = 2", d=now + 30 * HOUR)
        host(db, "UPDATE users SET notifications_enabled = FALSE WHERE id = 2")
        command_line.ok(env, "relay")  # cancels all three
        cancelled = {row.status for row in command_line.outbox().values()}
        assert cancelled == {Status.CANCELLED}, cancelled
        host(db, "UPDATE tasks SET completed_at = NULL WHERE id = 1")
        host(db, "UPDATE tasks SET due_date = :d WHERE id = 2", d=due)
        host(db, "UPDATE users SET notifications_enabled = TRUE WHERE id = 2")
        command_line.ok(env, "scan")
        command_line.ok(env, "relay")
        received = smtp.received()
    keys = {case: reminder_key(task_id, due) for task_id, case in _CASES.items()}
    return Undone(received, keys, {k: row.status for k, row in command_line.outbox().items()})


_CASES = {1: "reopened", 2: "moved back", 3: "opted back in"}


@pytest.mark.parametrize("case", list(_CASES.values()))
def test_undoing_a_change_after_the_relay_cancelled_the_reminder_re_arms_it(
    case: str, undone: Undone
) -> None:
    """A task reopened, moved back or whose owner opted back in after the relay cancelled its
    reminder is reminded once for that due date (the cancel forgot the queued due date)."""
    key = undone.keys[case]
    assert undone.received[key] == 1, f"{case}: row {undone.rows.get(key)}"
    assert undone.rows[key] == Status.DELIVERED
