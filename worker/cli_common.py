"""Helpers shared by the operator commands: services, JSON, times and durations as shown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from outbox.masking import one_line
from worker.errors import UsageError
from worker.settings import parse_duration

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document, nothing else.")]

if TYPE_CHECKING:
    from worker.bootstrap import Services


def ready() -> Services:
    from worker.cli import ready_services

    return ready_services()


def console() -> Console:
    from worker.cli import out

    return out


def print_json(document: Any) -> None:
    console().print_json(json.dumps(document))


def duration(option: str, value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def when(value: datetime | None, form: str = "%Y-%m-%d %H:%MZ") -> str:
    return "-" if value is None else value.astimezone(UTC).strftime(form)


def seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def human(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return " ".join(parts[:2]) if parts else f"{seconds}s"


def plain(value: str) -> Text:
    """Data as shown text: no rich markup, no control characters (errors are hostile)."""
    return Text(one_line(value))
