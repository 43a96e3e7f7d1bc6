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
from sqlalchemy.types import TypeEngine

from outbox.types import UTCDateTime, at, instant

#: The local time of an all-day task's reminder moment.
ALL_DAY_AT = time(9, 0)

#: How far a zone's wall time may run from UTC, and more: a window on the raw column this
#: much wider than the exact one holds every row the exact one does.
_ANY_OFFSET = timedelta(hours=15)
#: How far a zone's wall time may run back across a change of its offset.
_ANY_SHIFT = timedelta(hours=3)

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

    def instant(self, due: ColumnElement[Any], zone: ColumnElement[str]) -> ColumnElement[datetime]:
        """The moment ``due`` stands for, for a recipient in ``zone`` (a zone name column)."""
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

    def instant(self, due: ColumnElement[Any], zone: ColumnElement[str]) -> ColumnElement[datetime]:
        return due

    def window(self, due: ColumnElement[Any], after: Any, until: Any) -> ColumnElement[bool]:
        moment = instant(due)
        return and_(moment > instant(after), moment <= instant(until))

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

    def instant(self, due: ColumnElement[Any], zone: ColumnElement[str]) -> ColumnElement[datetime]:
        return func.timezone(self.zone, due, type_=UTCDateTime())

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

    def instant(self, due: ColumnElement[Any], zone: ColumnElement[str]) -> ColumnElement[datetime]:
        hour = timedelta(hours=self.at.hour, minutes=self.at.minute)
        local = cast(due, DateTime()) + literal(hour, Interval())
        return func.timezone(known_zone(zone), local, type_=UTCDateTime())

    def window(self, due: ColumnElement[Any], after: Any, until: Any) -> ColumnElement[bool]:
        def utc_date(moment: Any, by: timedelta) -> ColumnElement[Any]:
            shifted = func.timezone("UTC", moment, type_=DateTime()) + literal(by, Interval())
            return cast(shifted, Date())

        return and_(due >= utc_date(after, -_ANY_OFFSET), due <= utc_date(until, _ANY_OFFSET))

    def same(self, due: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
        return due == literal(value, Date())


def known_zone(zone: ColumnElement[str]) -> ColumnElement[str]:
    """``zone`` where PostgreSQL knows it by name, else ``'UTC'``: a host's unknown zone must
    not fail the whole batch (``AT TIME ZONE`` raises), and a POSIX-style text such as
    ``'+05'`` would be read with its sign inverted."""
    names = select(_timezone_names.c.name)
    return case((zone.in_(names), zone), else_=literal("UTC"))
