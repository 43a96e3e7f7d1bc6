"""``reminders serve``: the HTTP app of the unsubscribe and snooze links (`worker.web.app`)."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli import common
from worker.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``reminders`` app."""
    app.command("serve")(serve)


def serve(
    host: Annotated[
        str | None,
        typer.Option(metavar="ADDRESS", help="Listen address [default: REMINDERS_HTTP_HOST]."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port [default: REMINDERS_HTTP_PORT]."),
    ] = None,
) -> None:
    """Serve the unsubscribe and snooze links of the reminders until stopped.

    Reads REMINDERS_DATABASE_URL, REMINDERS_LINK_SECRET, REMINDERS_LINK_LIFETIME and
    REMINDERS_HTTP_*. Put it behind the address REMINDERS_PUBLIC_URL names (a TLS proxy).

    Exit 0 when stopped, 1 when the database fails, 2 for bad configuration.
    """
    import uvicorn

    from worker.reminders.signed_links import link_tokens
    from worker.web.app import links_app

    services = common.ready_services()
    settings = services.settings
    if not settings.link_secrets:
        raise ConfigError("REMINDERS_LINK_SECRET: required by `reminders serve` (it checks links)")
    timeout = settings.http_timeout.total_seconds()
    app = links_app(
        services.session_factory,
        services.host,
        link_tokens(settings),
        services.clock,
        timeout=timeout,
    )
    uvicorn.run(
        app,
        host=host or settings.http_host,
        port=port or settings.http_port,
        # Its access log prints paths, and the paths carry the tokens: the app logs instead.
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_keep_alive=max(1, int(timeout)),
        timeout_graceful_shutdown=max(1, int(timeout)),
        limit_concurrency=200,
        h11_max_incomplete_event_size=16 * 1024,
    )
