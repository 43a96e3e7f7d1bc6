"""The webhook channel: a signed JSON ``POST`` per message, Standard Webhooks style.

Answers are classified as the contract says: 2xx delivered; 408, 429, 5xx and network
errors retried (honouring ``Retry-After``); other statuses, redirects included,
permanent. Redirects are not followed: a signed delivery goes where it was configured.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx

from outbox.channels.base import Delivery, Message
from outbox.clock import Clock, SystemClock
from outbox.masking import mask_emails_in, one_line
from outbox.retry import MAX_RETRY_AFTER
from outbox.signing import secret_key, signature_header

_BODY_EXCERPT = 200
_TRANSIENT = frozenset({408, 429})


class WebhookChannel:
    """Posts ``message.document`` as compact JSON to ``url``, signed with every secret.

    One `httpx.Client` carries all sends, so connections are kept alive between them;
    `close` closes it and the next send opens a new one. A ``client`` handed in belongs
    to the caller: it is used as is and never closed here.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        secrets: Sequence[str],
        *,
        timeout: float,
        client: httpx.Client | None = None,
        clock: Clock | None = None,
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"the webhook URL is invalid: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("the webhook URL must be http:// or https:// with a host")
        if isinstance(secrets, str) or not secrets:
            raise ValueError("give the webhook secrets as a non-empty sequence of strings")
        for secret in secrets:
            secret_key(secret)  # refuse a malformed secret at start, not at the first send
        self._url = url
        self._secrets = tuple(secrets)
        self._timeout = httpx.Timeout(timeout)
        self._clock = clock or SystemClock()
        # Loading the CA bundle takes tens of milliseconds: done here, once per process,
        # rather than inside the first send (where relays in threads would each load it).
        self._tls = _tls_context()
        self._client = client
        self._owns_client = client is None

    def send(self, message: Message) -> Delivery:
        """Post one message and classify the answer; never raises for a failure."""
        key = message.key
        if not key or not key.isascii() or not key.isprintable() or " " in key:
            return Delivery.permanent("the idempotency key is not printable ASCII")
        try:
            body = json.dumps(
                message.document, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode()
        except (TypeError, ValueError) as exc:
            return Delivery.permanent(f"the document is not JSON: {exc}")
        now = self._clock.now()
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": key,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(self._secrets, key, timestamp, body),
            "Idempotency-Key": key,
        }
        try:
            response = self._http().post(
                self._url,
                content=body,
                headers=headers,
                timeout=self._timeout,
                follow_redirects=False,
            )
        except httpx.TimeoutException:
            return Delivery.retry(f"webhook timeout after {self._timeout.read}s")
        except httpx.RequestError as exc:  # network, protocol, undecodable answer
            return Delivery.retry(f"webhook request failed: {type(exc).__name__}: {exc}")
        return _classify(response, now)

    def close(self) -> None:
        """Close the kept-alive connections of the client this channel created."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self._timeout, follow_redirects=False, verify=self._tls
            )
        return self._client


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one reads the CA bundle each time."""
    return ssl.create_default_context()


def _classify(response: httpx.Response, now: datetime) -> Delivery:
    status = response.status_code
    if 200 <= status <= 299:
        return Delivery.delivered()
    if 300 <= status <= 399:
        location = one_line(response.headers.get("location", "?"))[:_BODY_EXCERPT]
        return Delivery.permanent(f"HTTP {status} redirect to {location} (not followed)")
    excerpt = mask_emails_in(one_line(response.text[:_BODY_EXCERPT])).strip()
    error = f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status}"
    if status in _TRANSIENT or 500 <= status <= 599:
        return Delivery.retry(error, retry_after(response.headers.get("retry-after"), now))
    return Delivery.permanent(error)


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Read a ``Retry-After`` value (seconds or HTTP-date), clamped to [0, 1 day].

    Unreadable values give None: the relay's own backoff decides then.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return timedelta(seconds=min(int(value), int(MAX_RETRY_AFTER.total_seconds())))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; a zone-less one is taken as such
        when = when.replace(tzinfo=UTC)
    return max(timedelta(0), min(when - now, MAX_RETRY_AFTER))
