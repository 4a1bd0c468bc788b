"""``fedwarden export``, ``models``, ``serve`` and ``drift``: what leaves the federation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from server.store.commands.common import ApiKey, DatabaseUrl, authenticated, opened

console = Console(highlight=False)
models_app = typer.Typer(
    help="The model registry: list, show and promote versions.", no_args_is_help=True
)
drift_app = typer.Typer(
    help="Drift of served models from their training data.", no_args_is_help=True
)


def export_command(
    run: Annotated[str, typer.Option("--run", help="The run's id.")],
    name: Annotated[str, typer.Option("--name", help="The model's name in the registry.")],
    round_: Annotated[
        int | None,
        typer.Option("--round", help="Export the model after this round (default: the last)."),
    ] = None,
    artifact_dir: Annotated[Path, typer.Option(help="Where the ONNX artifact is written.")] = Path(
        "artifacts"
    ),
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Export a run's global model to ONNX (parity-checked) and register it in staging."""
    from deploy.registration import export_and_register
    from server.store import repository as repo

    with opened(database_url) as store:
        with store.session() as session:
            actor = repo.authenticate(session, api_key)
        registered = export_and_register(
            store=store, actor=actor, run_id=run, name=name, artifact_dir=artifact_dir, round=round_
        )
    console.print(
        f"registered {registered.name!r} version {registered.version} (staging) from round "
        f"{registered.round} of run {run}: {registered.exported.path}\n"
        f"sha256 {registered.exported.sha256}; ONNX parity on {registered.exported.parity.rows} rows: "
        f"max |Δp| {registered.exported.parity.max_abs_diff:.1e}"
    )


@models_app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(help="Only this model's versions.")] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Every registered version with its stage (needs model:read)."""
    from server.store import repository as repo

    table = Table(
        Column("name", no_wrap=True), "version", "stage", "run", "round", "created", "sha256"
    )
    with authenticated(database_url, api_key) as (session, actor):
        for version in repo.list_model_versions(session=session, actor=actor, name=name):
            table.add_row(
                version.name,
                str(version.version),
                version.stage,
                (version.run_id or "")[:8],
                str(version.lineage.get("round", "")),
                version.created_at.strftime("%m-%d %H:%M"),
                version.artifact_sha256[:10],
            )
    console.print(table)


@models_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[int | None, typer.Argument(help="A version (default: production).")] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """One version: artifact, input schema and lineage, as JSON (needs model:read)."""
    from server.store import repository as repo

    with authenticated(database_url, api_key) as (session, actor):
        found = repo.get_model_version(session=session, actor=actor, name=name, version=version)
        details = {
            "name": found.name,
            "version": found.version,
            "stage": found.stage,
            "artifact": found.artifact_path,
            "sha256": found.artifact_sha256,
            "labels": found.output_labels,
            "features": [f["name"] for f in found.input_schema.get("features", [])],
            "lineage": found.lineage,
            "created_by": found.created_by,
        }
    typer.echo(json.dumps(details, indent=2, default=str))


@models_app.command("promote")
def promote_command(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[int, typer.Argument(help="The staging version to serve.")],
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Move a staging version to production; the previous one is archived (needs model:promote).

    A running inference service switches to it within its poll interval, without a restart.
    """
    from server.store import repository as repo

    with authenticated(database_url, api_key) as (session, actor):
        promoted = repo.promote_model_version(
            session=session, actor=actor, name=name, version=version
        )
        number = promoted.version
    console.print(f"{name} version {number} is now in production")


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

    url = StoreSettings.load(database_url).database_url
    settings = ServeSettings(
        database_url=url,
        host=host,
        port=port,
        workers=workers,
        max_rows=max_rows,
        max_body_bytes=max_body_bytes,
        providers=providers,
        threads=threads,
        poll_interval_s=poll_interval,
    )
    with opened(url):
        pass  # fail now, in one line, if the store is unreachable
    drift_plan(settings)  # and if a drift detector or threshold is wrong
    for key, value in settings.model_dump(mode="json").items():
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


@drift_app.command("report")
def drift_report_command(
    model: Annotated[str, typer.Option("--model", help="The model's name.")],
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="CSV or Parquet rows in the model's schema to score (default: the service's "
            "latest stored drift state).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Report file: .html (default drift-<model>.html) or .png."),
    ] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Per-feature drift of the production version against its reference profile (needs
    model:read; ε left per institution needs ledger:read)."""
    from deploy.drift_report import summarize, write_report

    with authenticated(database_url, api_key) as (session, actor):
        summary = summarize(session, actor=actor, model=model, input_path=input_path)
    table = Table(Column("feature", no_wrap=True), "kind", "detector", "score", "p-value", "status")
    colours = {"ok": "green", "warning": "yellow", "drift": "red"}
    for item in summary.features:
        p_value = item.get("p_value")
        table.add_row(
            item["name"],
            item["kind"],
            item["detector"],
            f"{item['score']:.4g}",
            "" if p_value is None else f"{p_value:.3g}",
            f"[{colours[item['status']]}]{item['status']}[/]",
        )
    console.print(
        f"{summary.model} v{summary.version}: [{colours[summary.status]}]{summary.status}[/] "
        f"over {summary.rows} rows ({summary.source})"
    )
    if summary.features:
        console.print(table)
    for note in summary.notes:
        console.print(note)
    if summary.recommends_retraining:
        console.print(
            "[red]The data has drifted from what the federation trained on: "
            "a retraining run is recommended.[/]"
        )
        if summary.epsilon:
            budget = Table("institution", "ε spent", "ε budget", "ε left")
            for entry in summary.epsilon:
                budget.add_row(
                    entry.institution,
                    f"{entry.spent:.3g}",
                    "" if entry.budget is None else f"{entry.budget:.3g}",
                    "no budget" if entry.left is None else f"{entry.left:.3g}",
                )
            console.print(budget)
    path = write_report(summary, out or Path(f"drift-{model}.html"))
    console.print(f"report written to {path}")


def register(app: typer.Typer) -> None:
    """Add ``export``, ``models``, ``serve`` and ``drift`` to the application."""
    app.command("export")(export_command)
    app.add_typer(models_app, name="models")
    app.command("serve")(serve_command)
    app.add_typer(drift_app, name="drift")
