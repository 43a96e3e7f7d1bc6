"""What a link of a reminder does once its token is verified: unsubscribe, or snooze.

Plain functions over a session and a moment, for ``reminders serve`` to call; the caller
commits. An unsubscribe opts the user out of every kind of reminder (the re-check before
each send honours it); a snooze postpones that one reminder while it waits to be sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from outbox.admin import follow_up, postpone
from outbox.table import Status
from worker.reminders import preference_store
from worker.reminders.host import HostSchema
from worker.reminders.plan import LATE_LIFETIME
from worker.reminders.preference_store import Recipient
from worker.reminders.preferences import ALL_KINDS
from worker.reminders.tokens import LinkClaim


class Snoozed(StrEnum):
    """How a snooze went."""

    POSTPONED = "postponed"
    UNKNOWN = "unknown"  # no reminder has the key (never queued, or purged)
    SENDING = "sending"  # claimed by a relay: being sent now
    SENT = "sent"  # delivered already
    OVER = "over"  # cancelled, expired or dead: it will not be sent


@dataclass(frozen=True)
class SnoozeResult:
    """A snooze's outcome, and when the reminder is due when it was postponed."""

    outcome: Snoozed
    due_at: datetime | None = None


def recipient_of(session: Session, host: HostSchema, claim: LinkClaim) -> Recipient | None:
    """The user a link is for (zone, locale), or None when the host no longer has them."""
    return preference_store.recipient(session, host, claim.user_id)


def unsubscribe(session: Session, claim: LinkClaim, *, now: datetime) -> bool:
    """Opt the link's user out of every reminder; return whether they were still in."""
    return preference_store.opt_out(session, claim.user_id, frozenset({ALL_KINDS}), now=now)


def snooze(session: Session, claim: LinkClaim, *, now: datetime) -> SnoozeResult:
    """Postpone the link's reminder by the link's delay, from ``now``."""
    assert claim.delay is not None  # a snooze token always carries its delay
    found = postpone(session, claim.key, now + claim.delay, now=now)
    if found.status == Status.DELIVERED:  # sent: "remind me again" queues a follow-up
        found = follow_up(session, claim.key, claim.delay, now=now, lifetime=LATE_LIFETIME)
    if found.status is None:
        return SnoozeResult(Snoozed.UNKNOWN)
    if found.postponed:
        return SnoozeResult(Snoozed.POSTPONED, found.available_at)
    outcome = {Status.CLAIMED: Snoozed.SENDING, Status.DELIVERED: Snoozed.SENT}
    return SnoozeResult(outcome.get(Status(found.status), Snoozed.OVER))
