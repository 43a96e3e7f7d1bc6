"""The reference schema the host application owns, plus the worker's own column."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, MetaData, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outbox.table import NAMING
from outbox.types import UTCDateTime


class Base(DeclarativeBase):
    """Declarative base of the host application's tables as the worker sees them."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    """A task owner; the only source of a reminder's recipient and time zone."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    email: Mapped[str] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(Text, server_default="UTC")
    notifications_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("TRUE"))


# The rows the due query can ever return: open, dated, and not yet reminded for the
# due date they have now. Everything else stays out of the index, so a scan costs what
# is still to remind, not the size of the table.
AWAITING_REMINDER = (
    "completed_at IS NULL AND due_date IS NOT NULL AND reminder_due_at IS DISTINCT FROM due_date"
)
AWAITING_REMINDER_SQLITE = AWAITING_REMINDER.replace("IS DISTINCT FROM", "IS NOT")


class Task(Base):
    """A task; the worker writes only ``reminder_sent_at`` and ``reminder_due_at``."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(Text)
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminder_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The due date the last reminder was queued for: a moved due date differs from it,
    # which re-arms the reminder without the host application doing anything.
    reminder_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index(
            "ix_tasks_awaiting_reminder",
            "due_date",
            postgresql_where=text(AWAITING_REMINDER),
            sqlite_where=text(AWAITING_REMINDER_SQLITE),
        ),
        Index("ix_tasks_owner_id", "owner_id"),
    )


class ScanHeartbeat(Base):
    """The last scan's time and counts (one row), for ``reminders status`` and health."""

    __tablename__ = "reminder_scan_heartbeat"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, default=1)
    scanned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    queued: Mapped[int]
    marked: Mapped[int]
    duration_ms: Mapped[float]
