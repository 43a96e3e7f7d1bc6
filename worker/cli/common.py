"""What the ``reminders`` commands share: options, exits, services, and values as shown.

This module imports no other module of ``worker.cli``: every command module imports it, and
the package's ``__init__`` imports the command modules, so the arrows all point one way.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from outbox.masking import one_line
from outbox.server_clock import Offset
from worker import migrate as migrations
from worker.bootstrap import Services, bootstrap, database_timeouts
from worker.db import make_engine
from worker.errors import ConfigError, DatabaseNotReady, UsageError
from worker.reminders.render import renderer_for
from worker.settings import Settings, load_settings, parse_duration

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document, nothing else.")]

out = Console(highlight=False, soft_wrap=True)
#: A BIGINT, as the host's user ids are.
_USER_ID = re.compile(r"^\s*-?\d{1,19}\s*$")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    sys.stderr.write(f"reminders: {message}\n")
    sys.exit(code)


def settings() -> Settings:
    """The settings, or exit 2 naming the bad variable."""
    try:
        return load_settings()
    except ConfigError as error:
        fail(str(error), 2)


def ready_services() -> Services:
    """Services on a reachable, migrated database whose tables fit the schema mapping; or
    exit 1 saying which it is not (2 for a mapping that does not fit or a message template
    that fails, checked first)."""
    config = settings()
    renderer = renderer_for(config)
    engine = make_engine(config.database_url, timeouts=database_timeouts(config))
    current = migrations.current_revision(engine)
    if current != migrations.head_revision():
        raise DatabaseNotReady(
            f"the database is at revision {current or 'none'}, this version needs "
            f"{migrations.head_revision()}: run `reminders migrate`"
        )
    return bootstrap(config, engine=engine, renderer=renderer)


def user_id(value: str) -> int:
    """``--user``'s value as a user id (a BIGINT), or a usage error."""
    if not _USER_ID.match(value) or not -(2**63) <= int(value) < 2**63:
        raise UsageError(f"--user: {value!r} is not a user id (an integer)")
    return int(value)


def first_line(error: BaseException | None) -> str:
    """The first line of an error's message (drivers add details on more lines)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def print_json(document: Any) -> None:
    """Print ``document`` as the command's one JSON document."""
    out.print_json(json.dumps(document))


def duration(option: str, value: str, *, unit_required: bool = False) -> timedelta:
    """``value`` parsed as a duration, or a usage error naming ``option``.

    With ``unit_required`` a bare number is refused rather than read as seconds: on a
    command that selects rows to delete, ``30`` is too easily meant as 30 days.
    """
    number = value.strip()
    if unit_required and number.replace(".", "", 1).isdigit():
        raise UsageError(
            f"{option}: {number!r} needs a unit (ms, s, m, h or d), for example {number}d"
        )
    try:
        return parse_duration(value)
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


def iso(value: datetime) -> str:
    """A moment as ISO 8601 in UTC, the form every JSON document uses."""
    return value.astimezone(UTC).isoformat()


def when(value: datetime | None, form: str = "%Y-%m-%d %H:%MZ") -> str:
    """A moment in UTC as a table shows it, ``-`` for none."""
    return "-" if value is None else value.astimezone(UTC).strftime(form)


def seconds(value: timedelta | None) -> float | None:
    """A duration in seconds, the unit every JSON document uses."""
    return None if value is None else value.total_seconds()


def human(value: timedelta) -> str:
    """A duration in its two largest units, as in ``2d 3h`` or ``15m``."""
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return " ".join(parts[:2]) if parts else f"{seconds}s"


def skew(offset_seconds: float) -> str:
    """How a host's clock stands to the database's, given the database's lead over it."""
    if round(offset_seconds, 3) == 0:
        return "within 1 ms of the database's"
    side = "behind" if offset_seconds > 0 else "ahead of"
    return f"{abs(offset_seconds):.3f} s {side} the database's"


def plain(value: str) -> Text:
    """Data as shown text: no rich markup, no control characters (errors are hostile)."""
    return Text(one_line(value))


@dataclass(frozen=True)
class Clocks:
    """This process's clock against the database's, and the one the last scan recorded."""

    mine: Offset | None
    scanner_ms: float | None  # the heartbeat's: the database's lead over the scanning host
    limit: timedelta  # REMINDERS_MAX_CLOCK_OFFSET

    @property
    def scanner(self) -> float | None:
        """The last scanning host's offset in seconds."""
        return None if self.scanner_ms is None else self.scanner_ms / 1000

    def fields(self) -> dict[str, float | None]:
        """The offsets in the JSON documents' form (seconds; positive: the database ahead)."""
        mine = self.mine
        return {
            "clock_offset_seconds": None if mine is None else mine.offset.total_seconds(),
            "clock_offset_error_seconds": None if mine is None else mine.error.total_seconds(),
            "last_scan_clock_offset_seconds": self.scanner,
            "max_clock_offset_seconds": self.limit.total_seconds(),
        }

    def warnings(self) -> list[str]:
        """One line per clock further from the database's than the limit."""
        mine = None if self.mine is None else self.mine.offset.total_seconds()
        limit = self.limit.total_seconds()
        return [
            f"{who} clock is {skew(seconds)} (more than REMINDERS_MAX_CLOCK_OFFSET, "
            f"{limit:g} s): time is corrected for it, but check the host's NTP"
            for who, seconds in (("this host's", mine), ("the last scanning host's", self.scanner))
            if seconds is not None and abs(seconds) > limit
        ]

    def line(self) -> str:
        """Both clocks in one line of text."""
        if self.mine is None:
            mine = "not measured"
        else:
            error = self.mine.error.total_seconds() * 1000
            mine = f"{skew(self.mine.offset.total_seconds())} (± {error:.1f} ms)"
        theirs = "not recorded" if self.scanner is None else skew(self.scanner)
        return f"clock: this host's is {mine}; the last scanning host's was {theirs}"
