"""Bad input: rows the host application can write and settings an operator can get wrong.

Each case gets one clear outcome — delivered safely, cancelled with a reason, dead with the
error, or a start-up error naming the setting — and the good rows written next to the bad
ones are delivered all the same (nothing else lost or blocked). The rows go through the real
`reminders scan` and `reminders relay` commands, once per channel (SMTP and webhook); the
outcomes are tabulated in docs/reliability.md.
"""

from __future__ import annotations

import email.policy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_time
from markupsafe import escape
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from outbox.table import Status
from tests.acceptance.commandline import CommandLine, fresh_command_line
from tests.acceptance.harness import (
    BIN,
    MAIL_DOMAIN,
    Row,
    SmtpReceiver,
    WebhookReceiver,
    add_tasks,
    add_users,
    free_port,
    run_reminders,
    service_env,
    utc_now,
)
from worker import migrate
from worker.db import make_engine
from worker.reminders.keys import reminder_key

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)
MEGABYTE_TITLE = ("Quarterly report " * 62_000)[:1_000_000]
HOSTILE_TITLE = "Pay rent\r\nBcc: evil@example.net\r\nX-Injected: yes\r\n\r\nfake body"
HTML_TITLE = "<script>alert('x')</script><b>bold</b> &amp; <a href='http://evil'>link</a>"


def berlin_transitions(after: datetime) -> tuple[datetime, datetime]:
    """The next spring-forward and fall-back instants (UTC) of Europe/Berlin after ``after``."""
    found: dict[str, datetime] = {}
    moment = after.replace(minute=0, second=0)
    offset = moment.astimezone(BERLIN).utcoffset()
    while len(found) < 2:
        moment += HOUR
        now_offset = moment.astimezone(BERLIN).utcoffset()
        if now_offset != offset:
            assert now_offset is not None and offset is not None
            found.setdefault("gap" if now_offset > offset else "overlap", moment)
            offset = now_offset
    return found["gap"], found["overlap"]


# --- the rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad row: its task, and what happens to its reminder on each channel."""

    task_id: int
    what: str
    smtp: str  # "delivered", "dead: <error part>", "cancelled: <reason>", "not queued"
    webhook: str


GOOD = (1, 2, 3)
CASES = [
    Case(10, "unknown time zone 'Mars/Olympus'", "delivered", "delivered"),
    Case(11, "empty time zone", "delivered", "delivered"),
    Case(12, "time zone '../../etc/passwd'", "delivered", "delivered"),
    Case(13, "owner without e-mail (empty)", "not queued", "delivered"),
    Case(14, "invalid address 'not-an-address'", "dead: invalid recipient", "delivered"),
    Case(15, "address with CR/LF and a Bcc header", "dead: invalid recipient", "delivered"),
    Case(
        16,
        "non-ASCII address, relay without SMTPUTF8",
        "dead: invalid recipient: ü***@",
        "delivered",
    ),
    Case(17, "two addresses in one", "dead: invalid recipient", "delivered"),
    Case(18, "duplicate e-mail (first owner)", "delivered", "delivered"),
    Case(19, "duplicate e-mail (second owner)", "delivered", "delivered"),
    Case(30, "title with CR/LF and header-looking text", "delivered", "delivered"),
    Case(31, "1 MB title", "delivered", "delivered"),
    Case(32, "HTML in the title", "delivered", "delivered"),
    Case(33, "empty title", "delivered", "delivered"),
    Case(34, "due at a nonexistent local time (DST gap)", "delivered", "delivered"),
    Case(35, "due at the first 02:30 of the DST overlap", "delivered", "delivered"),
    Case(36, "due at the second 02:30 of the DST overlap", "delivered", "delivered"),
    Case(
        40, "owner deleted after the scan", "cancelled: owner deleted", "cancelled: owner deleted"
    ),
    Case(41, "owner deleted before the scan", "not queued", "not queued"),
]
BY_ID = {case.task_id: case for case in CASES}


def seed_bad_rows(command_line: CommandLine, now: datetime) -> dict[int, datetime]:
    """The good and the bad rows; returns every task's due date as stored."""
    gap, overlap = berlin_transitions(now)
    engine = command_line.db
    command_line.add_users([
        (1, "ada@example.com", "UTC", True),
        (10, "mars@example.com", "Mars/Olympus", True),
        (11, "empty-zone@example.com", "", True),
        (12, "path-zone@example.com", "../../etc/passwd", True),
        (13, "", "UTC", True),
        (14, "not-an-address", "UTC", True),
        (15, "ada@example.com\r\nBcc: evil@example.net", "UTC", True),
        (16, "ünïcødé@example.com", "UTC", True),
        (17, "a@example.com, evil@example.net", "UTC", True),
        (18, "twin@example.com", "UTC", True),
        (19, "twin@example.com", "UTC", True),
        (20, "berlin@example.com", "Europe/Berlin", True),
        (21, "gone-later@example.com", "UTC", True),
        (22, "gone-before@example.com", "UTC", True),
    ])  # fmt: skip
    soon = now + 2 * HOUR
    tasks: list[tuple[int, int, str, datetime | None, datetime | None]] = [
        *((task_id, 1, f"good task {task_id}", soon + task_id * HOUR, None) for task_id in GOOD),
        *((owner, owner, f"task of user {owner}", soon, None) for owner in range(10, 20)),
        (30, 1, HOSTILE_TITLE, soon, None),
        (31, 1, MEGABYTE_TITLE, soon, None),
        (32, 1, HTML_TITLE, soon, None),
        (33, 1, "", soon, None),
        (35, 20, "first 02:30", overlap - timedelta(minutes=30), None),
        (36, 20, "second 02:30", overlap + timedelta(minutes=30), None),
        (40, 21, "owner deleted later", soon, None),
        (41, 22, "owner deleted first", soon, None),
    ]
    # A host without the foreign key (it owns its schema) can delete a task's owner.
    with engine.begin() as connection:
        (constraint,) = connection.execute(
            text("SELECT conname FROM pg_constraint "
                 "WHERE conrelid = 'tasks'::regclass AND contype = 'f'")
        ).scalars()  # fmt: skip
        connection.execute(text(f'ALTER TABLE tasks DROP CONSTRAINT "{constraint}"'))
    command_line.add_tasks(tasks)
    with engine.begin() as connection:  # the host writes a local wall time that never exists
        gap_local = (gap + timedelta(minutes=30)).astimezone(BERLIN).replace(tzinfo=None)
        gap_local = gap_local.replace(hour=(gap_local.hour - 1) % 24)  # 02:30 on that day
        connection.execute(
            text("INSERT INTO tasks (id, owner_id, title, due_date) VALUES "
                 "(34, 20, 'in the gap', CAST(:local AS timestamp) AT TIME ZONE 'Europe/Berlin')"),
            {"local": gap_local},
        )  # fmt: skip
        connection.execute(text("DELETE FROM users WHERE id = 22"))
        stored: dict[int, datetime] = dict(
            connection.execute(text("SELECT id, due_date FROM tasks")).all()
        )
    return {task_id: when.astimezone(UTC) for task_id, when in stored.items()}


@dataclass(frozen=True)
class Outcome:
    """What one channel did with the rows."""

    due: dict[int, datetime]
    rows: dict[str, Row]
    received: dict[str, list[Any]]  # key -> e-mails (SMTP) or JSON documents (webhook)
    raw: dict[str, list[bytes]]  # key -> raw message bytes or request bodies
    envelopes: dict[str, list[list[str]]]  # key -> RCPT TO lists (SMTP)

    def key(self, task_id: int) -> str:
        """The key of a task's reminder."""
        return reminder_key(task_id, self.due[task_id])


def run_channel(channel: str, postgres_template: str, cwd: Path) -> Iterator[Outcome]:
    """Seed a fresh database, then scan, delete owner 21, relay; yield what happened."""
    with fresh_command_line(postgres_template, cwd) as command_line:
        yield from _run_channel(channel, command_line)


def _run_channel(channel: str, command_line: CommandLine) -> Iterator[Outcome]:
    now, engine = utc_now(), command_line.db
    due = seed_bad_rows(command_line, now)
    lookahead = f"{(max(due.values()) - now).days + 2}d"  # far enough for the DST dates
    server: Any = SmtpReceiver() if channel == "smtp" else WebhookReceiver()
    with server:
        env = command_line.env(server, REMINDERS_LOOKAHEAD=lookahead,
                               REMINDERS_SEND_TIMEOUT="10s")  # fmt: skip
        scan = command_line.run(env, "scan", "--json")
        assert scan.returncode == 0, scan.stderr
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM users WHERE id = 21"))
        relay = command_line.run(env, "relay", "--json")
        assert relay.returncode == 0, relay.stderr
        json.loads(relay.stdout)  # one JSON document, whatever the rows held
        received: dict[str, list[Any]] = {}
        raw: dict[str, list[bytes]] = {}
        envelopes: dict[str, list[list[str]]] = {}
        if channel == "smtp":
            for mail in server.messages:
                parsed = email.message_from_bytes(mail.raw, policy=email.policy.default)
                key = str(parsed["X-Reminder-Key"])
                received.setdefault(key, []).append(parsed)
                raw.setdefault(key, []).append(mail.raw)
                envelopes.setdefault(key, []).append(mail.rcpt_tos)
        else:
            for answer in server.answers:
                received.setdefault(answer.key, []).append(json.loads(answer.request.body))
                raw.setdefault(answer.key, []).append(answer.request.body)
    yield Outcome(due, command_line.outbox(), received, raw, envelopes)


@pytest.fixture(scope="module")
def smtp_outcome(
    postgres_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    """The bad rows through the SMTP channel."""
    yield from run_channel("smtp", postgres_template, tmp_path_factory.mktemp("smtp"))


@pytest.fixture(scope="module")
def webhook_outcome(
    postgres_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    """The bad rows through the webhook channel."""
    yield from run_channel("webhook", postgres_template, tmp_path_factory.mktemp("webhook"))


def outcome_of(result: Outcome, task_id: int) -> str:
    """The case's outcome in the words of `Case`."""
    key = result.key(task_id)
    row = result.rows.get(key)
    count = len(result.received.get(key, []))
    if row is None:
        assert count == 0
        return "not queued"
    if row.status == Status.DELIVERED:
        assert count == 1, f"{key} arrived {count} times"
        return "delivered"
    assert count == 0, f"{key} is {row.status} but arrived {count} times"
    return f"{row.status}: {row.last_error}"


# --- rows: one outcome each, and the good rows unaffected ------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_each_bad_row_has_its_outcome_over_smtp(case: Case, smtp_outcome: Outcome) -> None:
    """Over SMTP each bad row is delivered safely, dead with the error, cancelled or not queued."""
    assert outcome_of(smtp_outcome, case.task_id).startswith(case.smtp)


@pytest.mark.postgres
@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_each_bad_row_has_its_outcome_over_the_webhook(
    case: Case, webhook_outcome: Outcome
) -> None:
    """Over the webhook each bad row is delivered safely, cancelled or not queued."""
    assert outcome_of(webhook_outcome, case.task_id).startswith(case.webhook)


@pytest.mark.postgres
@pytest.mark.parametrize("channel", ["smtp", "webhook"])
def test_bad_rows_neither_block_nor_lose_the_good_ones(
    channel: str, request: pytest.FixtureRequest
) -> None:
    """The good rows next to the bad ones are each delivered once, in the same relay run."""
    result: Outcome = request.getfixturevalue(f"{channel}_outcome")
    for task_id in GOOD:
        assert outcome_of(result, task_id) == "delivered"
    queued = {row.key for row in result.rows.values()}
    assert not any(r.status in (Status.PENDING, Status.CLAIMED, Status.FAILED)
                   for r in result.rows.values()), queued  # fmt: skip


@pytest.mark.postgres
def test_hostile_and_huge_titles_stay_data(smtp_outcome: Outcome, webhook_outcome: Outcome) -> None:
    """CR/LF, header-looking text, HTML and 1 MB titles never become headers, recipients or
    markup: subjects stay one bounded line, the text part carries the title verbatim and the
    HTML part escaped; the webhook carries the title verbatim."""
    for task_id, title in ((30, HOSTILE_TITLE), (31, MEGABYTE_TITLE), (32, HTML_TITLE)):
        key = smtp_outcome.key(task_id)
        [mail] = smtp_outcome.received[key]
        assert isinstance(mail, EmailMessage)
        assert smtp_outcome.envelopes[key] == [["ada@example.com"]]
        assert mail["Bcc"] is None and mail["X-Injected"] is None
        assert str(mail["To"]) == "ada@example.com"
        subject = str(mail["Subject"])
        assert "\n" not in subject and "\r" not in subject and len(subject) <= 200
        assert mail.get_content_type() == "multipart/alternative"
        text, html = (mail.get_body(preferencelist=(kind,)) for kind in ("plain", "html"))
        assert text is not None and html is not None
        body = text.get_content().replace("\r\n", "\n")
        assert title.replace("\r\n", "\n") in body
        markup = html.get_content().replace("\r\n", "\n")
        assert str(escape(title)).replace("\r\n", "\n") in markup
        assert "<script>" not in markup and "href='http://evil'" not in markup
        [document] = webhook_outcome.received[webhook_outcome.key(task_id)]
        assert document["title"] == title
    [hostile_raw] = smtp_outcome.raw[smtp_outcome.key(30)]
    header_block = hostile_raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in header_block and b"\r\nX-Injected:" not in header_block


@pytest.mark.postgres
def test_unknown_zones_fall_back_to_utc_and_dst_dates_read_as_real_local_times(
    smtp_outcome: Outcome, webhook_outcome: Outcome
) -> None:
    """Unknown, empty or path-like zones show the due time in UTC; a due date in the DST gap
    shows a local time that exists, the two overlap instants show CEST and CET."""
    for task_id in (10, 11, 12):
        [mail] = smtp_outcome.received[smtp_outcome.key(task_id)]
        assert "UTC (UTC+00:00)" in str(mail["Subject"])
    gap_due = smtp_outcome.due[34]
    [gap_mail] = smtp_outcome.received[smtp_outcome.key(34)]
    local = gap_due.astimezone(BERLIN)
    shown = " ".join(format_time(local, "short", locale="en").split())  # as in the subject
    assert f"{shown} {local:%Z}" in str(gap_mail["Subject"])
    assert local.strftime("%H:%M") != "02:30", "02:30 does not exist that night"
    first, second = (smtp_outcome.received[smtp_outcome.key(i)][0] for i in (35, 36))
    assert "2:30 AM CEST (UTC+02:00)" in str(first["Subject"])
    assert "2:30 AM CET (UTC+01:00)" in str(second["Subject"])
    for task_id in (34, 35, 36):
        [document] = webhook_outcome.received[webhook_outcome.key(task_id)]
        expected = webhook_outcome.due[task_id].isoformat().replace("+00:00", "Z")
        assert document["due_date"] == expected


@pytest.mark.postgres
def test_duplicate_emails_get_one_reminder_per_task(smtp_outcome: Outcome) -> None:
    """Two owners sharing an address each get their task's reminder, once, at that address."""
    for task_id in (18, 19):
        key = smtp_outcome.key(task_id)
        assert smtp_outcome.envelopes[key] == [["twin@example.com"]]


@pytest.mark.postgres
def test_dead_rows_keep_a_masked_error(smtp_outcome: Outcome) -> None:
    """A bad address ends dead at its first attempt with an error that does not repeat it (an
    empty one is not queued at all: task 13)."""
    for task_id in (14, 15, 16, 17):
        row = smtp_outcome.rows[smtp_outcome.key(task_id)]
        assert (row.status, row.attempts) == (Status.DEAD, 1)
        assert row.last_error is not None
        assert "evil@example.net" not in row.last_error and "\n" not in row.last_error


@pytest.mark.postgres
def test_a_reminder_whose_owner_was_deleted_is_cancelled_naming_the_owner(
    smtp_outcome: Outcome,
) -> None:
    """A queued reminder whose owner was then deleted is cancelled naming the owner."""
    row = smtp_outcome.rows[smtp_outcome.key(40)]
    assert row.status == Status.CANCELLED
    assert row.last_error is not None and "owner" in row.last_error


# --- SQLite: due dates the host wrote as text ----------------------------------------------------


def test_sqlite_due_dates_written_naive_or_in_other_iso_spellings_are_read_as_utc(
    tmp_path: Path,
) -> None:
    """On SQLite a naive due date is UTC, and any ISO spelling of an instant is that instant:
    each task in the window gets one reminder with the right key, the past one none."""
    url = f"sqlite:///{tmp_path}/host.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    command_line = CommandLine(engine, url, tmp_path)
    now = utc_now()
    ahead = now + 2 * HOUR
    spellings = {
        1: ahead.strftime("%Y-%m-%d %H:%M:%S"),  # naive, as many ORMs write it
        2: ahead.strftime("%Y-%m-%dT%H:%M:%S"),  # naive ISO 8601
        3: ahead.strftime("%Y-%m-%dT%H:%M:%SZ"),
        4: ahead.astimezone(BERLIN).isoformat(),  # with an offset
        5: (now - 2 * HOUR).strftime("%Y-%m-%dT%H:%M:%S"),  # in the past, 'T' spelling
    }
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (id, email) VALUES (1, 'ada@example.com')"))
        for task_id, spelled in spellings.items():
            connection.execute(
                text("INSERT INTO tasks (id, owner_id, title, due_date) VALUES (:id, 1, 't', :d)"),
                {"id": task_id, "d": spelled},
            )
    env = command_line.env(REMINDERS_CHANNEL="console")
    command_line.ok(env, "scan")
    relay = command_line.run(env, "relay")
    assert relay.returncode == 0, relay.stderr
    printed = [line for line in relay.stdout.splitlines() if line.startswith("reminder to")]
    expected = sorted(reminder_key(task_id, ahead) for task_id in (1, 2, 3, 4))
    assert sorted(line.rsplit("key ", 1)[1].rstrip(")") for line in printed) == expected
    assert set(command_line.outbox()) == set(expected)
    engine.dispose()


# --- configuration an operator can get wrong --------------------------------------------------

CONFIG_ERRORS = [
    ("REMINDERS_SCAN_SCHEDULE", {"REMINDERS_SCAN_SCHEDULE": "61 * * * *"}),
    ("REMINDERS_SCAN_SCHEDULE", {"REMINDERS_SCAN_SCHEDULE": "* * *"}),
    ("REMINDERS_SCAN_SCHEDULE", {"REMINDERS_SCAN_SCHEDULE": "@fortnightly"}),
    ("REMINDERS_WEBHOOK_SECRET", {"REMINDERS_CHANNEL": "webhook",
                                  "REMINDERS_WEBHOOK_URL": "https://hooks.example.com/r",
                                  "REMINDERS_WEBHOOK_SECRET": "too-short-s3cret"}),
    ("REMINDERS_WEBHOOK_SECRET", {"REMINDERS_CHANNEL": "webhook",
                                  "REMINDERS_WEBHOOK_URL": "https://hooks.example.com/r",
                                  "REMINDERS_WEBHOOK_SECRET": "whsec_not*base64*at*all*s3cret"}),
    ("REMINDERS_WEBHOOK_URL", {"REMINDERS_CHANNEL": "webhook",
                               "REMINDERS_WEBHOOK_URL": "http://hooks.example.com/r",
                               "REMINDERS_WEBHOOK_SECRET": "a" * 32}),
    ("REMINDERS_LOOKAHEAD", {"REMINDERS_LOOKAHEAD": "0"}),
    ("REMINDERS_LOOKAHEAD", {"REMINDERS_LOOKAHEAD": "tomorrow"}),
    ("REMINDERS_CHANNEL", {"REMINDERS_CHANNEL": "sms"}),
    ("REMINDERS_DATABASE_URL", {"REMINDERS_DATABASE_URL": "mysql://db/app"}),
    ("REMINDERS_SMTP_PORT", {"REMINDERS_SMTP_PORT": "70000"}),
    ("REMINDERS_MAX_ATTEMPTS", {"REMINDERS_MAX_ATTEMPTS": "0"}),
    ("REMINDERS_MAIL_FROM", {"REMINDERS_MAIL_FROM": "reminders@example.com\r\nBcc: x@y.z"}),
    ("REMINDERS_MAIL_FROM_NAME", {"REMINDERS_MAIL_FROM_NAME": "Reminders\r\nBcc: x@y.z"}),
    ("REMINDERS_TASK_URL", {"REMINDERS_TASK_URL": "https://app.example.com/tasks/"}),
    ("REMINDERS_TASK_URL", {"REMINDERS_TASK_URL": "javascript:alert(1)//{task_id}"}),
    ("REMINDERS_TEMPLATE_DIR", {"REMINDERS_TEMPLATE_DIR": "/nonexistent/templates"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "variables"),
    CONFIG_ERRORS,
    ids=[f"{v}={list(e.values())[-1]!r}" for v, e in CONFIG_ERRORS],
)
def test_a_bad_setting_stops_reminders_at_start_naming_it(
    variable: str, variables: dict[str, str], tmp_path: Path
) -> None:
    """`reminders scan` with a bad setting exits 2 with one line naming the variable, and never
    prints a secret."""
    env = service_env(f"sqlite:///{tmp_path}/unused.db", **variables)
    done = run_reminders(env, "scan", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], done.stderr
    assert "s3cret" not in done.stderr
    assert not (tmp_path / "unused.db").exists(), "nothing was touched"


@pytest.mark.parametrize("command", ["dramatiq", "periodiq", "reminders-run"])
def test_a_malformed_cron_expression_stops_every_long_running_process(
    command: str, tmp_path: Path
) -> None:
    """`dramatiq`, `periodiq` and `reminders run` refuse a malformed schedule at start, naming
    REMINDERS_SCAN_SCHEDULE, instead of running without a schedule."""
    import subprocess

    env = service_env(
        f"sqlite:///{tmp_path}/unused.db",
        f"redis://127.0.0.1:{free_port()}/0",
        REMINDERS_SCAN_SCHEDULE="*/0 * * * *",
    )
    args = {
        "dramatiq": [str(BIN / "dramatiq"), "worker.actors", "--processes", "1", "--threads", "1"],
        "periodiq": [str(BIN / "periodiq"), "worker.actors"],
        "reminders-run": [str(BIN / "reminders"), "run"],
    }[command]
    done = subprocess.run(
        args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "REMINDERS_SCAN_SCHEDULE" in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("command", ["reminders-scan", "dramatiq", "periodiq", "reminders-run"])
def test_a_broken_message_template_stops_every_process_naming_its_line(
    command: str, tmp_path: Path
) -> None:
    """A template in REMINDERS_TEMPLATE_DIR that does not compile, or names a variable the
    renderer does not give, stops every process at start: exit 2, one line naming the file
    and the line, nothing touched."""
    import subprocess

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "body.html").write_text("<p>{{ title }}</p>\n<p>{{ owner.name }}</p>\n")
    (templates / "subject.txt").write_text("{{ short_title }\n" if "run" in command else
                                           "{{ short_title }}\n")  # fmt: skip
    env = service_env(
        f"sqlite:///{tmp_path}/unused.db",
        f"redis://127.0.0.1:{free_port()}/0",
        REMINDERS_TEMPLATE_DIR=str(templates),
    )
    args = {
        "reminders-scan": [str(BIN / "reminders"), "scan"],
        "dramatiq": [str(BIN / "dramatiq"), "worker.actors", "--processes", "1", "--threads", "1"],
        "periodiq": [str(BIN / "periodiq"), "worker.actors"],
        "reminders-run": [str(BIN / "reminders"), "run"],
    }[command]
    done = subprocess.run(
        args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr[-3000:]
    named = [line for line in done.stderr.splitlines() if "REMINDERS_TEMPLATE_DIR" in line]
    assert len(named) == 1, done.stderr[-3000:]
    if "run" in command:
        assert f"{templates / 'subject.txt'}, line 1: unexpected '}}'" in named[0]
    else:
        assert f"{templates / 'body.html'}, line 2: 'owner' is undefined" in named[0]
    assert not (tmp_path / "unused.db").exists(), "nothing was touched"


@pytest.mark.postgres
def test_a_postgres_url_without_a_driver_is_taken_as_postgresql(
    db: Engine, postgres_url: str, tmp_path: Path
) -> None:
    """`postgres://` and `postgresql://` URLs, as hosting platforms hand them out, reach
    PostgreSQL through psycopg 3: scan and relay work, and `config` hides the password."""
    add_users(db, [(1, "ada@example.com", "UTC", True)])
    add_tasks(db, [(1, 1, "task 1", utc_now() + HOUR, None)])
    plain = make_url(postgres_url).set(drivername="postgresql", password="s3cret")
    with_password = plain.render_as_string(hide_password=False)
    short = with_password.replace("postgresql://", "postgres://", 1)

    scanned = run_reminders(service_env(short), "scan", cwd=tmp_path)
    assert scanned.returncode == 0, scanned.stderr
    assert scanned.stdout.startswith("queued 1 reminder(s)")
    relayed = run_reminders(service_env(with_password), "relay", cwd=tmp_path)
    assert relayed.returncode == 0, relayed.stderr
    assert "relay done: 1 delivered" in relayed.stdout
    shown = run_reminders(service_env(short), "config", "--json", cwd=tmp_path)
    assert json.loads(shown.stdout)["REMINDERS_DATABASE_URL"] == plain.set(
        drivername="postgresql+psycopg"
    ).render_as_string(hide_password=True)
    assert "s3cret" not in shown.stdout + scanned.stderr + relayed.stderr


@pytest.mark.postgres
def test_an_unreachable_smtp_host_retries_past_max_attempts_and_the_fix_delivers(
    command_line: CommandLine, smtp: SmtpReceiver
) -> None:
    """A wrong SMTP host: rows retry with the connection error, past the attempts (their tasks
    are still ahead, so they stay useful), and once the operator fixes the host the next relay
    delivers each exactly once, no replay needed."""
    now = utc_now()
    command_line.add_users([(1, "ada@example.com", "UTC", True)])
    command_line.add_tasks([(i, 1, f"task {i}", now + i * HOUR, None) for i in (1, 2, 3)])
    wrong = command_line.env(
        REMINDERS_CHANNEL="smtp", REMINDERS_SMTP_HOST="127.0.0.1",
        REMINDERS_SMTP_PORT=str(free_port()), REMINDERS_MAX_ATTEMPTS="1",
        REMINDERS_RETRY_BASE="10ms", REMINDERS_RETRY_CAP="10ms",
    )  # fmt: skip
    command_line.ok(wrong, "scan")
    # The first run's retries are due (10 ms) by the time a second process has started.
    runs = [command_line.run(wrong, "relay") for _ in range(2)]
    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    stdout = "".join(run.stdout for run in runs)
    outcomes = [line.split()[0] for line in stdout.splitlines() if "#" in line]
    assert sorted(outcomes) == ["retry"] * 6, stdout
    assert "SMTP connection to 127.0.0.1" in stdout
    rows = command_line.outbox()
    assert {(r.status, r.attempts) for r in rows.values()} == {(Status.FAILED, 2)}
    assert all("Connection refused" in (r.last_error or "") for r in rows.values())

    fixed = command_line.env(smtp)
    command_line.ok(fixed, "relay")
    assert sorted(smtp.received().values()) == [1, 1, 1]
    assert set(smtp.received()) == set(rows)
    assert all(str(h["Message-ID"]).endswith(f"@{MAIL_DOMAIN}>") for h in smtp.headers())
