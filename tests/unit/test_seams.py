"""The wiring's seams: what a build wraps is what the scan and the relay use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outbox.channels.base import Channel
from outbox.relay import Answer, Prepare
from outbox.store import Claim, Verdict
from outbox.table import Status
from tests.support.channels import RecordingChannel
from tests.support.clock import ManualClock
from tests.support.db import add_task, add_user
from worker.bootstrap import bootstrap
from worker.reminders.due import DueQueries
from worker.seams import Seams
from worker.settings import Settings

HOUR = timedelta(hours=1)


def test_bootstrap_wraps_the_channel_the_recheck_and_the_queries_and_reports_records(
    sqlite_engine: Engine, clock: ManualClock, channel: RecordingChannel
) -> None:
    """Each wrapper sees its part once wired; the observer sees each committed verdict."""
    wrapped: list[str] = []
    recorded: list[tuple[str, Status, bool]] = []

    def wrap_channel(inner: Channel) -> Channel:
        wrapped.append("channel")
        return inner

    def wrap_prepare(prepare: Prepare) -> Prepare:
        def counted(session: Session, claims: Sequence[Claim]) -> Mapping[int, Answer]:
            wrapped.append("prepare")
            return prepare(session, claims)

        return counted

    def wrap_due_queries(queries: DueQueries) -> DueQueries:
        wrapped.append("queries")
        return queries

    def on_record(verdict: Verdict, held: bool) -> None:
        recorded.append((verdict.claim.key, verdict.status, held))

    seams = Seams(wrap_channel, wrap_prepare, wrap_due_queries, on_record)
    settings = Settings(database_url=str(sqlite_engine.url))
    services = bootstrap(
        settings, clock=clock, engine=sqlite_engine, make_channel=lambda: channel, seams=seams
    )
    add_user(services, 1)
    add_task(services, 1, 1, clock.now() + HOUR)
    assert services.scan().queued == 1
    report = services.relay().relay_until_idle()
    assert dict(report.counts) == {"delivered": 1}
    assert wrapped == ["queries", "channel", "prepare"]
    assert [(status, held) for _, status, held in recorded] == [(Status.DELIVERED, True)]
    assert [key for key, _, _ in recorded] == [message.key for message in channel.sent]


def test_without_seams_the_parts_are_the_ones_built() -> None:
    """The default wraps nothing and observes nothing: production's wiring."""
    seams = Seams()
    channel = RecordingChannel()
    assert seams.wrap_channel(channel) is channel
    assert seams.on_record is None
