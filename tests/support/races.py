"""Threads racing at exact steps, and the digest racing relays leave, on PostgreSQL.

`run_threads` runs steps in threads and re-raises what failed there. The digest and burst
race tests (`tests/integration/test_digest_races_postgres.py`,
`tests/integration/test_burst_postgres.py`) hold each relay at a `threading.Barrier` once it
has claimed its batch (`meeting`), so that both merge at the same moment, run them to idle
(`race`) and read the one digest row they made (`one_pending_digest`). Nothing sleeps:
``WAIT`` only bounds a test that hangs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from outbox.relay import Answer, Relay, RelayReport
from outbox.store import Claim
from outbox.table import OutboxRow, Status
from worker.reminders.digest_slots import DIGEST_KIND
from worker.reminders.digest_store import DigestMemberRow

WAIT = 30.0
R = TypeVar("R")


class Member(NamedTuple):
    """A reminder merged into a digest: its outbox row and its key."""

    id: int
    key: str


def meeting(relay: Relay, barrier: threading.Barrier, *, once: bool = False) -> Relay:
    """``relay``, its first re-check held until the other relay's reaches the barrier;
    ``once``: it stops after that round."""
    prepare = relay.prepare
    met: list[bool] = []

    def prepared(session: Session, claims: Sequence[Claim]) -> Mapping[int, Answer]:
        if not met:
            met.append(True)
            barrier.wait(WAIT)
            if once:
                relay.stop.set()
        return prepare(session, claims)

    relay.prepare = prepared
    return relay


def run_threads(targets: Sequence[Callable[[], R]], *, wait: float = WAIT * 2) -> list[R]:
    """Run each target in its own thread; return the results, in the order of ``targets``;
    re-raise the first error. Each thread must end within ``wait`` seconds."""
    results: dict[int, R] = {}
    errors: list[BaseException] = []

    def runner(index: int) -> None:
        try:
            results[index] = targets[index]()
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(wait)
        assert not thread.is_alive(), "a thread did not finish"
    if errors:
        raise errors[0]
    return [results[index] for index in range(len(targets))]


def race(relays: Sequence[Relay]) -> list[RelayReport]:
    """Run the relays in threads until each is idle or stopped; their reports."""
    return run_threads([relay.relay_until_idle for relay in relays])


def one_pending_digest(engine: Engine, key: str) -> list[Member]:
    """The members of the database's only digest row, which must be pending under ``key``
    and the digest of every member row there is."""
    with Session(engine) as session:
        digests = session.execute(
            select(OutboxRow.id, OutboxRow.idempotency_key, OutboxRow.status).where(
                OutboxRow.kind == DIGEST_KIND
            )
        ).all()
        members = session.execute(
            select(DigestMemberRow.member_id, DigestMemberRow.member_key, DigestMemberRow.digest_id)
        ).all()
    ((digest_id, found, status),) = digests
    assert (found, status) == (key, Status.PENDING)
    assert {digest for _, _, digest in members} == {digest_id}
    return [Member(member_id, member_key) for member_id, member_key, _ in members]
