"""Standard Webhooks signatures: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``.

A secret is either ``whsec_<base64>`` (the key is the decoded bytes, as the Standard
Webhooks libraries expect) or any other string (the key is its UTF-8 bytes). Several
secrets give several space-separated signatures, so a receiver can rotate its secret
without losing a message: it accepts any signature made with a key it knows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable
from datetime import timedelta

SECRET_PREFIX = "whsec_"  # noqa: S105 -- a format marker, not a secret
VERSION = "v1"
# Standard Webhooks receivers refuse timestamps further than this from their clock,
# which bounds how long a captured request can be replayed.
DEFAULT_TOLERANCE = timedelta(minutes=5)


def secret_key(secret: str) -> bytes:
    """Return the HMAC key of ``secret``; raise `ValueError` for an empty or bad one."""
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after its prefix") from None
    else:
        key = secret.encode()
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the signature ``v1,<base64>`` of one message under one secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value: one signature per secret, space-separated."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def verify(
    secret: str,
    msg_id: str,
    timestamp: int | str,
    body: bytes,
    signature_header: str,
    *,
    now: float | None = None,
    tolerance: timedelta | None = DEFAULT_TOLERANCE,
) -> bool:
    """Tell whether ``signature_header`` holds a valid signature of the message by ``secret``.

    ``timestamp`` may be the raw header text. Unless ``tolerance`` is None, a timestamp
    further than ``tolerance`` from ``now`` (default: the wall clock) is refused, as
    Standard Webhooks receivers do against replays. Comparisons are constant-time.
    """
    text = str(timestamp)
    if not (text.isascii() and text.isdigit()):
        return False
    seconds = int(text)
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - seconds) > tolerance.total_seconds():
            return False
    expected = sign(secret, msg_id, seconds, body).encode()
    # Check every candidate, so the time taken does not tell which one matched.
    found = False
    for candidate in signature_header.split():
        found |= hmac.compare_digest(candidate.encode(), expected)
    return found
