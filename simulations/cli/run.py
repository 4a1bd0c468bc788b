"""``fedwarden run``: start, follow, stop and resume federation runs on the coordinator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from simulations.cli.common import ApiKey, DatabaseUrl, StateDir, console, opened

if TYPE_CHECKING:
    from server.engine.run_view import RunProgress
    from server.engine.runs import RunRecord
    from server.run_events import RoundRecord

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
        bool,
        typer.Option(
            "--stream/--no-stream",
            help="Follow the run: one line per round from the store (Flower's log goes to "
            "STATE/runs/RUN.log).",
        ),
    ] = True,
    app_dir: AppDir = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Submit a federation run (rounds, strategy, DP, SecAgg, budget cap) (needs run:start).

    The config is checked as the ServerApp will read it before anything is sent."""
    from server.engine.operator import authorize_operator
    from server.engine.runs import default_app_dir, load_run_config, new_record

    authorize_operator(
        database_url=database_url, api_key=api_key, action="run.start", target="runs",
        details={"config": str(config)},
    )  # fmt: skip
    app = app_dir or default_app_dir()
    record = new_record(load_run_config(config, app_dir=app), state_dir=state)
    record.save(state)
    raise typer.Exit(
        _submit(record, state=state, app=app, resume=False, stream=stream, database_url=database_url)
    )


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
    from server.engine.runs import RunRecord, default_app_dir

    authorize_operator(
        database_url=database_url, api_key=api_key, action="run.resume", target=f"run:{run}"
    )
    record = RunRecord.load(state, run)
    from privacy.errors import ConfigError
    from server.engine.run_view import recorded_rounds

    with opened(database_url) as store:
        progress = recorded_rounds(store, record.run_id)
    if progress is not None and progress.status == "completed":
        raise ConfigError(
            f"run {record.run_id} completed all its rounds; there is nothing to resume",
            run=record.run_id,
        )
    app = app_dir or default_app_dir()
    raise typer.Exit(
        _submit(record, state=state, app=app, resume=True, stream=stream, database_url=database_url)
    )


@run_app.command("status")
def run_status_command(
    run: Annotated[str, typer.Argument(help="The fedwarden (or Flower) run id, or a prefix.")],
    state: StateDir,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Print one line per round as the store records them."),
    ] = False,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The run in the store (status, rounds) and its Flower runs, as JSON; with --follow,
    its rounds one line each until it ends (run:read)."""
    from server.engine.operator import authorize_operator
    from server.engine.run_view import follow as follow_run
    from server.engine.run_view import recorded_rounds
    from server.engine.runs import RunRecord, flower_status

    authorize_operator(
        database_url=database_url, api_key=api_key, action="run.status", target=f"run:{run}"
    )
    record = RunRecord.load(state, run)
    with opened(database_url) as store:
        if follow:
            def finished() -> bool:
                progress = recorded_rounds(store, record.run_id)
                if progress is not None:
                    return progress.status != "running"
                # Not in the store (yet): over only if Flower says its last run is over
                last = record.flower_runs[-1] if record.flower_runs else None
                return last is None or str(
                    flower_status(state, last).get("status", "")
                ).startswith("finished")

            with _RunView(record) as view:
                progress = follow_run(
                    store, record.run_id, on_round=view.on_round, on_phase=view.on_phase,
                    finished=finished,
                )  # fmt: skip
            _print_end(record.run_id, progress, planned=record.config.get("num-server-rounds"))
            return
        progress = recorded_rounds(store, record.run_id)
    out = {
        "run_id": record.run_id,
        "status": progress.status if progress else "submitted",
        "rounds": [r.to_dict() for r in progress.rounds] if progress else [],
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
    """Every run started from this coordinator: id, Flower runs, status and rounds recorded in
    the store (run:read)."""
    from server.engine.operator import authorize_operator
    from server.engine.run_view import recorded_rounds
    from server.engine.runs import list_records

    authorize_operator(database_url=database_url, api_key=api_key, action="run.list", target="runs")
    with opened(database_url) as store:
        for record in list_records(state):
            progress = recorded_rounds(store, record.run_id)
            status = progress.status if progress else "submitted"
            done = len(progress.rounds) if progress else 0
            planned = progress.num_rounds if progress and progress.num_rounds else "?"
            runs = ",".join(str(n) for n in record.flower_runs) or "-"
            typer.echo(f"{record.run_id}\t{runs}\t{status}\t{done}/{planned} rounds")


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
    from server.store import repository as repo
    from server.store.runs import end_run, match_run

    with opened(database_url) as store, store.session() as session:
        actor = repo.authenticate(session, api_key)
        found = match_run(session, record.run_id)
        # "failed": the ServerApp may have seen Flower end the run before this line
        if found is not None and found.status in ("running", "failed"):
            end_run(
                session=session, actor=actor, run_id=found.id, status="stopped",
                reason=f"stopped by {actor.name}",
            )  # fmt: skip
    typer.echo(f"run {record.run_id} stopped")


def _submit(
    record: RunRecord,
    *,
    state: Path,
    app: Path,
    resume: bool,
    stream: bool,
    database_url: str | None,
) -> int:
    """Submit the run; with ``stream``, print its rounds from the store until it ends."""
    import threading

    from server.engine.run_view import follow
    from server.engine.runs import submit

    if not stream:
        return submit(
            record, state_dir=state, app_dir=app, resume=resume, stream=False, echo=typer.echo
        )
    log_path = state / "runs" / f"{record.run_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, int | BaseException] = {}

    def flower_log(line: str) -> None:
        log.write(line + "\n")
        log.flush()
        if line.startswith("fedwarden run ") or "ERROR" in line:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
            if line.startswith("fedwarden run "):
                console.print(
                    f"Flower's log: {log_path}; waiting for the ServerApp's first round…",
                    markup=False, highlight=False, soft_wrap=True,
                )  # fmt: skip

    def run() -> None:
        try:
            outcome["code"] = submit(
                record, state_dir=state, app_dir=app, resume=resume, stream=True, echo=flower_log
            )
        except BaseException as exc:  # re-raised in the main thread
            outcome["error"] = exc

    with (
        log_path.open("a", encoding="utf-8") as log,
        opened(database_url) as store,
        _RunView(record) as view,
    ):
        worker = threading.Thread(target=run, name="flwr-run", daemon=True)
        worker.start()
        progress = follow(
            store, record.run_id, on_round=view.on_round, on_phase=view.on_phase,
            finished=lambda: not worker.is_alive(),
        )  # fmt: skip
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    _print_end(record.run_id, progress, planned=record.config.get("num-server-rounds"))
    code = outcome.get("code", 1)
    return code if isinstance(code, int) else 1


class _RunView:
    """What ``simulate`` shows, from the store: a bar naming the phase (on a terminal;
    elsewhere one line per phase) and one line per round."""

    def __init__(self, record: RunRecord) -> None:
        from simulations.progress import ProgressObserver

        planned = record.config.get("num-server-rounds")
        self.planned = planned if isinstance(planned, int) else None
        self.bar = ProgressObserver(console, num_rounds=self.planned or 0)

    def __enter__(self) -> _RunView:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def on_phase(self, phase: str) -> None:
        self.bar.on_phase(phase)

    def on_round(self, round_record: RoundRecord, num_rounds: int | None) -> None:
        from simulations.progress import format_round

        total = num_rounds or self.planned or round_record.round
        if total != self.bar.num_rounds:
            self.bar.num_rounds = total
            self.bar.progress.update(self.bar.task, total=total)
        self.bar.progress.update(self.bar.task, completed=round_record.round)
        line = format_round(round_record, total)
        console.print(line, highlight=False, soft_wrap=True)


def _print_end(run_id: str, progress: RunProgress | None, *, planned: object = None) -> None:
    from server.engine.run_view import export_hint

    if progress is None:
        typer.echo(f"run {run_id}: the ServerApp recorded nothing in the store")
        return
    done = len(progress.rounds)
    total = progress.num_rounds or (planned if isinstance(planned, int) else "?")
    line = f"run {run_id}: {progress.status}, {done}/{total} rounds"
    if progress.stopped_reason:
        line += f" ({progress.stopped_reason})"
    typer.echo(line)
    if progress.status == "completed" or done:
        typer.echo(f"next: {export_hint(run_id)}")
