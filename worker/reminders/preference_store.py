"""The worker's table of user preferences, and how a preference is stored, read and used.

``reminder_preferences`` (revision 0006) holds one row per user that set anything: the
id of a user in the host's users table (no foreign key: that table is the host's), the
kinds opted out of, the quiet window and its weekdays (a bit mask, bit 0 Monday), the
digest time, the pause date, the user's own channel URL (a secret). A user without a row
has the defaults: every reminder, at its moment, on the configured channel.

The send-time re-check reads a batch's preferences in one query (`screens`): it uses the
opt-out, the channel URL and the digest time (`Screens.screen`), and the pause and quiet hours
(`Screens.preferences`, decided by `worker.reminders.send_time`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    SmallInteger,
    Table,
    Text,
    Time,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from outbox.channels.base import Message
from outbox.types import UTCDateTime
from worker.errors import UnknownUser
from worker.reminders.digest_slots import DigestSchedule
from worker.reminders.host import HostSchema
from worker.reminders.preferences import (
    PreferenceEdit,
    Preferences,
    QuietHours,
    days_mask,
    decode_kinds,
    encode_kinds,
    mask_days,
)
from worker.reminders.rule_store import user_exists
from worker.reminders.schema import Base, among

OPTED_OUT = "recipient unsubscribed"


class PreferencesRow(Base):
    """One user's preferences, as stored."""

    __tablename__ = "reminder_preferences"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    opted_out: Mapped[str | None] = mapped_column(Text)
    quiet_start: Mapped[time | None] = mapped_column(Time)
    quiet_end: Mapped[time | None] = mapped_column(Time)
    quiet_days: Mapped[int | None] = mapped_column(SmallInteger)
    digest_at: Mapped[time | None] = mapped_column(Time)
    digest_workdays: Mapped[bool] = mapped_column(Boolean)
    pause_until: Mapped[date | None] = mapped_column(Date)
    channel_url: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("(quiet_start IS NULL) = (quiet_end IS NULL)", name="quiet_window"),
        CheckConstraint("quiet_start IS NULL OR quiet_start <> quiet_end", name="quiet_length"),
        CheckConstraint(
            "quiet_days IS NULL OR (quiet_days > 0 AND quiet_days < 128)", name="quiet_days"
        ),
    )


_table = cast(Table, PreferencesRow.__table__)
#: The stored preferences of the users given as ``user_ids``.
_stored_of = select(_table).where(among(_table.c.user_id, "user_ids"))


@dataclass(frozen=True)
class Screen:
    """What a user's preferences say of one reminder at send time: why it must not go out
    (None: it may), the user's own channel URL (None: none set) and digest schedule (None:
    each reminder at its moment)."""

    refusal: str | None = None
    channel_url: str | None = None
    digest: DigestSchedule | None = None

    def addressed(self, message: Message) -> Message:
        """``message`` with the user's channel URL, for a channel that delivers to it."""
        if self.channel_url is None:
            return message
        return replace(message, channel_url=self.channel_url)


def preferences(session: Session, user_id: int) -> Preferences:
    """The user's preferences: the stored ones, or the defaults."""
    row = session.execute(select(_table).where(_table.c.user_id == user_id)).first()
    return Preferences(user_id) if row is None else _preferences(row)


def preferences_for(session: Session, user_ids: Iterable[int]) -> dict[int, Preferences]:
    """The stored preferences of these users, by id (absent: the defaults)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = session.execute(_stored_of, {"user_ids": ids})
    return {row.user_id: _preferences(row) for row in rows}


@dataclass(frozen=True)
class Screens:
    """The send-time facts of a batch's users, read once: their stored preferences."""

    found: Mapping[int, Preferences]

    def preferences(self, user_id: int) -> Preferences:
        """The user's preferences as read (the defaults for a user without a row)."""
        return self.found.get(user_id) or Preferences(user_id)

    def screen(self, user_id: int, kind: str) -> Screen:
        """The verdict of the user's preferences on a reminder of ``kind``: refused when the
        user opted out of it, with the user's channel URL and digest schedule otherwise."""
        if user_id not in self.found:
            return Screen()
        chosen = self.found[user_id]
        if chosen.opted_out_of(kind):
            return Screen(refusal=OPTED_OUT)
        return Screen(channel_url=chosen.channel_url, digest=_schedule(chosen))


def screens(session: Session, user_ids: Iterable[int]) -> Screens:
    """The send-time facts of these users, in one query (none when no id is given)."""
    return Screens(preferences_for(session, user_ids))


def _schedule(chosen: Preferences) -> DigestSchedule | None:
    if chosen.digest_at is None:
        return None
    return DigestSchedule(chosen.digest_at.replace(second=0, microsecond=0), chosen.digest_workdays)


def screen(session: Session, user_id: int, kind: str) -> Screen:
    """The send-time verdict on one reminder of ``kind`` to ``user_id`` (see `Screens`)."""
    return screens(session, [user_id]).screen(user_id, kind)


def save_preferences(
    session: Session,
    host: HostSchema | None,
    chosen: Preferences,
    *,
    now: datetime,
) -> bool:
    """Store ``chosen`` as its user's preferences; return whether anything changed.

    ``host`` given: the user must be in the host's users table (a link's opt-out passes
    None: its token proved the user once had a reminder).

    Raises:
        UnknownUser: ``host`` given and the user is not in its users table.
    """
    if host is not None and not user_exists(session, host, chosen.user_id):
        table = host.mapping.users.table
        raise UnknownUser(f"user {chosen.user_id} is not in table {table}: nothing set")
    current = _locked(session, chosen.user_id)
    if current is not None and replace(current, updated_at=None) == replace(
        chosen, updated_at=None
    ):
        return False
    values = _values(chosen, now)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    upsert = insert(_table).values(values)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=[_table.c.user_id],
            set_={name: upsert.excluded[name] for name in values if name != "user_id"},
        )
    )
    return True


def opt_out(session: Session, user_id: int, kinds: frozenset[str], *, now: datetime) -> bool:
    """Add ``kinds`` to the user's opt-outs; return whether that changed anything."""
    current = _locked(session, user_id) or Preferences(user_id)
    return save_preferences(
        session, None, replace(current, opted_out=current.opted_out | kinds), now=now
    )


def clear_preferences(session: Session, user_id: int) -> bool:
    """Delete the user's preferences (the defaults hold again); return whether there were
    any."""
    deleted = session.execute(
        delete(_table).where(_table.c.user_id == user_id).returning(_table.c.user_id)
    ).first()
    return deleted is not None


def _locked(session: Session, user_id: int) -> Preferences | None:
    """The stored preferences, their row locked for this transaction (PostgreSQL)."""
    row = session.execute(
        select(_table).where(_table.c.user_id == user_id).with_for_update()
    ).first()
    return None if row is None else _preferences(row)


def _preferences(row: Any) -> Preferences:
    quiet = None
    if row.quiet_start is not None and row.quiet_end is not None:
        quiet = QuietHours(row.quiet_start, row.quiet_end, mask_days(row.quiet_days))
    return Preferences(
        user_id=row.user_id,
        opted_out=decode_kinds(row.opted_out),
        quiet=quiet,
        digest_at=row.digest_at,
        digest_workdays=bool(row.digest_workdays),
        pause_until=row.pause_until,
        channel_url=row.channel_url,
        updated_at=row.updated_at,
    )


def _values(chosen: Preferences, now: datetime) -> dict[str, Any]:
    quiet = chosen.quiet
    return {
        "user_id": chosen.user_id,
        "opted_out": encode_kinds(chosen.opted_out),
        "quiet_start": None if quiet is None else quiet.start,
        "quiet_end": None if quiet is None else quiet.end,
        "quiet_days": None if quiet is None else days_mask(quiet.days),
        "digest_at": chosen.digest_at,
        "digest_workdays": chosen.digest_workdays,
        "pause_until": chosen.pause_until,
        "channel_url": chosen.channel_url,
        "updated_at": now,
    }


__all__ = [
    "OPTED_OUT",
    "PreferencesRow",
    "Recipient",
    "Screen",
    "Screens",
    "clear_preferences",
    "edit_preferences",
    "opt_out",
    "preferences",
    "preferences_for",
    "recipient",
    "save_preferences",
    "screen",
    "screens",
]


@dataclass(frozen=True)
class Recipient:
    """What the preferences need of a user in the host's users table."""

    timezone: str | None
    locale: str | None


def recipient(session: Session, host: HostSchema, user_id: int) -> Recipient | None:
    """The user's zone name and locale, or None when the host has no such user."""
    users = host.users
    found = session.execute(
        select(users.timezone, users.locale).select_from(users.table).where(users.id == user_id)
    ).first()
    return None if found is None else Recipient(found[0], found[1])


def edit_preferences(
    session: Session, host: HostSchema, user_id: int, edit: PreferenceEdit, *, now: datetime
) -> tuple[Preferences, bool]:
    """Make ``edit`` to the user's preferences, in the session's transaction: the
    preferences now, and whether they changed. Dates are checked in the user's zone.

    Raises:
        UnknownUser: the user is not in the host's users table; nothing changes.
        InvalidPreference: a value of ``edit`` is refused; nothing changes.
    """
    found = recipient(session, host, user_id)
    if found is None:
        table = host.mapping.users.table
        raise UnknownUser(f"user {user_id} is not in table {table}: nothing set")
    current = _locked(session, user_id) or Preferences(user_id)
    chosen = edit.applied(current, now.astimezone(_zone(found.timezone)).date())
    changed = save_preferences(session, None, chosen, now=now)
    return (replace(chosen, updated_at=now) if changed else current), changed


def _zone(name: str | None) -> tzinfo:
    try:
        return ZoneInfo((name or "UTC").strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return UTC
