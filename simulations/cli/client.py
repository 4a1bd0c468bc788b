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
        typer.Option("--history", help="File keeping the privacy history across runs."),
    ] = None,
    require_secagg: Annotated[
        bool, typer.Option("--require-secagg/--allow-clear", help="Refuse unmasked rounds.")
    ] = True,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="The node's FLWR_HOME (default ~/.fedwarden/node)."),
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
    from client.join import JoinSettings, join
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
    if history is not None:
        config["history-path"] = str(history.resolve())
    else:
        typer.echo(
            "warning: without --history the budget is enforced per run only; a resumed or "
            "later run starts from ε = 0",
            err=True,
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
        state_dir=state or Path.home() / ".fedwarden" / "node",
        runtime_port=runtime_port,
        warm=warm,
    )
    from privacy.keyring import load_keyring

    raise typer.Exit(join(settings, keyring=load_keyring()))
