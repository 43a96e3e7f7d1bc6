"""docker-compose.yml's services as its containers run them, without Docker: each service's own
command and settings, on a real PostgreSQL and Redis (and a recording SMTP server for Mailpit).

- The seed service's psql command, then the worker and scheduler commands: the first start
  mails the seeded reminders, and nothing else.
- The health checks of the services and of the Dockerfile.
"""

from __future__ import annotations

import email.policy
import shutil
import subprocess
import urllib.request
from email.parser import BytesParser
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from outbox.table import Status
from tests.acceptance.harness import (
    BIN,
    Procs,
    SmtpReceiver,
    child_env,
    free_port,
    outbox,
    run_reminders,
    smtp_env,
    wait_until,
)
from tests.conftest import unavailable
from tests.unit.test_deployment_files import compose, health_checks

#: What the seed's first scan reminds: task id -> (owner's address, title).
SEEDED_REMINDERS = {
    101: ("ada@example.com", "Send the quarterly report"),
    102: ("grace@example.org", "Renew the TLS certificate"),
    103: ("linus@example.net", "Call the bank"),
}


def service_env(service: str, database_url: str, redis_url: str) -> dict[str, str]:
    """``service``'s environment from the compose file, on this test's database and Redis."""
    variables = {k: str(v) for k, v in compose()["services"][service]["environment"].items()}
    variables.update(REMINDERS_DATABASE_URL=database_url, REMINDERS_BROKER_URL=redis_url)
    variables.pop("TZ", None)  # child_env sets it
    return child_env(**variables)


def scrape(port: int) -> list[str]:
    """The lines of the metrics page on 127.0.0.1:``port``; none while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            return str(page.read().decode()).splitlines()
    except OSError:
        return []


def run_seed(database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The seed service's command, with its PG* variables pointing at ``database_url``."""
    if shutil.which("psql") is None:
        unavailable("psql", FileNotFoundError("no psql command"))
    url = make_url(database_url)
    variables = {
        "PGHOST": url.host or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "postgres",
        "PGDATABASE": url.database or "postgres",
    }
    if url.password:
        variables["PGPASSWORD"] = str(url.password)
    seed = compose()["services"]["seed"]
    assert set(seed["environment"]) == {"PGHOST", "PGUSER", "PGPASSWORD", "PGDATABASE"}
    return subprocess.run(
        seed["command"],
        env=child_env(**variables),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_first_start_mails_the_seeded_reminders(
    postgres_url: str,
    db: Engine,
    redis_url: str,
    smtp: SmtpReceiver,
    procs: Procs,
    tmp_path: Path,
) -> None:
    """The seed (run twice: it is idempotent), then the compose file's worker and scheduler
    commands with their settings: each seeded reminder is mailed once to its owner, and the
    done, opted-out and later tasks get none."""
    for _ in range(2):
        seeded = run_seed(postgres_url, tmp_path)
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    services = compose()["services"]
    started = []
    metrics: dict[str, int] = {}
    for name in ("worker", "scheduler"):
        env = {**service_env(name, postgres_url, redis_url), **smtp_env(smtp)}
        if "REMINDERS_METRICS_PORT" in env:
            # The container's port and address (every interface) are not this machine's to take.
            metrics[name] = free_port()
            env.update(
                REMINDERS_METRICS_PORT=str(metrics[name]), REMINDERS_METRICS_HOST="127.0.0.1"
            )
        argv = services[name]["command"]
        started.append(procs.start(name, [str(BIN / argv[0]), *argv[1:]], env))

    wait_until(lambda: len(smtp.messages) >= len(SEEDED_REMINDERS), "the mails", alive=started)
    wait_until(
        lambda: {row.status for row in outbox(db).values()} == {Status.DELIVERED},
        "the outbox to record the deliveries", alive=started,
    )  # fmt: skip

    rows = outbox(db).values()
    assert sorted(row.subject_id for row in rows) == sorted(SEEDED_REMINDERS)
    parser = BytesParser(policy=email.policy.default)
    mails = {}
    for mail in list(smtp.messages):
        message = parser.parsebytes(mail.raw)
        mails[int(str(message["X-Task-Id"]))] = (mail.rcpt_tos, str(message["Subject"]))
    assert len(smtp.messages) == len(SEEDED_REMINDERS), "one mail per reminder"
    for task_id, (address, title) in SEEDED_REMINDERS.items():
        recipients, subject = mails[task_id]
        assert recipients == [address]
        assert title in subject
    # The workers export their metrics, both worker processes' together (the exposition
    # server may bind after the first mails went out).
    assert set(metrics) == {"worker"}
    delivered = f'reminders_deliveries_total{{channel="smtp",outcome="delivered"}} {len(rows)}.0'
    wait_until(lambda: delivered in scrape(metrics["worker"]), delivered, alive=started)


def check(service: str, database_url: str, redis_url: str, cwd: Path) -> tuple[int, str]:
    """Run ``service``'s health check; its exit code and what it printed."""
    argv = health_checks()[service]
    env = service_env(service, database_url, redis_url)
    done = run_reminders(env, *argv[1:], cwd=cwd)
    return done.returncode, done.stdout + done.stderr


def test_a_worker_is_healthy_while_nothing_scans_and_the_scheduler_is_not(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """On a migrated database that no scan has run on (the scheduler down or not started), the
    workers' check passes, their part being fine, and the scheduler's fails naming the scan."""
    code, output = check("worker", postgres_url, redis_url, tmp_path)
    assert code == 0, output
    code, output = check("scheduler", postgres_url, redis_url, tmp_path)
    assert code == 1, output
    assert "no scan has completed yet" in output


def test_every_check_passes_once_a_scan_ran(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """After a scan, the image's, the workers' and the scheduler's checks all pass."""
    scan = run_reminders(service_env("worker", postgres_url, redis_url), "scan", cwd=tmp_path)
    assert scan.returncode == 0, scan.stderr
    for service in ("worker", "scheduler"):
        code, output = check(service, postgres_url, redis_url, tmp_path)
        assert code == 0, f"{service}: {output}"
    env = service_env("worker", postgres_url, redis_url)
    image = run_reminders(env, *health_checks()["Dockerfile"][1:], cwd=tmp_path)
    assert image.returncode == 0, image.stdout + image.stderr


def test_the_checks_fail_when_the_broker_does_not_answer(postgres_url: str, tmp_path: Path) -> None:
    """A worker or scheduler whose broker is unreachable is unhealthy (exit 1, named)."""
    nobody = "redis://127.0.0.1:1/0"
    for service in ("worker", "scheduler"):
        code, output = check(service, postgres_url, nobody, tmp_path)
        assert code == 1, output
        assert "broker" in output, output
