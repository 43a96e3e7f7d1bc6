"""What a channel receives and what it answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    """One rendered message; each channel uses the parts it needs.

    ``key`` is the idempotency key, stable across retries and replays. ``text`` is the
    plain-text part; ``html``, when given, the HTML alternative of the same content (for
    channels that send markup; the others ignore it). ``headers`` are extra e-mail headers
    (names and values are plain data, checked by the channel).
    ``document`` is the JSON document a webhook posts; ``line`` is what the console prints.
    ``channel_url`` is the recipient's own address on a channel that delivers to one per
    recipient (an Apprise URL): a secret, never logged. ``ready_at``, when given, is the
    instant the domain held the message back to (later than the row's own time): reports
    count its lateness from there.
    """

    key: str
    recipient: str
    subject: str
    text: str
    html: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict)
    line: str = ""
    channel_url: str | None = field(default=None, repr=False)
    ready_at: datetime | None = None


class Outcome(StrEnum):
    """What the receiver answered to one send (the relay judges what it means for the row)."""

    DELIVERED = "delivered"
    RETRY = "retry"  # transient: try again later
    PERMANENT = "permanent"  # the receiver refused for good: the row is dead


@dataclass(frozen=True)
class Delivery:
    """The answer of one attempt, with the receiver's reason when it was not accepted."""

    outcome: Outcome
    error: str | None = None
    retry_after: timedelta | None = None

    @classmethod
    def delivered(cls) -> Delivery:
        """The receiver accepted the message."""
        return cls(Outcome.DELIVERED)

    @classmethod
    def retry(cls, error: str, retry_after: timedelta | None = None) -> Delivery:
        """A transient failure: worth trying again, not before ``retry_after`` if given."""
        return cls(Outcome.RETRY, error, retry_after)

    @classmethod
    def permanent(cls, error: str) -> Delivery:
        """The receiver refused the message for good."""
        return cls(Outcome.PERMANENT, error)


class Channel(Protocol):
    """A way to deliver messages; it may keep a connection open between sends.

    ``send`` never raises for a receiver's answer or a network error: it classifies them
    into a `Delivery`. ``close`` ends any open connection (called when a relay run ends).
    """

    name: str

    def send(self, message: Message) -> Delivery:
        """Deliver one message and say how it went."""
        ...

    def close(self) -> None:
        """Close any connection kept open between sends."""
        ...
