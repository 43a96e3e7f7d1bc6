"""Standard Webhooks signatures: the published vector, rotation, tampering, replays."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from outbox.signing import secret_key, sign, signature_header, verify

# The reference vector published with the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_standard_webhooks_vector() -> None:
    """Our signature is the one every Standard Webhooks receiver library expects."""
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_verify_accepts_the_vector_at_its_time() -> None:
    """A genuine signature verifies, with the timestamp given as header text."""
    assert verify(
        SPEC_SECRET, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY, SPEC_SIGNATURE, now=SPEC_TIMESTAMP
    )


def test_whsec_secret_is_base64_and_raw_secret_is_utf8() -> None:
    """A whsec_ secret keys with its decoded bytes, any other string with its UTF-8 bytes."""
    assert secret_key("whsec_" + base64.b64encode(b"\x00\xffkey").decode()) == b"\x00\xffkey"
    assert secret_key("plain-secret") == b"plain-secret"
    raw = sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert raw != SPEC_SIGNATURE


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!"])
def test_empty_or_malformed_secrets_are_refused(secret: str) -> None:
    """A secret that gives no key or is not base64 after whsec_ is an error, not a weak key."""
    with pytest.raises(ValueError, match="secret"):
        secret_key(secret)


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "body"),
    [("msg_other", SPEC_TIMESTAMP, SPEC_BODY), (SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY),
     (SPEC_ID, SPEC_TIMESTAMP, b'{"test": 2432232315}')],
)  # fmt: skip
def test_verify_refuses_any_tampered_part(msg_id: str, timestamp: int, body: bytes) -> None:
    """Changing the id, the timestamp or one byte of the body breaks the signature."""
    assert not verify(SPEC_SECRET, msg_id, timestamp, body, SPEC_SIGNATURE, tolerance=None)


def test_verify_refuses_a_wrong_secret() -> None:
    """A signature made with another key does not verify."""
    assert not verify("whsec_" + base64.b64encode(b"other").decode(), SPEC_ID, SPEC_TIMESTAMP,
                      SPEC_BODY, SPEC_SIGNATURE, tolerance=None)  # fmt: skip


def test_rotation_header_holds_one_signature_per_secret() -> None:
    """With two secrets both signatures are sent, and each receiver key verifies its own."""
    header = signature_header(["old-secret", SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert header.split() == [
        sign("old-secret", SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
        SPEC_SIGNATURE,
    ]
    for secret in ("old-secret", SPEC_SECRET):
        assert verify(secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, header, now=SPEC_TIMESTAMP)
    assert not verify("third", SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, header, now=SPEC_TIMESTAMP)


def test_verify_refuses_timestamps_outside_the_tolerance() -> None:
    """A captured request replayed later than the tolerance (5 minutes) is refused."""
    args = (SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE)
    assert verify(*args, now=SPEC_TIMESTAMP + 300)
    assert not verify(*args, now=SPEC_TIMESTAMP + 301)
    assert not verify(*args, now=SPEC_TIMESTAMP - 301)
    assert verify(*args, now=SPEC_TIMESTAMP + 3600, tolerance=timedelta(hours=1))


@pytest.mark.parametrize("timestamp", ["", "-1", "12.5", "\uff11\uff12\uff13", "1e9"])
def test_verify_refuses_a_timestamp_that_is_not_plain_digits(timestamp: str) -> None:
    """Only ASCII digits are a timestamp; anything else fails closed."""
    assert not verify(SPEC_SECRET, SPEC_ID, timestamp, SPEC_BODY, SPEC_SIGNATURE, tolerance=None)


def test_verify_ignores_unknown_versions_and_garbage() -> None:
    """Entries that are not our v1 signature are skipped, not an error."""
    header = f"v2,abc garbage v1, {SPEC_SIGNATURE}"
    assert verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, header, tolerance=None)
    assert not verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, "", tolerance=None)
