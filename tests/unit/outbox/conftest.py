"""The outbox on its own: plain sessions on the test database and a small fake domain."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from outbox.relay import Relay
from outbox.retry import RetryPolicy
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.unit.outbox.notes import Notes

MAX_ATTEMPTS = 3


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Plain sessions on this test's database (SQLite or PostgreSQL)."""
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def notes() -> Notes:
    """The fake domain the relays re-check rows with."""
    return Notes()


@pytest.fixture
def make_relay(
    sessions: sessionmaker[Session], clock: ManualClock, channel: RecordingChannel, notes: Notes
) -> Callable[..., Relay]:
    """Build relays on the test's database, clock, channel and notes; keywords override."""

    def make(**options: Any) -> Relay:
        policy = RetryPolicy(MAX_ATTEMPTS, rng=random.Random(7))
        defaults: dict[str, Any] = {
            "session_factory": sessions,
            "channel": channel,
            "prepare": notes,
            "clock": clock,
            "policy": policy,
            "owner": "relay-1",
            "lease": timedelta(seconds=60),
            "subject_key": "note_id",
        }
        return Relay(**(defaults | options))

    return make
