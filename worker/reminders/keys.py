"""A reminder's idempotency key: ``due_soon-YYYYMMDDTHHMMSS[.ffffff]Z-<id>[-o<offset>][-u<user>]``,
defined once.

One key per (task, due date, reminder of the rule, recipient): the offset (seconds before the
due moment; negative for an overdue nudge) and the recipient are left out where they are the
built-in rule's lead time and the task's owner, so that the one reminder a task had before rules
existed keeps its key. The due date is the task's due value as stored (a date column: that
date at midnight UTC), so that a recipient's zone or an all-day hour changing does not give
a reminder already sent a new key.

`reminder_key` is the definition. PostgreSQL's scan writes keys in SQL (`reminder_key_sql`), so
that no row of a batch goes through Python; tests hold it equal to `reminder_key` for any task
id and instant. SQLite's scan calls `reminder_key` on each due date it reads back: SQLite keeps
timestamps as text, in whatever spelling the host application wrote (an offset, a ``T``), and
its date functions keep milliseconds only, so SQL there could not give the key to the
microsecond.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, String, case, cast, func, literal

from outbox.clock import require_utc

REMINDER_KIND = "due_soon"


def reminder_key(task_id: int, due_date: datetime, kind: str = REMINDER_KIND) -> str:
    """The idempotency key of a reminder: the same (task, due date, kind) always gives it.

    Usable as the local part of a Message-ID and as a webhook id. The due date comes before
    the task so that keys sort by due time: a scan's new keys land side by side at the end
    of the key's unique index, not in every one of its pages. UTC; microseconds only when
    there are some; the year unpadded (year 999 is ``999``), as PostgreSQL's ``FMYYYY``
    writes it.
    """
    due = require_utc(due_date)
    stamp = f"{due.year}{due:%m%dT%H%M%S}" + (f".{due.microsecond:06d}" if due.microsecond else "")
    return f"{kind}-{stamp}Z-{task_id}"


def reminder_variant(offset: int, recipient: int, owner: int, *, legacy_offset: int) -> str:
    """The key's tail after the task id: which reminder of the task, for whom."""
    tail = "" if offset == legacy_offset else f"-o{offset}"
    return tail + ("" if recipient == owner else f"-u{recipient}")


def reminder_variant_sql(
    offset: SQLColumnExpression[int],
    recipient: SQLColumnExpression[int],
    owner: SQLColumnExpression[int],
    *,
    legacy_offset: int,
) -> ColumnElement[str]:
    """`reminder_variant` in SQL."""
    by_offset = case((offset == legacy_offset, ""), else_="-o" + cast(offset, String))
    by_recipient = case((recipient == owner, ""), else_="-u" + cast(recipient, String))
    return by_offset + by_recipient


def reminder_key_sql(
    task_id: SQLColumnExpression[int],
    due_date: SQLColumnExpression[Any],
    kind: str = REMINDER_KIND,
) -> ColumnElement[str]:
    """`reminder_key` in PostgreSQL, whatever the session's time zone."""
    utc = func.timezone("UTC", due_date)
    micro = func.to_char(utc, "US")
    return (
        literal(f"{kind}-")
        + func.to_char(utc, 'FMYYYYMMDD"T"HH24MISS')
        + case((micro == "000000", ""), else_="." + micro)
        + "Z-"
        + cast(task_id, String)
    )
