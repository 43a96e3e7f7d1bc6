"""The links app through an HTTP client: every status code, GET never changing anything,
POST doing what the link says, the security headers on every answer, no token in the logs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from outbox.table import OutboxRow, Status
from tests.support.channels import RecordingChannel
from tests.support.clock import T0, ManualClock
from tests.support.db import add_task, add_user, make_services
from worker.bootstrap import Services
from worker.reminders import preference_store
from worker.reminders.preferences import ALL_KINDS
from worker.reminders.signed_links import SignedLinks
from worker.reminders.tokens import LinkTokens
from worker.web.app import links_app
from worker.web.pages import CONTENT_SECURITY_POLICY, STYLESHEET

SECRET = "link-secret-0123456789abcdefghij"
BASE = "http://testserver"
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


class Linked:
    """Services with one queued reminder of user 7, and a client of the links app."""

    def __init__(self, services: Services, clock: ManualClock) -> None:
        self.services = services
        self.clock = clock
        self.tokens = LinkTokens([SECRET], lifetime=timedelta(days=30), clock=clock)
        self.links = SignedLinks(BASE, self.tokens)
        app = links_app(services.session_factory, services.host, self.tokens, clock, timeout=5)
        self.client = TestClient(app, follow_redirects=False)
        with services.session_factory() as session:
            self.key = session.execute(select(OutboxRow.idempotency_key)).scalar_one()

    def row(self) -> tuple[str, Any]:
        """The reminder's status and available_at."""
        with self.services.session_factory() as session:
            found = session.execute(
                select(OutboxRow.status, OutboxRow.available_at).where(
                    OutboxRow.idempotency_key == self.key
                )
            ).one()
            return found.status, found.available_at

    def opted_out(self) -> frozenset[str]:
        """User 7's opt-outs."""
        with self.services.session_factory() as session:
            return preference_store.preferences(session, 7).opted_out

    def set_status(self, status: Status) -> None:
        """Put the reminder's row in ``status``, as a relay would."""
        with self.services.session_factory.begin() as session:
            row = session.execute(select(OutboxRow).where(OutboxRow.idempotency_key == self.key))
            row.scalar_one().status = status


@pytest.fixture
def linked(engine: Engine, clock: ManualClock) -> Iterator[Linked]:
    """User 7 (Paris) with one task due tomorrow, its reminder queued by a scan."""
    services = make_services(engine, clock, RecordingChannel())
    add_user(services, 7, timezone="Europe/Paris")
    add_task(services, 70, 7, T0 + timedelta(hours=20), title="Pay <rent>")
    assert services.scan().queued == 1
    made = Linked(services, clock)
    with made.client:
        yield made


def path(url: str) -> str:
    """The path of one of the app's URLs."""
    return url.removeprefix(BASE)


def test_get_of_unsubscribe_confirms_and_changes_nothing(linked: Linked) -> None:
    """A GET (and a HEAD) shows the page with its button; the user is still subscribed."""
    url = path(linked.links.unsubscribe(7, linked.key))
    for _ in range(3):  # link scanners fetch more than once
        answer = linked.client.get(url)
        assert answer.status_code == 200
        assert '<form method="post">' in answer.text
        assert 'name="List-Unsubscribe" value="One-Click"' in answer.text
    assert linked.client.head(url).status_code == 200
    assert linked.opted_out() == frozenset()


def test_one_click_post_unsubscribes(linked: Linked) -> None:
    """RFC 8058: a POST of List-Unsubscribe=One-Click opts the user out, 200; again, 200."""
    url = path(linked.links.unsubscribe(7, linked.key))
    for _ in range(2):
        answer = linked.client.post(url, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
        assert "You are unsubscribed" in answer.text
    assert linked.opted_out() == {ALL_KINDS}


def test_snooze_get_confirms_and_post_postpones(linked: Linked) -> None:
    """GET shows the delay and changes nothing; POST makes the row due a day from now."""
    url = path(linked.links.snooze(7, linked.key, DAY))
    before = linked.row()
    answer = linked.client.get(url)
    assert (answer.status_code, "1 day later" in answer.text) == (200, True)
    assert linked.row() == before
    linked.clock.advance(timedelta(minutes=5))
    answer = linked.client.post(url, data={"snooze": "yes"})
    assert answer.status_code == 200
    assert linked.row() == (Status.PENDING, linked.clock.now() + DAY)
    # Paris is UTC+1 in November: the new moment in the recipient's zone.
    assert "Reminder postponed" in answer.text and "12:05" not in answer.text
    assert "1:05" in answer.text or "13:05" in answer.text


def test_a_snooze_never_brings_a_reminder_forward(linked: Linked) -> None:
    """A one-hour snooze of a row due later than that leaves its time."""
    linked.client.post(path(linked.links.snooze(7, linked.key, DAY)))
    later = linked.row()
    assert linked.client.post(path(linked.links.snooze(7, linked.key, HOUR))).status_code == 200
    assert linked.row() == later


@pytest.mark.parametrize(
    ("status", "page"),
    [
        (Status.CLAIMED, "Being sent"),
        (Status.CANCELLED, "No longer needed"),
        (Status.DEAD, "No longer needed"),
    ],
)
def test_a_snooze_of_a_row_that_is_not_waiting_is_409(
    linked: Linked, status: Status, page: str
) -> None:
    """Being sent or over: 409 with a page saying which, and the row untouched."""
    linked.set_status(status)
    before = linked.row()
    answer = linked.client.post(path(linked.links.snooze(7, linked.key, HOUR)))
    assert (answer.status_code, page in answer.text) == (409, True)
    assert linked.row() == before


def test_a_snooze_of_a_sent_reminder_queues_it_again_once(linked: Linked) -> None:
    """ "Remind me again in 1 h" on a delivered reminder: one follow-up row an hour later,
    however often the link is used; the delivered row stays as it was."""
    linked.set_status(Status.DELIVERED)
    before = linked.row()
    for _ in range(2):
        answer = linked.client.post(path(linked.links.snooze(7, linked.key, HOUR)))
        assert answer.status_code == 200
    assert linked.row() == before
    with linked.services.session_factory() as session:
        rows = session.execute(
            select(OutboxRow.idempotency_key, OutboxRow.status, OutboxRow.available_at).where(
                OutboxRow.idempotency_key.like(linked.key + "~%")
            )
        ).all()
    assert [(key, status) for key, status, _ in rows] == [(linked.key + "~3600", Status.PENDING)]


def test_an_unknown_reminder_or_user_is_404(linked: Linked) -> None:
    """A genuine token for a key no row has, or for a user the host no longer has: 404."""
    answer = linked.client.post(path(linked.links.snooze(7, "due_soon-x-1", HOUR)))
    assert (answer.status_code, "Not found" in answer.text) == (404, True)
    answer = linked.client.post(path(linked.links.unsubscribe(8, linked.key)))
    assert answer.status_code == 404
    with linked.services.session_factory() as session:
        assert preference_store.preferences(session, 8).opted_out == frozenset()
    assert linked.client.get("/elsewhere").status_code == 404


def _tampered(url: str) -> str:
    token = url.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    flipped = ("B" if payload[5] == "A" else "A").join((payload[:5], payload[6:]))
    return url.replace(token, f"{flipped}.{signature}")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_forged_or_altered_token_is_403_and_changes_nothing(linked: Linked, method: str) -> None:
    """Another secret's token, an altered one, another action's, garbage: 403, no change."""
    other = SignedLinks(BASE, LinkTokens(["x" * 32], lifetime=DAY, clock=linked.clock))
    unsubscribe = linked.links.unsubscribe(7, linked.key)
    snooze = linked.links.snooze(7, linked.key, DAY)
    forged = [
        other.unsubscribe(7, linked.key),
        _tampered(unsubscribe),
        _tampered(snooze),
        snooze.replace("/snooze/", "/unsubscribe/"),
        unsubscribe.replace("/unsubscribe/", "/snooze/"),
        f"{BASE}/unsubscribe/not-a-token",
    ]
    before = linked.row()
    for url in forged:
        answer = linked.client.request(method, path(url))
        assert answer.status_code == 403, url
        assert "This link is not valid" in answer.text
    assert (linked.opted_out(), linked.row()) == (frozenset(), before)


def test_an_expired_token_is_410_and_changes_nothing(linked: Linked) -> None:
    """A genuine token past its lifetime: 410 with a page saying so; nothing changed."""
    url = path(linked.links.unsubscribe(7, linked.key))
    linked.clock.advance(timedelta(days=30))
    answer = linked.client.post(url)
    assert (answer.status_code, "This link has expired" in answer.text) == (410, True)
    assert linked.opted_out() == frozenset()


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_another_method_is_405(linked: Linked, method: str) -> None:
    """Only GET, HEAD and POST: anything else is 405 with Allow, and changes nothing."""
    answer = linked.client.request(method, path(linked.links.unsubscribe(7, linked.key)))
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, HEAD, POST"
    assert linked.opted_out() == frozenset()


def test_every_answer_carries_the_security_headers(linked: Linked) -> None:
    """Pages and errors alike: strict CSP, no framing, no caching, no referrer."""
    answers = [
        linked.client.get(path(linked.links.unsubscribe(7, linked.key))),
        linked.client.get("/unsubscribe/forged"),
        linked.client.put("/unsubscribe/forged"),
        linked.client.get("/nowhere"),
    ]
    for answer in answers:
        headers = answer.headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'none'" in CONTENT_SECURITY_POLICY
        assert "form-action 'self'" in CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"
        assert headers["referrer-policy"] == "no-referrer"


def test_the_page_loads_nothing_from_elsewhere(linked: Linked) -> None:
    """No script, no external stylesheet, image or font; the one inline style is ours."""
    page = linked.client.get(path(linked.links.unsubscribe(7, linked.key))).text
    assert not re.search(r"<script|<link|<img|src=|href=|url\(|@import", page)
    assert f"<style>{STYLESHEET}</style>" in page


def test_a_page_follows_the_browsers_language_when_the_token_names_nobody(
    linked: Linked,
) -> None:
    """A forged token's page in German for a German browser."""
    answer = linked.client.get("/unsubscribe/forged", headers={"Accept-Language": "de-DE,de"})
    assert answer.status_code == 403
    assert '<html lang="de">' in answer.text
    assert "This link is not valid" not in answer.text


def test_logs_name_the_user_never_the_token(linked: Linked) -> None:
    """The request log has action, status and user id; no token, no address."""
    url = path(linked.links.unsubscribe(7, linked.key))
    token = url.rsplit("/", 1)[1]
    with structlog.testing.capture_logs() as logs:
        linked.client.post(url)
        linked.client.get("/unsubscribe/forged-token-text")
    assert {"action": "unsubscribe", "status": 200, "user_id": 7}.items() <= logs[0].items()
    text = str(logs)
    assert token not in text and "forged-token-text" not in text and "@" not in text
