"""Pull-forward: a reminder whose task falls due inside its recipient's quiet window is planned
to go out just before the window starts (`worker.reminders.send_time.pulled_to`).

The scan plans a reminder one tick before its moment; one pulled forward must be waiting
before its window starts, up to a window's length before its moment. So, after planning,
the scan reads the reminders of recipients with quiet hours whose moments lie in the next
`PULL_SPAN` (one statement: the window planner's join, restricted to those recipients by the
preferences table), computes each one's pulled instant in Python (the DST rules of
`worker.reminders.quiet`, which SQLite's date functions cannot say), and, for those whose
pulled instant is within the scan's horizon, writes the row to wait until then: a new row
under the reminder's own key, or an earlier ``available_at`` for one already waiting. When the
moment itself comes into a later scan's horizon, its key is taken and nothing is planned
twice.

The statement reads the open tasks due within the span through the due index, as the window
does for one tick, and keeps the reminders of recipients with quiet hours; no user has them,
it is not run at all (one probe of the preferences table).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, String, Table, bindparam, literal, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from outbox.enqueue import NewMessage, ValuesEnqueue
from outbox.table import OutboxRow, Status
from outbox.types import UTCDateTime
from worker.reminders import plan
from worker.reminders.due_time import shifted
from worker.reminders.host import HostSchema
from worker.reminders.keys import REMINDER_KIND
from worker.reminders.preference_store import PreferencesRow
from worker.reminders.preferences import Preferences, QuietHours, mask_days
from worker.reminders.rule_store import RuleSql
from worker.reminders.send_time import pulled_to, zone_of

#: How far past the horizon the scan looks for reminders to pull forward: longer than a
#: quiet window can last (under 24 hours, plus an hour where the clock goes back that night).
PULL_SPAN = timedelta(hours=26)

_AFTER = bindparam("after", type_=UTCDateTime())
_UNTIL = bindparam("until", type_=UTCDateTime())
_prefs: Table = PreferencesRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class _Found:
    """A reminder of a recipient with quiet hours, as the statement finds it."""

    message: NewMessage
    moment: datetime
    preferences: Preferences
    timezone: str | None


@dataclass(frozen=True, eq=False)
class PullForward:
    """The pull-forward statements for one host's tables on one dialect, built once."""

    found: Select[Any]
    any_quiet: Select[Any]
    outbox: ValuesEnqueue
    earlier: Update
    legacy_offset: int
    sqlite: bool

    @classmethod
    def build(
        cls, host: HostSchema, rules: RuleSql, dialect: str, *, needs_address: bool, lookahead: int
    ) -> PullForward:
        """The statements; ``lookahead`` the built-in rule's lead time in seconds (the key of a
        row queued before rules)."""
        tasks = host.tasks
        on_sqlite = dialect == "sqlite"
        # SQLite: a second's slack on each side (its date functions keep milliseconds); the
        # exact test is in Python.
        after, until = (shifted(_AFTER, -1), shifted(_UNTIL, 1)) if on_sqlite else (_AFTER, _UNTIL)
        hits = plan.window_hits(tasks, rules, after, until)
        found = plan.candidates(
            host, rules, hits, needs_address=needs_address, per_task=not on_sqlite
        ).subquery("candidate")
        c = found.c
        quiet = (_prefs.c.quiet_start, _prefs.c.quiet_end, _prefs.c.quiet_days)
        joined = found.join(_prefs, _prefs.c.user_id == c.user_id)
        wanted = [_prefs.c.quiet_start.is_not(None), c.offset_seconds >= 0]
        if on_sqlite:
            query = select(found, *quiet).select_from(joined).where(*wanted)
        else:
            due_time = tasks.due_time
            moment = plan.moment_of(due_time, c)
            query = (
                select(
                    c.task_id,
                    c.owner_id,
                    c.user_id,
                    c.timezone,
                    c.offset_seconds,
                    moment.label("moment"),
                    plan.due_instant_of(due_time, c).label("due_at"),
                    plan.expiry_of(due_time, c).label("expires_at"),
                    plan.key_of(due_time, c, legacy_offset=lookahead).label("key"),
                    *quiet,
                )
                .select_from(joined)
                .where(*wanted, moment > _AFTER, moment <= _UNTIL)
            )
        earlier = (
            update(OutboxRow)
            .where(
                OutboxRow.idempotency_key == bindparam("b_key", type_=String()),
                OutboxRow.kind == literal(REMINDER_KIND, String()),
                OutboxRow.status == Status.PENDING,
                OutboxRow.available_at > bindparam("b_at", type_=UTCDateTime()),
                # Planned for its moment, not postponed past it by the user (a snooze).
                OutboxRow.available_at <= bindparam("b_moment", type_=UTCDateTime()),
            )
            .values(
                available_at=bindparam("b_at", type_=UTCDateTime()),
                updated_at=bindparam("b_now", type_=UTCDateTime()),
            )
        )
        any_quiet = select(_prefs.c.user_id).where(_prefs.c.quiet_start.is_not(None)).limit(1)
        return cls(
            query, any_quiet, ValuesEnqueue.for_dialect(dialect), earlier, lookahead, on_sqlite
        )

    def plan(self, session: Session, now: datetime, until: datetime) -> int:
        """Plan the reminders pulled forward to ``until`` or before, in the session's
        transaction; return how many rows are now pending or earlier than they were."""
        if session.connection().execute(self.any_quiet).first() is None:
            return 0
        span_end = _plus(until, PULL_SPAN)
        values = {"after": now, "until": span_end}
        rows = session.connection().execute(self.found, values).mappings()
        found = self._sqlite_rows(rows, now, span_end) if self.sqlite else self._rows(rows)
        pulled: list[tuple[NewMessage, datetime]] = []
        for item in found:
            zone = zone_of(item.timezone)
            try:
                at = pulled_to(item.moment, _due(item.message), item.preferences, zone)
            except OverflowError:  # a window at the calendar's end: held at send, not pulled
                continue
            if at is not None and at <= until:
                pulled.append((_available(item.message, max(at, now)), item.moment))
        if not pulled:
            return 0
        queued = self.outbox.enqueue(session, [message for message, _ in pulled], now)
        moves = [
            {"b_key": m.key, "b_at": m.available_at, "b_moment": moment, "b_now": now}
            for m, moment in pulled
        ]
        moved = session.connection().execute(self.earlier, moves).rowcount
        return queued + max(moved, 0)

    def _rows(self, rows: Any) -> list[_Found]:
        return [
            _Found(
                NewMessage(
                    row["key"],
                    REMINDER_KIND,
                    row["task_id"],
                    row["due_at"],
                    available_at=row["moment"],
                    expires_at=row["expires_at"],
                    recipient_id=None if row["user_id"] == row["owner_id"] else row["user_id"],
                    offset_seconds=row["offset_seconds"],
                ),
                row["moment"],
                _preferences(row),
                row["timezone"],
            )
            for row in rows
        ]

    def _sqlite_rows(self, rows: Any, after: datetime, until: datetime) -> list[_Found]:
        found = []
        for row in rows:
            candidate = plan.Candidate(
                task_id=row["task_id"],
                owner_id=row["owner_id"],
                user_id=row["user_id"],
                due=_read_instant(row["due"]),
                offset_seconds=row["offset_seconds"],
                every_seconds=row["every_seconds"],
            )
            if not after < candidate.moment <= until:
                continue
            message = NewMessage(
                candidate.key(legacy_offset=self.legacy_offset),
                REMINDER_KIND,
                candidate.task_id,
                candidate.due,
                available_at=candidate.moment,
                expires_at=candidate.expires_at,
                recipient_id=None if candidate.user_id == candidate.owner_id else candidate.user_id,
                offset_seconds=candidate.offset_seconds,
            )
            found.append(_Found(message, candidate.moment, _preferences(row), row["timezone"]))
        return found


def _plus(moment: datetime, span: timedelta) -> datetime:
    """``moment`` plus ``span``, or the last instant there is."""
    try:
        return moment + span
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _preferences(row: Any) -> Preferences:
    quiet = QuietHours(row["quiet_start"], row["quiet_end"], mask_days(row["quiet_days"]))
    return Preferences(row["user_id"], quiet=quiet)


def _due(message: NewMessage) -> datetime:
    assert message.subject_at is not None  # the candidates are dated tasks
    return message.subject_at


def _available(message: NewMessage, at: datetime) -> NewMessage:
    return replace(message, available_at=at)


def _read_instant(value: Any) -> datetime:
    converted = UTCDateTime().process_result_value(value, sqlite.dialect())
    assert converted is not None  # the candidates are dated tasks
    return converted


__all__ = ["PULL_SPAN", "PullForward"]
