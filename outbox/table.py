"""The outbox table: one row per message, its delivery state owned by the row itself."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outbox.types import BigIntId, UTCDateTime


class Status(StrEnum):
    """Where a row is in its life.

    pending -> claimed -> delivered | failed (retried later) | dead | cancelled | expired.
    A claimed row belongs to one relay until its lease (``available_at``) expires. A row
    whose ``expires_at`` has passed is never sent: it ends ``expired`` (at its claim, or
    when its next attempt would start after it).
    """

    PENDING = "pending"
    CLAIMED = "claimed"
    FAILED = "failed"
    DELIVERED = "delivered"
    DEAD = "dead"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


#: Rows a relay may still pick up (a claimed row once its lease has expired).
ACTIVE = (Status.PENDING, Status.FAILED, Status.CLAIMED)
#: Rows waiting for their next attempt, which a newer message may supersede.
WAITING = (Status.PENDING, Status.FAILED)
#: Rows whose story is over; purge may delete them.
FINISHED = (Status.DELIVERED, Status.CANCELLED)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class OutboxBase(DeclarativeBase):
    """Declarative base of the outbox's own tables."""

    metadata = MetaData(naming_convention=NAMING)


_active_sql = "status IN ('pending', 'failed', 'claimed')"
_finished_sql = "status IN ('delivered', 'cancelled')"
_expiring_sql = f"{_active_sql} AND expires_at IS NOT NULL"


class OutboxRow(OutboxBase):
    """A message to deliver, keyed by an idempotency key that never changes."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(50))
    # What the message is about (the domain's id) and which version of it (a due date).
    subject_id: Mapped[int] = mapped_column(BigInteger, index=True)
    subject_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Whom it goes to (the domain's id; None: the subject's own recipient), and when it is
    # meant for relative to ``subject_at``: ``subject_at - offset_seconds`` (None: at once).
    recipient_id: Mapped[int | None] = mapped_column(BigInteger)
    offset_seconds: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=Status.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    # Next attempt time; for a claimed row, the moment its lease expires.
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replayed_by: Mapped[str | None] = mapped_column(String(200))
    replay_count: Mapped[int] = mapped_column(default=0)
    # When the message stops being useful: never sent after it (NULL: never expires).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Claims in a row whose attempt never recorded an outcome (their worker died): what ends
    # a row with an expiry, which no count of failed attempts does, that kills every worker.
    unfinished_claims: Mapped[int] = mapped_column(default=0, server_default=text("0"))

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'claimed', 'failed', 'delivered', 'dead', 'cancelled', "
            "'expired')",
            name="status",
        ),
        Index(
            "ix_outbox_due",
            "available_at",
            "id",
            postgresql_where=text(_active_sql),
            sqlite_where=text(_active_sql),
        ),
        # The claim expires what is due past its expiry without reading the live rows.
        Index(
            "ix_outbox_expiring",
            "expires_at",
            postgresql_where=text(_expiring_sql),
            sqlite_where=text(_expiring_sql),
        ),
        # A recipient's live rows (the burst rule counts them) without reading the others'.
        Index(
            "ix_outbox_recipient",
            "recipient_id",
            postgresql_where=text(_active_sql),
            sqlite_where=text(_active_sql),
        ),
        # Purge deletes finished rows by age without reading the live ones.
        Index(
            "ix_outbox_finished",
            "updated_at",
            postgresql_where=text(_finished_sql),
            sqlite_where=text(_finished_sql),
        ),
    )


outbox_table = OutboxRow.__table__
