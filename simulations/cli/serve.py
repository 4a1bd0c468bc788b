"""``fedwarden serve``: the inference service over every production model."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from simulations.cli.common import DatabaseUrl, console, opened


def serve_command(
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    max_rows: Annotated[int, typer.Option(help="Most rows in one request (more: 413).")] = 1024,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body (more: 413).")] = 1
    << 20,
    providers: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option(help="onnxruntime threads per request.")] = 1,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between looks at the registry.")
    ] = 2.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve every production model over HTTP (OpenAPI docs at /docs)."""
    import uvicorn

    from deploy.drift import drift_plan
    from deploy.settings import ServeSettings
    from server.store.settings import StoreSettings

    store = StoreSettings.load(database_url)
    url = store.database_url
    settings = ServeSettings(
        store=store,
        host=host,
        port=port,
        workers=workers,
        max_rows=max_rows,
        max_body_bytes=max_body_bytes,
        providers=providers,
        threads=threads,
        poll_interval_s=poll_interval,
    )
    drift_plan(settings)  # fail now, in one line, if a drift detector or threshold is wrong
    with opened(url):
        pass  # and if the store is missing or unreachable
    os.environ["FEDWARDEN_DATABASE_URL"] = url  # the store's own settings read it back
    for key, value in settings.model_dump(mode="json", exclude={"store"}).items():
        if value is None:  # unset is how an optional setting says "none"
            os.environ.pop(f"FEDWARDEN_{key.upper()}", None)
            continue
        # Lists (the drift detectors) travel as JSON, as pydantic-settings reads them back.
        os.environ[f"FEDWARDEN_{key.upper()}"] = (
            value if isinstance(value, str) else json.dumps(value)
        )
    console.print(f"serving the production models of {url} on http://{host}:{port} (docs at /docs)")
    uvicorn.run(
        "deploy.api:create_app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
    )
