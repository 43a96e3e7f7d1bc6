"""The body of an e-mail: one text/plain part, or text/plain and text/html alternatives.

The SMTP channel builds and checks the header fields with the `email` package; the body's
MIME framing is fixed (UTF-8 text parts, nothing nested), so it is written here directly,
which keeps the cost of a message close to that of its header fields. Each part is 7-bit
clean: sent as it is when it is ASCII in lines of at most 998 bytes (RFC 5322), otherwise
quoted-printable (RFC 2045), so that relays without 8BITMIME take it.
"""

from __future__ import annotations

import binascii
import secrets

#: RFC 5322: a line has at most 998 characters before its CRLF.
MAX_LINE = 998
_CRLF = b"\r\n"


def body(text: str, html: str | None = None) -> bytes:
    """The MIME header fields (``MIME-Version`` first) and the body after them, as bytes that
    follow the message's other header fields: ``text`` alone, or with its ``html``
    alternative (``multipart/alternative``, plain text first as RFC 2046 orders them)."""
    if html is None:
        return b"MIME-Version: 1.0\r\n" + _part("plain", text)
    parts = (_part("plain", text), _part("html", html))
    boundary = _boundary(parts)
    framed = b"".join(b"--" + boundary + _CRLF + part + _CRLF for part in parts)
    return (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="'
        + boundary
        + b'"\r\n\r\n'
        + framed
        + b"--"
        + boundary
        + b"--\r\n"
    )


def _part(subtype: str, content: str) -> bytes:
    """One text part: its header fields, a blank line, its encoded lines (ending in CRLF)."""
    lines = content.encode("utf-8").splitlines()  # CRLF, LF or CR alone end a line
    if all(line.isascii() and len(line) <= MAX_LINE for line in lines):
        encoding, data = b"7bit", _CRLF.join(lines)
    else:
        encoded = binascii.b2a_qp(b"\n".join(lines), quotetabs=False, istext=True)
        encoding, data = b"quoted-printable", encoded.replace(b"\n", _CRLF)
    return (
        b"Content-Type: text/" + subtype.encode("ascii") + b'; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: " + encoding + b"\r\n\r\n" + data + _CRLF
    )


def _boundary(parts: tuple[bytes, ...]) -> bytes:
    """A random boundary that occurs in none of ``parts`` (RFC 2046, section 5.1.1)."""
    while True:
        boundary = b"=_reminders_" + secrets.token_hex(16).encode("ascii")
        if not any(boundary in part for part in parts):
            return boundary
