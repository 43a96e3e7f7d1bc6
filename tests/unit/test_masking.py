"""Masking addresses and flattening hostile text before it is shown or stored."""

from __future__ import annotations

import pytest

from outbox.masking import mask_email, mask_emails_in, one_line


@pytest.mark.parametrize(
    ("address", "masked"),
    [("alice@example.com", "a***@example.com"), ("a@x.org", "a***@x.org"),
     ("first.last+tag@mail.example.co.uk", "f***@mail.example.co.uk"),
     ("no-at-sign", "***"), ("@example.com", "***"), ("", "***")],
)  # fmt: skip
def test_mask_email_keeps_first_character_and_domain(address: str, masked: str) -> None:
    """An address keeps only its first character and its domain; a non-address shows nothing."""
    assert mask_email(address) == masked


def test_mask_emails_in_masks_every_address_in_text() -> None:
    """Every address inside a server reply is masked, the rest of the text is kept."""
    text = "550 5.1.1 <bob.smith@example.com>: unknown; copy to carol+x@example.org"
    assert mask_emails_in(text) == "550 5.1.1 <b***@example.com>: unknown; copy to c***@example.org"


def test_masking_is_idempotent() -> None:
    """Masking already masked text changes nothing."""
    once = mask_emails_in("to alice@example.com")
    assert mask_emails_in(once) == once == "to a***@example.com"


def test_text_without_addresses_is_unchanged() -> None:
    """Text with no address goes through untouched."""
    assert mask_emails_in("451 4.3.0 try again later") == "451 4.3.0 try again later"


@pytest.mark.parametrize(
    "hostile", ["a\r\nb", "a\nb", "a\rb", "a\u2028b", "a\u0085b", "a\x1bb", "a\x00b", "a\x0bb"]
)
def test_one_line_replaces_breaks_and_control_characters(hostile: str) -> None:
    """Line breaks of every kind and control characters (ESC, NUL) become spaces."""
    flat = one_line(hostile)
    assert len(flat.splitlines()) == 1
    assert flat.startswith("a") and flat.endswith("b") and flat.isprintable()


def test_one_line_keeps_ordinary_unicode() -> None:
    """Accents, emoji and other printable characters are kept as they are."""
    assert one_line("Café 🎉 — ünïcode") == "Café 🎉 — ünïcode"


def test_one_line_keeps_format_and_space_characters_beside_a_control_one() -> None:
    """Only control characters and line separators go: a no-break space or a zero-width
    joiner (not "printable" to Python) stays, even in a text that needed cleaning."""
    assert one_line("a\u00a0b\u200dc\td") == "a\u00a0b\u200dc d"
    assert one_line("a\u00a0b\u200dc") == "a\u00a0b\u200dc"
