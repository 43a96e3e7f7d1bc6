"""What a host's due column holds, and how it becomes the instant a reminder is for.

Three kinds, chosen from the column's type when the mapping is checked:

- `InstantDue`: ``timestamp with time zone`` (and the reference schema on SQLite);
- `LocalDue`: ``timestamp without time zone`` holding wall time in one zone (``due_timezone``);
- `DateDue`: ``date``, an all-day task, reminded as of a fixed local hour in the recipient's
  zone.

Each kind bounds the due window on the raw column, so that the partial index on it applies,
and gives the exact instant for the key, the window's edges and the send-time re-check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Date,
    DateTime,
    Interval,
    String,
    and_,
    case,
    cast,
    column,
    func,
    literal,
    select,
    table,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

from outbox.types import UTCDateTime, at, instant
from worker.reminders.local_time import postgres_instant, reading

#: The local time of an all-day task's reminder moment.
ALL_DAY_AT = time(9, 0)

#: How far a zone's wall time may run from UTC, and more: a window on the raw column this
#: much wider than the exact one holds every row the exact one does.
_ANY_OFFSET = timedelta(hours=15)
#: How far a zone's wall time may run back across a change of its offset.
_ANY_SHIFT = timedelta(hours=3)

_DAY_SECONDS = 86400

_timezone_names = table("pg_timezone_names", column("name", String))


class DueTime(Protocol):
    """One kind of due column."""

    @property
    def kind(self) -> str:
        """The column's SQL type, as messages name it."""
        ...

    @property
    def stored_type(self) -> TypeEngine[Any]:
        """The type the column's values are read and written as (``reminder_due_at`` too)."""
        ...

    @property
    def exact(self) -> bool:
        """Whether `window` is the exact test (no test on `instant` needed after it)."""
        ...

    @property
    def per_recipient(self) -> bool:
        """Whether `instant` depends on the recipient's zone."""
        ...

    def instant(
        self, due: ColumnElement[Any], zone: ColumnElement[str], at: Any = None
    ) -> ColumnElement[datetime]:
        """The moment ``due`` stands for, for a recipient in ``zone`` (a zone name column);
        ``at``, the local time of day of an all-day task (None: `ALL_DAY_AT`)."""
        ...

    def key_instant(self, due: ColumnElement[Any]) -> ColumnElement[datetime]:
        """The due value as one instant whatever the recipient: the reminder key's due date
        (a date: its midnight UTC)."""
        ...

    def moment(
        self, due: ColumnElement[Any], zone: ColumnElement[str], at: Any, offset: Any
    ) -> ColumnElement[datetime]:
        """The moment of a reminder ``offset`` seconds before the due moment (negative:
        after it). For an all-day task it is counted on the recipient's wall clock, so that
        ``1d`` before is the day before at the same local time, whatever DST does."""
        ...

    def offset_window(
        self, due: ColumnElement[Any], after: Any, until: Any, offset: Any
    ) -> ColumnElement[bool]:
        """On the raw column, a range that holds every row with a reminder ``offset``
        seconds before its due moment in (after, until] (it may hold more)."""
        ...

    def window(self, due: ColumnElement[Any], after: Any, until: Any) -> ColumnElement[bool]:
        """On the raw column, a range that holds every row due in (after, until] (it may hold
        more; the exact test is on `instant`), so that an index on the column applies."""
        ...

    def same(self, due: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
        """``due`` holds ``value`` (a value read from such a column)."""
        ...


@dataclass(frozen=True)
class InstantDue:
    """``timestamp with time zone``: the value is the instant."""

    kind: str = "timestamp with time zone"
    exact: bool = True
    per_recipient: bool = False

    @property
    def stored_type(self) -> TypeEngine[Any]:
        return UTCDateTime()

    def instant(
        self, due: ColumnElement[Any], zone: ColumnElement[str], at: Any = None
    ) -> ColumnElement[datetime]:
        return due

    def key_instant(self, due: ColumnElement[Any]) -> ColumnElement[datetime]:
        return due

    def moment(
        self, due: ColumnElement[Any], zone: ColumnElement[str], at: Any, offset: Any
    ) -> ColumnElement[datetime]:
        return shifted(due, -offset)

    def window(self, due: ColumnElement[Any], after: Any, until: Any) -> ColumnElement[bool]:
        moment = instant(due)
        return and_(moment > instant(after), moment <= instant(until))

    def offset_window(
        self, due: ColumnElement[Any], after: Any, until: Any, offset: Any
    ) -> ColumnElement[bool]:
        return self.window(due, shifted(after, offset), shifted(until, offset))

    def same(self, due: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
        return instant(due) == at(value)


@dataclass(frozen=True)
class LocalDue:
    """``timestamp without time zone``: wall time in ``zone`` (PostgreSQL)."""

    zone: str
    kind: str = "timestamp without time zone"
    exact: bool = False
    per_recipient: bool = False

    @property
    def stored_type(self) -> TypeEngine[Any]:
        return DateTime(timezone=False)

    def instant(
        self, due: ColumnElement[Any], zone: ColumnElement[str], at: Any = None
    ) -> ColumnElement[datetime]:
        return func.timezone(self.zone, due, type_=UTCDateTime())

    def key_instant(self, due: ColumnElement[Any]) -> ColumnElement[datetime]:
        return self.instant(due, literal("UTC"))

    def moment(
        self, due: ColumnElement[Any], zone: ColumnElement[str], at: Any, offset: Any
    ) -> ColumnElement[datetime]:
        return shifted(self.instant(due, zone), -offset)

    def offset_window(
        self, due: ColumnElement[Any], after: Any, until: Any, offset: Any
    ) -> ColumnElement[bool]:
        return self.window(due, shifted(after, offset), shifted(until, offset))

    def window(self, due: ColumnElement[Any], after: Any, until: Any) -> ColumnElement[bool]:
        shift = literal(_ANY_SHIFT, Interval())
        return and_(
            due > func.timezone(self.zone, after, type_=DateTime()) - shift,
            due <= func.timezone(self.zone, until, type_=DateTime()) + shift,
        )

    def same(self, due: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
        return due == literal(value, DateTime(timezone=False))


@dataclass(frozen=True)
class DateDue:
    """``date``: an all-day task, due as of `ALL_DAY_AT` in the recipient's zone (PostgreSQL)."""

    at: time = ALL_DAY_AT
    kind: str = "date"
    exact: bool = False
    per_recipient: bool = True

    @property
    def stored_type(self) -> TypeEngine[Any]:
        return Date()

    def instant(
        self, due: ColumnElement[Any], zone: ColumnElement[str], at: Any = None
    ) -> ColumnElement[datetime]:
        return func.timezone(known_zone(zone), self._local(due, at), type_=UTCDateTime())

    def key_instant(self, due: ColumnElement[Any]) -> ColumnElement[datetime]:
        return func.timezone("UTC", cast(due, DateTime()), type_=UTCDateTime())

    def moment(
        self, due: ColumnElement[Any], zone: ColumnElement[str], at: Any, offset: Any
    ) -> ColumnElement[datetime]:
        local = self._local(due, at) - offset * literal(timedelta(seconds=1), Interval())
        return func.timezone(known_zone(zone), local, type_=UTCDateTime())

    def offset_window(
        self, due: ColumnElement[Any], after: Any, until: Any, offset: Any
    ) -> ColumnElement[bool]:
        # The local time of day may be any: a day more on the early side.
        return self.window(due, shifted(after, offset - _DAY_SECONDS), shifted(until, offset))

    def _local(self, due: ColumnElement[Any], at: Any) -> ColumnElement[Any]:
        """The wall time an all-day task is due at: its date at ``at`` (None: `at`)."""
        if at is None:
            hour = timedelta(hours=self.at.hour, minutes=self.at.minute)
            return cast(due, DateTime()) + literal(hour, Interval())
        return cast(due, DateTime()) + cast(at, Interval())

    def window(self, due: ColumnElement[Any], after: Any, until: Any) -> ColumnElement[bool]:
        def utc_date(moment: Any, by: timedelta) -> ColumnElement[Any]:
            shifted = func.timezone("UTC", moment, type_=DateTime()) + literal(by, Interval())
            return cast(shifted, Date())

        return and_(due >= utc_date(after, -_ANY_OFFSET), due <= utc_date(until, _ANY_OFFSET))

    def same(self, due: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
        return due == literal(value, Date())


def all_day_moment(due_at: datetime, at: time, offset: timedelta, zone: ZoneInfo) -> datetime:
    """`DateDue.moment` in Python, for the relay's re-check: the moment ``offset`` before
    (negative: after) an all-day task's due moment ``due_at``, counted on the wall clock in
    ``zone``, each wall time the instant PostgreSQL gives for it (`postgres_instant`).

    ``due_at`` is the instant `DateDue.instant` gave for the task's date at ``at``, the
    recipient's all-day time. Its wall time is that date at ``at``, also where ``at`` is a
    time the clock skipped that day (``due_at`` then reads later); a row planned under
    another all-day time keeps the wall time its ``due_at`` reads.
    """
    seen = reading(due_at, zone)
    local = seen
    for day in (seen.date(), seen.date() - timedelta(days=1)):
        planned = datetime.combine(day, at)
        if postgres_instant(planned, zone) == due_at:
            local = planned
            break
    return postgres_instant(local - offset, zone)


def shifted(moment: Any, seconds: Any) -> ColumnElement[datetime]:
    """``moment`` plus ``seconds`` (a number or an integer column), as an instant."""
    return _Shifted(moment, seconds)


class _Shifted(FunctionElement[datetime]):
    type = UTCDateTime()
    name = "shifted"
    inherit_cache = True


@compiles(_Shifted)
def _shifted(element: _Shifted, compiler: SQLCompiler, **kw: Any) -> str:
    moment, seconds = (compiler.process(c, **kw) for c in element.clauses.clauses)
    return f"({moment} + ({seconds}) * INTERVAL '1 second')"


@compiles(_Shifted, "sqlite")
def _shifted_sqlite(element: _Shifted, compiler: SQLCompiler, **kw: Any) -> str:
    moment, seconds = (compiler.process(c, **kw) for c in element.clauses.clauses)
    return f"strftime('%Y-%m-%d %H:%M:%f', {moment}, ({seconds}) || ' seconds')"


def known_zone(zone: ColumnElement[str]) -> ColumnElement[str]:
    """``zone`` where PostgreSQL knows it by name, else ``'UTC'``: a host's unknown zone must
    not fail the whole batch (``AT TIME ZONE`` raises), and a POSIX-style text such as
    ``'+05'`` would be read with its sign inverted."""
    names = select(_timezone_names.c.name)
    return case((zone.in_(names), zone), else_=literal("UTC"))
