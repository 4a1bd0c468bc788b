"""``fedwarden run``: start, follow, stop and resume federation runs on the coordinator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from simulations.cli.common import ApiKey, DatabaseUrl, StateDir

run_app = typer.Typer(help="Start, follow, stop and resume federation runs.", no_args_is_help=True)

AppDir = Annotated[
    Path | None,
    typer.Option("--app", help="The Flower app to run (default: the fedwarden project)."),
]


@run_app.command("start")
def run_start_command(
    config: Annotated[Path, typer.Option("--config", help="TOML file of run config keys.")],
    state: StateDir,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Follow the run's log.")
    ] = True,
    app_dir: AppDir = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Submit a federation run (rounds, strategy, DP, SecAgg, budget cap) (needs run:start)."""
    from server.engine.operator import authorize_operator
    from server.engine.runs import default_app_dir, load_run_config, new_record, submit

    authorize_operator(
        database_url=database_url, api_key=api_key, action="run.start", target="runs",
        details={"config": str(config)},
    )  # fmt: skip
    app = app_dir or default_app_dir()
    record = new_record(load_run_config(config, app_dir=app), state_dir=state)
    record.save(state)
    code = submit(
        record, state_dir=state, app_dir=app, resume=False, stream=stream, echo=typer.echo
    )
    raise typer.Exit(code)


@run_app.command("resume")
def run_resume_command(
    run: Annotated[str, typer.Argument(help="The fedwarden (or Flower) run id.")],
    state: StateDir,
    stream: Annotated[bool, typer.Option("--stream/--no-stream")] = True,
    app_dir: AppDir = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Carry a run on from its last completed round (its checkpoint in the store) (run:start)."""
    from server.engine.operator import authorize_operator
    from server.engine.runs import RunRecord, default_app_dir, submit

    authorize_operator(
        database_url=database_url, api_key=api_key, action="run.resume", target=f"run:{run}"
    )
    record = RunRecord.load(state, run)
    code = submit(
        record, state_dir=state, app_dir=app_dir or default_app_dir(), resume=True,
        stream=stream, echo=typer.echo,
    )  # fmt: skip
    raise typer.Exit(code)


@run_app.command("status")
def run_status_command(
    run: Annotated[str, typer.Argument(help="The fedwarden (or Flower) run id.")],
    state: StateDir,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The run's Flower runs (first, then each resume) and their status, as JSON (run:read)."""
    from server.engine.operator import authorize_operator
    from server.engine.runs import RunRecord, flower_status

    authorize_operator(
        database_url=database_url, api_key=api_key, action="run.status", target=f"run:{run}"
    )
    record = RunRecord.load(state, run)
    out = {
        "run_id": record.run_id,
        "config": record.config,
        "flower_runs": [
            {"run-id": n, **{k: v for k, v in flower_status(state, n).items() if k != "run-id"}}
            for n in record.flower_runs
        ],
    }
    typer.echo(json.dumps(out, indent=2))


@run_app.command("list")
def run_list_command(
    state: StateDir, database_url: DatabaseUrl = None, api_key: ApiKey = None
) -> None:
    """Every run started from this coordinator: id, Flower runs, Flower status (run:read)."""
    from server.engine.operator import authorize_operator
    from server.engine.runs import flower_runs, list_records

    authorize_operator(database_url=database_url, api_key=api_key, action="run.list", target="runs")
    statuses = {int(r["run-id"]): str(r.get("status", "?")) for r in flower_runs(state)}
    for record in list_records(state):
        last = record.flower_runs[-1] if record.flower_runs else None
        status = statuses.get(last, "unknown") if last is not None else "not submitted"
        runs = ",".join(str(n) for n in record.flower_runs) or "-"
        typer.echo(f"{record.run_id}\t{runs}\t{status}")


@run_app.command("stop")
def run_stop_command(
    run: Annotated[str, typer.Argument(help="The fedwarden (or Flower) run id.")],
    state: StateDir,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Stop the run's current Flower run (needs run:stop)."""
    from server.engine.operator import authorize_operator
    from server.engine.runs import RunRecord, stop
    from server.errors import NotFoundError

    authorize_operator(
        database_url=database_url, api_key=api_key, action="run.stop", target=f"run:{run}"
    )
    record = RunRecord.load(state, run)
    if not record.flower_runs:
        raise NotFoundError(f"run {run} was never accepted by the SuperLink")
    typer.echo(stop(state, record.flower_runs[-1]))
