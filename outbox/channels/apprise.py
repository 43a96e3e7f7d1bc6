"""The Apprise channel: one notification per message to the recipient's own URL.

Apprise (https://github.com/caronc/apprise) speaks to many services, each named by a URL
whose user part, host, path or query carry its credentials: a URL is a secret. It travels
in ``message.channel_url``, is never logged (Apprise's own logger, which prints URLs, is
switched off) and shows in errors only as its scheme (`outbox.masking.mask_url`).

Each send is one ``notify`` to one URL, so that each result belongs to one outbox row.
Apprise answers only success or failure: a failure is retried (transient) within the
relay's attempt limits. A message without a URL is refused for good.
"""

from __future__ import annotations

import functools
import logging
import warnings
from types import ModuleType
from typing import Any

from outbox.channels.base import Delivery, Message
from outbox.masking import mask_url

_LOGGER = "apprise"


@functools.cache
def _apprise() -> ModuleType:
    """The Apprise module, its logger silenced (it logs URLs), loaded once."""
    logger = logging.getLogger(_LOGGER)
    logger.disabled = True
    logger.propagate = False
    with warnings.catch_warnings():
        # Its plugins import modules Python deprecates (imghdr): not ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        apprise.Apprise().add("json://localhost")  # the first URL loads every plugin
    return apprise


def understood(url: str) -> bool:
    """Whether Apprise knows how to deliver to ``url``."""
    return bool(_apprise().Apprise().add(url))


class AppriseChannel:
    """Sends each message's subject and text to its ``channel_url`` through Apprise.

    Every connect and every read is bounded by ``timeout``; Apprise's own retries are off
    (the relay retries), so one send lasts about one connect and one read at most.
    """

    name = "apprise"

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._apprise = _apprise()

    def send(self, message: Message) -> Delivery:
        """Notify the message's URL; never raises for a failure."""
        url = message.channel_url
        if not url:
            return Delivery.permanent("no channel URL for this recipient")
        shown = mask_url(url)
        notifier = self._apprise.Apprise()
        if not notifier.add(url):
            return Delivery.permanent(f"apprise: {shown} is not a URL Apprise knows")
        for service in notifier:
            _bound(service, self._timeout)
        try:
            sent = notifier.notify(body=message.text or message.subject, title=message.subject)
        except Exception as error:  # a plugin's bug must not stop the relay
            return Delivery.retry(f"apprise: {shown} failed: {type(error).__name__}")
        if sent:
            return Delivery.delivered()
        return Delivery.retry(f"apprise: {shown} did not take the notification")

    def close(self) -> None:
        """Nothing is kept open between sends."""


def _bound(service: Any, timeout: float) -> None:
    service.socket_connect_timeout = timeout
    service.socket_read_timeout = timeout
    # Apprise's own retries would multiply the time a send takes.
    if hasattr(service, "retry"):
        service.retry = 0
