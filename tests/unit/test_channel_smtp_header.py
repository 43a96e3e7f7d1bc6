"""The SMTP channel's header fields, built with its cached header classes, are byte for byte
the fields the email package's stock registry builds."""

from __future__ import annotations

from datetime import timedelta
from email import policy

import pytest

from outbox.channels import smtp
from outbox.channels.base import Message
from outbox.channels.smtp import SmtpChannel
from tests.support.clock import ManualClock

LONG_TITLE = "Überprüfung der Quartalszahlen für das Projekt « Nordlicht » " * 3


def messages() -> list[tuple[Message, bool]]:
    """(message, international): plain, folded and encoded, international."""
    headers = {
        "Message-ID": "<rk-1@reminders.test>",
        "X-Reminder-Key": "rk-1",
        "X-Task-Id": "42",
        "List-Unsubscribe": "<https://reminders.example.com/unsubscribe/TOKEN>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return [
        (
            Message("rk-1", "alice@example.com", "Reminder: file taxes", "text", None, headers),
            False,
        ),
        (Message("rk-1", "bob@example.com", LONG_TITLE, "texte", "<p>html</p>", headers), False),
        (Message("rk-1", "émile@exämple.com", LONG_TITLE, "texte", None, headers), True),
    ]


@pytest.mark.parametrize(("message", "international"), messages())
def test_the_header_is_the_stock_registrys(
    message: Message, international: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def rendered() -> bytes:
        channel = SmtpChannel(
            "127.0.0.1", 25, mail_from="reminders@example.com", mail_from_name="Rappels",
            timeout=5, clock=ManualClock(),
        )  # fmt: skip
        data = channel._render(message, international)
        return data.partition(b"MIME-Version: ")[0]  # the body's MIME boundary is random

    ours = [rendered(), rendered()]  # the second with every class already built
    stock = policy.SMTP.clone(raise_on_defect=True)
    monkeypatch.setattr(smtp, "_POLICY", stock)
    monkeypatch.setattr(smtp, "_UTF8_POLICY", stock.clone(utf8=True))
    smtp._to_field.cache_clear()
    assert type(smtp._POLICY.header_factory) is not smtp._HeaderClasses
    assert ours == [rendered(), rendered()]


def test_the_date_field_follows_the_clock_to_the_second() -> None:
    clock = ManualClock()
    channel = SmtpChannel(
        "127.0.0.1", 25, mail_from="reminders@example.com", timeout=5, clock=clock
    )
    message = messages()[0][0]

    def date() -> bytes:
        return next(
            line
            for line in channel._render(message, False).splitlines()
            if line.startswith(b"Date:")
        )

    first = date()
    clock.advance(timedelta(milliseconds=999))
    assert date() == first == b"Date: Sat, 28 Nov 2026 12:00:00 +0000"
    clock.advance(timedelta(milliseconds=1))
    assert date() == b"Date: Sat, 28 Nov 2026 12:00:01 +0000"
