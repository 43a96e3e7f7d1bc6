"""A reminder's content, rendered as data for every channel.

Titles, addresses, locales and time zones come from the host application's rows: they are
data. They go into a subject (one line, bounded), a text part, an HTML part (escaped), a
JSON document and a console line; never into a header name, markup or a format string.
The words come from the templates (`worker.reminders.templates`) in the recipient's
language (`worker.reminders.languages`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from outbox.channels.base import Message
from outbox.masking import mask_email, one_line
from worker.reminders.languages import LANGUAGES, Language, language_for
from worker.reminders.links import LinkMaker, snooze_links
from worker.reminders.signed_links import links_for
from worker.reminders.templates import TemplateProblem, Templates, load_templates
from worker.settings import Settings

log = structlog.get_logger("worker.reminders.render")

SUBJECT_TITLE_LIMIT = 120
SUBJECT_LIMIT = 200
#: The channels that post a reminder's JSON document and none of its worded parts.
DOCUMENT_CHANNELS = frozenset({"webhook"})
#: How many titles a digest's console line names before "and N more".
LINE_TITLES = 5
#: The placeholder of ``REMINDERS_TASK_URL``.
TASK_ID = "{task_id}"


def owner_zone(name: str | None, *, user_id: int) -> tzinfo:
    """The owner's time zone, or UTC (logged) when the name is empty or unknown."""
    try:
        if name and name.strip():
            return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        pass
    log.warning("unknown_timezone", user_id=user_id, timezone=(name or "")[:64], fallback="UTC")
    return UTC


def local_due(due_date: datetime, zone: tzinfo, language: Language | None = None) -> str:
    """The due time as the owner reads it, in their language (English by default):
    'Sun, Mar 29, 2026, 3:30 AM CEST (UTC+02:00)'."""
    return (language or language_for(None)).due(due_date.astimezone(zone))


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


class DigestItem(NamedTuple):
    """One member of a digest as re-checked at send time: its key, its task (``due_date``:
    the due moment it was queued for) and whether it is listed as overdue."""

    key: str
    task: TaskFacts
    overdue: bool


class DigestLine(NamedTuple):
    """One task's line in a digest, as the templates see it."""

    task_id: int
    title: str  # the task's title, as the host wrote it
    short_title: str  # the title on one line, bounded
    due: str  # the due time in the recipient's zone and language
    due_date: datetime  # aware, in the recipient's zone
    task_url: str | None
    overdue: bool
    keys: tuple[str, ...]  # the members listed on this line


class OwnerFacts(NamedTuple):
    """What a reminder needs of the task's owner."""

    id: int
    email: str
    timezone: str | None
    wants_reminders: bool  # `owner_wants_reminders`, evaluated by the database
    locale: str | None = None


@dataclass(frozen=True)
class ReminderRenderer:
    """Renders one reminder for every channel from the task and its owner.

    ``task_url`` is ``REMINDERS_TASK_URL`` (with its ``{task_id}`` placeholder); ``links``
    makes the unsubscribe and snooze links, and without it a reminder has neither.
    Without ``worded`` a reminder or a digest carries only its JSON document (and a
    reminder its title as subject), for a channel that posts the document (a webhook): the
    templates, the due time in words, the headers and the console line, which are most of a
    send's preparation, are not made for parts nobody reads.
    """

    mail_domain: str
    templates: Templates = field(default_factory=lambda: load_templates(None))
    task_url: str | None = None
    links: LinkMaker | None = None
    worded: bool = True

    def render(
        self, key: str, task: TaskFacts, owner: OwnerFacts, *, overdue: bool = False
    ) -> Message:
        """The message for ``task``'s reminder under idempotency key ``key``; ``overdue`` for
        a nudge after the due moment."""
        assert task.due_date is not None  # the re-check cancels undated tasks first
        title = short_line(task.title, SUBJECT_TITLE_LIMIT)
        document = _reminder_document(key, task, owner, overdue=overdue)
        if not self.worded:
            return Message(
                key=key, recipient=owner.email, subject=title, text="", document=document
            )
        language = language_for(owner.locale)
        local = task.due_date.astimezone(owner_zone(owner.timezone, user_id=owner.id))
        due_text = language.due(local)
        links = self.links
        unsubscribe = None if links is None else links.unsubscribe(owner.id, key)
        context: dict[str, Any] = {
            "key": key,
            "task_id": task.id,
            "title": task.title,
            "short_title": title,
            "due": due_text,
            "due_date": local,
            "task_url": self._task_url(task.id),
            "unsubscribe_url": unsubscribe,
            "snooze_links": [] if links is None else snooze_links(links, owner.id, key),
            "overdue": overdue,
        }
        headers = {
            "Message-ID": f"<{key}@{self.mail_domain}>",
            "X-Reminder-Key": key,
            "X-Task-Id": str(task.id),
            "Auto-Submitted": "auto-generated",  # RFC 3834: auto-responders do not answer
            "X-Auto-Response-Suppress": "OOF, AutoReply",  # the same for Exchange
            "List-Id": f"<reminders.{self.mail_domain}>",
        }
        if unsubscribe is not None:  # RFC 8058 one-click unsubscribe
            headers["List-Unsubscribe"] = f"<{unsubscribe}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        parts = self.templates.render(language, context)
        return Message(
            key=key,
            recipient=owner.email,
            subject=short_line(parts.subject, SUBJECT_LIMIT),
            text=parts.text,
            html=parts.html,
            headers=headers,
            document=document,
            line=(
                f"reminder to {mask_email(owner.email)}: {title!r} "
                f"{'was' if overdue else 'is'} due {due_text} "
                f"(task {task.id}, key {key})"
            ),
        )

    def render_digest(
        self, key: str, slot: datetime, items: Sequence[DigestItem], owner: OwnerFacts
    ) -> Message:
        """The message of the digest under ``key`` due at ``slot``: one line per task of
        ``items`` (a task with several members once; overdue if any of them is), overdue
        ones first, each group by due time. Without ``worded``: its document only, as for a
        reminder."""
        language = language_for(owner.locale)
        zone = owner_zone(owner.timezone, user_id=owner.id)
        lines = _digest_lines(items, zone, language, self._task_url)
        overdue = [line for line in lines if line.overdue]
        due_soon = [line for line in lines if not line.overdue]
        document = {
            "type": "digest",
            "key": key,
            "owner_id": owner.id,
            "slot": _utc_text(slot),
            "reminders": [_line_document(line) for line in [*overdue, *due_soon]],
        }
        if not self.worded:
            return Message(key=key, recipient=owner.email, subject="", text="", document=document)
        unsubscribe = None if self.links is None else self.links.unsubscribe(owner.id, key)
        headers = {
            "Message-ID": f"<{key}@{self.mail_domain}>",
            "X-Reminder-Key": key,
            "X-Reminder-Count": str(len(lines)),
            "Auto-Submitted": "auto-generated",
            "X-Auto-Response-Suppress": "OOF, AutoReply",
            "List-Id": f"<reminders.{self.mail_domain}>",
        }
        if unsubscribe is not None:
            headers["List-Unsubscribe"] = f"<{unsubscribe}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        local_slot = slot.astimezone(zone)
        context: dict[str, Any] = {
            "key": key,
            "count": len(lines),
            "overdue": overdue,
            "due_soon": due_soon,
            "slot": language.due(local_slot),
            "slot_date": local_slot,
            "unsubscribe_url": unsubscribe,
        }
        parts = self.templates.render_digest(language, context)
        named = ", ".join(repr(line.short_title[:40]) for line in lines[:LINE_TITLES])
        more = len(lines) - LINE_TITLES
        return Message(
            key=key,
            recipient=owner.email,
            subject=short_line(parts.subject, SUBJECT_LIMIT),
            text=parts.text,
            html=parts.html,
            headers=headers,
            document=document,
            line=(
                f"digest to {mask_email(owner.email)}: {len(lines)} tasks, "
                f"{len(overdue)} overdue: {named}"
                + (f" and {more} more" if more > 0 else "")
                + f" (key {key})"
            ),
        )

    def check(self) -> None:
        """Render a sample reminder and a sample digest in every shipped language, with and
        without links.

        Raises:
            TemplateProblem: a template fails, naming its file and line.
        """
        sample = TaskFacts(42, "Sample task <&>", datetime(2026, 11, 28, 12, 0, tzinfo=UTC), True)
        with_links = ReminderRenderer(
            self.mail_domain, self.templates, self.task_url or "https://example.invalid/{task_id}",
            _SampleLinks(), worded=True,
        )  # fmt: skip
        for renderer in (self, with_links):
            for code in LANGUAGES:
                owner = OwnerFacts(7, "sample@example.invalid", "Europe/Paris", True, code)
                items = [
                    DigestItem("due_soon-42-sample", sample, overdue=False),
                    DigestItem("due_soon-43-sample", sample._replace(id=43), overdue=True),
                ]
                try:
                    renderer.render("due_soon-42-sample", sample, owner)
                    renderer.render("due_soon-42-sample-o-86400", sample, owner, overdue=True)
                    assert sample.due_date is not None
                    renderer.render_digest("digest-7-sample", sample.due_date, items, owner)
                except TemplateProblem:
                    raise
                except Exception as error:  # any failure of a template is the template's
                    raise self.templates.problem(error) from None

    def _task_url(self, task_id: int) -> str | None:
        return None if self.task_url is None else task_link(self.task_url, task_id)


def _digest_lines(
    items: Sequence[DigestItem],
    zone: tzinfo,
    language: Language,
    task_url: Callable[[int], str | None],
) -> list[DigestLine]:
    by_task: dict[int, list[DigestItem]] = {}
    for item in items:
        by_task.setdefault(item.task.id, []).append(item)
    lines = []
    for task_id, found in by_task.items():
        task = found[0].task
        assert task.due_date is not None  # the re-check leaves out undated tasks
        local = task.due_date.astimezone(zone)
        lines.append(
            DigestLine(
                task_id,
                task.title,
                short_line(task.title, SUBJECT_TITLE_LIMIT),
                language.due(local),
                local,
                task_url(task_id),
                any(item.overdue for item in found),
                tuple(item.key for item in found),
            )
        )
    return sorted(lines, key=lambda line: (not line.overdue, line.due_date, line.task_id))


def _reminder_document(
    key: str, task: TaskFacts, owner: OwnerFacts, *, overdue: bool
) -> dict[str, Any]:
    assert task.due_date is not None  # the caller's to check
    return {
        "type": "task.overdue" if overdue else "task.due_soon",
        "key": key,
        "task_id": task.id,
        "owner_id": owner.id,
        "title": task.title,
        "due_date": _utc_text(task.due_date),
    }


def _line_document(line: DigestLine) -> dict[str, Any]:
    return {
        "type": "task.overdue" if line.overdue else "task.due_soon",
        "key": line.keys[0],
        "keys": list(line.keys),
        "task_id": line.task_id,
        "title": line.title,
        "due_date": _utc_text(line.due_date),
    }


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def task_link(template: str, task_id: object) -> str:
    """``REMINDERS_TASK_URL`` for one task: its id, URL-encoded, in place of ``{task_id}``."""
    return template.replace(TASK_ID, quote(str(task_id), safe=""))


class _SampleLinks:
    """Links for the sample render, so that the templates' link branches are checked too."""

    def unsubscribe(self, user_id: int, key: str) -> str:
        return f"https://example.invalid/unsubscribe/{user_id}/{key}"

    def snooze(self, user_id: int, key: str, delay: timedelta) -> str:
        return f"https://example.invalid/snooze/{user_id}/{key}/{int(delay.total_seconds())}"


_warned: list[bool] = []


def renderer_for(settings: Settings, links: LinkMaker | None = None) -> ReminderRenderer:
    """The renderer the settings describe, its templates compiled and checked on a sample.

    Without ``links``, reminders carry the signed links of ``REMINDERS_PUBLIC_URL`` when it
    is set (`worker.reminders.signed_links`), and none otherwise.

    Logs one warning per process when SMTP mail goes out with ``localhost`` as its domain.

    Raises:
        TemplateProblem: a template fails to compile or to render the sample.
    """
    directory = None if settings.template_dir is None else Path(settings.template_dir).resolve()
    renderer = ReminderRenderer(
        settings.mail_domain,
        load_templates(directory),
        settings.task_url,
        links if links is not None else links_for(settings),
        worded=settings.channel not in DOCUMENT_CHANNELS,
    )
    renderer.check()
    if settings.channel == "smtp" and settings.mail_domain == "localhost" and not _warned:
        _warned.append(True)
        log.warning(
            "mail_domain_is_localhost",
            hint="set REMINDERS_MAIL_DOMAIN to your domain: Message-IDs and List-Id use it",
        )
    return renderer
