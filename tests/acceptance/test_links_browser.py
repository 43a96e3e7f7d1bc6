"""The unsubscribe page in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright opens the link of a real ``reminders serve``, meets no Content-Security-Policy
violation, clicks the button and the opt-out is in the database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import unavailable
from worker import migrate
from worker.db import make_engine
from worker.reminders.signed_links import SignedLinks
from worker.reminders.tokens import LinkTokens

REMINDERS = str(Path(sys.executable).parent / "reminders")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's package
SECRET = "browser-secret-0123456789abcdefgh"
KEY = "due_soon-20261129T120000Z-70"
# Reports every CSP violation of the page into a list the test reads back. Playwright adds it
# through the DevTools protocol, which the page's policy does not govern.
WATCH_CSP = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__violations.push(event.violatedDirective + ' ' + event.blockedURI);
});
"""


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium and the Playwright package, or a skip (a failure in CI)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        unavailable("the playwright package", error)
    if not Path(CHROMIUM).exists():
        unavailable("chromium", FileNotFoundError(f"{CHROMIUM} (apt-get install chromium)"))
    return CHROMIUM


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real ``reminders serve`` on a migrated SQLite database with user 7; its base URL
    and the database URL."""
    url = f"sqlite:///{tmp_path}/reminders.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (id, email) VALUES (7, 'a@example.com')"))
    engine.dispose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    env |= {"REMINDERS_DATABASE_URL": url, "REMINDERS_LINK_SECRET": SECRET}
    process = subprocess.Popen(
        [REMINDERS, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("reminders serve did not start") from None
                time.sleep(0.1)
        yield base, url
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


def test_the_unsubscribe_button_works_in_chromium_without_csp_violations(
    chromium: str, served: tuple[str, str]
) -> None:
    """GET shows the page (still subscribed), the click posts it, the DB has the opt-out."""
    from playwright.sync_api import sync_playwright

    base, url = served
    tokens = LinkTokens([SECRET], lifetime=timedelta(days=30))
    link = SignedLinks(base, tokens).unsubscribe(7, KEY)
    engine = create_engine(url)

    def opted_out() -> list[tuple[Any, ...]]:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT opted_out FROM reminder_preferences"))
            return [tuple(row) for row in rows]

    console: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.on("console", lambda message: console.append(message.text))
            page.add_init_script(WATCH_CSP)
            response = page.goto(link)
            assert response is not None and response.status == 200
            assert page.locator("h1").inner_text() == "Unsubscribe from reminders"
            assert opted_out() == []  # the GET changed nothing
            with page.expect_navigation():
                page.get_by_role("button", name="Unsubscribe").click()
            assert page.locator("h1").inner_text() == "You are unsubscribed"
            violations = page.evaluate("window.__violations")
        finally:
            browser.close()
    engine.dispose()
    assert violations == []
    assert not [line for line in console if "Content Security Policy" in line]
    assert opted_out() == [("*",)]


def test_serve_without_a_link_secret_stops_with_one_line(tmp_path: Path) -> None:
    """No REMINDERS_LINK_SECRET: `reminders serve` exits 2 naming it, before listening."""
    url = f"sqlite:///{tmp_path}/reminders.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    done = subprocess.run(
        [REMINDERS, "serve", "--port", str(free_port())],
        env=env | {"REMINDERS_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "reminders: REMINDERS_LINK_SECRET: required by `reminders serve` (it checks links)"
    ]
