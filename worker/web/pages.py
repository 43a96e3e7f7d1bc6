"""The pages of ``reminders serve``: one template, the recipient's language, a strict policy.

Every page is ``pages/page.html`` in one of its variants (`Page`), rendered with the strings
of the message catalogs (`worker.reminders.languages`) and escaped (autoescape). Nothing is
loaded from elsewhere: the only style is the inline stylesheet below, allowed by its hash in
the Content-Security-Policy, which allows nothing else but posting a form to the page itself.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from markupsafe import Markup

from worker.reminders.languages import Language

PAGES_DIR = Path(__file__).with_name("pages")

STYLESHEET = (
    "body{margin:0;background:#f4f5f7;color:#1f2328;font:16px/1.5 system-ui,-apple-system,"
    "'Segoe UI',Roboto,Arial,sans-serif}"
    "main{max-width:32rem;margin:3rem auto;padding:1.5rem 2rem;background:#fff;"
    "border:1px solid #d8dee4;border-radius:6px}"
    "h1{font-size:1.25rem;margin:0 0 .75rem}"
    "button{font:inherit;padding:.5rem 1.25rem;border:0;border-radius:6px;background:#0969da;"
    "color:#fff;cursor:pointer}"
    "button:focus{outline:3px solid #54aeff;outline-offset:2px}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: Headers of every answer of the app, pages and errors alike.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class Page(StrEnum):
    """The variants of the page."""

    UNSUBSCRIBE = "unsubscribe"  # confirm, with a button
    UNSUBSCRIBED = "unsubscribed"
    SNOOZE = "snooze"  # confirm, with a button
    POSTPONED = "postponed"
    SENT = "sent"
    SENDING = "sending"
    OVER = "over"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    FORGED = "forged"


@functools.cache
def _template() -> Template:
    env = Environment(
        loader=FileSystemLoader(PAGES_DIR),
        autoescape=True,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    return env.get_template("page.html")


def render_page(
    language: Language, page: Page, *, delay: timedelta | None = None, due: str = ""
) -> str:
    """The HTML of ``page`` in ``language``; ``delay`` for the snooze confirmation, ``due``
    (written in the recipient's language and zone) once postponed."""
    hours = 0 if delay is None else int(delay.total_seconds() // 3600)
    days = hours // 24 if hours and hours % 24 == 0 else 0
    context: dict[str, Any] = {
        **language.callables,
        "language": language.code,
        "page": page.value,
        # Our constant, never data; escaping it would change the text its hash allows.
        "stylesheet": Markup(STYLESHEET),  # noqa: S704
        "hours": hours,
        "days": days,
        "due": due,
    }
    return _template().render(context)
