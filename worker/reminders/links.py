"""The links a reminder carries back to the service: unsubscribe and snooze.

The renderer asks a `LinkMaker` for them, message by message; without one (no public URL
configured) a reminder carries neither the links nor the ``List-Unsubscribe`` headers.
What the links point at, and how their tokens are signed and checked, is the link maker's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple, Protocol

#: The snooze links a reminder offers, in the order it shows them.
SNOOZE_DELAYS = (timedelta(hours=1), timedelta(days=1))


class LinkMaker(Protocol):
    """Builds the absolute URLs of one recipient's links for one reminder.

    ``user_id`` is the owner's id, ``key`` the reminder's idempotency key (it names the
    reminder and its kind). Each URL must be an ``https://`` (or ``http://``) URL without
    spaces or line breaks: it goes into a header, the text part and an HTML attribute.
    """

    def unsubscribe(self, user_id: int, key: str) -> str:
        """The one-click unsubscribe URL (RFC 8058): a POST opts out, a GET confirms."""
        ...

    def snooze(self, user_id: int, key: str, delay: timedelta) -> str:
        """The URL that postpones this one reminder by ``delay``."""
        ...


class SnoozeLink(NamedTuple):
    """One snooze link as the templates see it: ``hours`` (24 for a day), ``days`` (0 unless
    the delay is whole days) and ``url``."""

    hours: int
    days: int
    url: str


def snooze_links(links: LinkMaker, user_id: int, key: str) -> list[SnoozeLink]:
    """The snooze links of one reminder, one per `SNOOZE_DELAYS`."""
    found = []
    for delay in SNOOZE_DELAYS:
        hours = int(delay.total_seconds() // 3600)
        days = hours // 24 if hours % 24 == 0 else 0
        found.append(SnoozeLink(hours, days, links.snooze(user_id, key, delay)))
    return found
