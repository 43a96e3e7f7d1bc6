"""The `LinkMaker` of ``REMINDERS_PUBLIC_URL``: links to ``reminders serve`` with signed tokens."""

from __future__ import annotations

from datetime import timedelta

from outbox.clock import Clock
from worker.reminders.tokens import LinkTokens
from worker.settings import Settings

UNSUBSCRIBE_PATH = "/unsubscribe/"
SNOOZE_PATH = "/snooze/"


class SignedLinks:
    """Builds ``<public URL>/unsubscribe/<token>`` and ``<public URL>/snooze/<token>``."""

    def __init__(self, public_url: str, tokens: LinkTokens) -> None:
        self._base = public_url.rstrip("/")
        self._tokens = tokens

    def unsubscribe(self, user_id: int, key: str) -> str:
        """The one-click unsubscribe URL of this user, for this reminder."""
        return self._base + UNSUBSCRIBE_PATH + self._tokens.sign("unsubscribe", user_id, key)

    def snooze(self, user_id: int, key: str, delay: timedelta) -> str:
        """The URL that postpones this reminder by ``delay``."""
        return self._base + SNOOZE_PATH + self._tokens.sign("snooze", user_id, key, delay)


def link_tokens(settings: Settings, clock: Clock | None = None) -> LinkTokens:
    """The tokens of ``REMINDERS_LINK_SECRET`` and ``REMINDERS_LINK_LIFETIME``.

    Raises:
        ValueError: no secret is configured (`Settings` refuses a public URL without one).
    """
    return LinkTokens(settings.link_secrets, lifetime=settings.link_lifetime, clock=clock)


def links_for(settings: Settings, clock: Clock | None = None) -> SignedLinks | None:
    """The links of ``REMINDERS_PUBLIC_URL``; None when it is not set."""
    if settings.public_url is None:
        return None
    return SignedLinks(settings.public_url, link_tokens(settings, clock))
