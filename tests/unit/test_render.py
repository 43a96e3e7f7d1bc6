"""Rendering: the owner's time zone (DST-correct), unknown zones, titles as data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from outbox.channels.base import Message
from tests.support.clock import T0
from worker.reminders.render import OwnerFacts, ReminderRenderer, TaskFacts, local_due, owner_zone


def render(title: str = "Pay rent", timezone: str = "UTC", due: datetime = T0) -> Message:
    """Render a reminder for one task."""
    task = TaskFacts(id=5, title=title, due_date=due, open=True)
    owner = OwnerFacts(id=9, email="ada@example.com", timezone=timezone, wants_reminders=True)
    return ReminderRenderer("mail.example.com").render("due_soon-5-X", task, owner)


@pytest.mark.parametrize(
    ("due", "zone", "expected"),
    [
        # Europe/Paris springs forward at 01:00 UTC on 29 March 2026: 02:30 local never exists.
        (
            datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
            "Europe/Paris",
            "Sun 29 Mar 2026 01:30 CET (UTC+01:00)",
        ),
        (
            datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
            "Europe/Paris",
            "Sun 29 Mar 2026 03:30 CEST (UTC+02:00)",
        ),
        # New York falls back on 1 November 2026: 01:30 local happens twice.
        (
            datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
            "America/New_York",
            "Sun 01 Nov 2026 01:30 EDT (UTC-04:00)",
        ),
        (
            datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
            "America/New_York",
            "Sun 01 Nov 2026 01:30 EST (UTC-05:00)",
        ),
        (
            datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
            "Asia/Kolkata",
            "Sat 28 Nov 2026 17:30 IST (UTC+05:30)",
        ),
    ],
)
def test_due_time_is_shown_in_the_owner_zone_across_dst(
    due: datetime, zone: str, expected: str
) -> None:
    """The same UTC instant reads right in the owner's zone, on both sides of a DST change."""
    assert local_due(due, owner_zone(zone, user_id=1)) == expected


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "   ", "../../etc/passwd"])
def test_an_unknown_zone_falls_back_to_utc(zone: str) -> None:
    """An unknown or empty zone renders in UTC instead of failing the reminder."""
    assert owner_zone(zone, user_id=1) is UTC


def test_hostile_titles_stay_out_of_headers() -> None:
    """CR/LF and header-looking text in a title become one plain subject line."""
    message = render("Lunch\r\nBcc: victim@example.net\r\n\r\n<script>x</script>")
    assert "\r" not in message.subject and "\n" not in message.subject
    assert "Bcc: victim@example.net" in message.subject
    assert set(message.headers) == {"Message-ID", "X-Reminder-Key", "X-Task-Id"}
    assert message.document["title"].startswith("Lunch\r\nBcc")


def test_long_titles_are_bounded_in_the_subject() -> None:
    """A 1 MB title gives a bounded subject; the body and webhook keep it as data."""
    message = render("x" * 1_000_000)
    assert len(message.subject) < 250


def test_the_email_gives_the_local_due_time() -> None:
    """Subject and body name the title and the due time in the owner's zone."""
    message = render("Pay rent", "Asia/Tokyo")
    assert "Sat 28 Nov 2026 21:00 JST (UTC+09:00)" in message.subject
    assert "Pay rent" in message.text
    assert message.headers["Message-ID"] == "<due_soon-5-X@mail.example.com>"
