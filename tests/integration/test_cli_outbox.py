"""The outbox by hand: the real ``reminders`` script run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session

from outbox.channels.base import Delivery
from outbox.store import claim_due_rows
from outbox.table import OutboxRow
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker import migrate
from worker.reminders.schema import Task

REMINDERS = str(Path(sys.executable).parent / "reminders")
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/reminders"
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
#: How the relay answers for each outcome a test asks for (None: the task is completed first).
ANSWERS = {
    "delivered": Delivery.delivered(),
    "failed": Delivery.retry("451 try again later"),
    "dead": Delivery.permanent("550 mailbox unavailable"),
    "cancelled": None,
    # The next attempt would come after the task is due: the row expires.
    "expired": Delivery.retry("451 try again later", retry_after=timedelta(hours=2)),
}


def run(url: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``reminders ARGS`` on the database at ``url`` with only the variables given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    variables = clean | {"REMINDERS_DATABASE_URL": url} | env
    return subprocess.run(
        [REMINDERS, *args],
        env=variables,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command; nothing on stdout."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    return lines[0]


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document a ``--json`` command printed, and nothing else."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def seed(engine: Engine, *outcomes: str, age: timedelta = MINUTE) -> dict[str, int]:
    """One reminder per outcome (pending, delivered, failed, dead, cancelled, expired),
    ``age`` old.

    Returns the outbox id of each outcome's row.
    """
    clock = ManualClock(datetime.now(UTC) - age)
    script = [answer for o in outcomes if (answer := ANSWERS.get(o)) is not None]
    services = make_services(engine, clock, RecordingChannel(script=script))
    add_user(services, 1)
    relayed = [o for o in outcomes if o != "pending"]
    for task_id, _ in enumerate(relayed, start=1):
        add_task(services, task_id, 1, clock.now() + HOUR + task_id * MINUTE)
    services.scan()
    done = [task_id for task_id, o in enumerate(relayed, start=1) if o == "cancelled"]
    with services.session_factory.begin() as session:
        session.execute(update(Task).where(Task.id.in_(done)).values(completed_at=clock.now()))
    services.relay().relay_until_idle()
    for task_id in range(len(relayed) + 1, len(outcomes) + 1):
        add_task(services, task_id, 1, clock.now() + HOUR + task_id * MINUTE)
    services.scan()
    ids: dict[str, int] = {}
    with services.session_factory() as session:
        rows = session.execute(text("SELECT id, status FROM outbox ORDER BY subject_id")).all()
    expected = relayed + ["pending"] * outcomes.count("pending")
    for (row_id, status), outcome in zip(rows, expected, strict=True):
        assert status == outcome
        ids[outcome] = row_id
    return ids


@pytest.fixture
def url(engine: Engine) -> str:
    """The URL of this test's migrated database (a SQLite file, or PostgreSQL)."""
    return engine.url.render_as_string(hide_password=False)


def test_a_replayed_dead_row_is_delivered_by_the_next_relay(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    """Replay puts a dead row back with its key and who did it; `reminders relay` delivers it."""
    dead = seed(engine, "dead")["dead"]
    replayed = run(url, "outbox", "replay", str(dead), "--by", "alice", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed" in replayed.stdout
    row = as_json(run(url, "outbox", "show", str(dead), "--json", cwd=tmp_path))
    assert (row["status"], row["attempts"], row["replayed_by"], row["replay_count"]) == (
        "pending",
        0,
        "alice",
        1,
    )
    assert row["last_error"] == "550 mailbox unavailable"
    relayed = run(url, "relay", cwd=tmp_path, REMINDERS_CHANNEL="console")
    assert relayed.returncode == 0, relayed.stderr
    assert f"delivered #{dead} {row['idempotency_key']}" in relayed.stdout
    after = as_json(run(url, "outbox", "show", str(dead), "--json", cwd=tmp_path))
    assert (after["status"], after["idempotency_key"]) == ("delivered", row["idempotency_key"])


def test_replay_by_status_with_a_dry_run_changes_nothing(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    """`replay --status dead --dry-run --json` names the dead rows and leaves them dead."""
    ids = seed(engine, "dead", "failed")
    document = as_json(
        run(url, "outbox", "replay", "--status", "dead", "--dry-run", "--json", cwd=tmp_path)
    )
    assert (document["dry_run"], document["replayed"]) == (True, [ids["dead"]])
    row = as_json(run(url, "outbox", "show", str(ids["dead"]), "--json", cwd=tmp_path))
    assert row["status"] == "dead"
    assert run(url, "outbox", "replay", "--status", "dead", cwd=tmp_path).returncode == 0
    empty = run(url, "outbox", "replay", "--status", "dead", cwd=tmp_path)
    assert (empty.returncode, empty.stdout.strip()) == (0, "nothing to replay: no dead row")


def test_expired_rows_are_counted_listed_and_not_replayed(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    """`status` counts expired rows, `outbox list --status expired` shows them with the
    reason, and replaying one whose task is due by now fails with one line, the row left
    expired."""
    ids = seed(engine, "expired", "delivered", age=2 * HOUR)
    status = as_json(run(url, "status", "--json", cwd=tmp_path))
    assert (status["counts"]["expired"], status["counts"]["delivered"]) == (1, 1)
    human = run(url, "status", cwd=tmp_path, COLUMNS="200")
    assert human.returncode == 0 and "expired" in human.stdout
    listed = as_json(run(url, "outbox", "list", "--status", "expired", "--json", cwd=tmp_path))
    [row] = listed["rows"]
    assert (row["id"], row["status"]) == (ids["expired"], "expired")
    assert row["last_error"].startswith("expires before its next attempt")
    assert row["expires_at"].endswith("+00:00")
    refused = run(url, "outbox", "replay", str(ids["expired"]), cwd=tmp_path, COLUMNS="200")
    assert refused.returncode == 1
    assert "no longer useful" in refused.stderr and len(refused.stderr.splitlines()) == 1
    after = as_json(run(url, "outbox", "show", str(ids["expired"]), "--json", cwd=tmp_path))
    assert (after["status"], after["replay_count"]) == ("expired", 0)


def test_purge_keeps_pending_failed_and_dead_rows(engine: Engine, url: str, tmp_path: Path) -> None:
    """Purge deletes old delivered and cancelled rows only, whatever the batch size."""
    ids = seed(engine, "delivered", "cancelled", "dead", "failed", "pending", age=2 * DAY)
    document = as_json(
        run(
            url,
            "outbox",
            "purge",
            "--older-than",
            "1d",
            "--batch-size",
            "1",
            "--json",
            cwd=tmp_path,
        )
    )
    assert document["deleted"] == 2
    rows = as_json(run(url, "outbox", "list", "--json", cwd=tmp_path))["rows"]
    assert sorted((r["id"], r["status"]) for r in rows) == sorted(
        (ids[s], s) for s in ("dead", "failed", "pending")
    )
    again = run(url, "outbox", "purge", "--older-than", "1d", cwd=tmp_path)
    assert again.returncode == 0 and "purged 0" in again.stdout


def test_purge_refuses_a_bare_number_and_deletes_nothing(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    """`purge --older-than 30` (30 what?) exits 2 with one line asking for a unit; no row goes."""
    seed(engine, "delivered", "cancelled", age=2 * DAY)
    refused = run(url, "outbox", "purge", "--older-than", "30", cwd=tmp_path)
    assert refused.returncode == 2
    assert one_line(refused) == (
        "reminders: --older-than: '30' needs a unit (ms, s, m, h or d), for example 30d"
    )
    assert len(as_json(run(url, "outbox", "list", "--json", cwd=tmp_path))["rows"]) == 2


def test_list_says_when_it_cut_the_list_short(engine: Engine, url: str, tmp_path: Path) -> None:
    """Past --limit, `list` says how many rows matched: a last line, or truncated and total."""
    seed(engine, "delivered", "dead", "pending")
    cut = as_json(run(url, "outbox", "list", "--limit", "2", "--json", cwd=tmp_path))
    assert (len(cut["rows"]), cut["truncated"], cut["total"], cut["total_exact"]) == (
        2,
        True,
        3,
        True,
    )
    whole = as_json(run(url, "outbox", "list", "--limit", "3", "--json", cwd=tmp_path))
    assert (len(whole["rows"]), whole["truncated"], whole["total"]) == (3, False, 3)
    human = run(url, "outbox", "list", "--limit", "2", cwd=tmp_path, COLUMNS="200")
    assert human.returncode == 0 and human.stderr == ""
    assert "2 of 3 outbox row(s)" in human.stdout
    assert human.stdout.splitlines()[-1] == "showing 2 of 3 rows; raise --limit to see more"
    assert "showing" not in run(url, "outbox", "list", cwd=tmp_path, COLUMNS="200").stdout


def test_every_json_output_is_one_document(engine: Engine, url: str, tmp_path: Path) -> None:
    """Each `--json` command prints exactly one parseable JSON document with UTC ISO times."""
    ids = seed(engine, "dead", "delivered", "pending")
    status = as_json(run(url, "status", "--json", cwd=tmp_path))
    assert status["counts"]["dead"] == 1 and status["total"] == 3
    assert status["last_scan"]["at"].endswith("+00:00")
    assert 0 <= status["oldest_waiting_seconds"] < 3600
    listed = as_json(
        run(url, "outbox", "list", "--status", "dead", "--task", "1", "--json", cwd=tmp_path)
    )
    assert [r["id"] for r in listed["rows"]] == [ids["dead"]]
    row = as_json(run(url, "outbox", "show", str(ids["delivered"]), "--json", cwd=tmp_path))
    assert {"lease_owner", "lease_token", "replayed_at", "replayed_by", "replay_count"} <= set(row)
    assert row["delivered_at"].endswith("+00:00")
    health = as_json(run(url, "health", "--json", "--allow-dead", cwd=tmp_path))
    assert health["healthy"] is True and health["problems"] == []
    assert (health["dead_rows"], health["allow_dead"]) == (1, True)
    assert "1 dead row(s)" in one_line(run(url, "health", cwd=tmp_path))
    assert health["last_scan_at"].endswith("+00:00") and health["last_scan_failed"] is False
    replay = as_json(run(url, "outbox", "replay", str(ids["dead"]), "--json", cwd=tmp_path))
    assert replay["replayed"] == [ids["dead"]]


def test_list_filters_by_age_and_limit(engine: Engine, url: str, tmp_path: Path) -> None:
    """`--older-than` keeps rows created at least that long ago and `--limit` caps the count."""
    seed(engine, "delivered", "dead", age=2 * HOUR)
    old = as_json(run(url, "outbox", "list", "--older-than", "90m", "--json", cwd=tmp_path))
    assert len(old["rows"]) == 2
    assert (
        as_json(run(url, "outbox", "list", "--older-than", "3h", "--json", cwd=tmp_path))["rows"]
        == []
    )
    assert (
        len(as_json(run(url, "outbox", "list", "--limit", "1", "--json", cwd=tmp_path))["rows"])
        == 1
    )
    human = run(url, "outbox", "list", cwd=tmp_path, COLUMNS="200")
    assert human.returncode == 0 and "550 mailbox unavailable" in human.stdout
    assert "@" not in human.stdout  # rows hold no addresses, and none are shown


def test_a_claimed_row_is_shown_with_its_lease_and_not_replayed(
    engine: Engine, url: str, tmp_path: Path
) -> None:
    """`show` names the lease owner of a row in flight; replaying it fails with the reason."""
    pending = seed(engine, "pending")["pending"]
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        claim_due_rows(session, now, now + HOUR, "host-a:42:7", 10)
    row = as_json(run(url, "outbox", "show", str(pending), "--json", cwd=tmp_path))
    assert (row["status"], row["lease_owner"]) == ("claimed", "host-a:42:7")
    refused = run(url, "outbox", "replay", str(pending), cwd=tmp_path, COLUMNS="200")
    assert refused.returncode == 1
    assert "claimed by host-a:42:7" in refused.stdout
    assert "claimed by host-a:42:7" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_an_unknown_id_fails_with_one_line(url: str, tmp_path: Path) -> None:
    """`show` and `replay` of an id no row has exit 1 with one line naming it."""
    shown = run(url, "outbox", "show", "424242", cwd=tmp_path)
    assert shown.returncode == 1 and "424242" in one_line(shown)
    replayed = run(url, "outbox", "replay", "424242", "--json", cwd=tmp_path)
    assert replayed.returncode == 1
    assert json.loads(replayed.stdout)["changes"][0]["reason"] == "no such row"
    assert replayed.stderr == "reminders: 1 row(s) not replayed (424242: no such row)\n"


@pytest.mark.parametrize(
    "args",
    [
        ("outbox", "list", "--status", "bogus"),
        ("outbox", "replay", "--status", "delivered"),
        ("outbox", "replay", "1", "--status", "dead"),
        ("outbox", "replay"),
        ("outbox", "show", "abc"),
        ("outbox", "purge"),
        ("outbox", "purge", "--older-than", "soon"),
        ("outbox", "purge", "--older-than", "30"),
        ("outbox", "purge", "--older-than", "2.5"),
        ("outbox", "list", "--older-than", "30"),
        ("health", "--max-pending-age", "0"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    sqlite_engine: Engine, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Unknown statuses, ids with --status or neither, bad ids and durations exit 2, one line."""
    result = run(str(sqlite_engine.url), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result).startswith("reminders: ")


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("outbox", "list"),
        ("outbox", "show", "1"),
        ("health",),
        ("outbox", "purge", "--older-than", "1d"),
    ],
)
def test_an_unmigrated_database_says_to_migrate(
    engine: Engine, url: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """On a database without the schema every command exits 1 with one line naming the fix."""
    with engine.begin() as connection:
        connection.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))
    result = run(url, *args, cwd=tmp_path)
    assert result.returncode == 1
    assert "reminders migrate" in one_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("outbox", "list"),
        ("outbox", "replay", "--status", "dead"),
        ("health",),
        ("health", "--json"),
    ],
)
def test_an_unreachable_database_fails_with_one_line(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A closed database port gives exit 1 and one line, never a traceback."""
    result = run(UNREACHABLE, *args, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "database unreachable" in lines[0], result.stderr
    if "--json" in args:
        assert json.loads(result.stdout)["healthy"] is False
    else:
        assert result.stdout == ""


def test_health_is_ok_with_fresh_rows(engine: Engine, url: str, tmp_path: Path) -> None:
    """A migrated database whose oldest pending row is a minute old is healthy."""
    seed(engine, "pending", "delivered")
    result = run(url, "health", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy")


def test_health_fails_on_an_old_pending_row(engine: Engine, url: str, tmp_path: Path) -> None:
    """A pending row older than --max-pending-age makes health exit 1 with one line saying so."""
    seed(engine, "pending", age=2 * HOUR)
    result = run(url, "health", cwd=tmp_path)
    assert result.returncode == 1
    assert "waited 2h" in one_line(result) and "limit 15m" in one_line(result)
    limits = ("--max-pending-age", "3h", "--max-scan-age", "3h")
    assert run(url, "health", *limits, cwd=tmp_path).returncode == 0


def test_health_pings_the_broker(sqlite_engine: Engine, redis_url: str, tmp_path: Path) -> None:
    """With REMINDERS_BROKER_URL set, health passes only when the broker answers."""
    make_services(sqlite_engine, ManualClock(datetime.now(UTC)), RecordingChannel()).scan()
    url = str(sqlite_engine.url)
    ok = run(url, "health", cwd=tmp_path, REMINDERS_BROKER_URL=redis_url)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    "broker", ["redis://:s3cret@127.0.0.1:1/0", "amqp://guest:s3cret@127.0.0.1:1/%2F"]
)
def test_health_fails_when_the_broker_is_down(
    sqlite_engine: Engine, tmp_path: Path, broker: str
) -> None:
    """An unreachable broker is named in one line, without its password."""
    result = run(str(sqlite_engine.url), "health", cwd=tmp_path, REMINDERS_BROKER_URL=broker)
    assert result.returncode == 1
    line = one_line(result)
    assert "broker" in line and "127.0.0.1:1" in line and "s3cret" not in line


def test_hostile_errors_are_shown_as_plain_text(sqlite_engine: Engine, tmp_path: Path) -> None:
    """A receiver's error with markup, escapes and an address prints literally, one line, masked."""
    now = datetime.now(UTC)
    with Session(sqlite_engine) as session, session.begin():
        session.add(
            OutboxRow(
                idempotency_key="k-1",
                kind="due_soon",
                subject_id=1,
                status="dead",
                attempts=1,
                available_at=now,
                lease_token=1,
                created_at=now,
                updated_at=now,
                replay_count=0,
                last_error="550 [/bold] <bob@example.com>\x1b[2J\nFAKE line",
            )
        )
    url = str(sqlite_engine.url)
    for args in (("outbox", "show", "1"), ("outbox", "list")):
        result = run(url, *args, cwd=tmp_path, COLUMNS="200")
        assert result.returncode == 0, result.stderr
        assert "550 [/bold] <b***@example.com> [2J FAKE line" in result.stdout
        assert "bob@" not in result.stdout and "\x1b" not in result.stdout
