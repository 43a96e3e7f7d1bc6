"""The example reminder of docs/messages.md, rendered by the real renderer and SMTP channel.

``python -m tests.support.message_example`` rewrites the example blocks of the page;
`tests/unit/test_message_docs.py` fails when the page and the renderer disagree. A block is
a fenced code block between ``<!-- example:NAME -->`` and ``<!-- /example -->``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from outbox.channels.base import Message
from outbox.channels.smtp import SmtpChannel
from tests.support.clock import ManualClock
from worker.reminders.render import OwnerFacts, ReminderRenderer, TaskFacts

PAGE = Path(__file__).resolve().parents[2] / "docs" / "messages.md"
TASK = TaskFacts(42, "File the VAT return", datetime(2026, 11, 30, 16, 0, tzinfo=UTC), True)
TASK_URL = "https://app.example.com/tasks/{task_id}"
KEY = "due_soon-42-20261130T160000Z"
_BLOCK = re.compile(r"(<!-- example:(\w+) -->\n```\w*\n)(.*?)(```\n<!-- /example -->)", re.S)


class ExampleLinks:
    """Links shaped like signed ones (the token is a stand-in)."""

    def unsubscribe(self, user_id: int, key: str) -> str:
        """The example unsubscribe URL."""
        return "https://reminders.example.com/unsubscribe/TOKEN"

    def snooze(self, user_id: int, key: str, delay: timedelta) -> str:
        """The example snooze URL for ``delay``."""
        return f"https://reminders.example.com/snooze/TOKEN-{int(delay.total_seconds())}"


def examples() -> dict[str, str]:
    """Each example block's text, by name."""
    renderer = ReminderRenderer("example.com", task_url=TASK_URL)
    owner = OwnerFacts(7, "ada@example.com", "Europe/Paris", True, "en")
    english = renderer.render(KEY, TASK, owner)
    french = renderer.render(KEY, TASK, owner._replace(locale="fr_FR"))
    linked = ReminderRenderer("example.com", task_url=TASK_URL, links=ExampleLinks())
    with_links = linked.render(KEY, TASK, owner)
    assert english.html is not None
    return {
        "headers": headers(english),
        "text": english.text,
        "html": english.html,
        "subject_fr": french.subject + "\n",
        "text_fr": french.text,
        "text_links": with_links.text,
        "headers_links": "".join(
            f"{name}: {with_links.headers[name]}\n"
            for name in ("List-Unsubscribe", "List-Unsubscribe-Post")
        ),
    }


def headers(message: Message) -> str:
    """The header block the SMTP channel sends for ``message`` (the MIME boundary fixed)."""
    channel = SmtpChannel(
        "localhost", 25, mail_from="reminders@example.com", mail_from_name="Reminders",
        timeout=1, clock=ManualClock(datetime(2026, 11, 29, 16, 0, tzinfo=UTC)),
    )  # fmt: skip
    head = channel._render(message, international=False).split(b"\r\n\r\n", 1)[0]
    fixed = re.sub(r'boundary="[^"]+"', 'boundary="BOUNDARY"', head.decode("ascii"))
    return fixed.replace("\r\n", "\n") + "\n"


def rewrite(page: str) -> str:
    """``page`` with every example block replaced by what the renderer gives now."""
    found = examples()

    def fill(match: re.Match[str]) -> str:
        return match.group(1) + found[match.group(2)] + match.group(4)

    return _BLOCK.sub(fill, page)


def block_names(page: str) -> list[str]:
    """The names of the example blocks of ``page``, in order."""
    return [match.group(2) for match in _BLOCK.finditer(page)]


if __name__ == "__main__":
    PAGE.write_text(rewrite(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
