"""The webhook channel: a signed JSON ``POST`` per message, Standard Webhooks style.

Answers are classified as the contract says: 2xx delivered; 408, 429, 5xx and network
errors retried (honouring ``Retry-After``); other statuses, redirects included,
permanent. Redirects are not followed: a signed delivery goes where it was configured.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import ssl
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from outbox.channels.base import Delivery, Message
from outbox.clock import Clock, SystemClock
from outbox.deadline import Deadline, deadline
from outbox.masking import mask_emails_in, one_line
from outbox.retry import MAX_RETRY_AFTER
from outbox.signing import secret_key, signature_header

_BODY_EXCERPT = 200
_TRANSIENT = frozenset({408, 429})
#: httpcore's trace events (the ``trace`` extension) that hand over a new network stream.
_NEW_STREAM = frozenset({"connection.connect_tcp.complete", "connection.start_tls.complete"})


class WebhookChannel:
    """Posts ``message.document`` as compact JSON to ``url``, signed with every secret.

    One `httpx.Client` carries all sends, so connections are kept alive between them;
    `close` closes it and the next send opens a new one. The channel's own client keeps no
    cookies and writes each request in one call (`_CookielessClient`). A ``client`` handed
    in belongs to the caller: it is used as is and never closed here (the channel's hold on
    its sockets ends with the channel). httpx bounds each phase (connect, each read, each
    write) by ``timeout``; a deadline (`outbox.deadline`) bounds each send as a whole by the
    same ``timeout``, so a receiver that answers a byte at a time or a connection that went
    silent cannot hold it longer. Not thread-safe.
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
        self._url = parsed  # parsed once, not at every send
        self._secrets = tuple(secrets)
        self._send_timeout = timeout
        self._timeout = httpx.Timeout(timeout)
        self._clock = clock or SystemClock()
        # Loading the CA bundle takes tens of milliseconds: done here, once per process,
        # rather than inside the first send (where relays in threads would each load it).
        self._tls = _tls_context()
        self._client = client
        self._owns_client = client is None
        # The sockets of the connections this channel opened, each with a duplicate of its
        # descriptor for the deadlines to shut it down by: one per connection, not per send.
        self._sockets: dict[socket.socket, int] = {}
        # A caller's client may keep its connections past this channel: the duplicates go
        # with the channel, or the kernel would hold those sockets open after their close.
        weakref.finalize(self, _close_duplicates, self._sockets)

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
        with deadline(self._send_timeout) as limit:
            delivery = self._post(limit, body, headers, now)
        if limit.expired:
            # Its sockets were shut down: never used again (a caller's client, which is not
            # closed here, drops them on the error their next use meets).
            self.close()
        return delivery

    def _post(
        self, limit: Deadline, body: bytes, headers: dict[str, str], now: datetime
    ) -> Delivery:
        """Post within ``limit``: the sockets of this channel's connections are watched."""
        self._forget_closed()
        for duplicate in self._sockets.values():  # one of them may carry this request
            limit.watch_duplicate(duplicate)

        def trace(event: str, info: dict[str, Any]) -> None:
            if event in _NEW_STREAM:  # a new connection, or its TLS layer
                sock = info["return_value"].get_extra_info("socket")
                self._sockets[sock] = duplicate = os.dup(sock.fileno())
                limit.watch_duplicate(duplicate)

        try:
            response = self._http().post(
                self._url,
                content=body,
                headers=headers,
                timeout=self._timeout,
                follow_redirects=False,
                extensions={"trace": trace},
            )
        except httpx.RequestError as exc:
            if limit.expired:
                return Delivery.retry(
                    f"webhook timeout: the send took over {self._timeout.read}s; connection dropped"
                )
            if isinstance(exc, httpx.TimeoutException):
                return Delivery.retry(f"webhook timeout after {self._timeout.read}s")
            # network, protocol, undecodable answer
            return Delivery.retry(f"webhook request failed: {type(exc).__name__}: {exc}")
        return _classify(response, now)

    def close(self) -> None:
        """Close the kept-alive connections of the client this channel created."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
        self._forget_closed()

    def _forget_closed(self) -> None:
        """Close the duplicates of the sockets their connections closed (outside a send, so
        no deadline holds them): until then the kernel keeps such a socket open."""
        for sock, duplicate in list(self._sockets.items()):
            if sock.fileno() == -1:
                del self._sockets[sock]
                os.close(duplicate)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = _CookielessClient(
                timeout=self._timeout, follow_redirects=False, verify=self._tls
            )
        return self._client


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing a receiver sets."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Keep nothing of what the receiver set."""


class _CookielessClient(httpx.Client):
    """A client that neither stores nor sends cookies, and writes each request at once.

    Each delivery stands alone: a receiver cannot tie the next delivery to state it set
    in an answer (a session, a load balancer's affinity), and no answer pays for parsing
    the cookie jar's view of it. Its direct connections are corked (`_CorkedStream`);
    a proxy's, from the environment, are httpx's own.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._no_cookies = _NoCookies()  # its own: nothing shared between clients

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("a webhook delivery carries no cookies")

    def _init_transport(self, **options: Any) -> httpx.BaseTransport:  # type: ignore[override]
        given = options.pop("transport", None)
        return given if given is not None else _CorkedTransport(**options)


class _CorkedTransport(httpx.HTTPTransport):
    """httpx's transport for direct connections, each opened by `_CorkingBackend`."""

    def __init__(self, *, limits: httpx.Limits, **options: Any) -> None:
        super().__init__(limits=limits, **options)
        verify = options.get("verify", True)
        if not isinstance(verify, ssl.SSLContext):
            verify = httpx.create_ssl_context(
                verify=verify, cert=options.get("cert"), trust_env=options.get("trust_env", True)
            )
        self._pool.close()  # httpx's own pool, unused: it has opened nothing
        self._pool = httpcore.ConnectionPool(
            ssl_context=verify,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=options.get("http1", True),
            http2=options.get("http2", False),
            network_backend=_CorkingBackend(),
        )


class _CorkingBackend(httpcore.NetworkBackend):
    """httpcore's blocking backend, each TCP connection's stream corked."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _CorkedStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return _CorkedStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _CorkedStream(httpcore.NetworkStream):
    """A connection whose writes wait for the next read, and then go out as one.

    httpcore writes a request's head and its body in two calls; held and joined, they take
    one system call and one hand-off of the interpreter lock instead of two, which is what
    relays in threads of one process contend for. A request is always followed by a read
    of its answer, so nothing waits longer than that; a failed write surfaces there.
    """

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._held: list[bytes] = []
        self._timeout: float | None = None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._held.append(buffer)
            self._timeout = timeout

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._send_held()
        return self._stream.read(max_bytes, timeout)

    def close(self) -> None:
        self._held.clear()
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self._send_held()
        return _CorkedStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)

    def _send_held(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._stream.write(data, self._timeout)


def _close_duplicates(sockets: dict[socket.socket, int]) -> None:
    for duplicate in sockets.values():
        os.close(duplicate)
    sockets.clear()


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
