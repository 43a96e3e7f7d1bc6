"""Adding messages to the outbox: the caller says what each one is, the outbox fills in the rest.

A message is its idempotency key, its kind, its subject (the caller's id for what it is about,
and ``subject_at``, the version of it), the moment it becomes available for delivery and,
optionally, the moment it stops being useful (``expires_at``: never sent after it; None, the
default, never expires). The rest of the row (status, attempts, lease, timestamps, replays)
is the outbox's own.

Two ways in, with the same rules:

- from SQL: `insert_selected`, `superseded_ids` and `cancel_selected` build statements that a
  caller embeds in its own, so that one statement can mark its subjects, queue their messages
  and cancel the superseded ones (on PostgreSQL, as CTEs). Build them once: they take their
  values as bound parameters;
- from values: `ValuesEnqueue`, for messages computed in Python.

A key already present is left as it is, unless its row was cancelled: then it is armed again
(its subject came back to that version). A waiting, claimed, delivered or dead row stays, so
that a key is never sent twice. A message supersedes the waiting rows of its subject and kind
under any other key: the caller cancels them in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    ScalarSelect,
    Select,
    SQLColumnExpression,
    String,
    Update,
    and_,
    any_,
    bindparam,
    func,
    literal,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate

from outbox.table import WAITING, OutboxRow, Status
from outbox.types import UTCDateTime

_INSERTS: Mapping[str, Callable[[type[OutboxRow]], postgresql.Insert | sqlite.Insert]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


@dataclass(frozen=True)
class NewMessage:
    """One message to enqueue, as values."""

    key: str
    kind: str
    subject_id: int
    subject_at: datetime | None
    available_at: datetime
    expires_at: datetime | None = None
    recipient_id: int | None = None
    offset_seconds: int | None = None


@dataclass(frozen=True, eq=False)
class NewRows:
    """Messages to enqueue, as SQL: one expression per fact, all from one FROM clause."""

    key: SQLColumnExpression[str]
    kind: SQLColumnExpression[str]
    subject_id: SQLColumnExpression[int]
    subject_at: SQLColumnExpression[Any]
    available_at: SQLColumnExpression[Any]
    expires_at: SQLColumnExpression[Any] | None = None  # None: the rows never expire
    recipient_id: SQLColumnExpression[Any] | None = None
    offset_seconds: SQLColumnExpression[Any] | None = None


def insert_selected(
    rows: NewRows,
    now: SQLColumnExpression[Any],
    *,
    dialect: str,
    where: ColumnElement[bool] | None = None,
) -> ReturningInsert[int]:
    """INSERT of ``rows`` (those for which ``where`` holds) as of ``now``, re-arming cancelled
    keys; RETURNING the id of each row now pending (inserted or re-armed). Embed it as a CTE
    (PostgreSQL) or execute it.
    """
    columns: dict[str, SQLColumnExpression[Any]] = {
        "idempotency_key": rows.key,
        "kind": rows.kind,
        "subject_id": rows.subject_id,
        "subject_at": rows.subject_at,
        "status": literal(Status.PENDING.value),
        "attempts": literal(0),
        "available_at": rows.available_at,
        "expires_at": null() if rows.expires_at is None else rows.expires_at,
        "lease_token": literal(0),
        "unfinished_claims": literal(0),
        "created_at": now,
        "updated_at": now,
        "replay_count": literal(0),
    }
    if rows.recipient_id is not None:
        columns["recipient_id"] = rows.recipient_id
    if rows.offset_seconds is not None:
        columns["offset_seconds"] = rows.offset_seconds
    # In key order: consecutive rows land next to each other in the key's unique index.
    selected = select(*columns.values()).order_by(rows.key)
    if where is not None:
        selected = selected.where(where)
    insert = _INSERTS[dialect](OutboxRow).from_select(list(columns), selected)
    return _rearming(insert).returning(OutboxRow.id)


def superseded_ids(
    subject_id: SQLColumnExpression[int], key: SQLColumnExpression[str], *, kind: str
) -> ScalarSelect[int]:
    """The ids of the waiting rows of ``subject_id`` and ``kind`` under a key other than
    ``key``: what a message under ``key`` supersedes. Correlated: both are the caller's
    columns, and the subquery runs once per row of the caller.

    Per subject, by ix_outbox_subject_id: a join with the caller's batch could be planned as
    a nested loop over every waiting row (the batch has no statistics).
    """
    return (
        select(OutboxRow.id)
        .where(OutboxRow.subject_id == subject_id, OutboxRow.idempotency_key != key, _waiting(kind))
        .correlate_except(OutboxRow)
        .scalar_subquery()
    )


def cancel_selected(
    ids: ScalarSelect[int], *, kind: str, reason: str, now: SQLColumnExpression[Any]
) -> ReturningUpdate[int]:
    """PostgreSQL: cancel, as of ``now`` and for ``reason``, the rows whose ids ``ids``
    selects, those still waiting; RETURNING their ids.
    """
    return (
        update(OutboxRow)
        .where(OutboxRow.id == any_(func.array(ids)), _waiting(kind))  # still waiting?
        .values(status=Status.CANCELLED, last_error=reason, updated_at=now)
        .returning(OutboxRow.id)
    )


@dataclass(frozen=True, eq=False)
class ValuesEnqueue:
    """Enqueue messages given as values, and cancel what they supersede, on one dialect.

    Built once per dialect by `for_dialect`; its statements take every value as a parameter.
    """

    insert: ReturningInsert[int]
    cancel: Update
    cancel_until: Update
    listed: Callable[[Sequence[Any]], Any]  # a list as the value of one parameter

    @classmethod
    def for_dialect(cls, dialect: str) -> ValuesEnqueue:
        """The statements for ``dialect`` (``postgresql`` or ``sqlite``)."""
        subjects: ColumnElement[Any] | ScalarSelect[Any]
        keys: ColumnElement[Any] | ScalarSelect[Any]
        listed: Callable[[Sequence[Any]], Any]
        if dialect == "sqlite":
            subjects, keys, listed = _json_each("subjects"), _json_each("keys"), _json_text
        else:
            subjects = bindparam("subjects", expanding=True)
            keys = bindparam("keys", expanding=True)
            listed = list
        cancel = (
            update(OutboxRow)
            .where(
                OutboxRow.subject_id.in_(subjects),
                OutboxRow.idempotency_key.not_in(keys),
                _waiting(bindparam("of_kind", type_=String())),
            )
            .values(
                status=Status.CANCELLED,
                last_error=bindparam("reason", type_=String()),
                updated_at=bindparam("now", type_=UTCDateTime()),
            )
        )
        until = bindparam("until", type_=UTCDateTime())
        cancel_until = cancel.where(OutboxRow.available_at <= until)
        insert = _rearming(_INSERTS[dialect](OutboxRow)).returning(OutboxRow.id)
        return cls(insert, cancel, cancel_until, listed)

    def enqueue(self, session: Session, messages: Sequence[NewMessage], now: datetime) -> int:
        """Insert ``messages`` as of ``now``; return how many rows are now pending."""
        if not messages:
            return 0
        rows = [
            {
                "idempotency_key": message.key,
                "kind": message.kind,
                "subject_id": message.subject_id,
                "subject_at": message.subject_at,
                "status": Status.PENDING,
                "attempts": 0,
                "available_at": message.available_at,
                "expires_at": message.expires_at,
                "lease_token": 0,
                "unfinished_claims": 0,
                "created_at": now,
                "updated_at": now,
                "replay_count": 0,
                "recipient_id": message.recipient_id,
                "offset_seconds": message.offset_seconds,
            }
            for message in messages
        ]
        return len(session.connection().execute(self.insert, rows).all())

    def cancel_superseded(
        self, session: Session, latest: Mapping[int, str], *, kind: str, reason: str, now: datetime
    ) -> int:
        """Cancel the waiting rows of ``kind`` of each subject in ``latest`` whose key is not
        the one ``latest`` gives it (the one just enqueued); return how many.
        """
        if not latest:
            return 0
        values = {
            "subjects": self.listed(list(latest)),
            "keys": self.listed(list(latest.values())),
            "of_kind": kind,
            "reason": reason,
            "now": now,
        }
        return session.connection().execute(self.cancel, values).rowcount

    def cancel_others(
        self,
        session: Session,
        subjects: Sequence[int],
        keys: Sequence[str],
        *,
        kind: str,
        reason: str,
        now: datetime,
        until: datetime,
    ) -> int:
        """Cancel the waiting rows of ``kind`` of ``subjects`` meant for ``until`` or before
        whose keys are none of ``keys``; return how many."""
        if not subjects:
            return 0
        values = {
            "subjects": self.listed(list(subjects)),
            "keys": self.listed(list(keys)),
            "of_kind": kind,
            "reason": reason,
            "now": now,
            "until": until,
        }
        return session.connection().execute(self.cancel_until, values).rowcount


def _rearming(insert: postgresql.Insert | sqlite.Insert) -> postgresql.Insert | sqlite.Insert:
    """ON CONFLICT on the key: only a cancelled row is armed again, as the new row says
    (its availability and expiry included)."""
    return insert.on_conflict_do_update(
        index_elements=[OutboxRow.idempotency_key],
        where=OutboxRow.status == Status.CANCELLED,
        set_={
            "status": Status.PENDING,
            "attempts": 0,
            "available_at": insert.excluded.available_at,
            "expires_at": insert.excluded.expires_at,
            "unfinished_claims": 0,
            "updated_at": insert.excluded.updated_at,
            "last_error": null(),  # None here would make SQLAlchemy insert row by row
        },
    )


def _waiting(kind: str | ColumnElement[str]) -> ColumnElement[bool]:
    """A row of ``kind`` still waiting to be sent.

    Spelt ``status NOT IN`` the other statuses, so that it does not imply ix_outbox_due's
    predicate: read through that index, every waiting row of every subject is checked against
    the batch (with a generic plan, once psycopg has prepared the statement), a cost that grows
    with the backlog; by ix_outbox_subject_id it is one probe per subject.
    """
    others = [status for status in Status if status not in WAITING]
    return and_(OutboxRow.kind == kind, OutboxRow.status.not_in(others))


def _json_text(values: Sequence[Any]) -> str:
    return json.dumps(list(values))


def _json_each(name: str) -> ScalarSelect[Any]:
    """SQLite: a list as one parameter (JSON text), however long (its variables are few)."""
    listed: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam(name, type_=String()))
    )
    return listed.scalar_subquery()
