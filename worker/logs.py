"""Structured logs: JSON lines when not on a terminal, readable lines when on one."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


class _NamedWriteLogger(structlog.WriteLogger):
    """Writes rendered lines to one stream, under the name it was asked for by."""

    def __init__(self, stream: TextIO, name: str) -> None:
        super().__init__(stream)
        self.name = name  # read by add_logger_name


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
