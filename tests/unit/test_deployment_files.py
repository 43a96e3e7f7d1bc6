"""docker-compose.yml and the Dockerfile name only real commands and known settings."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from typer.core import TyperGroup
from typer.main import get_command

from worker.cli import app
from worker.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
#: Variables a service may set that are not the reminder service's own settings.
FOREIGN = {
    *("TZ", "PYTHONUNBUFFERED"),
    *("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"),
    *("PGHOST", "PGUSER", "PGPASSWORD", "PGDATABASE"),
}


def compose() -> dict[str, Any]:
    """The parsed docker-compose.yml, anchors resolved."""
    parsed: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return parsed


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(keyword.upper(), rest.strip()) for keyword, rest in instructions]


def last(keyword: str) -> str:
    """The arguments of the Dockerfile's last ``keyword`` instruction (the one in force)."""
    found = [rest for word, rest in dockerfile() if word == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


def image_environment() -> dict[str, str]:
    """The variables the image's ENV instructions set."""
    variables: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                variables[name] = value
    return variables


def exec_form(keyword: str) -> list[str]:
    """The argv of an instruction written in exec form (a JSON array), as the image runs it."""
    argv = json.loads(last(keyword))
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), keyword
    return argv


def image_health_check() -> list[str]:
    """The argv of the Dockerfile's HEALTHCHECK (``HEALTHCHECK [OPTIONS] CMD [...]``)."""
    _options, command, argv = last("HEALTHCHECK").partition("CMD ")
    assert command, "the HEALTHCHECK has an exec-form CMD"
    parsed = json.loads(argv)
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


def health_checks() -> dict[str, list[str]]:
    """The health check command of the image and of each compose service built from it."""
    checks = {"Dockerfile": image_health_check()}
    for name, service in compose()["services"].items():
        check = service.get("healthcheck", {})
        if "build" in service and not check.get("disable"):
            test = check.get("test")
            assert isinstance(test, list) and test[0] == "CMD", f"{name}: exec form"
            checks[name] = test[1:]
    return checks


def project_commands() -> set[str]:
    """Every `reminders` subcommand path, like 'migrate' or 'outbox list'."""
    root = get_command(app)
    assert isinstance(root, TyperGroup), "the CLI has subcommands"
    paths: set[str] = set()
    for name, command in root.commands.items():
        paths.add(name)
        for sub in getattr(command, "commands", {}):
            paths.add(f"{name} {sub}")
    return paths


def known_variables() -> set[str]:
    """Every REMINDERS_* variable the settings read, _FILE variants included."""
    names = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    return names | {
        f"{ENV_PREFIX}{f}_FILE" for f in ("SMTP_PASSWORD", "WEBHOOK_SECRET", "LINK_SECRET")
    }


def test_every_project_service_runs_a_real_entry_point() -> None:
    """Services built from this project run `reminders`, `dramatiq worker.actors` or `periodiq`."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    checked = 0
    for name, service in compose()["services"].items():
        if "build" not in service:
            continue
        command = service.get("command") or exec_form("CMD")
        argv = command if isinstance(command, list) else shlex.split(command)
        if argv[0] in scripts:
            subcommand = " ".join(a for a in argv[1:] if not a.startswith("-"))
            assert subcommand in project_commands(), f"{name}: reminders {subcommand}"
        else:
            assert argv[0] in ("dramatiq", "periodiq"), f"{name}: {argv[0]}"
            assert argv[1] == "worker.actors", f"{name}: {argv}"
        checked += 1
    assert checked >= 3  # migrate, worker, scheduler


def test_every_variable_a_service_sets_is_a_known_setting() -> None:
    """No service sets a REMINDERS_* variable that the settings do not read (a typo)."""
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith(ENV_PREFIX):
                assert variable in known_variables(), f"{name}: {variable}"
            else:
                assert variable in FOREIGN, f"{name}: {variable}"


def test_the_compose_settings_are_valid() -> None:
    """The variables the compose file sets pass the settings' own validation."""
    environment = compose()["services"]["worker"]["environment"]
    overrides = {
        k.removeprefix(ENV_PREFIX).lower(): v
        for k, v in environment.items()
        if k.startswith(ENV_PREFIX)
    }
    settings = Settings(**overrides)
    assert settings.channel == "smtp" and settings.broker_url is not None


def test_the_image_runs_as_a_user_who_owns_its_data_directory() -> None:
    """The image's default database lives in a volume its non-root user owns, which is also the
    working directory: no command of the image writes where the user cannot."""
    user = last("USER")
    assert user not in ("root", "0"), "the image runs as root"
    url = image_environment()["REMINDERS_DATABASE_URL"]
    assert Settings(database_url=url).database_url == url
    assert url.startswith("sqlite:////"), "an absolute SQLite path"
    directory = str(PurePosixPath(url.removeprefix("sqlite:///")).parent)
    assert directory in shlex.split(last("VOLUME")), f"{directory} is not a volume"
    assert last("WORKDIR") == directory
    owned = re.compile(rf"\bchown {re.escape(user)}(?::\S+)? {re.escape(directory)}(?:\s|$)")
    steps = dockerfile()
    chowned = [i for i, (word, rest) in enumerate(steps) if word == "RUN" and owned.search(rest)]
    assert chowned, f"{directory} is not given to {user}"
    # RUN steps after USER run as that user, who could not chown a directory of root's.
    assert chowned[0] < steps.index(("USER", user))


def test_the_image_default_command_is_a_real_command() -> None:
    """`docker run IMAGE` runs an existing `reminders` command."""
    argv = exec_form("CMD")
    assert argv[0] == "reminders"
    assert " ".join(a for a in argv[1:] if not a.startswith("-")) in project_commands()


def test_every_health_check_is_reminders_health_with_real_options() -> None:
    """The image's and the services' health checks run `reminders health` with options it
    takes: a misspelt flag would make every container unhealthy."""
    health = get_command(app).commands["health"]  # type: ignore[attr-defined]
    checks = health_checks()
    assert {"Dockerfile", "worker", "scheduler"} <= set(checks)
    for name, argv in checks.items():
        assert argv[:2] == ["reminders", "health"], name
        health.make_context("health", argv[2:])  # a usage error raises


def test_a_service_that_exports_metrics_listens_where_a_scraper_can_reach_it() -> None:
    """A service with a metrics port listens on every address of its container and exposes
    the port: on the default loopback address no other container could scrape it."""
    exporting = {
        name: service
        for name, service in compose()["services"].items()
        if "REMINDERS_METRICS_PORT" in service.get("environment", {})
    }
    assert "worker" in exporting
    for name, service in exporting.items():
        environment = service["environment"]
        assert environment.get("REMINDERS_METRICS_HOST") in ("0.0.0.0", "::"), name
        assert str(environment["REMINDERS_METRICS_PORT"]) in map(str, service["expose"]), name
