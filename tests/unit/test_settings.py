"""Settings: defaults from the contract, one clear line for each bad value."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from worker.errors import ConfigError
from worker.settings import load_settings, parse_cron, parse_duration


def test_defaults_match_the_contract() -> None:
    """With no environment the documented defaults apply."""
    settings = load_settings()
    assert settings.database_url == "sqlite:///reminders.db"
    assert settings.broker_url is None
    assert settings.scan_schedule == "* * * * *"
    assert settings.lookahead == timedelta(hours=24)
    assert settings.channel == "console"
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_starttls) == (
        "localhost",
        25,
        False,
    )
    assert (settings.mail_from, settings.mail_domain) == ("reminders@localhost", "localhost")
    assert settings.max_attempts == 8
    assert (settings.metrics_port, settings.metrics_host) == (None, "127.0.0.1")
    assert settings.digest_burst == 3


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "::1", "metrics.internal", " 10.0.0.5 "])
def test_the_metrics_host_is_an_address_or_a_host_name(host: str) -> None:
    """REMINDERS_METRICS_HOST takes IPv4 and IPv6 addresses and host names, trimmed."""
    assert load_settings(metrics_host=host).metrics_host == host.strip()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("24h", 86400), ("90m", 5400), ("2d", 172800), ("1.5s", 1.5)],
)
def test_durations_accept_seconds_and_units(text: str, seconds: float) -> None:
    """Durations are seconds or a number with a unit."""
    assert parse_duration(text).total_seconds() == seconds


def test_the_relay_window_may_be_zero() -> None:
    """A window of 0 (re-check and record around every send) is a valid choice."""
    assert load_settings(relay_window="0").relay_window == timedelta(0)
    assert load_settings().relay_window == timedelta(milliseconds=500)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REMINDERS_LOOKAHEAD", "soon"),
        ("REMINDERS_LOOKAHEAD", "0"),
        ("REMINDERS_SCAN_SCHEDULE", "every minute"),
        ("REMINDERS_SCAN_SCHEDULE", "61 * * * *"),
        ("REMINDERS_CHANNEL", "fax"),
        ("REMINDERS_MAX_ATTEMPTS", "0"),
        ("REMINDERS_SMTP_PORT", "70000"),
        ("REMINDERS_DATABASE_URL", "mysql://x"),
        ("REMINDERS_BROKER_URL", "kafka://x"),
        ("REMINDERS_MAIL_FROM", "a@b.c\r\nBcc: x@y.z"),
        ("REMINDERS_RELAY_WINDOW", "-1s"),
        ("REMINDERS_SCAN_CONNECTIONS", "0"),
        ("REMINDERS_DIGEST_BURST", "-1"),
        ("REMINDERS_DIGEST_BURST", "a few"),
        ("REMINDERS_RELAY_WINDOW", "30s"),  # not under half the 60 s lease
        ("REMINDERS_METRICS_HOST", "0.0.0.0:9191"),
        ("REMINDERS_MAIL_FROM_NAME", "Reminders\r\nBcc: x@y.z"),
        ("REMINDERS_MAIL_FROM_NAME", "R" * 79),
        ("REMINDERS_TEMPLATE_DIR", "/nonexistent/templates"),
        ("REMINDERS_TASK_URL", "https://app.example.com/tasks/"),  # no placeholder
        ("REMINDERS_TASK_URL", "https://app.example.com/{task_id}/{task_id}"),
        ("REMINDERS_TASK_URL", "ftp://app.example.com/tasks/{task_id}"),
        ("REMINDERS_TASK_URL", "javascript:alert(1)//{task_id}"),
        ("REMINDERS_TASK_URL", "https://app.example.com/{id}/{task_id}"),
        ("REMINDERS_TASK_URL", "https://app.example.com/tasks/{task_id} x"),
        ("REMINDERS_TASK_URL", "https://{task_id}.example.com/"),
    ],
)
def test_a_bad_value_names_its_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A bad value raises ConfigError whose one-line message starts with the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(variable + ":")
    assert "\n" not in message


def test_a_bad_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors about the webhook configuration never print the secret."""
    monkeypatch.setenv("REMINDERS_CHANNEL", "webhook")
    monkeypatch.setenv("REMINDERS_WEBHOOK_SECRET", "s3cr3t-value")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "REMINDERS_WEBHOOK_URL" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    monkeypatch.setenv("REMINDERS_WEBHOOK_SECRET", "s3cr3t-value-long-enough-for-hmac")
    settings = load_settings(webhook_url="https://example.com/hook")
    assert settings.describe()["REMINDERS_WEBHOOK_SECRET"] == "***"


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com/tasks/{task_id}",
        "http://localhost:3000/t?id={task_id}&from=mail",
        " https://app.example.com/#/tasks/{task_id} ",
    ],
)
def test_a_task_url_is_an_http_url_with_one_placeholder(url: str) -> None:
    """REMINDERS_TASK_URL takes http(s) URLs with {task_id} once in the path, query or
    fragment, trimmed; an empty value means no link."""
    assert load_settings(task_url=url).task_url == url.strip()
    assert load_settings(task_url=" ").task_url is None


def test_the_from_name_defaults_to_reminders_and_may_be_any_language() -> None:
    """The display name has a default, takes non-ASCII text and may be left empty."""
    assert load_settings().mail_from_name == "Reminders"
    assert load_settings(mail_from_name=" Rappels Émile ").mail_from_name == "Rappels Émile"
    assert load_settings(mail_from_name="").mail_from_name == ""


def test_empty_broker_url_means_in_process() -> None:
    """An empty REMINDERS_BROKER_URL selects the in-process broker."""
    assert load_settings(broker_url="  ").broker_url is None


@pytest.mark.parametrize("spec", ["0 9 * * 0", "0 9 * * sun", "@weekly"])
def test_sunday_written_as_zero_fires_on_sunday(spec: str) -> None:
    """periodiq numbers Sunday 7; a schedule that says 0 still fires on Sundays."""
    assert 7 in parse_cron(spec).dow


def webhook(**overrides: object) -> dict[str, object]:
    """Webhook settings that are valid unless overridden."""
    base: dict[str, object] = {
        "channel": "webhook",
        "webhook_url": "https://hooks.example.com/reminders",
        "webhook_secret": "x" * 32,
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"webhook_url": "http://hooks.example.com/r"}, "REMINDERS_WEBHOOK_URL"),
        ({"webhook_url": "http://127.0.0.1:8080/r"}, "REMINDERS_WEBHOOK_URL"),
        ({"webhook_url": "ftp://hooks.example.com/r"}, "REMINDERS_WEBHOOK_URL"),
        ({"webhook_secret": "too-short"}, "REMINDERS_WEBHOOK_SECRET"),
        ({"webhook_secret": "x" * 65}, "REMINDERS_WEBHOOK_SECRET"),
        ({"webhook_secret": "whsec_not base64!"}, "REMINDERS_WEBHOOK_SECRET"),
    ],
)
def test_webhook_needs_https_and_a_proper_secret(
    overrides: dict[str, object], variable: str
) -> None:
    """Plain http (except to localhost when allowed) and badly sized secrets stop start-up."""
    with pytest.raises(ConfigError) as caught:
        load_settings(**webhook(**overrides))
    assert str(caught.value).startswith(variable + ":")
    assert "x" * 20 not in str(caught.value)


def test_http_to_localhost_is_allowed_only_when_asked() -> None:
    """REMINDERS_WEBHOOK_ALLOW_HTTP_LOCALHOST permits http:// to a loopback receiver."""
    settings = load_settings(
        **webhook(webhook_url="http://127.0.0.1:8080/r", webhook_allow_http_localhost=True)
    )
    assert settings.webhook_url == "http://127.0.0.1:8080/r"


def test_several_secrets_rotate() -> None:
    """Space-separated secrets are all used for signing."""
    settings = load_settings(**webhook(webhook_secret="a" * 24 + " " + "b" * 30))
    assert settings.webhook_secrets == ["a" * 24, "b" * 30]


def test_secrets_can_come_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """REMINDERS_SMTP_PASSWORD_FILE reads a mounted secret; a missing file names the variable."""
    secret = tmp_path / "password"
    secret.write_text("hunter2-from-file\n")
    monkeypatch.setenv("REMINDERS_SMTP_PASSWORD_FILE", str(secret))
    settings = load_settings()
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "hunter2-from-file"
    assert settings.describe()["REMINDERS_SMTP_PASSWORD"] == "***"
    monkeypatch.setenv("REMINDERS_SMTP_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^REMINDERS_SMTP_PASSWORD_FILE: cannot read"):
        load_settings()


@pytest.mark.parametrize(
    "given",
    [
        "postgres://app:s3cret@db.example.com:5432/tasks",
        "postgresql://app:s3cret@db.example.com:5432/tasks",
        "postgresql+psycopg2://app:s3cret@db.example.com:5432/tasks",
        "postgresql+psycopg://app:s3cret@db.example.com:5432/tasks",
    ],
)
def test_a_postgres_url_without_a_driver_connects_with_psycopg_3(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """``postgres://``, ``postgresql://`` and psycopg2 URLs are read as psycopg 3 URLs, and
    `describe` shows them with the password hidden."""
    monkeypatch.setenv("REMINDERS_DATABASE_URL", given)
    settings = load_settings()
    assert settings.database_url == "postgresql+psycopg://app:s3cret@db.example.com:5432/tasks"
    shown = settings.describe()["REMINDERS_DATABASE_URL"]
    assert shown == "postgresql+psycopg://app:***@db.example.com:5432/tasks"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REMINDERS_DATABASE_URL", "postgresql+asyncpg://app:s3cret@db/tasks"),
        ("REMINDERS_DATABASE_URL", "mysql://app:s3cret@db/tasks"),
        ("REMINDERS_BROKER_URL", "kafka://app:s3cret@broker:9092"),
    ],
)
def test_a_bad_url_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A URL of an unsupported kind is refused in one line that shows it, password hidden."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(variable + ":")
    assert "app:***@" in message and "s3cret" not in message
