"""Log lines: written whole, in order, and held together where a burst is made at once."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest
import structlog

from worker.logs import PIPE_BUF, configure_logging, lines_together


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
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingStream]:
    """JSON logging into a counting stream; the previous configuration is restored after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    counting = CountingStream()
    monkeypatch.setattr(sys, "stderr", counting)
    configure_logging(logging.INFO, json=True)
    yield counting
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def events(stream: CountingStream) -> list[str]:
    return [json.loads(line)["event"] for line in stream.lines()]


def test_each_line_is_written_at_once_outside_a_block(stream: CountingStream) -> None:
    log = structlog.get_logger("test")
    log.info("first")
    assert events(stream) == ["first"]
    log.info("second")
    assert len(stream.writes) == 2


def test_a_block_holds_its_lines_then_writes_them_whole_and_in_order(
    stream: CountingStream,
) -> None:
    log = structlog.get_logger("test")
    with lines_together():
        for number in range(100):
            log.info(f"line {number}", padding="x" * 200)
        assert stream.writes == []
    assert events(stream) == [f"line {number}" for number in range(100)]
    assert 1 < len(stream.writes) < 100  # a few writes, none larger than a pipe keeps whole
    for text in stream.writes:
        assert text.endswith("\n")
        assert len(text.encode()) <= PIPE_BUF


def test_a_line_longer_than_a_pipe_write_is_written_whole_on_its_own(
    stream: CountingStream,
) -> None:
    log = structlog.get_logger("test")
    with lines_together():
        log.info("short")
        log.info("long", detail="y" * (2 * PIPE_BUF))
        log.info("after")
    assert events(stream) == ["short", "long", "after"]
    assert [json.loads(text)["event"] for text in stream.writes] == ["short", "long", "after"]


def test_held_lines_are_written_when_the_block_fails(stream: CountingStream) -> None:
    log = structlog.get_logger("test")
    with pytest.raises(RuntimeError), lines_together():
        log.info("before the failure")
        raise RuntimeError("boom")
    assert events(stream) == ["before the failure"]


def test_a_block_holds_only_its_own_threads_lines(stream: CountingStream) -> None:
    log = structlog.get_logger("test")
    with lines_together():
        log.info("held")
        other = threading.Thread(target=lambda: log.info("from another thread"))
        other.start()
        other.join()
        assert events(stream) == ["from another thread"]
        with lines_together():  # nested: the outer block writes
            log.info("nested")
        assert events(stream) == ["from another thread"]
    assert events(stream) == ["from another thread", "held", "nested"]
