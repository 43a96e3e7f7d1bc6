"""Make text safe to show: masked e-mail addresses, no line breaks or control characters.

Error texts end up in logs and in the outbox's error column. Operators need to tell which
domain refused a message, not who the person was, so an address keeps its first
character and its domain: ``alice@example.com`` becomes ``a***@example.com``. Masking a
masked address gives the same text back.
"""

from __future__ import annotations

import re
import unicodedata

# Loose on purpose: it must catch every address a server may echo back (dots, plus
# signs, IDN domains), not validate them.
_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*")
# Control characters (Cc: CR, LF, ESC, NUL...) and the line/paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Zl", "Zp"})


def mask_email(address: str) -> str:
    """Return ``address`` with its local part reduced to its first character and ``***``.

    Text without an ``@`` (or with an empty local part) is hidden completely: it may
    still be personal data, and there is no domain worth keeping.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def mask_emails_in(text: str) -> str:
    """Return ``text`` with every e-mail address in it masked by `mask_email`."""
    return _ADDRESS.sub(lambda match: mask_email(match.group()), text)


def mask_url(url: str) -> str:
    """Return only the scheme of ``url``: ``tgram://***``.

    A notification URL (Apprise's) carries its credentials anywhere in it, in the user
    part, the host, the path or the query, so nothing but the service's scheme is kept.
    """
    scheme, separator, _ = url.partition("://")
    if not separator or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        return "***"
    return f"{scheme[:20].lower()}://***"


def one_line(text: str) -> str:
    """Return ``text`` with every line break and control character replaced by a space.

    Titles and server replies are hostile data: a CR/LF could start a new e-mail header
    or a fake log line, an ESC could drive the operator's terminal.
    """
    if text.isprintable():  # the usual case, checked in C: none of those characters
        return text
    return "".join(" " if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in text)
