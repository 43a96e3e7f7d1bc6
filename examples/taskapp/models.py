"""The task app's tables, as the app itself declares them (SQLAlchemy 2).

The reminder workers add two columns and an index of their own to ``todo_items``; the app
neither declares nor writes them, and its migrations leave them alone (``migrations/env.py``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, MetaData, Text, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: BIGSERIAL on PostgreSQL; SQLite numbers rows only through an INTEGER primary key.
BigSerial = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of the app's own tables."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Account(Base):
    """A person who is assigned tasks; their address, zone, language and opt-in."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigSerial, primary_key=True)
    email_address: Mapped[str] = mapped_column(Text)
    tz: Mapped[str | None] = mapped_column(Text)
    wants_reminders: Mapped[bool] = mapped_column(Boolean, server_default=true())
    lang: Mapped[str | None] = mapped_column(Text)


class TodoItem(Base):
    """A task; ``deadline`` is a timestamp without time zone holding UTC, as Rails and Django
    store them by default."""

    __tablename__ = "todo_items"

    id: Mapped[int] = mapped_column(BigSerial, primary_key=True)
    assignee_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("accounts.id"), index=True
    )
    name: Mapped[str] = mapped_column(Text)
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=False))
    status: Mapped[str] = mapped_column(Text, server_default="open")
