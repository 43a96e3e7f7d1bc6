"""Quiet hours and digests through the real processes: `reminders prefs set`, the real
`dramatiq worker.actors` ticked each second, a real SMTP server, this test's own database.

Time is not faked: the windows are placed a few minutes from now, in whole minutes of each
user's zone. A quiet user's reminders whose moments fall in a window that covers now arrive
only once the window ends, within seconds of it; a digest user's reminders arrive as one
message at the next slot, listing every task still open and none alone.
"""

from __future__ import annotations

import email.parser
import email.policy
import time
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from tests.acceptance.deployment import Deployment
from tests.acceptance.harness import SmtpReceiver, outbox, run_reminders, utc_now, wait_until
from worker.reminders.digest_slots import digest_key
from worker.reminders.digest_store import in_digest
from worker.reminders.due import DEFAULT_LOOKAHEAD
from worker.reminders.keys import reminder_key

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

QUIET_USER, DIGEST_USER = 1, 2
QUIET_ZONE, DIGEST_ZONE = "Europe/Paris", "Asia/Kolkata"  # whole-minute offsets
#: How soon after the window's end, or the digest's slot, its mail must be accepted: the
#: ticker sweeps every second.
WITHIN = 10.0
_PARSER = email.parser.BytesParser(policy=email.policy.default)


def mails(smtp: SmtpReceiver) -> list[tuple[float, EmailMessage]]:
    """Each accepted message, parsed, with when it was accepted."""
    return [(mail.received_at, _PARSER.parsebytes(mail.raw)) for mail in list(smtp.messages)]


def minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def hhmm(at: datetime, zone: str) -> str:
    return at.astimezone(ZoneInfo(zone)).strftime("%H:%M")


def plain_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None, message
    return str(body.get_content())


def test_quiet_hours_hold_reminders_to_the_window_end_and_a_digest_goes_out_once(
    deployment: Deployment, smtp: SmtpReceiver
) -> None:
    """Two reminders meant inside a quiet window are mailed only after it ends, both within
    seconds of it; three reminders of a digest user are mailed as one digest at its slot,
    never alone, and a task completed before the slot is left out of it."""
    now = utc_now()
    # Whole minutes: the window covers now and ends two to three minutes later; the slot
    # falls at least a minute and a half from now, so every reminder is merged before it.
    window_start = minute(now)
    window_end = window_start + timedelta(minutes=3)
    slot = minute(now) + timedelta(minutes=2 if now.second < 30 else 3)
    deployment.add_users(
        [
            (QUIET_USER, "quiet@example.com", QUIET_ZONE, True),
            (DIGEST_USER, "digest@example.com", DIGEST_ZONE, True),
        ]
    )
    env = deployment.env(smtp)
    quiet = f"{hhmm(window_start, QUIET_ZONE)}-{hhmm(window_end, QUIET_ZONE)}"
    for user, option, value in (
        (QUIET_USER, "--quiet", quiet),
        (DIGEST_USER, "--digest", hhmm(slot, DIGEST_ZONE)),
    ):
        done = run_reminders(
            env, "prefs", "set", "--user", str(user), option, value, cwd=deployment.procs.cwd
        )
        assert done.returncode == 0, done.stdout + done.stderr

    # The quiet user's reminders are meant 20 s and 40 s from now (the built-in rule: a day
    # before the task is due), inside the window; their tasks fall due long after it.
    quiet_due = {11: now + DEFAULT_LOOKAHEAD + timedelta(seconds=20),
                 12: now + DEFAULT_LOOKAHEAD + timedelta(seconds=40)}  # fmt: skip
    # The digest user's are meant already (their tasks due within the day).
    titles = {21: "water the ficus", 22: "renew the passport", 23: "call the plumber",
              24: "return the library book"}  # fmt: skip
    digest_due = {task: now + timedelta(hours=task - 20) for task in titles}
    deployment.add_tasks(
        [(t, QUIET_USER, f"quiet task {t}", due, None) for t, due in quiet_due.items()]
        + [(t, DIGEST_USER, titles[t], due, None) for t, due in digest_due.items()]
    )
    quiet_keys = {reminder_key(t, due) for t, due in quiet_due.items()}
    member_keys = {t: reminder_key(t, due) for t, due in digest_due.items()}
    digest = digest_key(DIGEST_USER, slot)

    worker = deployment.procs.dramatiq(env)
    with deployment.ticker():
        # Every digest member merged: its own row cancelled "in digest <key>", before the slot.
        def merged() -> bool:
            rows = outbox(deployment.db)
            return all(
                k in rows and rows[k].last_error == in_digest(digest) for k in member_keys.values()
            )

        wait_until(merged, "the digest user's reminders merged", alive=[worker], timeout=60)
        assert time.time() < slot.timestamp(), "merged after the slot: the test is too slow"
        with deployment.db.begin() as connection:
            connection.execute(text("UPDATE tasks SET completed_at = now() WHERE id = 24"))

        def received(keys: set[str]) -> bool:
            return keys <= {str(m["X-Reminder-Key"]) for _, m in mails(smtp)}

        latest = max(window_end, slot).timestamp() + WITHIN
        wait_until(
            lambda: received({*quiet_keys, digest}),
            "the held reminders and the digest mailed",
            alive=[worker],
            timeout=latest - time.time(),
        )
        # Once every row is settled and none is claimed, nothing more is being mailed: a
        # duplicate shows below.
        deployment.wait_settled({*quiet_keys, digest}, "the rows delivered", alive=[worker])
        wait_until(
            lambda: all(row.status != "claimed" for row in outbox(deployment.db).values()),
            "no row in the middle of a send",
            alive=[worker],
        )
    assert worker.terminate() == 0, worker.log()

    by_key: dict[str, list[tuple[float, EmailMessage]]] = {}
    for at, message in mails(smtp):
        by_key.setdefault(str(message["X-Reminder-Key"]), []).append((at, message))
    assert set(by_key) == {*quiet_keys, digest}, sorted(by_key)
    assert all(len(found) == 1 for found in by_key.values()), {k: len(v) for k, v in by_key.items()}
    for key in quiet_keys:
        at = by_key[key][0][0]
        assert window_end.timestamp() <= at <= window_end.timestamp() + WITHIN, (key, at)
    at, message = by_key[digest][0]
    assert slot.timestamp() <= at <= slot.timestamp() + WITHIN, at
    assert str(message["To"]) == "digest@example.com"
    assert message["X-Reminder-Count"] == "3"
    body = plain_text(message)
    for task in (21, 22, 23):
        assert titles[task] in body, body
    assert titles[24] not in body, body
    rows = outbox(deployment.db)
    assert rows[digest].status == "delivered"
    assert all(rows[k].status == "cancelled" for k in member_keys.values())
