"""The raw channel: the same messages sent by a plain loop, with no database at all.

SMTP: ``smtplib`` on one connection, each message built with ``email`` with the headers the
contract gives a reminder (Message-ID, X-Reminder-Key, X-Task-Id, Date) and sent.
Webhook: one ``httpx.Client`` (keep-alive), each document dumped to JSON and posted with the
contract's Standard Webhooks headers, signed (HMAC-SHA256) like the relay's.
This is the floor of what any sender of these messages pays; the relay adds the outbox.
"""

from __future__ import annotations

import functools
import json
import smtplib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, NamedTuple

import httpx

from benchmarks.common import MAIL, WEBHOOK_SECRET, timed_together
from outbox.signing import signature_header


class Item(NamedTuple):
    """What one reminder carries, as the relay would send it."""

    task_id: int
    email: str
    title: str
    due: str


def items(count: int) -> list[Item]:
    """``count`` reminders like the relay benchmark's tasks."""
    start = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
    return [
        Item(i, f"user{1 + i % max(count // 10, 10)}@example.com",
             f"task {i}: prepare the quarterly report",
             (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"))
        for i in range(1, count + 1)
    ]  # fmt: skip


def smtp_loop(port: int, batch: Sequence[Item]) -> None:
    """Send ``batch`` through one SMTP connection."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for item in batch:
            mail = EmailMessage(policy=policy.SMTP)
            mail["From"] = MAIL["mail_from"]
            mail["To"] = item.email
            mail["Subject"] = f"Reminder: {item.title} is due {item.due}"
            mail["Date"] = format_datetime(datetime.now(UTC))
            mail["Message-ID"] = f"<raw-{item.task_id}@{MAIL['mail_domain']}>"
            mail["X-Reminder-Key"] = f"raw-{item.task_id}"
            mail["X-Task-Id"] = str(item.task_id)
            mail.set_content(f"Your task is due soon.\n\nTask: {item.title}\nDue:  {item.due}\n")
            smtp.sendmail(MAIL["mail_from"], [item.email], mail.as_bytes())


def webhook_loop(client: httpx.Client, url: str, batch: Sequence[Item]) -> None:
    """Post ``batch`` through ``client``, which keeps its connection alive."""
    with client:
        for item in batch:
            document = {
                "type": "task.due_soon", "key": f"raw-{item.task_id}", "task_id": item.task_id,
                "owner_id": 1, "title": item.title, "due_date": item.due,
            }  # fmt: skip
            body = json.dumps(document, separators=(",", ":")).encode()
            key, timestamp = str(document["key"]), int(time.time())
            headers = {
                "Content-Type": "application/json",
                "webhook-id": key,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header([WEBHOOK_SECRET], key, timestamp, body),
                "Idempotency-Key": key,
            }
            response = client.post(url, content=body, headers=headers)
            response.raise_for_status()


def raw_seconds(channel: str, endpoints: dict[str, Any], count: int, threads: int = 1) -> float:
    """Seconds to send ``count`` messages raw on ``channel`` over ``threads`` connections.

    The HTTP clients are built before the clock starts (building one loads the CA bundle,
    tens of milliseconds), as the relay's channels are: both are timed from their first
    connection on.
    """
    all_items = items(count)
    shares = [all_items[i::threads] for i in range(threads)]
    works: list[Callable[[], None]]
    if channel == "smtp":
        works = [functools.partial(smtp_loop, endpoints["smtp_port"], s) for s in shares]
    else:
        url = endpoints["webhook_url"]
        works = [functools.partial(webhook_loop, httpx.Client(timeout=30), url, s) for s in shares]
    return timed_together(works)
