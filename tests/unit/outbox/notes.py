"""A tiny domain for the relay's re-check, in place of the reminders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from outbox.channels.base import Message
from outbox.relay import Answer, Cancel, Defer, Expire
from outbox.store import Claim


@dataclass
class Notes:
    """A tiny domain for the relay's re-check: subject N is a note for ``userN@example.com``.

    Subjects in ``cancelled`` are cancelled with their reason, those in ``expired``
    expired with theirs, those in ``deferred`` deferred to their instant, subjects in
    ``forgotten`` get no answer at all, and a re-check naming a subject in ``broken`` raises.
    """

    cancelled: dict[int, str] = field(default_factory=dict)
    expired: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, datetime] = field(default_factory=dict)
    forgotten: set[int] = field(default_factory=set)
    broken: set[int] = field(default_factory=set)
    rechecked: list[list[int]] = field(default_factory=list)  # the subjects of each call

    def __call__(self, session: Session, claims: Sequence[Claim]) -> Mapping[int, Answer]:
        """Answer for each claim: its message, a cancel, an expiry, a deferral, or nothing."""
        subjects = [claim.subject_id for claim in claims]
        self.rechecked.append(subjects)
        if self.broken.intersection(subjects):
            raise RuntimeError("the note store is down")
        answers: dict[int, Answer] = {}
        for claim in claims:
            if claim.subject_id in self.cancelled:
                answers[claim.id] = Cancel(self.cancelled[claim.subject_id])
            elif claim.subject_id in self.expired:
                answers[claim.id] = Expire(self.expired[claim.subject_id])
            elif claim.subject_id in self.deferred:
                answers[claim.id] = Defer(self.deferred[claim.subject_id], "not yet")
            elif claim.subject_id not in self.forgotten:
                recipient = f"user{claim.subject_id}@example.com"
                answers[claim.id] = Message(claim.key, recipient, "a note", "text")
        return answers
