"""Column types shared by the outbox and the schemas that write into it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from outbox.clock import require_utc

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that only takes aware datetimes and returns them in UTC.

    SQLite stores no offset: values are written as UTC wall time, and a value read
    without an offset (for example written by the host application) is taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        utc = require_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if not isinstance(moment, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


class instant(FunctionElement[datetime]):
    """A timestamp as an instant to compare, whatever text the writer used for it.

    PostgreSQL compares ``timestamptz`` values natively: this renders the expression
    itself, so indexes apply. SQLite stores timestamps as text, and a host application
    may write ``2026-11-28T13:00:00+01:00`` where this package writes
    ``2026-11-28 12:00:00.000000``: there it renders ``strftime(...)``, which reads any
    ISO 8601 spelling and gives UTC text to the millisecond, so comparisons hold.
    """

    type = UTCDateTime()
    name = "instant"
    inherit_cache = True


@compiles(instant)
def _instant(element: instant, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(instant, "sqlite")
def _instant_sqlite(element: instant, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d %H:%M:%f', {compiler.process(element.clauses, **kw)})"


def at(moment: datetime) -> instant:
    """A Python datetime as an `instant` bound parameter."""
    return instant(bindparam(None, moment, type_=UTCDateTime()))
