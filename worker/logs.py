"""Structured logs: JSON lines when not on a terminal, readable lines when on one."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, TextIO

import structlog

#: A write to a pipe of at most this many bytes is never interleaved with another
#: process's write, so several lines are written in blocks of whole lines up to this size.
PIPE_BUF = 4096


class _NamedWriteLogger(structlog.WriteLogger):
    """Writes rendered lines to one stream, under the name it was asked for by."""

    def __init__(self, stream: TextIO, name: str) -> None:
        super().__init__(stream)
        self.name = name  # read by add_logger_name

    def msg(self, message: str) -> None:
        """Write one rendered event: its line, or its lines in blocks of whole lines."""
        if "\n" in message:
            self.write_block(message.split("\n"))
        else:
            super().msg(message)

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


def _one_line_per_event(
    renderer: structlog.types.Processor, level: int
) -> structlog.types.Processor:
    """``renderer``, except for an event that carries ``events``, several made at one moment
    (the relay logs each round's deliveries so): each of those that ``level`` lets through
    becomes a line of its own, at its own level, with the carrier's other keys (logger, time).

    The lines come out as one message, so they are written together: one write per line
    cost a busy worker's threads a switch of the interpreter lock per line.
    """
    levels = logging.getLevelNamesMapping().items()
    shown = {name.lower() for name, number in levels if number >= level}

    def render(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        events = event_dict.get("events")
        if not isinstance(events, list):
            return renderer(logger, method_name, event_dict)
        lines: list[str] = []
        for event in events:
            if event.get("level") not in shown:
                continue
            line = dict(event)
            for key, value in event_dict.items():
                if key != "events":
                    line.setdefault(key, value)
            lines.append(str(renderer(logger, method_name, line)))
        if not lines:
            raise structlog.DropEvent
        return "\n".join(lines)

    return render


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
        processors=[*shared, _one_line_per_event(renderer, level)],
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
