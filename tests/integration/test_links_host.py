"""The links app on a host schema that is not ours: the recipient's locale (the mapping's
``lang`` column) picks the pages' language, and the unsubscribe reaches the re-check."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from tests.conftest import HostDatabase
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.support.hosts import TODO_APP_BERLIN
from worker.bootstrap import bootstrap
from worker.reminders.preference_store import OPTED_OUT
from worker.reminders.signed_links import SignedLinks
from worker.reminders.tokens import LinkTokens
from worker.settings import Settings
from worker.web.app import links_app

SECRET = "host-link-secret-0123456789abcdef"


@pytest.mark.parametrize("host_app", [TODO_APP_BERLIN], ids=lambda app: app.name)
def test_pages_speak_the_recipients_language_and_the_opt_out_holds(
    host_database: HostDatabase, clock: ManualClock
) -> None:
    """A French user's unsubscribe page is French; after the POST their queued reminder is
    cancelled at send while a German user's goes out."""
    app = host_database.app
    channel = RecordingChannel()
    settings = Settings(database_url=host_database.url, schema_file=host_database.schema_file)
    services = bootstrap(
        settings, clock=clock, engine=host_database.engine, make_channel=lambda: channel
    )
    with host_database.engine.begin() as connection:
        app.add_user(connection, 1, timezone="Europe/Paris")
        app.add_user(connection, 2, timezone="Europe/Berlin")
        connection.execute(text("UPDATE accounts SET lang = 'fr_FR' WHERE id = 1"))
        connection.execute(text("UPDATE accounts SET lang = 'de' WHERE id = 2"))
        app.add_task(connection, 10, 1, T0 + timedelta(hours=2))
        app.add_task(connection, 20, 2, T0 + timedelta(hours=2))
    assert services.scan().queued == 2
    tokens = LinkTokens([SECRET], lifetime=timedelta(days=30), clock=clock)
    links = SignedLinks("http://testserver", tokens)
    web = links_app(services.session_factory, services.host, tokens, clock)
    with TestClient(web) as client:
        french = client.get(links.unsubscribe(1, "k").removeprefix("http://testserver"))
        german = client.get(links.snooze(2, "k", timedelta(hours=1)).split("testserver")[1])
        assert '<html lang="fr">' in french.text and "Se désabonner" in french.text
        assert '<html lang="de">' in german.text and "Verschieben" in german.text
        posted = client.post(links.unsubscribe(1, "k").removeprefix("http://testserver"))
        assert posted.status_code == 200 and "Vous êtes désabonné" in posted.text
    report = services.relay().relay_until_idle()
    assert report.counts == {"delivered": 1, "cancelled": 1}
    assert [message.recipient for message in channel.sent] == ["user2@example.com"]
    with host_database.engine.connect() as connection:
        reason = connection.execute(
            text("SELECT last_error FROM outbox WHERE subject_id = 10")
        ).scalar_one()
    assert reason == OPTED_OUT
