"""The outbox's enqueue API on its own: a tiny subject table of notes, no reminder domain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    cast,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from outbox.enqueue import (
    NewMessage,
    NewRows,
    ValuesEnqueue,
    cancel_selected,
    insert_selected,
    superseded_ids,
)
from outbox.table import OutboxRow, Status
from outbox.types import UTCDateTime
from tests.support.clock import T0
from worker.db import make_session_factory

LATER = T0 + timedelta(minutes=5)
HOUR = timedelta(hours=1)
KIND = "note_edited"

notes_metadata = MetaData()
notes = Table(
    "notes",
    notes_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    Column("edited_at", UTCDateTime, nullable=False),
    Column("announced", Integer, nullable=False, default=0),
)


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated database that also holds the notes table."""
    notes_metadata.create_all(engine)
    yield make_session_factory(engine)


def values_enqueue(engine: Engine) -> ValuesEnqueue:
    """The values API for this test's dialect."""
    return ValuesEnqueue.for_dialect(engine.dialect.name)


def message(note_id: int, version: int = 1) -> NewMessage:
    """A note's message for one version, available at T0."""
    return NewMessage(f"note-{note_id}-v{version}", KIND, note_id, T0, available_at=T0)


def rows(sessions: sessionmaker[Session]) -> dict[str, dict[str, Any]]:
    """Every outbox row by key, as a dict of its columns."""
    with sessions() as session:
        found = session.execute(select(OutboxRow.__table__)).mappings().all()
    return {row["idempotency_key"]: dict(row) for row in found}


def set_status(sessions: sessionmaker[Session], key: str, status: Status) -> None:
    """Move one row to ``status``, as the relay or an operator would."""
    with sessions.begin() as session:
        session.execute(
            update(OutboxRow)
            .where(OutboxRow.idempotency_key == key)
            .values(status=status, attempts=3, last_error="boom")
        )


def test_the_outbox_fills_in_its_own_columns(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """A message given as values becomes a pending row, never attempted, with no lease."""
    enqueue = values_enqueue(engine)
    later = NewMessage("note-2-v1", KIND, 2, None, available_at=LATER)
    with sessions.begin() as session:
        assert enqueue.enqueue(session, [message(1), later], now=T0) == 2
    found = rows(sessions)
    assert {key: row["available_at"] for key, row in found.items()} == {
        "note-1-v1": T0,
        "note-2-v1": LATER,
    }
    first = found["note-1-v1"]
    assert (first["kind"], first["subject_id"], first["subject_at"]) == (KIND, 1, T0)
    assert (first["status"], first["attempts"], first["lease_token"]) == (Status.PENDING, 0, 0)
    assert (first["created_at"], first["updated_at"], first["replay_count"]) == (T0, T0, 0)
    assert first["lease_owner"] is None and first["last_error"] is None
    assert first["expires_at"] is None  # by default a message never expires


def test_an_expiry_is_written_and_a_rearmed_row_takes_the_new_one(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """``expires_at`` given as a value or as SQL is the row's; re-arming a cancelled key
    takes the new message's expiry."""
    enqueue = values_enqueue(engine)
    first = NewMessage("note-1-v1", KIND, 1, T0, available_at=T0, expires_at=LATER)
    with sessions.begin() as session:
        enqueue.enqueue(session, [first], now=T0)
    assert rows(sessions)["note-1-v1"]["expires_at"] == LATER
    set_status(sessions, "note-1-v1", Status.CANCELLED)
    again = NewMessage("note-1-v1", KIND, 1, T0, available_at=T0, expires_at=LATER + HOUR)
    with sessions.begin() as session:
        assert enqueue.enqueue(session, [again], now=LATER) == 1
    assert rows(sessions)["note-1-v1"]["expires_at"] == LATER + HOUR
    add_notes(sessions, 2)
    now = literal(LATER, UTCDateTime())
    selected = NewRows(
        key=note_key(notes.c.version),
        kind=literal(KIND),
        subject_id=notes.c.id,
        subject_at=notes.c.edited_at,
        available_at=now,
        expires_at=notes.c.edited_at,
    )
    with sessions.begin() as session:
        session.execute(insert_selected(selected, now, dialect=engine.dialect.name))
    assert rows(sessions)["note-2-v1"]["expires_at"] == T0


@pytest.mark.parametrize(
    "status", [Status.PENDING, Status.FAILED, Status.CLAIMED, Status.DELIVERED, Status.DEAD]
)
def test_a_key_present_and_not_cancelled_is_left_alone(
    engine: Engine, sessions: sessionmaker[Session], status: Status
) -> None:
    """Enqueuing a key again adds no row and changes nothing, whatever became of it."""
    enqueue = values_enqueue(engine)
    with sessions.begin() as session:
        enqueue.enqueue(session, [message(1)], now=T0)
    set_status(sessions, "note-1-v1", status)
    before = rows(sessions)
    with sessions.begin() as session:
        assert enqueue.enqueue(session, [message(1)], now=LATER) == 0
    assert rows(sessions) == before


def test_a_cancelled_key_is_armed_again(engine: Engine, sessions: sessionmaker[Session]) -> None:
    """A cancelled row comes back pending, its attempts and error cleared, as of the new row."""
    enqueue = values_enqueue(engine)
    with sessions.begin() as session:
        enqueue.enqueue(session, [message(1)], now=T0)
    set_status(sessions, "note-1-v1", Status.CANCELLED)
    again = NewMessage("note-1-v1", KIND, 1, T0, available_at=LATER + timedelta(minutes=1))
    with sessions.begin() as session:
        assert enqueue.enqueue(session, [again], now=LATER) == 1
    [row] = rows(sessions).values()
    assert (row["status"], row["attempts"], row["last_error"]) == (Status.PENDING, 0, None)
    assert (row["available_at"], row["updated_at"]) == (again.available_at, LATER)
    assert row["created_at"] == T0  # the same row, armed again


def test_only_waiting_rows_of_the_subject_and_kind_under_other_keys_are_superseded(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """Pending and failed rows under an older key are cancelled; the rest is untouched."""
    enqueue = values_enqueue(engine)
    older = [message(1, 1), message(1, 2), message(1, 3), message(1, 4), message(1, 5)]
    others = [message(2, 1), NewMessage("other-1", "other_kind", 1, T0, available_at=T0)]
    with sessions.begin() as session:
        enqueue.enqueue(session, [*older, *others], now=T0)
    set_status(sessions, "note-1-v2", Status.FAILED)
    set_status(sessions, "note-1-v3", Status.CLAIMED)
    set_status(sessions, "note-1-v4", Status.DELIVERED)
    with sessions.begin() as session:
        assert enqueue.enqueue(session, [message(1, 6)], now=LATER) == 1
        latest = {1: "note-1-v6"}
        cancelled = enqueue.cancel_superseded(
            session, latest, kind=KIND, reason="a newer version", now=LATER
        )
    assert cancelled == 3
    found = rows(sessions)
    assert {key: row["status"] for key, row in found.items()} == {
        "note-1-v1": Status.CANCELLED,
        "note-1-v2": Status.CANCELLED,
        "note-1-v3": Status.CLAIMED,
        "note-1-v4": Status.DELIVERED,
        "note-1-v5": Status.CANCELLED,
        "note-2-v1": Status.PENDING,
        "other-1": Status.PENDING,
        "note-1-v6": Status.PENDING,
    }
    assert found["note-1-v5"]["last_error"] == "a newer version"
    assert found["note-1-v5"]["updated_at"] == LATER


def test_nothing_to_enqueue_or_supersede_sends_nothing(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """Empty input returns 0 without a statement."""
    enqueue = values_enqueue(engine)
    with sessions.begin() as session:
        assert enqueue.enqueue(session, [], now=T0) == 0
        assert enqueue.cancel_superseded(session, {}, kind=KIND, reason="-", now=T0) == 0


def note_key(version: Any) -> Any:
    """A note's key in SQL, as `message` writes it in Python."""
    return literal("note-") + cast(notes.c.id, String) + "-v" + cast(version, String)


def add_notes(sessions: sessionmaker[Session], *ids: int, version: int = 1) -> None:
    """Insert notes at ``version``, edited at T0."""
    with sessions.begin() as session:
        for note_id in ids:
            session.execute(notes.insert().values(id=note_id, version=version, edited_at=T0))


def test_rows_from_a_select_are_inserted_in_key_order(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """INSERT … SELECT from the caller's table: the outbox's columns filled, ids in key order."""
    add_notes(sessions, 3, 1, 2)
    now = literal(LATER, UTCDateTime())
    selected = NewRows(
        key=note_key(notes.c.version),
        kind=literal(KIND),
        subject_id=notes.c.id,
        subject_at=notes.c.edited_at,
        available_at=now,
    )
    statement = insert_selected(selected, now, dialect=engine.dialect.name)
    with sessions.begin() as session:
        assert len(session.execute(statement).all()) == 3
        assert len(session.execute(statement).all()) == 0  # the same keys: left alone
    found = rows(sessions)
    assert sorted(found, key=lambda key: found[key]["id"]) == [
        "note-1-v1",
        "note-2-v1",
        "note-3-v1",
    ]
    row = found["note-2-v1"]
    assert (row["status"], row["attempts"], row["lease_token"], row["replay_count"]) == (
        Status.PENDING,
        0,
        0,
        0,
    )
    assert (row["subject_at"], row["available_at"], row["created_at"]) == (T0, LATER, LATER)


def test_one_statement_marks_subjects_enqueues_and_supersedes(
    postgres_engine: Engine,
) -> None:
    """PostgreSQL: the SQL pieces compose into one statement with the caller's own UPDATE."""
    notes_metadata.create_all(postgres_engine)
    sessions = make_session_factory(postgres_engine)
    add_notes(sessions, 1, 2)
    with sessions.begin() as session:
        ValuesEnqueue.for_dialect("postgresql").enqueue(session, [message(1)], now=T0)
        session.execute(update(notes).where(notes.c.id == 1).values(version=2))
    now = literal(LATER, UTCDateTime())
    key = note_key(notes.c.version)
    stale = superseded_ids(notes.c.id, key, kind=KIND)
    marked = (
        update(notes)
        .values(announced=notes.c.version)
        .returning(
            notes.c.id, notes.c.edited_at, key.label("key"), func.array(stale).label("stale")
        )
        .cte("marked")
    )
    selected = NewRows(marked.c.key, literal(KIND), marked.c.id, marked.c.edited_at, now)
    queued = insert_selected(selected, now, dialect="postgresql").cte("queued")
    stale_ids = select(func.unnest(marked.c.stale)).scalar_subquery()
    superseded = cancel_selected(stale_ids, kind=KIND, reason="a newer version", now=now).cte(
        "superseded"
    )
    counts = select(
        *(
            select(func.count()).select_from(cte).scalar_subquery()
            for cte in (marked, queued, superseded)
        )
    )
    with sessions.begin() as session:
        assert tuple(session.execute(counts).one()) == (2, 2, 1)
    found = rows(sessions)
    assert {key: row["status"] for key, row in found.items()} == {
        "note-1-v1": Status.CANCELLED,
        "note-1-v2": Status.PENDING,
        "note-2-v1": Status.PENDING,
    }
    assert found["note-1-v1"]["last_error"] == "a newer version"
    with sessions() as session:
        assert session.scalars(select(notes.c.announced).order_by(notes.c.id)).all() == [2, 1]
