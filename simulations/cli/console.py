"""``fedwarden console``: the operator's console in the browser, over the governance store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simulations.cli.common import DatabaseUrl, console, opened


def console_command(
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
    session_hours: Annotated[float, typer.Option(help="How long a sign-in lasts, in hours.")] = 8.0,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM): serve HTTPS, Secure cookies.")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Open the console: runs, ε budgets, models, drift and the audit log (sign in with an API key)."""
    import uvicorn

    from server.console.app import create_app
    from server.console.settings import ConsoleSettings
    from server.store.settings import StoreSettings

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise typer.BadParameter("give both --ssl-certfile and --ssl-keyfile, or neither")
    url = StoreSettings.load(database_url).database_url
    with opened(url):
        pass  # fail now, in one line, if the store is unreachable (and migrate it)
    settings = ConsoleSettings(database_url=url, session_ttl_s=session_hours * 3600.0)
    scheme = "https" if ssl_certfile else "http"
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    console.print(
        f"the console of {url} is at {scheme}://{shown}:{port}/ (sign in with an API key)"
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        workers=1,  # sessions live in the process
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
    )
