"""The e-mail body's MIME framing: what a standard parser reads back, 7-bit clean on the wire."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage, MIMEPart

from hypothesis import example, given
from hypothesis import strategies as st

from outbox.channels.mime import MAX_LINE, body


def parsed(data: bytes) -> EmailMessage:
    """``data`` after a minimal header block, parsed as the receiving side would."""
    message = email.message_from_bytes(b"Subject: x\r\n" + data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def lines_as_written(text: str) -> str:
    """``text`` as a receiver reads it back: every line break a newline, one at the end."""
    lines = text.encode("utf-8").splitlines()
    return (b"\n".join(lines) + b"\n").decode("utf-8")


def content(part: MIMEPart) -> str:
    """A text part's content with the wire's CRLFs read as newlines."""
    return str(part.get_content()).replace("\r\n", "\n")


def test_ascii_text_goes_as_it_is() -> None:
    """ASCII in short lines is sent 7bit, unencoded."""
    data = body("Your task is due soon.\n\nTask: Pay rent\n")
    assert b"Content-Transfer-Encoding: 7bit\r\n\r\nYour task is due soon.\r\n\r\n" in data
    message = parsed(data)
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert content(message) == "Your task is due soon.\n\nTask: Pay rent\n"


def test_two_parts_are_alternatives_plain_text_first() -> None:
    """With HTML the body is multipart/alternative: text/plain, then text/html."""
    message = parsed(body("Fällig: morgen\n", "<p>Fällig&nbsp;: <b>morgen</b></p>\n"))
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert content(text) == "Fällig: morgen\n"
    assert content(html) == "<p>Fällig&nbsp;: <b>morgen</b></p>\n"
    assert text["Content-Transfer-Encoding"] == "quoted-printable"


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)  # no lone surrogates


@given(TEXT, st.one_of(st.none(), TEXT))
@example("x" * (MAX_LINE + 1), None)
@example("trailing spaces   \nand tabs\t\n= signs =3D\r\nlone\rreturns\n.\n", "<p>=</p>")
@example("--=_reminders_0123456789abcdef0123456789abcdef", "--=_reminders_")
def test_any_text_arrives_intact_in_short_ascii_lines(text: str, html: str | None) -> None:
    """Whatever the text (any script, control characters, long lines, `=`, trailing blanks),
    the wire is ASCII in lines a relay takes, and a parser reads back the same text."""
    data = body(text, html)
    assert data.isascii()
    assert all(len(line) <= MAX_LINE for line in data.split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")
    message = parsed(data)
    parts = list(message.iter_parts()) if html is not None else [message]
    expected = [text] if html is None else [text, html]
    assert [content(part) for part in parts] == [lines_as_written(t) for t in expected]
