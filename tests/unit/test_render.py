"""Rendering: the owner's zone and language, the three parts, headers, links, titles as data."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from outbox.channels.base import Message
from tests.support.clock import T0
from worker.reminders import render as render_module
from worker.reminders.languages import normalise
from worker.reminders.render import (
    OwnerFacts,
    ReminderRenderer,
    TaskFacts,
    local_due,
    owner_zone,
    renderer_for,
    task_link,
)
from worker.settings import load_settings

NNBSP = "\u202f"  # CLDR puts a narrow no-break space before AM/PM
TASK_URL = "https://app.example.com/tasks/{task_id}"


class Links:
    """A link maker that writes what it was asked for into the URL."""

    def unsubscribe(self, user_id: int, key: str) -> str:
        """The unsubscribe URL of ``user_id`` for ``key``."""
        return f"https://r.example.com/u/{user_id}/{key}?t=sig"

    def snooze(self, user_id: int, key: str, delay: timedelta) -> str:
        """The snooze URL of ``user_id`` for ``key`` and ``delay``."""
        return f"https://r.example.com/s/{user_id}/{key}/{int(delay.total_seconds())}?t=sig"


def render(
    title: str = "Pay rent",
    timezone: str = "UTC",
    due: datetime = T0,
    locale: str | None = None,
    renderer: ReminderRenderer | None = None,
) -> Message:
    """Render a reminder for one task."""
    task = TaskFacts(id=5, title=title, due_date=due, open=True)
    owner = OwnerFacts(9, "ada@example.com", timezone, True, locale)
    return (renderer or ReminderRenderer("mail.example.com")).render("due_soon-5-X", task, owner)


@pytest.mark.parametrize(
    ("due", "zone", "expected"),
    [
        # Europe/Paris springs forward at 01:00 UTC on 29 March 2026: 02:30 local never exists.
        (
            datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
            "Europe/Paris",
            f"Sun, Mar 29, 2026, 1:30{NNBSP}AM CET (UTC+01:00)",
        ),
        (
            datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
            "Europe/Paris",
            f"Sun, Mar 29, 2026, 3:30{NNBSP}AM CEST (UTC+02:00)",
        ),
        # New York falls back on 1 November 2026: 01:30 local happens twice.
        (
            datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
            "America/New_York",
            f"Sun, Nov 1, 2026, 1:30{NNBSP}AM EDT (UTC-04:00)",
        ),
        (
            datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
            "America/New_York",
            f"Sun, Nov 1, 2026, 1:30{NNBSP}AM EST (UTC-05:00)",
        ),
        (
            datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
            "Asia/Kolkata",
            f"Sat, Nov 28, 2026, 5:30{NNBSP}PM IST (UTC+05:30)",
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


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("fr", ("fr", "fr")),
        ("fr_FR", ("fr", "fr_FR")),
        ("fr-FR", ("fr", "fr_FR")),
        ("FR-ca", ("fr", "fr_ca")),
        ("de_DE.UTF-8", ("de", "de_DE")),
        ("es_ES@euro", ("es", "es_ES")),
        ("en-GB", ("en", "en_GB")),
        ("it", ("en", "en")),
        ("", ("en", "en")),
        (None, ("en", "en")),
        ("../../etc/passwd", ("en", "en")),
        ("de_<script>", ("de", "de")),
        ("x" * 10_000, ("en", "en")),
    ],
)
def test_a_locale_is_normalised_to_a_shipped_language(
    locale: str | None, expected: tuple[str, str]
) -> None:
    """Regions and encodings select the language's catalog; unknown locales read as English."""
    assert normalise(locale) == expected


@pytest.mark.parametrize(
    ("locale", "subject", "due", "footer"),
    [
        (None, "Reminder: Pay rent is due", f"Sat, Nov 28, 2026, 9:00{NNBSP}PM JST",
         "settings."),
        ("de-DE", "Erinnerung: Pay rent ist fällig am", "Sa., 28. Nov. 2026, 21:00 JST",
         "Kontoeinstellungen aus."),
        ("fr_FR", "Rappel\xa0: Pay rent arrive à échéance le", "sam. 28 nov. 2026, 21:00 JST",
         "votre compte."),
        ("es", "Recordatorio: Pay rent vence el", "sáb, 28 nov 2026, 21:00 JST", "su cuenta."),
        ("en_GB", "Reminder: Pay rent is due", "Sat, 28 Nov 2026, 21:00 JST", "settings."),
        ("pt_BR", "Reminder: Pay rent is due", f"Sat, Nov 28, 2026, 9:00{NNBSP}PM JST",
         "settings."),
    ],
)  # fmt: skip
def test_the_recipient_reads_the_reminder_in_their_language(
    locale: str | None, subject: str, due: str, footer: str
) -> None:
    """Subject, text and HTML use the owner's language for words and for the date format (the
    subject, one line, has plain spaces only)."""
    message = render("Pay rent", "Asia/Tokyo", locale=locale)
    assert message.subject.startswith(" ".join(subject.split()))
    assert message.subject.endswith(" ".join(due.split()) + " (UTC+09:00)")
    assert f"{due} (UTC+09:00)" in message.text
    assert message.html is not None and html.escape(due) in message.html
    assert message.text.rstrip().endswith(footer)


def test_every_reminder_has_a_text_and_an_html_part() -> None:
    """Both parts name the task and the due time; the HTML declares the recipient's language."""
    message = render("Pay rent", "Asia/Tokyo", locale="de")
    assert message.html is not None
    assert message.html.startswith("<!DOCTYPE html>")
    assert '<html lang="de">' in message.html
    for part in (message.text, message.html):
        assert "Pay rent" in part and "21:00 JST (UTC+09:00)" in part


def test_hostile_titles_stay_out_of_headers_and_markup() -> None:
    """CR/LF and header-looking text in a title become one plain subject line; markup in it is
    escaped in the HTML part and kept verbatim in the text part and the document."""
    title = "Lunch\r\nBcc: victim@example.net\r\n\r\n<script>x</script><a href='//evil'>"
    message = render(title)
    assert "\r" not in message.subject and "\n" not in message.subject
    assert "Bcc: victim@example.net" in message.subject
    assert set(message.headers) == {
        "Message-ID", "X-Reminder-Key", "X-Task-Id", "Auto-Submitted",
        "X-Auto-Response-Suppress", "List-Id",
    }  # fmt: skip
    assert all("\n" not in value and "\r" not in value for value in message.headers.values())
    assert message.html is not None
    assert "<script>" not in message.html and "href='//evil'" not in message.html
    assert "&lt;script&gt;x&lt;/script&gt;&lt;a href=&#39;//evil&#39;&gt;" in message.html
    assert title in message.text
    assert message.document["title"] == title


def test_long_titles_are_bounded_in_the_subject() -> None:
    """A 1 MB title gives a bounded subject; the parts and the webhook keep it as data."""
    message = render("x" * 1_000_000)
    assert len(message.subject) <= 200
    assert "x" * 1_000_000 in message.text
    assert message.html is not None and "x" * 1_000_000 in message.html


def test_the_email_gives_the_local_due_time_and_its_identity() -> None:
    """Subject and body name the title and the due time in the owner's zone; the headers say
    it is automatic and from which list."""
    message = render("Pay rent", "Asia/Tokyo")
    assert "Sat, Nov 28, 2026, 9:00 PM JST (UTC+09:00)" in message.subject
    assert "Pay rent" in message.text
    assert message.headers["Message-ID"] == "<due_soon-5-X@mail.example.com>"
    assert message.headers["Auto-Submitted"] == "auto-generated"
    assert message.headers["List-Id"] == "<reminders.mail.example.com>"


def test_without_a_link_maker_there_is_no_unsubscribe_header_or_link() -> None:
    """No public URL configured: no List-Unsubscribe, no snooze links, and the footer says how
    to turn reminders off instead."""
    message = render()
    assert "List-Unsubscribe" not in message.headers
    assert message.html is not None
    for part in (message.text, message.html):
        assert "https://" not in part
        assert "turn reminders off in your account settings" in part


def test_a_link_maker_adds_one_click_unsubscribe_and_snooze_links() -> None:
    """With a link maker: List-Unsubscribe (RFC 8058 one-click) and, in both parts, the
    unsubscribe link and one snooze link per delay, for this owner and this reminder."""
    message = render(renderer=ReminderRenderer("mail.example.com", links=Links()))
    unsubscribe = "https://r.example.com/u/9/due_soon-5-X?t=sig"
    assert message.headers["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    hour = "https://r.example.com/s/9/due_soon-5-X/3600?t=sig"
    day = "https://r.example.com/s/9/due_soon-5-X/86400?t=sig"
    assert f"{unsubscribe}\n" in message.text
    assert f"- in 1 hour: {hour}\n" in message.text and f"- in 1 day: {day}\n" in message.text
    assert message.html is not None
    for url in (unsubscribe, hour, day):
        assert f'href="{html.escape(url)}"' in message.html


def test_the_task_link_is_in_both_parts() -> None:
    """REMINDERS_TASK_URL gives a link to the task in the text and the HTML part."""
    renderer = ReminderRenderer("mail.example.com", task_url=TASK_URL + "?from=mail&x=1")
    message = render(renderer=renderer)
    assert "https://app.example.com/tasks/5?from=mail&x=1" in message.text
    assert message.html is not None
    assert 'href="https://app.example.com/tasks/5?from=mail&amp;x=1"' in message.html


@pytest.mark.parametrize(
    ("task_id", "expected"),
    [(5, "https://app.example.com/tasks/5"), ("a/b c?&#", "https://app.example.com/tasks/a%2Fb%20c%3F%26%23")],
)  # fmt: skip
def test_the_task_id_is_url_encoded_in_the_link(task_id: object, expected: str) -> None:
    """The id fills the placeholder URL-encoded: it can neither add a path nor a query."""
    assert task_link(TASK_URL, task_id) == expected


def test_smtp_with_the_localhost_mail_domain_warns_once_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Message-IDs and List-Id at `localhost` hurt delivery: a process using the SMTP channel
    with the default REMINDERS_MAIL_DOMAIN logs one warning, however often it builds a
    renderer; a real domain or another channel logs none."""
    monkeypatch.setattr(render_module, "_warned", [])
    with capture_logs() as logs:
        renderer_for(load_settings(channel="console"))
        renderer_for(load_settings(channel="smtp", mail_domain="example.com"))
        assert logs == []
        renderer_for(load_settings(channel="smtp"))
        renderer_for(load_settings(channel="smtp"))
    assert [(log["event"], log["log_level"]) for log in logs] == [
        ("mail_domain_is_localhost", "warning")
    ]


def test_a_webhook_renderer_builds_the_document_without_the_templates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The webhook posts the JSON document only: its renderer gives the same document as a
    worded one, and no part that nobody reads (no template rendered, no headers, no line)."""
    worded = render(renderer=ReminderRenderer("mail.example.com"))
    renderer = renderer_for(
        load_settings(
            channel="webhook",
            webhook_url="https://hooks.example.com/r",
            webhook_secret="a-webhook-secret-of-32-bytes-ok!",
        )
    )
    assert not renderer.worded

    def no_templates(*args: object) -> None:
        raise AssertionError("a template was rendered for a webhook")

    monkeypatch.setattr(type(renderer.templates), "render", no_templates)
    bare = render(renderer=renderer)
    assert bare.document == worded.document
    assert worded.line and worded.headers  # what the bare message leaves out
    assert (bare.text, bare.html, bare.line, dict(bare.headers)) == ("", None, "", {})
    assert bare.subject == "Pay rent"
