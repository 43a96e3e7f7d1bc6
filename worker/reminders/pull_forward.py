"""Pull-forward: a reminder whose task falls due inside its recipient's quiet window is planned
to go out just before the window starts (`worker.reminders.send_time.pulled_to`).

The scan plans a reminder one tick before its moment; one pulled forward must be waiting
before its window starts, up to a window's length before its moment. Driven by the windows,
not the tasks: after planning, the scan reads the quiet settings in force (start, end, days
and the recipient's zone, each distinct once: a read of the quiet users, not of the tasks),
and for each one lists in Python the windows that start after the scan's window start (the
last scan's time) and whose reminders are pulled forward to the scan's horizon or before
(`worker.reminders.quiet.windows_pulled_within`, the DST rules of `worker.reminders.quiet`,
which SQLite's date functions cannot say). Most ticks find none and run nothing more. For
each window found, one statement reads the reminders of the recipients with that setting and
zone whose moments lie in the window and are still to come (the window planner's join,
through the due index), computes each one's pulled instant, and writes the row to wait until
then: a new row under the reminder's own key, or an earlier ``available_at`` for one already
waiting. When the moment itself comes into a later scan's horizon, its key is taken and
nothing is planned twice.

Each window is pulled forward by the scans whose range (last scan, horizon] holds its pulled
instant, so a scan after a long gap (its window start capped at `plan.LATE_LIFETIME` ago)
reads every window that started in the gap. A window started before the last scan ran is not
read again: a reminder whose task was created or moved into it since is planned at its moment
by the window planner, and the relay's re-check (`worker.reminders.send_time.decide`) holds or
expires it there, as it would have one pulled forward to an instant already past.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Select,
    SmallInteger,
    String,
    Table,
    Time,
    bindparam,
    literal,
    select,
    update,
)
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
from worker.reminders.quiet import QuietWindow, windows_pulled_within
from worker.reminders.rule_store import RuleSql
from worker.reminders.send_time import pulled_to, quiet_hours, zone_of

_NOW = bindparam("now", type_=UTCDateTime())
_START = bindparam("w_start", type_=UTCDateTime())
_END = bindparam("w_end", type_=UTCDateTime())
_QUIET_START = bindparam("q_start", type_=Time())
_QUIET_END = bindparam("q_end", type_=Time())
_QUIET_DAYS = bindparam("q_days", type_=SmallInteger())
_ZONE = bindparam("zone", type_=String())
_prefs: Table = PreferencesRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class QuietSetting:
    """One quiet setting in force, as the settings statement finds it: the stored window
    and days, and the zone name of the users row (as stored: the statement matches it)."""

    start: Any
    end: Any
    days: int | None
    timezone: str | None

    def preferences(self, user_id: int) -> Preferences:
        """The preferences of a recipient with this setting, as far as pulling goes."""
        return Preferences(user_id, quiet=QuietHours(self.start, self.end, mask_days(self.days)))

    def values(self) -> dict[str, Any]:
        """The statement's parameters that pick the recipients with this setting."""
        return {
            "q_start": self.start,
            "q_end": self.end,
            "q_days": self.days,
            "zone": self.timezone,
        }


@dataclass(frozen=True)
class _Found:
    """A reminder of a recipient with quiet hours, as the statement finds it."""

    message: NewMessage
    moment: datetime
    user_id: int


@dataclass(frozen=True, eq=False)
class PullForward:
    """The pull-forward statements for one host's tables on one dialect, built once."""

    settings: Select[Any]
    found: Select[Any]
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
        tasks, users = host.tasks, host.users
        on_sqlite = dialect == "sqlite"
        # A second's slack on each side (SQLite's date functions keep milliseconds, the
        # window is half-open); the exact test is on the moment.
        until = shifted(_END, 1) if on_sqlite else _END
        hits = plan.window_hits(
            tasks, rules, shifted(_START, -1), until, materialized=not on_sqlite
        )
        found = plan.candidates(
            host, rules, hits, needs_address=needs_address, per_task=not on_sqlite
        ).subquery("candidate")
        c = found.c
        joined = found.join(_prefs, _prefs.c.user_id == c.user_id)
        wanted = [
            _prefs.c.quiet_start == _QUIET_START,
            _prefs.c.quiet_end == _QUIET_END,
            _prefs.c.quiet_days.is_not_distinct_from(_QUIET_DAYS),
            c.timezone.is_not_distinct_from(_ZONE),
            c.offset_seconds >= 0,
        ]
        if on_sqlite:
            query = select(found).select_from(joined).where(*wanted)
        else:
            due_time = tasks.due_time
            moment = plan.moment_of(due_time, c)
            query = (
                select(
                    c.task_id,
                    c.owner_id,
                    c.user_id,
                    c.offset_seconds,
                    moment.label("moment"),
                    plan.due_instant_of(due_time, c).label("due_at"),
                    plan.expiry_of(due_time, c).label("expires_at"),
                    plan.key_of(due_time, c, legacy_offset=lookahead).label("key"),
                )
                .select_from(joined)
                .where(*wanted, moment >= _START, moment < _END, moment > _NOW)
            )
        settings = (
            select(_prefs.c.quiet_start, _prefs.c.quiet_end, _prefs.c.quiet_days, users.timezone)
            .distinct()
            .select_from(_prefs.join(users.table, users.id == _prefs.c.user_id))
            .where(_prefs.c.quiet_start.is_not(None))
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
        return cls(
            settings, query, ValuesEnqueue.for_dialect(dialect), earlier, lookahead, on_sqlite
        )

    def windows(
        self, session: Session, now: datetime, after: datetime, until: datetime
    ) -> list[tuple[QuietSetting, QuietWindow]]:
        """The windows this scan pulls forward, each with its setting: those starting after
        ``after`` (the last scan's time), not over at ``now``, pulled to ``until`` or before."""
        found = []
        for row in session.connection().execute(self.settings):
            setting = QuietSetting(*row)
            quiet = quiet_hours(setting.preferences(0))
            assert quiet is not None  # the statement reads set windows only
            for window in windows_pulled_within(after, until, quiet, zone_of(setting.timezone)):
                if window.end > now:
                    found.append((setting, window))
        return found

    def plan(self, session: Session, now: datetime, after: datetime, until: datetime) -> int:
        """Plan the reminders pulled forward to ``until`` or before out of the windows that
        started after ``after``, in the session's transaction; return how many rows are now
        pending or earlier than they were."""
        pulled: dict[str, tuple[NewMessage, datetime]] = {}
        for setting, window in self.windows(session, now, after, until):
            values = {"now": now, "w_start": window.start, "w_end": window.end}
            rows = session.connection().execute(self.found, values | setting.values()).mappings()
            found = self._sqlite_rows(rows, now, window) if self.sqlite else self._rows(rows)
            zone = zone_of(setting.timezone)
            for item in found:
                preferences = setting.preferences(item.user_id)
                try:
                    at = pulled_to(item.moment, _due(item.message), preferences, zone)
                except OverflowError:  # a window at the calendar's end: held at send, not pulled
                    continue
                if at is not None and at <= until:
                    message = _available(item.message, max(at, now))
                    pulled[message.key] = (message, item.moment)
        if not pulled:
            return 0
        queued = self.outbox.enqueue(session, [message for message, _ in pulled.values()], now)
        moves = [
            {"b_key": m.key, "b_at": m.available_at, "b_moment": moment, "b_now": now}
            for m, moment in pulled.values()
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
                row["user_id"],
            )
            for row in rows
        ]

    def _sqlite_rows(self, rows: Any, now: datetime, window: QuietWindow) -> list[_Found]:
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
            if candidate.moment not in window or candidate.moment <= now:
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
            found.append(_Found(message, candidate.moment, candidate.user_id))
        return found


def _due(message: NewMessage) -> datetime:
    assert message.subject_at is not None  # the candidates are dated tasks
    return message.subject_at


def _available(message: NewMessage, at: datetime) -> NewMessage:
    return replace(message, available_at=at)


def _read_instant(value: Any) -> datetime:
    converted = UTCDateTime().process_result_value(value, sqlite.dialect())
    assert converted is not None  # the candidates are dated tasks
    return converted


__all__ = ["PullForward", "QuietSetting"]
