"""Structured logs: JSON lines when not on a terminal, readable lines when on one."""

from __future__ import annotations

import contextlib
import itertools
import logging
import operator
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

import structlog

#: A write to a pipe of at most this many bytes is never interleaved with another
#: process's write, so held lines are written in blocks of whole lines up to this size.
PIPE_BUF = 4096

_held = threading.local()  # .lines: this thread's held lines, while lines_together runs


class _NamedWriteLogger(structlog.WriteLogger):
    """Writes rendered lines to one stream, under the name it was asked for by."""

    def __init__(self, stream: TextIO, name: str) -> None:
        super().__init__(stream)
        self.name = name  # read by add_logger_name

    def msg(self, message: str) -> None:
        """Write one line now, or hold it until `lines_together` ends in this thread."""
        held: list[tuple[_NamedWriteLogger, str]] | None = getattr(_held, "lines", None)
        if held is None:
            super().msg(message)
        else:
            held.append((self, message))

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def write_block(self, lines: list[str]) -> None:
        """Write ``lines`` in as few writes as `PIPE_BUF` allows, each of whole lines."""
        with self._lock:
            for block in _blocks(lines):
                self._write(block)
                self._flush()


def _blocks(lines: list[str]) -> Iterator[str]:
    """``lines`` joined into runs of whole lines of at most `PIPE_BUF` bytes (a longer line
    makes a run of its own)."""
    block: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode()) + 1
        if block and size + length > PIPE_BUF:
            yield "".join(block)
            block, size = [], 0
        block.append(line + "\n")
        size += length
    if block:
        yield "".join(block)


@contextlib.contextmanager
def lines_together() -> Iterator[None]:
    """Hold this thread's log lines until the block ends, then write them a few at a time.

    For a burst of lines made at one moment, such as the relay's report of a round: one
    write per line hands the interpreter lock to another thread at every line, a context
    switch per line in a busy worker. Lines keep their order and stay whole.
    """
    if getattr(_held, "lines", None) is not None:  # already holding: the outer block writes
        yield
        return
    _held.lines = []
    try:
        yield
    finally:
        held: list[tuple[_NamedWriteLogger, str]] = _held.lines
        _held.lines = None
        for logger, run in itertools.groupby(held, key=operator.itemgetter(0)):
            logger.write_block([message for _, message in run])


def configure_logging(level: int = logging.INFO, *, json: bool | None = None) -> None:
    """Send structlog and standard logging to stderr with stable keys (event, level, time)."""
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    stream = sys.stderr
    # Our own events are rendered here and written as one line each: going through the
    # standard library too (a record, a caller lookup, a formatter, a second lock) more
    # than doubled the cost of the relay's line per delivery.
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=lambda *names: _NamedWriteLogger(stream, names[0] if names else "root"),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    # Libraries (dramatiq, SQLAlchemy, alembic) log through the standard library: the
    # same keys and renderer, the same stream.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic and pika narrate every step at INFO, and httpx logs every request with its
    # full URL (a webhook URL may carry a token); our own events say what matters.
    for chatty in ("alembic", "pika", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
