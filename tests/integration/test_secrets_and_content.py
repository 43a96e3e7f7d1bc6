"""No secret leaks from any command; hostile titles reach the SMTP server as plain data."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from outbox.channels.smtp import SmtpChannel
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from tests.support.servers.smtp import RecordingSmtpServer
from worker.bootstrap import bootstrap
from worker.settings import load_settings

REMINDERS = str(Path(sys.executable).parent / "reminders")
SMTP_PASSWORD = "pw-7f3a9c1e-never-print"
WEBHOOK_SECRET = "whk-2b8d4f6a0c1e3a5b7d9f-never-print"
DB_PASSWORD = "db-5e7a1c3b-never-print"
HOSTILE = "Pay <b>rent</b>\r\nBcc: victim@example.net\r\nX-Evil: 1\r\n\r\n.\r\nMAIL FROM:<x@y>"


def run(*args: str, cwd: Path, **env: str) -> str:
    """Run ``reminders ARGS`` and return everything it printed, stdout and stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    result = subprocess.run(
        [REMINDERS, *args],
        env=clean | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stdout + result.stderr


def test_no_command_prints_a_secret(
    postgres_url: str, postgres_engine: Engine, tmp_path: Path
) -> None:
    """A full run (config, migrate, scan, relay with a failing login, status, outbox, errors)."""
    services = make_services(postgres_engine, ManualClock(datetime.now(UTC)), RecordingChannel())
    add_user(services, 1, email="ada@example.com")
    add_task(services, 1, 1, datetime.now(UTC) + timedelta(hours=1), title=HOSTILE)
    url = make_url(postgres_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    with RecordingSmtpServer(credentials=("reminders", "another-password")) as smtp:
        env = {
            "REMINDERS_DATABASE_URL": url,
            "REMINDERS_CHANNEL": "smtp",
            "REMINDERS_SMTP_HOST": smtp.host,
            "REMINDERS_SMTP_PORT": str(smtp.port),
            "REMINDERS_SMTP_USERNAME": "reminders",
            "REMINDERS_SMTP_PASSWORD": SMTP_PASSWORD,
            "REMINDERS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        printed = [
            run("config", cwd=tmp_path, **env),
            run("config", "--json", cwd=tmp_path, **env),
            run("migrate", cwd=tmp_path, **env),
            run("scan", "--json", cwd=tmp_path, **env),
            run("relay", cwd=tmp_path, **env),  # the server refuses the login: 535
            run("status", "--json", cwd=tmp_path, **env),
            run("outbox", "list", "--json", cwd=tmp_path, **env),
            run("outbox", "show", "1", "--json", cwd=tmp_path, **env),
            run("health", cwd=tmp_path, **env),
            run("scan", cwd=tmp_path, **env | {"REMINDERS_CHANNEL": "webhook"}),
            run(
                "scan",
                cwd=tmp_path,
                **env
                | {"REMINDERS_WEBHOOK_SECRET": "short-secret-x"}
                | {"REMINDERS_CHANNEL": "webhook", "REMINDERS_WEBHOOK_URL": "https://h.example"},
            ),
        ]
    everything = "\n".join(printed)
    assert "dead" in everything and "535" in everything  # the relay ran and the login failed
    for secret in (SMTP_PASSWORD, WEBHOOK_SECRET, DB_PASSWORD, "short-secret-x"):
        assert secret not in everything
    assert "ada@example.com" not in everything


def test_hostile_titles_arrive_as_plain_data(sqlite_engine: Engine, clock: ManualClock) -> None:
    """Raw SMTP bytes: one recipient, no injected header, a one-line subject, the text part
    intact and the HTML part with the title escaped."""
    with RecordingSmtpServer() as smtp:
        settings = load_settings(
            database_url=str(sqlite_engine.url), channel="smtp", mail_domain="reminders.test"
        )
        services = bootstrap(
            settings,
            clock=clock,
            engine=sqlite_engine,
            make_channel=lambda: SmtpChannel(
                smtp.host, smtp.port, mail_from="reminders@example.com", timeout=5
            ),
        )
        add_user(services, 1, email="ada@example.com")
        add_task(services, 1, 1, clock.now() + timedelta(hours=1), title=HOSTILE + "x" * 1_000_000)
        services.scan()
        assert services.relay().relay_until_idle().counts == {"delivered": 1}
        smtp.wait_for_messages(1)
    [mail] = smtp.messages
    recipients, raw = mail.rcpt_tos, mail.raw
    assert recipients == ["ada@example.com"]
    message = email.message_from_bytes(raw, policy=email.policy.SMTP)
    headers = {name.lower() for name in message}
    assert "bcc" not in headers and "x-evil" not in headers
    subject = str(message["Subject"])
    assert "\n" not in subject and "\r" not in subject and len(subject) < 250
    assert message.get_content_type() == "multipart/alternative"
    text, html = (message.get_body(preferencelist=(kind,)) for kind in ("plain", "html"))
    assert text is not None and html is not None
    body = text.get_content()
    assert "Bcc: victim@example.net" in body and "<b>rent</b>" in body
    markup = html.get_content()
    assert "<b>rent</b>" not in markup and "&lt;b&gt;rent&lt;/b&gt;" in markup
