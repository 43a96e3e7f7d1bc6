"""A failing database in one log line per failure, not a traceback per tick.

While the database is unreachable or not migrated, every tick's scan and relay fail the same
way. `FailureLog` says so once when a run of failures starts (or its kind changes), then once
every `REPEAT_EVERY` with the number of attempts that failed in between, and once when it
ends; `database_failure` reduces the error to its kind and one line of reason. While it is
unreachable, `OutageGate` keeps a process from spending a worker thread per message on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from outbox.masking import mask_emails_in, one_line
from worker.errors import DatabaseNotReady
from worker.reminders.host import MappingMismatch
from worker.settings import hide_password

#: A run of failures of one kind is logged again after this long, with the count since.
REPEAT_EVERY = timedelta(minutes=5)
#: Longer reasons are cut: a driver may quote a whole statement.
MAX_REASON = 300

# SQLSTATE classes and codes (PostgreSQL appendix A): connection exceptions, the server
# shutting down or starting up, and the objects a migration creates.
_CONNECTION_CLASS = "08"
_SERVER_GOING = {"57P01", "57P02", "57P03"}
_MISSING_OBJECTS = {"42P01", "42703", "3F000"}  # undefined table, column, schema
_SQLITE_MISSING = ("no such table", "no such column")
_MIGRATE = " (run `reminders migrate`)"


class FailureKind(StrEnum):
    """What kind of failure a database error is."""

    UNREACHABLE = "unreachable"
    NOT_MIGRATED = "not_migrated"
    #: The schema mapping no longer fits the database (a mapped column gone since start).
    MAPPING = "mapping"
    ERROR = "error"


@dataclass(frozen=True)
class Failure:
    """A failure as it is logged and recorded: its kind and one line of reason."""

    kind: FailureKind
    reason: str


def database_failure(error: BaseException) -> Failure | None:
    """The database's failure behind ``error``, or None when it is not the database's."""
    if isinstance(error, DatabaseNotReady):
        return Failure(FailureKind.NOT_MIGRATED, reason_of(error))
    if isinstance(error, MappingMismatch):
        return Failure(FailureKind.MAPPING, reason_of(error))
    if isinstance(error, PoolTimeout):
        return Failure(FailureKind.UNREACHABLE, reason_of(error))
    if not isinstance(error, DBAPIError):
        return None
    cause = error.orig if error.orig is not None else error
    state = getattr(cause, "sqlstate", None)
    sqlite = type(cause).__module__.startswith("sqlite3")
    if state in _MISSING_OBJECTS or (sqlite and str(cause).startswith(_SQLITE_MISSING)):
        kind = FailureKind.NOT_MIGRATED
    elif _lost_connection(error, state, sqlite=sqlite):
        kind = FailureKind.UNREACHABLE
    else:
        kind = FailureKind.ERROR
    hint = _MIGRATE if kind == FailureKind.NOT_MIGRATED else ""
    return Failure(kind, reason_of(cause) + hint)


def _lost_connection(error: DBAPIError, state: str | None, *, sqlite: bool) -> bool:
    """Whether the driver could not connect, lost the connection, or the server is going."""
    if state is not None:
        return state.startswith(_CONNECTION_CLASS) or state in _SERVER_GOING
    # No SQLSTATE from a server's driver: it failed to connect or the connection broke.
    return error.connection_invalidated or (not sqlite and isinstance(error, OperationalError))


def reason_of(error: BaseException) -> str:
    """The error's type and the first line of its message: masked, one line, bounded."""
    lines = str(error).strip().splitlines()
    name = type(error).__name__
    text = f"{name}: {lines[0].strip()}" if lines else name
    text = one_line(_masked(text))
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _masked(text: str) -> str:
    """``text`` with the password of any URL in it hidden and every address masked."""
    words = text.split(" ")
    return " ".join(
        hide_password(word) if "://" in word else mask_emails_in(word) for word in words
    )


class OutageGate:
    """While the database is unreachable, one attempt at a time in this process; the other
    messages end at once.

    Each of them would only wait for the same connection timeout, holding a worker thread,
    while the messages behind it pile up in the broker. A message that ends so is lost as a
    failed one would be: the attempt under way, or the next tick after the database is back,
    does its work.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unreachable = False
        self._running = 0  # attempts under way

    def enter(self) -> bool:
        """Whether an attempt may start now (then `leave` must follow)."""
        with self._lock:
            if self._unreachable and self._running:
                return False
            self._running += 1
            return True

    def leave(self, *, unreachable: bool) -> None:
        """An attempt ended; ``unreachable`` when it could not reach the database."""
        with self._lock:
            self._running -= 1
            self._unreachable = unreachable


@dataclass
class _Run:
    """A run of failures of one action, as far as it has been logged."""

    failure: Failure
    started: float  # monotonic
    logged: float  # monotonic time of the last line
    failures: int = 1  # attempts failed in this run
    unlogged: int = 0  # attempts failed since the last line


class FailureLog:
    """Logs each action's runs of failures in few lines: at the start, every `REPEAT_EVERY`
    while they last (or at once when the kind changes), and at the end."""

    def __init__(
        self,
        logger: Any,
        *,
        repeat_every: timedelta = REPEAT_EVERY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._every = repeat_every.total_seconds()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}

    def failed(self, action: str, failure: Failure) -> None:
        """Count one failed attempt of ``action``; log it if a line is due."""
        now = self._monotonic()
        with self._lock:
            run = self._runs.get(action)
            if run is None or run.failure.kind != failure.kind:
                self._runs[action] = _Run(failure, started=now, logged=now)
                self._log.error(f"{action}_failed", kind=failure.kind, reason=failure.reason)
                return
            run.failures += 1
            run.unlogged += 1
            run.failure = failure
            if now - run.logged < self._every:
                return
            run.logged, unlogged, run.unlogged = now, run.unlogged, 0
            self._log.error(
                f"{action}_failed",
                kind=failure.kind,
                reason=failure.reason,
                failures_since_last_line=unlogged,
                failing_for_seconds=round(now - run.started, 1),
            )

    def succeeded(self, action: str) -> None:
        """Note that ``action`` worked; log the end of its run of failures, if any."""
        with self._lock:
            run = self._runs.pop(action, None)
            if run is None:
                return
            self._log.info(
                f"{action}_recovered",
                failures=run.failures,
                failing_for_seconds=round(self._monotonic() - run.started, 1),
            )

    @contextmanager
    def guard(
        self,
        action: str,
        on_failure: Callable[[Failure], None] | None = None,
        gate: OutageGate | None = None,
    ) -> Iterator[bool]:
        """Run the block if ``gate`` lets it (it is given whether); a database failure in it
        is logged here and swallowed.

        ``on_failure`` is told of every failure, the database's or not; any other error
        propagates after it (a bug deserves its traceback).
        """
        if gate is not None and not gate.enter():
            yield False
            return
        unreachable = False
        try:
            yield True
        except Exception as error:
            failure = database_failure(error)
            unreachable = failure is not None and failure.kind == FailureKind.UNREACHABLE
            if on_failure is not None:
                on_failure(failure or Failure(FailureKind.ERROR, reason_of(error)))
            if failure is None:
                raise
            self.failed(action, failure)
        else:
            self.succeeded(action)
        finally:
            if gate is not None:
                gate.leave(unreachable=unreachable)
