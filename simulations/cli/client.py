"""``fedwarden client``: an institution's node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

client_app = typer.Typer(help="Join a federation as an institution's node.", no_args_is_help=True)


@client_app.command("join")
def join_command(
    *,
    coordinator: Annotated[str, typer.Option("--coordinator", help="The coordinator's HOST:PORT.")],
    ca: Annotated[Path, typer.Option("--ca", help="The consortium CA certificate.")],
    key: Annotated[Path, typer.Option("--key", help="This node's private key (`pki node`).")],
    budget_epsilon: Annotated[
        float, typer.Option("--budget-epsilon", help="The ε this institution spends at most.")
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="The institution's rows (CSV).")
    ] = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="Their schema file.")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="An embedded dataset instead of --data (demos, tests).")
    ] = None,
    partition_id: Annotated[int, typer.Option(help="Which of its institutions.")] = 0,
    institution: Annotated[str | None, typer.Option(help="This institution's name.")] = None,
    budget_delta: Annotated[float, typer.Option("--budget-delta", help="δ of the budget.")] = 1e-5,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history",
            help="History file to use instead of the state folder's (one per institution and "
            "data file).",
        ),
    ] = None,
    require_secagg: Annotated[
        bool, typer.Option("--require-secagg/--allow-clear", help="Refuse unmasked rounds.")
    ] = True,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="The node's state folder: its privacy history and FLWR_HOME "
            "(default ~/.fedwarden/node); must be writable.",
        ),
    ] = None,
    runtime_port: Annotated[int, typer.Option(help="Local Runtime API port (0: any free).")] = 0,
    warm: Annotated[
        bool, typer.Option("--warm/--no-warm", help="Fork preloaded ClientApp processes.")
    ] = False,
    check_data: Annotated[
        bool, typer.Option("--check-data/--no-check-data", help="Load the rows before joining.")
    ] = True,
) -> None:
    """Start this institution's SuperNode: its data and its own budget, over TLS, with its key."""
    from client.join import JoinSettings, default_state_dir, join, node_history
    from privacy.errors import ConfigError

    config: dict[str, Any] = {}
    if data is not None:
        if schema is None:
            raise ConfigError("--data needs --schema")
        config |= {"data-path": str(data.resolve()), "schema-path": str(schema.resolve())}
    elif dataset is not None:
        config |= {"dataset": dataset, "partition-id": partition_id}
    else:
        raise ConfigError("give the institution's rows: --data FILE --schema FILE")
    if institution is not None:
        config["institution"] = institution
    config |= {
        "budget-epsilon": budget_epsilon,
        "budget-delta": budget_delta,
        "require-secagg": require_secagg,
    }
    state_dir = (state or default_state_dir()).expanduser()
    kept = node_history(config, state_dir=state_dir, override=history)
    config["history-path"] = str(kept.path)
    typer.echo(
        f"privacy history of {kept.institution}: {kept.path} (ε {kept.epsilon_spent:.4g} "
        f"already spent of {kept.budget.epsilon:g}, δ={kept.budget.delta:g})"
    )
    if check_data:
        from client.data import load_node_data
        from client.node import NodeSettings

        NodeSettings.from_node_config(config)
        rows = load_node_data(config)
        typer.echo(f"{rows.name}: {len(rows.train)} training rows, {len(rows.test)} held out")
    settings = JoinSettings(
        coordinator=coordinator,
        ca_certificate=ca,
        node_key=key,
        node_config=config,
        state_dir=state_dir,
        runtime_port=runtime_port,
        warm=warm,
    )
    raise typer.Exit(join(settings))
