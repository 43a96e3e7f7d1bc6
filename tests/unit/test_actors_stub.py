"""The Dramatiq actors on the in-process StubBroker, each test in a fresh interpreter.

Importing `worker.actors` builds the broker from the ``REMINDERS_*`` environment once per
process, so every test runs a small script with ``sys.executable`` and reads what it prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from outbox.table import OutboxRow
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker import migrate
from worker.db import make_engine
from worker.reminders.keys import reminder_key

TIMEOUT = 60  # seconds for one child interpreter; a healthy run takes about one
DRAMATIQ = Path(sys.executable).with_name("dramatiq")

# Runs the scan actor through a real dramatiq.Worker on the StubBroker (twice: a second tick
# must not send again), then prints one JSON line describing the actors and the outbox.
RUN_ACTORS = """
import json
import dramatiq
from sqlalchemy import select
from worker import actors
from outbox.table import OutboxRow

actors.broker.emit_after("process_boot")
worker = dramatiq.Worker(actors.broker, worker_threads=1)
worker.start()
try:
    messages = []
    for _ in range(2):
        messages.append(actors.scan_due_tasks.send())
        actors.broker.join(actors.QUEUE, timeout=30_000)
        worker.join()
finally:
    worker.stop()
with actors.services().session_factory() as session:
    rows = session.execute(
        select(OutboxRow.idempotency_key, OutboxRow.status, OutboxRow.attempts)
    ).all()
report = {
    "broker": type(actors.broker).__name__,
    "actors": {
        actor.actor_name: {
            "queue": actor.queue_name,
            "max_retries": actor.options.get("max_retries"),
            "periodic": str(actor.options["periodic"]) if "periodic" in actor.options else None,
        }
        for actor in (actors.scan_due_tasks, actors.relay_outbox)
    },
    "message_args": [[list(m.args), m.kwargs] for m in messages],
    "outbox": [[key, status, attempts] for key, status, attempts in rows],
}
print("REPORT " + json.dumps(report))
"""


def child_env(**variables: str) -> dict[str, str]:
    """The test process's environment without REMINDERS_*, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    env.update(TZ="UTC", PYTHONUNBUFFERED="1", **variables)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a child process with ``env`` in ``cwd`` and capture its output."""
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def test_scan_actor_on_the_stub_broker_delivers_each_reminder_once(tmp_path: Path) -> None:
    """scan → relay through a real Worker on the StubBroker prints each due reminder once."""
    url = f"sqlite:///{tmp_path}/reminders.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    services = make_services(engine, ManualClock(), RecordingChannel())
    now = datetime.now(UTC).replace(microsecond=0)
    add_user(services, 1, email="ada@example.com")
    add_task(services, 1, 1, now + timedelta(hours=2), title="file the report")
    add_task(services, 2, 1, now + timedelta(hours=3), title="call the bank")
    add_task(services, 3, 1, now + timedelta(days=3), title="not yet")
    engine.dispose()

    done = run(
        [sys.executable, "-c", RUN_ACTORS],
        child_env(REMINDERS_DATABASE_URL=url, REMINDERS_BROKER_URL="", REMINDERS_CHANNEL="console"),
        tmp_path,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    (report_line,) = [line for line in lines if line.startswith("REPORT ")]
    report = json.loads(report_line.removeprefix("REPORT "))
    keys = [reminder_key(1, now + timedelta(hours=2)), reminder_key(2, now + timedelta(hours=3))]
    printed = [re.search(r"key (\S+)\)$", line) for line in lines if line.startswith("reminder ")]
    assert sorted(m.group(1) for m in printed if m) == sorted(keys)
    assert len(printed) == 2
    assert any("'file the report'" in line for line in lines)
    assert report["broker"] == "StubBroker"
    assert sorted(report["outbox"]) == sorted([key, "delivered", 1] for key in keys)
    assert report["message_args"] == [[[], {}], [[], {}]]  # wake-up calls carry no data
    for name in ("scan_due_tasks", "relay_outbox"):
        actor = report["actors"][name]
        assert actor["max_retries"] == 0, f"{name}: Dramatiq's own retries must be off"
        assert actor["periodic"] is not None, f"{name} is not periodic"
        assert actor["queue"] == "reminders"


def test_a_bad_setting_stops_the_import_with_one_line_naming_it(tmp_path: Path) -> None:
    """REMINDERS_LOOKAHEAD=abc: importing the actors exits 2 with one stderr line naming it."""
    done = run(
        [sys.executable, "-c", "import worker.actors"],
        child_env(REMINDERS_LOOKAHEAD="abc"),
        tmp_path,
    )

    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "REMINDERS_LOOKAHEAD" in line
    assert "Traceback" not in done.stderr


def test_dramatiq_without_a_broker_url_refuses_to_start(tmp_path: Path) -> None:
    """`dramatiq worker.actors` with no REMINDERS_BROKER_URL exits non-zero naming it."""
    done = run(
        [str(DRAMATIQ), "worker.actors", "--processes", "1", "--threads", "1"],
        child_env(REMINDERS_DATABASE_URL=f"sqlite:///{tmp_path}/reminders.db"),
        tmp_path,
    )

    assert done.returncode != 0
    named = [line for line in done.stderr.splitlines() if "REMINDERS_BROKER_URL" in line]
    assert len(named) == 1, done.stderr
    assert named[0].startswith("reminders: REMINDERS_BROKER_URL")
    assert not (tmp_path / "reminders.db").exists(), "the worker touched the database"


def test_the_outbox_is_untouched_by_the_refused_start(tmp_path: Path) -> None:
    """A refused start (bad setting) leaves an existing database exactly as it was."""
    url = f"sqlite:///{tmp_path}/reminders.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    services = make_services(engine, ManualClock(), RecordingChannel())
    add_user(services, 1)
    add_task(services, 1, 1, datetime.now(UTC) + timedelta(hours=1))

    done = run(
        [sys.executable, "-c", RUN_ACTORS],
        child_env(REMINDERS_DATABASE_URL=url, REMINDERS_MAX_ATTEMPTS="0"),
        tmp_path,
    )

    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "REMINDERS_MAX_ATTEMPTS" in done.stderr
    with services.session_factory() as session:
        assert session.execute(select(OutboxRow)).all() == []
    engine.dispose()


# Two threads ask for the actors' metrics for the first time at the same moment, as two
# Dramatiq worker threads do when a scan and a relay (or two relays) finish their first
# step together. The barrier holds each first construction until the other has begun too;
# if construction is serialised, it times out and each goes on alone.
FIRST_METRICS_AT_ONCE = """
import json
import threading

import worker.metrics as metrics
from worker import actors

original = metrics.ServiceMetrics.__init__
both = threading.Barrier(2, timeout=1)

def init(self, *args, **kwargs):
    try:
        both.wait()
    except threading.BrokenBarrierError:
        pass
    original(self, *args, **kwargs)

metrics.ServiceMetrics.__init__ = init
got, errors = [], []

def use():
    try:
        got.append(actors.service_metrics())
    except Exception as error:
        errors.append(f"{type(error).__name__}: {error}")

threads = [threading.Thread(target=use) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("REPORT " + json.dumps({"errors": errors, "same": len(got) == 2 and got[0] is got[1]}))
"""


def test_two_actor_threads_first_using_the_metrics_at_once_share_them(tmp_path: Path) -> None:
    """The first two concurrent uses of the actors' metrics get one instance and no error.

    Regression: a functools.cache'd constructor let two worker threads both build the
    metrics; the second registration raised DuplicateTimeseries inside relay_outbox, which
    then released the rest of its batch and left it to the next minute's tick.
    """
    done = run(
        [sys.executable, "-c", FIRST_METRICS_AT_ONCE],
        child_env(REMINDERS_DATABASE_URL=f"sqlite:///{tmp_path}/reminders.db"),
        tmp_path,
    )

    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("REPORT ")]
    report = json.loads(line.removeprefix("REPORT "))
    assert report == {"errors": [], "same": True}


def test_the_schedule_is_utc_whatever_the_host_time_zone(tmp_path: Path) -> None:
    """With TZ=Asia/Tokyo, periodiq's clock (pendulum) still reads UTC once the broker exists."""
    script = (
        "import pendulum, worker.actors\n"
        "print(pendulum.now().utcoffset().total_seconds(), pendulum.local_timezone().name)\n"
    )
    result = run(
        [sys.executable, "-c", script],
        child_env(REMINDERS_DATABASE_URL=f"sqlite:///{tmp_path}/r.db") | {"TZ": "Asia/Tokyo"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.0", "UTC"]


# Sends scan and relay five times each through a real Worker on the StubBroker, then prints
# how many messages ended in the dead-letter queue.
TICKS_ON_A_BROKEN_DATABASE = """
import json
import dramatiq
from worker import actors

actors.broker.emit_after("process_boot")
worker = dramatiq.Worker(actors.broker, worker_threads=1)
worker.start()
try:
    for _ in range(5):
        actors.scan_due_tasks.send()
        actors.relay_outbox.send()
        actors.broker.join(actors.QUEUE, timeout=30_000)
        worker.join()
finally:
    worker.stop()
print("REPORT " + json.dumps({"dead": len(actors.broker.dead_letters)}))
"""


def test_ticks_on_an_unmigrated_database_log_one_line_per_action(tmp_path: Path) -> None:
    """Five ticks on a database without the schema: one `scan_failed` and one `relay_failed`
    line naming the missing table, no traceback, and no message left dead."""
    url = f"sqlite:///{tmp_path}/empty.db"
    engine = make_engine(url)
    with engine.begin() as connection:  # a database, but none of the service's tables
        connection.exec_driver_sql("CREATE TABLE unrelated (id INTEGER)")
    engine.dispose()

    done = run(
        [sys.executable, "-c", TICKS_ON_A_BROKEN_DATABASE],
        child_env(REMINDERS_DATABASE_URL=url, REMINDERS_BROKER_URL=""),
        tmp_path,
    )

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    ours = [event for event in events if event["logger"] == "worker.actors"]
    assert sorted(event["event"] for event in ours) == ["relay_failed", "scan_failed"]
    for event in ours:
        assert event["kind"] == "not_migrated", event
        assert "not found" in event["reason"] and "reminders migrate" in event["reason"]
    assert not [event for event in events if event["level"] in ("warning", "error")][2:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("REPORT ")]
    assert json.loads(line.removeprefix("REPORT ")) == {"dead": 0}


# One tick through a real Worker on the StubBroker.
ONE_TICK = """
import dramatiq
from worker import actors

actors.broker.emit_after("process_boot")
worker = dramatiq.Worker(actors.broker, worker_threads=1)
worker.start()
try:
    actors.scan_due_tasks.send()
    actors.broker.join(actors.QUEUE, timeout=30_000)
    worker.join()
finally:
    worker.stop()
"""


def test_a_failed_scan_is_recorded_and_health_names_it_until_one_succeeds(
    tmp_path: Path,
) -> None:
    """A scan that fails on a reachable database (a host's trigger refuses the update) leaves
    its reason on the heartbeat: `reminders health` exits 1 naming it, until a scan succeeds.
    A mapped column renamed away after start is one line in the log, and health names it."""
    url = f"sqlite:///{tmp_path}/reminders.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    env = child_env(REMINDERS_DATABASE_URL=url, REMINDERS_BROKER_URL="")
    health = [str(DRAMATIQ.with_name("reminders")), "health"]

    def tick() -> str:
        done = run([sys.executable, "-c", ONE_TICK], env, tmp_path)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done.stdout + done.stderr

    def sql(statement: str) -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql(statement)

    sql("INSERT INTO users (id, email) VALUES (1, 'a@example.com')")
    tick()  # a scan that succeeds: a failure is recorded only after one
    sql(
        "CREATE TRIGGER host_says_no BEFORE UPDATE ON tasks "
        "BEGIN SELECT RAISE(ABORT, 'the host says no'); END"
    )
    sql(
        "INSERT INTO tasks (id, owner_id, title, due_date) "
        "VALUES (1, 1, 't', strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 hour'))"
    )
    tick()
    unhealthy = run(health, env, tmp_path)
    assert unhealthy.returncode == 1
    assert "the last scan failed" in unhealthy.stderr
    assert "the host says no" in unhealthy.stderr and len(unhealthy.stderr.splitlines()) == 1
    sql("DROP TRIGGER host_says_no")
    tick()
    assert run(health, env, tmp_path).returncode == 0

    sql("ALTER TABLE tasks RENAME COLUMN due_date TO deadline")
    log = tick()
    assert '"kind": "mapping"' in log and "column tasks.due_date not found" in log, log
    unhealthy = run(health, env, tmp_path)
    assert unhealthy.returncode == 1 and len(unhealthy.stderr.splitlines()) == 1
    assert "[tasks] due: column tasks.due_date not found" in unhealthy.stderr
    engine.dispose()


# Three ticks through a real Worker on the StubBroker.
THREE_TICKS = ONE_TICK.replace(
    "    actors.scan_due_tasks.send()\n"
    "    actors.broker.join(actors.QUEUE, timeout=30_000)\n"
    "    worker.join()\n",
    "    for _ in range(3):\n"
    "        actors.scan_due_tasks.send()\n"
    "        actors.broker.join(actors.QUEUE, timeout=30_000)\n"
    "        worker.join()\n",
)


def test_tasks_that_cannot_be_reminded_are_logged_once(tmp_path: Path) -> None:
    """Three scans find the same task whose owner has no address: one `unremindable_tasks`
    line names it; once the owner has an address, one line says none is left."""
    url = f"sqlite:///{tmp_path}/reminders.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    services = make_services(engine, ManualClock(), RecordingChannel())
    add_user(services, 1)
    add_task(services, 7, 1, datetime.now(UTC) + timedelta(hours=2))
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE users SET email = ' ' WHERE id = 1")
    # The e-mail channel needs the address (nothing is sent: the task is not queued). Once
    # it is queued, its failed send is retried after the next tick, not by a wake-up the
    # broker's join would wait for.
    env = child_env(
        REMINDERS_DATABASE_URL=url,
        REMINDERS_BROKER_URL="",
        REMINDERS_CHANNEL="smtp",
        REMINDERS_SMTP_PORT="1",
        REMINDERS_RETRY_BASE="10m",
    )

    def lines() -> list[dict[str, object]]:
        done = run([sys.executable, "-c", THREE_TICKS], env, tmp_path)
        assert done.returncode == 0, done.stderr
        found = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
        return [line for line in found if line["event"] == "unremindable_tasks"]

    (first,) = lines()
    assert (first["tasks"], first["no_address"], first["task_ids"], first["level"]) == (
        1,
        1,
        [7],
        "warning",
    )
    assert lines() == []  # the same count on later scans, in another process too
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE users SET email = 'ada@example.com' WHERE id = 1")
    (fixed,) = lines()
    assert (fixed["tasks"], fixed["before"], fixed["level"]) == (0, 1, "info")
    engine.dispose()
