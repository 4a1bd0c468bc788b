"""``fedwarden pki``, ``fedwarden coordinator`` and ``fedwarden run``: the coordinator's side
of a real deployment over Flower's deployment engine."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from server.store.commands.common import ApiKey, DatabaseUrl, authenticated, console, opened

logger = logging.getLogger(__name__)

pki_app = typer.Typer(
    help="The consortium's CA, the coordinator's TLS certificate, node keys.", no_args_is_help=True
)
coordinator_app = typer.Typer(
    help="Run the coordinator (a Flower SuperLink).", no_args_is_help=True
)
run_app = typer.Typer(help="Start, follow, stop and resume federation runs.", no_args_is_help=True)

StateDir = Annotated[
    Path,
    typer.Option(
        "--state",
        envvar="FEDWARDEN_COORDINATOR_STATE",
        help="The coordinator's state folder (as given to `coordinator start`).",
    ),
]
AppDir = Annotated[
    Path | None,
    typer.Option("--app", help="The Flower app to run (default: the fedwarden project)."),
]


@pki_app.command("init")
def pki_init_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.crt/.key and server.crt/.key.")],
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host", help="An address the coordinator serves on (IP or DNS name); repeat."
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="How long the server certificate lasts.")] = 825,
) -> None:
    """Create the consortium CA and the coordinator's TLS certificate and key."""
    from privacy.errors import ConfigError
    from privacy.pki import create_ca, issue_server_certificate

    if (out / "ca.key").exists():
        raise ConfigError(f"{out} holds a CA already; refusing to overwrite it")
    ca = create_ca(out_dir=out)
    try:
        server = issue_server_certificate(
            ca=ca, addresses=list(host or ["127.0.0.1", "localhost"]), out_dir=out, days=days
        )
    except ConfigError:
        # Leave no half-made CA behind: the next try would refuse to overwrite it.
        ca.private_key.unlink(missing_ok=True)
        ca.certificate.unlink(missing_ok=True)
        raise
    console.print(f"CA certificate {ca.certificate} (give it to every institution)")
    console.print(f"CA key {ca.private_key} (keep it offline)")
    console.print(f"coordinator certificate {server.certificate} and key {server.private_key}")


@pki_app.command("node")
def pki_node_command(
    *,
    institution: Annotated[str, typer.Option("--institution", help="The node's institution.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for NAME.key and NAME.pub.")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key", help="Register this existing public key instead of making a pair."
        ),
    ] = None,
    register: Annotated[bool, typer.Option(help="Register the public key in the store.")] = True,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Make an institution's node key pair and register its public key with the coordinator
    (needs node:register for one's own institution, or institution:manage)."""
    from privacy.errors import ConfigError
    from privacy.pki import generate_node_key
    from server.store.nodes import register_node_key

    if public_key is not None:
        try:
            line = public_key.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the public key {public_key}: {exc.strerror}") from None
    else:
        private, line = generate_node_key(out_dir=out, institution=institution)
        console.print(f"node private key {private} (mode 0600; it never leaves the institution)")
        console.print(f"node public key {private.with_suffix('.pub')}")
    if not register:
        return
    with authenticated(database_url, api_key) as (session, actor):
        info = register_node_key(
            session=session, actor=actor, institution=institution, public_key=line
        )
    console.print(f"registered {info.fingerprint} for {info.institution}")


@pki_app.command("nodes")
def pki_nodes_command(
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List registered node keys (needs principal:read)."""
    from server.store.nodes import list_node_keys

    with authenticated(database_url, api_key) as (session, actor):
        keys = list_node_keys(session=session, actor=actor)
    rows = [
        {"institution": k.institution, "fingerprint": k.fingerprint, "revoked": k.revoked,
         "created_at": k.created_at.isoformat(), "created_by": k.created_by}
        for k in keys
    ]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        status = "revoked" if row["revoked"] else "active"
        console.print(f"{row['institution']}\t{row['fingerprint']}\t{status}")


@pki_app.command("revoke")
def pki_revoke_command(
    fingerprint: Annotated[str, typer.Argument(help="SHA256:... of the node key.")],
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Revoke a node key; the coordinator unregisters it from its SuperLink on its next start."""
    from server.store.nodes import revoke_node_key

    with authenticated(database_url, api_key) as (session, actor):
        revoke_node_key(session=session, actor=actor, fingerprint_=fingerprint)
    console.print(f"revoked {fingerprint}")


@coordinator_app.command("start")
def coordinator_start_command(
    pki: Annotated[Path, typer.Option("--pki", help="The folder `pki init` wrote.")],
    state: StateDir,
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port of the SuperLink's Fleet/Control/ServerAppIo API.")
    ] = 9093,
) -> None:
    """Start the SuperLink (TLS, node authentication, state database, no runtime installs),
    push the registered node keys to it, and run in the foreground (Ctrl-C stops it)."""
    from client.processes import ProcessGroup, child_env, executable
    from server.deployment.flwr_cli import flwr_home, write_connection
    from server.deployment.superlink import (
        RefusalWatcher,
        SuperLinkSettings,
        push_node_keys,
        superlink_argv,
        wait_until_ready,
    )
    from server.store import audit

    settings = SuperLinkSettings(pki_dir=pki, state_dir=state, host=host, port=port)
    settings.check()
    state.mkdir(parents=True, exist_ok=True)
    with opened(database_url) as store:
        url = store.engine.url.render_as_string(hide_password=False)
        write_connection(
            state_dir=state, address=settings.address, ca_certificate=settings.ca_certificate
        )
        env = child_env(FLWR_HOME=str(flwr_home(state)), FEDWARDEN_DATABASE_URL=url)
        group = ProcessGroup()
        watcher = RefusalWatcher(store)
        group.start(
            superlink_argv(settings, program=executable("flower-superlink")),
            env=env,
            log_path=state / "superlink.log",
            on_line=watcher,
        )
        try:
            wait_until_ready(settings)
            nodes = push_node_keys(store=store, state_dir=state)
            with store.session() as session:
                audit.append(
                    session, actor="system", action="coordinator.start",
                    target=f"superlink:{settings.address}",
                    details={"nodes": len(nodes), "tls": True, "node_auth": True},
                )  # fmt: skip
        except BaseException:
            group.stop()
            raise
        console.print(
            f"coordinator ready on {settings.address} with {len(nodes)} registered node(s)"
        )
        sys.stdout.flush()
        code = group.wait()
        with store.session() as session:
            audit.append(
                session, actor="system", action="coordinator.stop",
                target=f"superlink:{settings.address}",
                details={"exit_code": code, "refused_nodes": watcher.refusals},
            )  # fmt: skip
    raise typer.Exit(code)


@run_app.command("start")
def run_start_command(
    config: Annotated[Path, typer.Option("--config", help="TOML file of run config keys.")],
    state: StateDir,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Follow the run's log.")
    ] = True,
    app_dir: AppDir = None,
) -> None:
    """Submit a federation run (rounds, strategy, DP, SecAgg, budget cap) to the coordinator."""
    from server.deployment.runs import default_app_dir, load_run_config, new_record, submit

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
) -> None:
    """Carry a run on from its last completed round (its checkpoint in the store)."""
    from server.deployment.runs import RunRecord, default_app_dir, submit

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
) -> None:
    """The run's Flower runs (first, then each resume) and their status, as JSON."""
    from server.deployment.runs import RunRecord, flower_status

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
def run_list_command(state: StateDir) -> None:
    """Every run started from this coordinator: fedwarden id, Flower runs, Flower status."""
    from server.deployment.runs import flower_runs, list_records

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
) -> None:
    """Stop the run's current Flower run."""
    from server.deployment.runs import RunRecord, stop
    from server.errors import NotFoundError

    record = RunRecord.load(state, run)
    if not record.flower_runs:
        raise NotFoundError(f"run {run} was never accepted by the SuperLink")
    typer.echo(stop(state, record.flower_runs[-1]))


def register(app: typer.Typer) -> None:
    """Add ``pki``, ``coordinator`` and ``run`` to the application."""
    app.add_typer(pki_app, name="pki")
    app.add_typer(coordinator_app, name="coordinator")
    app.add_typer(run_app, name="run")
