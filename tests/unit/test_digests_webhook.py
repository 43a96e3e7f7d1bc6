"""A digest on the webhook: the exact document it posts and the console line beside it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import jinja2
import pytest

from outbox.channels.base import Message
from outbox.channels.webhook import WebhookChannel
from worker.reminders.render import (
    DigestItem,
    OwnerFacts,
    ReminderRenderer,
    TaskFacts,
    renderer_for,
)
from worker.settings import load_settings

HOUR = timedelta(hours=1)
SLOT = datetime(2026, 3, 29, 16, 0, tzinfo=UTC)  # 18:00 in Berlin, the day clocks go forward
KEY = "digest-3-20260329T160000Z"
OWNER = OwnerFacts(3, "grace@example.com", "Europe/Berlin", True, "fr")
SECRET = "whsec_cmVtaW5kZXJzLXRlc3Qta2V5LTMyLWJ5dGVzLWxvbmc="
WEBHOOK = load_settings(
    channel="webhook", webhook_url="https://hooks.test/in", webhook_secret="x" * 32
)

#: The body the webhook posts for `sample`, as it was when the templates were still rendered
#: for it: the document must not change by a byte when they no longer are.
BODY = (
    '{"type":"digest","key":"digest-3-20260329T160000Z","owner_id":3,'
    '"slot":"2026-03-29T16:00:00Z","reminders":['
    '{"type":"task.overdue","key":"overdue-14","keys":["overdue-14"],"task_id":14,'
    '"title":"Backup\\u0000 <b>now</b>","due_date":"2026-03-28T23:30:00Z"},'
    '{"type":"task.overdue","key":"due_soon-12-b","keys":["due_soon-12-b","due_soon-12-a"],'
    '"task_id":12,"title":"Zahlung für März","due_date":"2026-03-29T00:30:00Z"},'
    '{"type":"task.due_soon","key":"due_soon-11","keys":["due_soon-11"],"task_id":11,'
    '"title":"Réunion \\"budget\\"\\r\\nBcc: evil@example.com","due_date":"2026-03-29T17:00:00Z"},'
    '{"type":"task.due_soon","key":"due_soon-13","keys":["due_soon-13"],"task_id":13,'
    '"title":"écrire","due_date":"2026-03-29T17:00:00Z"},'
    '{"type":"task.due_soon","key":"due_soon-15","keys":["due_soon-15"],"task_id":15,'
    '"title":"t15","due_date":"2026-03-29T18:00:00Z"},'
    '{"type":"task.due_soon","key":"due_soon-16","keys":["due_soon-16"],"task_id":16,'
    '"title":"t16","due_date":"2026-03-29T19:00:00Z"},'
    '{"type":"task.due_soon","key":"due_soon-17","keys":["due_soon-17"],"task_id":17,'
    '"title":"' + "long " * 30 + '","due_date":"2026-03-29T20:00:00Z"}]}'
)
LINE = (
    "digest to g***@example.com: 7 tasks, 2 overdue: 'Backup <b>now</b>', "
    "'Zahlung für März', 'Réunion \"budget\" Bcc: evil@example.com', 'écrire', 't15' "
    "and 2 more (key digest-3-20260329T160000Z)"
)


class Links:
    """A link maker for a service with a public URL."""

    def unsubscribe(self, user_id: int, key: str) -> str:
        """The unsubscribe URL of ``user_id`` for ``key``."""
        return f"https://r.example.com/u/{user_id}/{key}?t=sig"

    def snooze(self, user_id: int, key: str, delay: timedelta) -> str:
        """The snooze URL of ``user_id`` for ``key`` and ``delay``."""
        return f"https://r.example.com/s/{user_id}/{key}/{int(delay.total_seconds())}?t=sig"


def item(key: str, task_id: int, title: str, hours: float, *, overdue: bool) -> DigestItem:
    """A member of task ``task_id``, due ``hours`` after the slot."""
    return DigestItem(key, TaskFacts(task_id, title, SLOT + hours * HOUR, True), overdue)


def sample() -> list[DigestItem]:
    """Seven tasks: two overdue (one of them a task with two members, a nudge and a
    reminder), two due at the same moment, titles with markup, quotes, control characters
    and more than a line's worth of words, in no particular order."""
    return [
        item("due_soon-11", 11, 'Réunion "budget"\r\nBcc: evil@example.com', 1, overdue=False),
        item("due_soon-12-b", 12, "Zahlung für März", -15.5, overdue=True),
        item("due_soon-13", 13, "écrire", 1, overdue=False),
        item("overdue-14", 14, "Backup\x00 <b>now</b>", -16.5, overdue=True),
        item("due_soon-12-a", 12, "Zahlung für März", -15.5, overdue=False),
        item("due_soon-15", 15, "t15", 2, overdue=False),
        item("due_soon-16", 16, "t16", 3, overdue=False),
        item("due_soon-17", 17, "long " * 30, 4, overdue=False),
    ]


def posted(message: Message) -> bytes:
    """The body the webhook channel posts for ``message``."""
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(204)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        channel = WebhookChannel("https://hooks.test/in", [SECRET], timeout=5, client=client)
        assert channel.send(message).outcome == "delivered"
    (body,) = bodies
    return body


def test_the_webhook_posts_the_digest_document_byte_for_byte() -> None:
    """Worded or not, a digest's renderer posts the same bytes: one document of type
    ``digest``, overdue tasks first, each group by due time in UTC; the worded one prints
    its line."""
    for renderer in (ReminderRenderer("example.com"), renderer_for(WEBHOOK)):
        message = renderer.render_digest(KEY, SLOT, sample(), OWNER)
        assert posted(message) == BODY.encode()
        assert message.line == (LINE if renderer.worded else "")


def test_a_webhook_digest_renders_no_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook's renderer builds a digest's document without rendering any template,
    and its message carries no worded part, no header (so no link) and no line."""
    renderer = renderer_for(WEBHOOK, Links())  # its start-up check renders samples, worded

    def no_template(*args: object, **kwargs: object) -> str:
        raise AssertionError("a template was rendered for a webhook digest")

    monkeypatch.setattr(jinja2.Template, "render", no_template)
    monkeypatch.setattr(jinja2.Template, "generate", no_template)
    with pytest.raises(AssertionError, match="a template was rendered"):
        ReminderRenderer("example.com").render_digest(KEY, SLOT, sample(), OWNER)
    message = renderer.render_digest(KEY, SLOT, sample(), OWNER)
    assert (message.subject, message.text, message.html) == ("", "", None)
    assert posted(message) == BODY.encode()
    assert (message.line, dict(message.headers)) == ("", {})
