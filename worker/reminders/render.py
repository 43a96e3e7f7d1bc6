"""A reminder's content, rendered as data for every channel.

Titles, addresses and time zones come from the host application's rows: they are data.
They go into a subject (one line, bounded), a plain-text body and a JSON document; never
into a header name, markup or a format string.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from outbox.channels.base import Message
from outbox.masking import mask_email, one_line

log = structlog.get_logger("worker.reminders.render")

SUBJECT_TITLE_LIMIT = 120


def owner_zone(name: str | None, *, user_id: int) -> tzinfo:
    """The owner's time zone, or UTC (logged) when the name is empty or unknown."""
    try:
        if name and name.strip():
            return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        pass
    log.warning("unknown_timezone", user_id=user_id, timezone=(name or "")[:64], fallback="UTC")
    return UTC


def local_due(due_date: datetime, zone: tzinfo) -> str:
    """The due time as the owner reads it: 'Sun 29 Mar 2026 03:30 CEST (UTC+02:00)'."""
    local = due_date.astimezone(zone)
    offset = local.strftime("%z")
    return f"{local:%a %d %b %Y %H:%M} {local.tzname()} (UTC{offset[:3]}:{offset[3:]})"


def short_line(text: str, limit: int) -> str:
    """``text`` on one line (control characters become spaces), cut to ``limit``."""
    flat = " ".join(one_line(text[: limit * 4]).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class TaskFacts(NamedTuple):
    """What a reminder needs of its task, read as it is at send time."""

    id: int
    title: str
    due_date: datetime | None
    open: bool  # `task_open`, evaluated by the database


class OwnerFacts(NamedTuple):
    """What a reminder needs of the task's owner."""

    id: int
    email: str
    timezone: str | None
    wants_reminders: bool  # `owner_wants_reminders`, evaluated by the database
    locale: str | None = None


@dataclass(frozen=True)
class ReminderRenderer:
    """Renders one reminder for every channel from the task and its owner."""

    mail_domain: str

    def render(self, key: str, task: TaskFacts, owner: OwnerFacts) -> Message:
        """The message for ``task``'s reminder under idempotency key ``key``."""
        assert task.due_date is not None  # the re-check cancels undated tasks first
        due_text = local_due(task.due_date, owner_zone(owner.timezone, user_id=owner.id))
        title = short_line(task.title, SUBJECT_TITLE_LIMIT)
        body = (
            f"Your task is due soon.\n\n"
            f"Task: {task.title}\n"
            f"Due:  {due_text}\n\n"
            f"You receive this because reminders are on for your account.\n"
        )
        return Message(
            key=key,
            recipient=owner.email,
            subject=f"Reminder: {title} is due {due_text}",
            text=body,
            headers={
                "Message-ID": f"<{key}@{self.mail_domain}>",
                "X-Reminder-Key": key,
                "X-Task-Id": str(task.id),
            },
            document={
                "type": "task.due_soon",
                "key": key,
                "task_id": task.id,
                "owner_id": owner.id,
                "title": task.title,
                "due_date": task.due_date.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            },
            line=(
                f"reminder to {mask_email(owner.email)}: {title!r} is due {due_text} "
                f"(task {task.id}, key {key})"
            ),
        )
