"""Signed link tokens: bound to action, user, reminder and delay; refused when forged,
altered, of another action or expired (an injected clock); verified across a rotation; and
the settings and the renderer that use them."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from tests.support.clock import T0, ManualClock
from worker.errors import ConfigError, ExpiredLink, ForgedLink
from worker.reminders.render import OwnerFacts, TaskFacts, renderer_for
from worker.reminders.signed_links import SignedLinks, links_for
from worker.reminders.tokens import LinkTokens
from worker.settings import load_settings

OLD = "old-secret-0123456789abcdefghij"
NEW = "new-secret-0123456789abcdefghij"
KEY = "due_soon-20261129T120000Z-42"
DAY = timedelta(days=1)


def tokens(*secrets: str, clock: ManualClock | None = None) -> LinkTokens:
    """Tokens of these secrets, living 30 days by the given clock."""
    return LinkTokens(secrets, lifetime=timedelta(days=30), clock=clock or ManualClock())


def test_a_token_verifies_to_what_was_signed() -> None:
    """The claim is the action, user, key and delay that were signed, with the expiry."""
    signed = tokens(NEW).sign("snooze", 7, KEY, DAY)
    claim = tokens(NEW).verify(signed, "snooze")
    assert (claim.action, claim.user_id, claim.key, claim.delay) == ("snooze", 7, KEY, DAY)
    assert claim.expires == T0 + timedelta(days=30)
    assert tokens(NEW).verify(tokens(NEW).sign("unsubscribe", 7, KEY), "unsubscribe").delay is None


def test_rotation_signs_with_the_first_and_verifies_with_all() -> None:
    """After a rotation old tokens still verify; new ones are signed with the new secret."""
    old_token = tokens(OLD).sign("unsubscribe", 7, KEY)
    rotated = tokens(NEW, OLD)
    assert rotated.verify(old_token, "unsubscribe").user_id == 7
    new_token = rotated.sign("unsubscribe", 7, KEY)
    assert tokens(NEW).verify(new_token, "unsubscribe").user_id == 7
    with pytest.raises(ForgedLink):
        tokens(OLD).verify(new_token, "unsubscribe")


def _payload(token: str) -> list[object]:
    body = token.split(".", maxsplit=1)[0]
    document: list[object] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return document


def _with_payload(token: str, document: list[object]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()
    return f"{body}.{token.split('.')[1]}"


@pytest.mark.parametrize("field", [2, 3, 4, 5])  # user, key, delay, expiry
def test_an_altered_payload_is_refused(field: int) -> None:
    """Changing the user, the key, the delay or the expiry breaks the signature."""
    signed = tokens(NEW).sign("snooze", 7, KEY, DAY)
    document = _payload(signed)
    document[field] = {2: 8, 3: KEY + "1", 4: 10**6, 5: 2**40}[field]
    with pytest.raises(ForgedLink):
        tokens(NEW).verify(_with_payload(signed, document), "snooze")


@pytest.mark.parametrize(
    "forged",
    ["", "abc", "a.b", "a.b.c", "é.é", "x" * 2000, "eyJ.", ".AAAA"],
)
def test_garbage_is_refused(forged: str) -> None:
    """Anything that is not a token we signed is refused, never an exception of another kind."""
    with pytest.raises(ForgedLink):
        tokens(NEW).verify(forged, "unsubscribe")


def test_another_secret_or_another_action_is_refused() -> None:
    """A token signed with an unknown secret, or made for snooze, does not unsubscribe."""
    with pytest.raises(ForgedLink):
        tokens(NEW).verify(tokens(OLD).sign("unsubscribe", 7, KEY), "unsubscribe")
    with pytest.raises(ForgedLink):
        tokens(NEW).verify(tokens(NEW).sign("snooze", 7, KEY, DAY), "unsubscribe")


def test_a_signature_bit_flipped_is_refused() -> None:
    """One character of the signature changed: refused."""
    signed = tokens(NEW).sign("unsubscribe", 7, KEY)
    last = "A" if signed[-2] != "A" else "B"
    with pytest.raises(ForgedLink):
        tokens(NEW).verify(signed[:-2] + last + signed[-1], "unsubscribe")


def test_a_token_expires_after_its_lifetime() -> None:
    """Valid a second before its lifetime ends, expired at its end (the clock moved)."""
    clock = ManualClock()
    signed = tokens(NEW, clock=clock).sign("unsubscribe", 7, KEY)
    clock.advance(timedelta(days=30) - timedelta(seconds=1))
    assert tokens(NEW, clock=clock).verify(signed, "unsubscribe").user_id == 7
    clock.advance(timedelta(seconds=1))
    with pytest.raises(ExpiredLink):
        tokens(NEW, clock=clock).verify(signed, "unsubscribe")


def test_a_public_url_needs_a_link_secret() -> None:
    """REMINDERS_PUBLIC_URL without REMINDERS_LINK_SECRET is a configuration error."""
    with pytest.raises(ConfigError, match="REMINDERS_LINK_SECRET: required"):
        load_settings(public_url="https://reminders.example.com")
    with pytest.raises(ConfigError, match="at least 24 bytes"):
        load_settings(public_url="https://r.example.com", link_secret=f"{NEW},short")
    with pytest.raises(ConfigError, match="REMINDERS_PUBLIC_URL"):
        load_settings(public_url="ftp://r.example.com", link_secret=NEW)
    assert links_for(load_settings()) is None


def test_the_renderer_links_to_the_public_url_with_verifiable_tokens() -> None:
    """With a public URL set, a reminder's List-Unsubscribe and snooze links carry tokens
    that the same secret verifies for that user and reminder."""
    settings = load_settings(public_url="https://r.example.com/base/", link_secret=f"{NEW},{OLD}")
    renderer = renderer_for(settings)
    assert isinstance(renderer.links, SignedLinks)
    task = TaskFacts(42, "Pay rent", T0 + DAY, True)
    message = renderer.render(KEY, task, OwnerFacts(7, "a@example.com", "UTC", True))
    header = message.headers["List-Unsubscribe"]
    prefix = "<https://r.example.com/base/unsubscribe/"
    assert header.startswith(prefix)
    token = header.removeprefix(prefix).removesuffix(">")
    claim = LinkTokens([NEW], lifetime=DAY).verify(token, "unsubscribe")
    assert (claim.user_id, claim.key) == (7, KEY)
    assert "https://r.example.com/base/snooze/" in message.text
    assert header.removeprefix("<").removesuffix(">") in message.text
