"""Signed link tokens: what an unsubscribe or snooze link proves, and until when.

A token is ``<payload>.<signature>``, both base64url without padding. The payload is the
JSON list ``[version, action, user_id, key, delay_seconds, expires]`` (``expires`` in Unix
seconds, ``delay_seconds`` 0 for an unsubscribe); the signature is HMAC-SHA256 over a fixed
prefix and the payload, with the first of ``REMINDERS_LINK_SECRET``'s secrets. Every secret
of the list verifies, so a new secret can sign while links signed with the old one still work
(rotation). Nothing of the payload is read before the signature matches; a token for one
action is refused for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from outbox.clock import Clock, SystemClock
from worker.errors import ExpiredLink, ForgedLink

Action = Literal["unsubscribe", "snooze"]
VERSION = 1
#: Binds a signature to this use: a secret shared with another purpose signs nothing here.
_CONTEXT = b"reminders-link-v1."
MAX_TOKEN = 1000


@dataclass(frozen=True)
class LinkClaim:
    """What a verified token says: who may do what to which reminder."""

    action: Action
    user_id: int
    key: str
    delay: timedelta | None
    expires: datetime


class LinkTokens:
    """Signs tokens with the first secret, verifies them with any; ``lifetime`` after
    signing (by ``clock``) a token is expired."""

    def __init__(
        self, secrets: Sequence[str], *, lifetime: timedelta, clock: Clock | None = None
    ) -> None:
        if isinstance(secrets, str) or not secrets or not all(secrets):
            raise ValueError("give the link secrets as a non-empty sequence of strings")
        self._keys = tuple(secret.encode() for secret in secrets)
        self._lifetime = lifetime
        self._clock = clock or SystemClock()

    def sign(self, action: Action, user_id: int, key: str, delay: timedelta | None = None) -> str:
        """A token for ``action`` on the reminder ``key`` of ``user_id``."""
        expires = int((self._clock.now() + self._lifetime).timestamp())
        seconds = 0 if delay is None else int(delay.total_seconds())
        document = [VERSION, action, user_id, key, seconds, expires]
        payload = _encode(json.dumps(document, separators=(",", ":")).encode())
        return f"{payload}.{_encode(_mac(self._keys[0], payload))}"

    def verify(self, token: str, action: Action) -> LinkClaim:
        """The claim of a token made by `sign` for ``action``, not yet expired.

        Raises:
            ForgedLink: not a token, a signature no secret gives, or another action's.
            ExpiredLink: genuine, but its lifetime has passed.
        """
        payload, dot, signature = token.partition(".")
        if not dot or len(token) > MAX_TOKEN or not token.isascii():
            raise ForgedLink()
        given = _decode(signature)
        if given is None or not any(
            hmac.compare_digest(given, _mac(key, payload)) for key in self._keys
        ):
            raise ForgedLink()
        claim = _claim(payload)
        if claim is None or claim.action != action:
            raise ForgedLink()
        if self._clock.now() >= claim.expires:
            raise ExpiredLink()
        return claim


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, _CONTEXT + payload.encode(), hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _claim(payload: str) -> LinkClaim | None:
    """The signed payload read back (signed by us, so well formed unless a secret leaked)."""
    raw = _decode(payload)
    try:
        version, action, user_id, key, seconds, expires = json.loads(raw or b"")
    except (ValueError, TypeError):
        return None
    if version != VERSION or action not in ("unsubscribe", "snooze"):
        return None
    if not (isinstance(user_id, int) and isinstance(key, str)):
        return None
    if not (isinstance(seconds, int) and isinstance(expires, int)):
        return None
    delay = timedelta(seconds=seconds) if seconds else None
    return LinkClaim(action, user_id, key, delay, datetime.fromtimestamp(expires, UTC))
