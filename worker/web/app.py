"""The links app: ``/unsubscribe/<token>`` and ``/snooze/<token>``, GET to confirm, POST to act.

A GET (or HEAD) only shows a page with a button and changes nothing, because mail scanners
and link previews fetch every link of a message. A POST does what the link says: RFC 8058's
one-click ``List-Unsubscribe=One-Click`` and the page's button post alike. Answers:

- 200: the confirmation page, or what was done (unsubscribed, postponed);
- 403: a token no configured secret signed, altered, or of the other action;
- 404: the reminder (snooze) or the recipient (unsubscribe) is not known (any more);
- 405: another method; 409: a snooze of a reminder that is being sent, was sent or will
  not be; 410: an expired token.

Each page is in the recipient's language (their locale in the host's users table; the
browser's ``Accept-Language`` where the token names nobody). Logs carry the action, the
status and the user id, never a token or an address.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from outbox.clock import Clock
from worker.errors import ExpiredLink, ForgedLink
from worker.reminders import link_actions
from worker.reminders.host import HostSchema
from worker.reminders.languages import Language, language_for
from worker.reminders.link_actions import Snoozed
from worker.reminders.tokens import Action, LinkClaim, LinkTokens
from worker.web.pages import SECURITY_HEADERS, Page, render_page

log = structlog.get_logger("worker.web")

_SNOOZE_PAGES = {
    Snoozed.POSTPONED: (200, Page.POSTPONED),
    Snoozed.UNKNOWN: (404, Page.UNKNOWN),
    Snoozed.SENDING: (409, Page.SENDING),
    Snoozed.SENT: (409, Page.SENT),
    Snoozed.OVER: (409, Page.OVER),
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def links_app(
    session_factory: sessionmaker[Session],
    host: HostSchema,
    tokens: LinkTokens,
    clock: Clock,
    *,
    timeout: float = 10.0,
) -> ASGIApp:
    """The ASGI app of the links, on the worker's database; each request bounded by
    ``timeout`` seconds."""
    handler = _Links(session_factory, host, tokens, clock)
    routes = [
        Route("/unsubscribe/{token}", handler.unsubscribe, methods=["GET", "POST"]),
        Route("/snooze/{token}", handler.snooze, methods=["GET", "POST"]),
        Route("/healthz", _health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})
    return hardened(app, timeout)


class _Links:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        host: HostSchema,
        tokens: LinkTokens,
        clock: Clock,
    ) -> None:
        self._sessions = session_factory
        self._host = host
        self._tokens = tokens
        self._clock = clock

    async def unsubscribe(self, request: Request) -> Response:
        return await run_in_threadpool(self._answer, request, "unsubscribe")

    async def snooze(self, request: Request) -> Response:
        return await run_in_threadpool(self._answer, request, "snooze")

    def _answer(self, request: Request, action: Action) -> Response:
        """Verify the token, then confirm (GET) or act (POST); in a worker thread, since
        the database calls block."""
        post = request.method == "POST"
        try:
            claim = self._tokens.verify(request.path_params["token"], action)
        except ExpiredLink:
            return _page(request, _browser_language(request), Page.EXPIRED, 410, action=action)
        except ForgedLink:
            return _page(request, _browser_language(request), Page.FORGED, 403, action=action)
        with self._sessions.begin() as session:
            recipient = link_actions.recipient_of(session, self._host, claim)
            language = language_for(None if recipient is None else recipient.locale)
            if recipient is None:
                return _page(request, language, Page.UNKNOWN, 404, action=action, claim=claim)
            if action == "unsubscribe":
                if post:
                    link_actions.unsubscribe(session, claim, now=self._clock.now())
                    return _page(
                        request, language, Page.UNSUBSCRIBED, 200, action=action, claim=claim
                    )
                return _page(request, language, Page.UNSUBSCRIBE, 200, action=action, claim=claim)
            if not post:
                return _page(request, language, Page.SNOOZE, 200, action=action, claim=claim)
            result = link_actions.snooze(session, claim, now=self._clock.now())
        status, page = _SNOOZE_PAGES[result.outcome]
        due = ""
        if result.due_at is not None:
            due = language.due(result.due_at.astimezone(_zone(recipient.timezone)))
        return _page(request, language, page, status, action=action, claim=claim, due=due)


def _page(
    request: Request,
    language: Language,
    page: Page,
    status: int,
    *,
    action: str,
    claim: LinkClaim | None = None,
    due: str = "",
) -> Response:
    log.info(
        "link_request",
        action=action,
        method=request.method,
        status=status,
        page=page.value,
        user_id=None if claim is None else claim.user_id,
    )
    delay = None if claim is None else claim.delay
    return HTMLResponse(render_page(language, page, delay=delay, due=due), status_code=status)


def _browser_language(request: Request) -> Language:
    """The first language of ``Accept-Language`` (data: only a known catalog is chosen)."""
    first = request.headers.get("accept-language", "").split(",", 1)[0].split(";", 1)[0]
    return language_for(first)


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo((name or "UTC").strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


async def _health(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def _not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("not found\n", status_code=404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    log.info("link_request", method=request.method, status=405)
    return PlainTextResponse(
        "method not allowed\n", status_code=405, headers={"Allow": "GET, HEAD, POST"}
    )


def hardened(app: ASGIApp, timeout: float) -> ASGIApp:
    """``app`` with `SECURITY_HEADERS` on every answer, errors included, and each request
    bounded by ``timeout`` seconds: past it, a 503 if nothing was answered yet."""
    extra = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = False

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            async with asyncio.timeout(timeout):
                await app(scope, receive, with_headers)
        except TimeoutError:
            log.warning("link_request_timeout", path=_masked(scope.get("path", "")))
            if not started:
                late = PlainTextResponse("try again later\n", status_code=503)
                await late(scope, receive, with_headers)

    return wrapped


def _masked(path: str) -> str:
    """A path without its token: ``/unsubscribe/***``."""
    head, slash, _ = path.lstrip("/").partition("/")
    return f"/{head}/***" if slash else f"/{head}"
