"""The console channel prints one line per reminder."""

from __future__ import annotations

import io

import pytest

from outbox.channels.base import Channel, Message, Outcome
from outbox.channels.console import ConsoleChannel


def message(line: str, subject: str = "subject") -> Message:
    """A message with only what the console uses."""
    return Message(key="k1", recipient="a@example.com", subject=subject, text="", line=line)


def test_writes_the_line_and_reports_delivered() -> None:
    """The message's line is written, newline-terminated, and the send is delivered."""
    stream = io.StringIO()
    channel: Channel = ConsoleChannel(stream)
    assert channel.name == "console"
    assert channel.send(message("task 7 due 2026-11-29 09:00 UTC")).outcome is Outcome.DELIVERED
    assert stream.getvalue() == "task 7 due 2026-11-29 09:00 UTC\n"


def test_hostile_line_stays_one_line() -> None:
    """CR, LF and terminal escapes in a title cannot add lines or drive the terminal."""
    stream = io.StringIO()
    ConsoleChannel(stream).send(message("pay\r\nFAKE reminder\x1b[2J\u2028end"))
    assert stream.getvalue().count("\n") == 1
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_each_message_gets_its_own_line() -> None:
    """Several sends give several lines, in order."""
    stream = io.StringIO()
    channel = ConsoleChannel(stream)
    for n in range(3):
        channel.send(message(f"line {n}"))
    channel.close()
    assert stream.getvalue().splitlines() == ["line 0", "line 1", "line 2"]


def test_empty_line_falls_back_to_the_subject() -> None:
    """A message rendered without a line still prints something meaningful."""
    stream = io.StringIO()
    ConsoleChannel(stream).send(message("", subject="Reminder: file taxes"))
    assert stream.getvalue() == "Reminder: file taxes\n"


def test_default_stream_is_stdout_at_send_time(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a stream the line goes to whatever sys.stdout is when sending."""
    ConsoleChannel().send(message("to stdout"))
    assert capsys.readouterr().out == "to stdout\n"


def test_closed_stream_asks_for_a_retry() -> None:
    """A stream that cannot be written is a transient failure, not an exception."""
    stream = io.StringIO()
    stream.close()
    delivery = ConsoleChannel(stream).send(message("lost"))
    assert delivery.outcome is Outcome.RETRY
    assert delivery.error is not None and "console write failed" in delivery.error
