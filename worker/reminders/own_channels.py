"""Reminders on each user's own channel (``REMINDERS_CHANNEL=apprise``).

The re-check gives each message its user's channel URL (`preference_store.screen`). A user
who set none cannot be reached on this channel: their reminder is cancelled at send time,
with the reason `NO_CHANNEL_URL`, rather than left to fail (it would die and alert the
operator for what is the user's choice). Setting a URL later reaches the next reminders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from outbox.channels.base import Message
from outbox.relay import Answer, Cancel, Prepare
from outbox.store import Claim

NO_CHANNEL_URL = "recipient has no channel URL"


def requiring_channel_url(prepare: Prepare) -> Prepare:
    """``prepare`` with every message that has no channel URL cancelled instead."""

    def prepared(session: Session, claims: Sequence[Claim]) -> Mapping[int, Answer]:
        answers = prepare(session, claims)
        return {
            row_id: Cancel(NO_CHANNEL_URL)
            if isinstance(answer, Message) and not answer.channel_url
            else answer
            for row_id, answer in answers.items()
        }

    return prepared
