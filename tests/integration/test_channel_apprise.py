"""The Apprise channel against local receivers: one notification per row to the user's URL,
failures retried, a silent receiver bounded by the timeout, a user without a URL cancelled,
and the URL in no log, error or output."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, select

from outbox.channels.apprise import AppriseChannel
from outbox.channels.base import Message, Outcome
from outbox.table import OutboxRow, Status
from tests.support.clock import T0, ManualClock
from tests.support.db import add_task, add_user
from tests.support.servers.silent import SilentServer
from tests.support.servers.webhook import RecordingWebhookServer, Reply
from worker.bootstrap import Services, bootstrap
from worker.reminders import preference_store
from worker.reminders.own_channels import NO_CHANNEL_URL
from worker.reminders.preferences import PreferenceEdit
from worker.settings import Settings


def apprise_url(port: int, secret: str = "s3cr3t") -> str:
    """An Apprise json:// URL to the local receiver, with a secret in its user part."""
    return f"json://user:{secret}@127.0.0.1:{port}/hooks/reminders"


def services_for(engine: Engine, clock: ManualClock, **settings: Any) -> Services:
    """Services on the apprise channel, with the settings given."""
    config = Settings(database_url=str(engine.url), channel="apprise", **settings)
    return bootstrap(config, clock=clock, engine=engine)


def set_channel(services: Services, user_id: int, url: str) -> None:
    """Give the user their own channel URL."""
    with services.session_factory.begin() as session:
        preference_store.edit_preferences(
            session, services.host, user_id, PreferenceEdit(channel=url), now=services.clock.now()
        )


def statuses(services: Services) -> dict[int, tuple[str, str | None]]:
    """Each row's (status, last_error) by task id."""
    with services.session_factory() as session:
        rows = session.execute(select(OutboxRow.subject_id, OutboxRow.status, OutboxRow.last_error))
        return {row.subject_id: (row.status, row.last_error) for row in rows}


def test_each_row_is_one_notification_to_its_users_url(engine: Engine, clock: ManualClock) -> None:
    """Two users, two URLs, two rows: each receiver gets its user's reminder, once."""
    with RecordingWebhookServer() as first, RecordingWebhookServer() as second:
        services = services_for(engine, clock)
        for user_id, server in ((1, first), (2, second)):
            add_user(services, user_id)
            set_channel(services, user_id, apprise_url(server.port))
            add_task(services, user_id * 10, user_id, T0 + timedelta(hours=2), title=f"T{user_id}")
        services.scan()
        assert services.relay().relay_until_idle().counts == {"delivered": 2}
        for server, title in ((first, "T1"), (second, "T2")):
            assert len(server.requests) == 1
            body = json.loads(server.requests[0].body)
            assert title in body["title"] and title in body["message"]


def test_a_failing_receiver_is_retried(engine: Engine, clock: ManualClock) -> None:
    """A 500 is a transient failure: the row waits as failed, then is delivered."""
    with RecordingWebhookServer(Reply(status=500)) as server:
        services = services_for(engine, clock, retry_base="1s", retry_cap="2s")
        add_user(services, 1)
        set_channel(services, 1, apprise_url(server.port))
        add_task(services, 10, 1, T0 + timedelta(hours=2))
        services.scan()
        assert services.relay().relay_until_idle().counts == {"retry": 1}
        status, error = statuses(services)[10]
        assert status == Status.FAILED
        assert error == "apprise: json://*** did not take the notification"
        clock.advance(timedelta(seconds=5))
        assert services.relay().relay_until_idle().counts == {"delivered": 1}
        assert len(server.requests) == 2


def test_a_silent_receiver_is_bounded_by_the_send_timeout() -> None:
    """A receiver that accepts and never answers: the send fails within its timeout."""
    with SilentServer() as silent:
        channel = AppriseChannel(timeout=1.0)
        started = time.monotonic()
        url = f"json://127.0.0.1:{silent.port}/"
        delivery = channel.send(Message("k", "a@example.com", "s", "t", channel_url=url))
        assert delivery.outcome == Outcome.RETRY
        assert time.monotonic() - started < 5


def test_a_user_without_a_url_is_cancelled_with_a_reason(
    engine: Engine, clock: ManualClock
) -> None:
    """No channel URL set: the reminder is cancelled at send, nothing is sent."""
    services = services_for(engine, clock)
    add_user(services, 1)
    add_task(services, 10, 1, T0 + timedelta(hours=2))
    services.scan()
    assert services.relay().relay_until_idle().counts == {"cancelled": 1}
    assert statuses(services)[10] == (Status.CANCELLED, NO_CHANNEL_URL)


def test_the_url_is_in_no_log_and_no_error(
    engine: Engine, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing send's logs (ours and the libraries') and stored error name the scheme only."""
    caplog.set_level(logging.DEBUG)
    secret = "t0ps3cr3tvalue"
    with RecordingWebhookServer(Reply(status=503)) as server:
        services = services_for(engine, clock)
        add_user(services, 1)
        set_channel(services, 1, apprise_url(server.port, secret))
        add_task(services, 10, 1, T0 + timedelta(hours=2))
        services.scan()
        with structlog.testing.capture_logs() as logs:
            services.relay().relay_until_idle()
        assert secret not in str(logs)
        assert secret not in str(statuses(services))
        assert caplog.records
        assert not [r for r in caplog.records if secret in r.getMessage()]


@pytest.mark.parametrize("url", ["", None])
def test_a_message_without_a_url_is_refused_for_good(url: str | None) -> None:
    """The channel itself never guesses a destination."""
    delivery = AppriseChannel(timeout=1.0).send(Message("k", "a@b.c", "s", "t", channel_url=url))
    assert delivery.outcome == Outcome.PERMANENT
