"""The health checks of docker-compose.yml and the Dockerfile, run as the containers run them
(each service's own settings, the real `reminders` command), on a real database and Redis."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.harness import child_env, run_reminders
from tests.unit.test_deployment_files import compose, health_checks


def service_env(service: str, database_url: str, redis_url: str) -> dict[str, str]:
    """``service``'s environment from the compose file, on this test's database and Redis."""
    variables = {k: str(v) for k, v in compose()["services"][service]["environment"].items()}
    variables.update(REMINDERS_DATABASE_URL=database_url, REMINDERS_BROKER_URL=redis_url)
    variables.pop("TZ", None)  # child_env sets it
    return child_env(**variables)


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
    assert "last scan" in output


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
