"""Log lines: written whole, in order, and the events of one call written together."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest
import structlog
from sqlalchemy import Engine

from outbox.channels.base import Delivery
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.logs import PIPE_BUF, configure_logging


class CountingStream:
    """A text stream that keeps every write apart, as the system calls would be."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def lines(self) -> list[str]:
        return "".join(self.writes).splitlines()


@pytest.fixture
def level() -> int:
    """The level logging is set up at (tests override it)."""
    return logging.INFO


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch, level: int) -> Iterator[CountingStream]:
    """JSON logging into a counting stream; the previous configuration is restored after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    counting = CountingStream()
    monkeypatch.setattr(sys, "stderr", counting)
    configure_logging(level, json=True)
    yield counting
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(root_level)


def events(stream: CountingStream) -> list[str]:
    """The event name of each line written, in order."""
    return [json.loads(line)["event"] for line in stream.lines()]


def carried(*names: str, level: str = "info", **keys: object) -> list[dict[str, object]]:
    """Events to log in one call, one per name."""
    return [{"n": n, **keys, "event": name, "level": level} for n, name in enumerate(names)]


def test_each_event_is_written_at_once(stream: CountingStream) -> None:
    """An event is one line, written when it is logged."""
    log = structlog.get_logger("test")
    log.info("first")
    assert events(stream) == ["first"]
    log.info("second")
    assert len(stream.writes) == 2


def test_events_logged_in_one_call_are_written_whole_in_order_and_together(
    stream: CountingStream,
) -> None:
    """An event carrying ``events`` becomes their lines, in a few writes of whole lines."""
    log = structlog.get_logger("test")
    log.info("round", events=carried(*(f"line {n}" for n in range(100)), padding="x" * 200))
    assert events(stream) == [f"line {number}" for number in range(100)]
    assert 1 < len(stream.writes) < 100  # a few writes, none larger than a pipe keeps whole
    for text in stream.writes:
        assert text.endswith("\n")
        assert len(text.encode()) <= PIPE_BUF


def test_a_line_longer_than_a_pipe_write_is_written_whole_on_its_own(
    stream: CountingStream,
) -> None:
    """A carried event longer than `PIPE_BUF` gets a write of its own, between its neighbours."""
    log = structlog.get_logger("test")
    lines = carried("short", "long", "after")
    lines[1]["detail"] = "y" * (2 * PIPE_BUF)
    log.info("round", events=lines)
    assert events(stream) == ["short", "long", "after"]
    assert [json.loads(text)["event"] for text in stream.writes] == ["short", "long", "after"]


def test_each_carried_event_keeps_its_keys_and_level_and_gets_the_carriers_others(
    stream: CountingStream,
) -> None:
    """A carried line has its own keys and level, then the carrier's logger and time, in order."""
    structlog.get_logger("test").warning(
        "round", events=carried("a", level="warning") + carried("b", level="info")
    )
    first, second = (json.loads(line) for line in stream.lines())
    assert list(first) == ["n", "event", "level", "logger", "timestamp"]
    assert (first["event"], first["level"], second["event"], second["level"]) == (
        "a",
        "warning",
        "b",
        "info",
    )
    assert first["logger"] == second["logger"] == "test"
    assert "events" not in first


@pytest.mark.parametrize("level", [logging.WARNING])
def test_carried_events_below_the_level_are_left_out(stream: CountingStream) -> None:
    """Set up at WARNING, a carrier writes its warnings only, and nothing when it has none."""
    log = structlog.get_logger("test")
    log.warning("round", events=carried("kept", level="warning") + carried("left", level="info"))
    log.warning("round", events=carried("left too", level="info"))
    assert events(stream) == ["kept"]


def test_a_relay_round_is_written_as_one_delivery_line_per_attempt(
    stream: CountingStream, sqlite_engine: Engine
) -> None:
    """A round's attempts come out as the documented `delivery` lines, all in one write."""
    clock, channel = ManualClock(), RecordingChannel()
    services = make_services(sqlite_engine, clock, channel)
    add_user(services, 1, email="ada@example.com")
    for task_id in (1, 2, 3):
        add_task(services, task_id, 1, clock.now() + timedelta(hours=1))
    services.scan()
    channel.script = [Delivery.delivered(), Delivery.retry("451 later"), Delivery.permanent("550")]
    services.relay().relay_until_idle()
    lines = [json.loads(line) for line in stream.lines()]
    assert [line["event"] for line in lines] == ["delivery"] * 3
    assert [(line["outcome"], line["level"]) for line in lines] == [
        ("delivered", "info"),
        ("retry", "info"),
        ("dead", "warning"),
    ]
    assert list(lines[0]) == [
        "outbox_id", "key", "attempt", "outcome", "error", "recipient", "channel", "duration_ms",
        "next_attempt_at", "task_id", "event", "level", "logger", "timestamp",
    ]  # fmt: skip
    assert lines[0]["recipient"] == "a***@example.com"
    assert lines[1]["next_attempt_at"] is not None
    assert len(stream.writes) == 1
