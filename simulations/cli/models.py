"""``fedwarden export`` and ``fedwarden models``: the model registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from simulations.cli.common import ApiKey, DatabaseUrl, authenticated, console, opened

models_app = typer.Typer(
    help="The model registry: list, show, compare and promote versions; canary, shadow and "
    "roll back.",
    no_args_is_help=True,
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
    quantize: Annotated[
        str | None,
        typer.Option(
            help="INT8: dynamic, static, or auto (keep the fastest within the tolerance, FP32 "
            "included); the decision goes into the lineage."
        ),
    ] = None,
    quantize_tolerance: Annotated[
        float,
        typer.Option(min=0.0, help="Refuse INT8 losing more accuracy points than this."),
    ] = 0.5,
    held_out: Annotated[
        Path | None,
        typer.Option(
            help="CSV or Parquet rows with the target, to check INT8 accuracy on (default: "
            "rows sampled from the schema, checked for agreement with FP32)."
        ),
    ] = None,
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
            store=store,
            actor=actor,
            run_id=run,
            name=name,
            artifact_dir=artifact_dir,
            round=round_,
            held_out_path=held_out,
            quantize=quantize,
            quantize_tolerance_points=quantize_tolerance,
        )
    console.print(
        f"registered {registered.name!r} version {registered.version} (staging) from round "
        f"{registered.round} of run {run}: {registered.exported.path}\n"
        f"sha256 {registered.exported.sha256}; ONNX parity on {registered.exported.parity.rows} rows: "
        f"max |Δp| {registered.exported.parity.max_abs_diff:.1e}"
    )
    if registered.quantization is not None:
        q = registered.quantization
        console.print(
            f"quantisation ({q['asked']}): kept {q['chosen']}, {q['speedup_batch_64']:.2f}x at "
            f"batch 64, {q['accuracy_delta_points']:+.2f} accuracy points on {q['rows']} rows "
            f"({q['accuracy_basis']}): {q['reason']}"
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
            "evaluation": found.lineage.get("evaluation"),
            "lineage": found.lineage,
            "created_by": found.created_by,
        }
    typer.echo(json.dumps(details, indent=2, default=str))


@models_app.command("promote")
def promote_command(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[int, typer.Argument(help="The staging version to serve.")],
    require_approval: Annotated[
        bool,
        typer.Option(
            "--require-approval",
            help="Two-person rule: the first call requests, another operator's call promotes.",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Move a staging version to production; the previous one is archived (needs model:promote).

    A running inference service switches to it within its poll interval, without a restart.
    """
    from server.store import repository as repo

    with authenticated(database_url, api_key) as (session, actor):
        promoted = repo.promote_model_version(
            session=session,
            actor=actor,
            name=name,
            version=version,
            require_approval=require_approval,
        )
        requester = actor.name
    if promoted is None:
        console.print(
            f"{requester} requested promoting {name} version {version}; another operator "
            "must run the same command with --require-approval to carry it out"
        )
        return
    console.print(f"{name} version {version} is now in production")


@models_app.command("compare")
def compare_command(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    versions: Annotated[
        list[int] | None, typer.Argument(help="Versions to compare (default: all).")
    ] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Versions side by side: stage, run and round, federated accuracy and loss (pooled and
    per institution), largest ε spent, INT8 decision (needs model:read)."""
    from deploy.registry_view import comparison
    from server.store import repository as repo

    with authenticated(database_url, api_key) as (session, actor):
        found = repo.list_model_versions(session=session, actor=actor, name=name)
        view = comparison(found, versions=versions)
    table = Table(Column("", no_wrap=True), *[f"v{c['version']}" for c in view.columns])
    for label, cells in view.rows:
        table.add_row(label, *cells)
    console.print(table)


@models_app.command("canary")
def canary_command(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[int, typer.Argument(help="The version to try on part of the traffic.")],
    percent: Annotated[
        float, typer.Option(help="Share of requests it answers (sticky by request_id).")
    ] = 10.0,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Serve a version as a canary beside production (needs model:promote; audited).

    `models promote` makes it production; `models rollback` stops it.
    """
    _start_rollout(name, version, "canary", percent, database_url, api_key)


@models_app.command("shadow")
def shadow_command(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[int, typer.Argument(help="The version to score on live traffic.")],
    percent: Annotated[float, typer.Option(help="Share of requests it scores.")] = 100.0,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Score a version on live traffic without returning its answers, compared with
    production on GET /v1/models/NAME/rollout (needs model:promote; audited)."""
    _start_rollout(name, version, "shadow", percent, database_url, api_key)


def _start_rollout(
    name: str,
    version: int,
    mode: str,
    percent: float,
    database_url: str | None,
    api_key: str | None,
) -> None:
    from server.store import repository as repo

    with authenticated(database_url, api_key) as (session, actor):
        repo.start_rollout(
            session=session, actor=actor, name=name, version=version, mode=mode, percent=percent
        )
    console.print(
        f"{name} version {version} is served as a {mode} on {percent:g}% of the traffic "
        "(a running service picks it up within its poll interval)"
    )


@models_app.command("rollback")
def rollback_command(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[
        int | None,
        typer.Argument(help="An archived version to serve again (default: undo the last change)."),
    ] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Stop a running canary or shadow; without one, put the previous production version back
    (or the archived VERSION), with no re-export (needs model:promote; audited)."""
    from server.store import repository as repo

    with authenticated(database_url, api_key) as (session, actor):
        what, number = repo.roll_back(session=session, actor=actor, name=name, version=version)
    if what == "rollout":
        console.print(f"stopped the rollout of {name} version {number}; production is unchanged")
    else:
        console.print(f"{name} version {number} is in production again")
