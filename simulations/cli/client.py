"""``fedwarden client``: an institution's node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

FORMATS = "CSV (delimiter detected: , ; tab |), Parquet or NPZ"

client_app = typer.Typer(
    help="An institution's node: check its file, join a federation.", no_args_is_help=True
)


@client_app.command("check")
def check_command(
    *,
    data: Annotated[Path, typer.Option("--data", help=f"The institution's rows: {FORMATS}.")],
    schema: Annotated[Path, typer.Option("--schema", help="The consortium's schema (JSON).")],
    delimiter: Annotated[
        str | None, typer.Option(help="The CSV delimiter (default: detected; e.g. ';').")
    ] = None,
) -> None:
    """Validate a file against the schema, as `client join` would, without a coordinator."""
    from client.contract.files import read_table
    from client.contract.schema import load_schema
    from client.data import holdout_split

    table_schema = load_schema(schema)
    rows = read_table(data, table_schema, delimiter=delimiter)
    split = holdout_split(data.stem, rows, table_schema, seed=0)
    typer.echo(
        f"{data}: {len(rows)} rows match schema {table_schema.name!r} "
        f"({len(table_schema.features)} features, target {table_schema.target.name!r}); "
        f"{len(split.train)} would train, {len(split.test)} held out"
    )
    counts = rows[table_schema.target.name].value_counts()
    typer.echo(
        "labels: "
        + ", ".join(f"{label} {int(counts.get(label, 0))}" for label in table_schema.target.labels)
    )
    missing = {name: int(n) for name, n in rows.isna().sum().items() if n}
    if missing:
        typer.echo("missing values: " + ", ".join(f"{k} {v}" for k, v in missing.items()))


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
        Path | None, typer.Option("--data", help=f"The institution's rows: {FORMATS}.")
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option(help="The CSV delimiter (default: detected; e.g. ';').")
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
    connect_attempts: Annotated[
        int,
        typer.Option(help="Tries to reach the coordinator before giving up (exit 11)."),
    ] = 20,
    connect_wait: Annotated[
        float, typer.Option(help="Seconds of failed tries before giving up (exit 11).")
    ] = 300.0,
    warm: Annotated[
        bool, typer.Option("--warm/--no-warm", help="Fork preloaded ClientApp processes.")
    ] = False,
    fast_poll: Annotated[
        bool,
        typer.Option(
            "--fast-poll/--no-fast-poll",
            help="Poll the coordinator with a 50 ms-1 s back-off (client.fast_poll) "
            "instead of Flower's fixed 3 s.",
        ),
    ] = True,
    check_data: Annotated[
        bool, typer.Option("--check-data/--no-check-data", help="Load the rows before joining.")
    ] = True,
    allow_non_dp: Annotated[
        bool,
        typer.Option("--allow-non-dp", help="Policy: train rounds a run asks to run without DP."),
    ] = False,
    min_noise_multiplier: Annotated[
        float, typer.Option(help="Policy: the lowest DP-SGD noise multiplier accepted.")
    ] = 0.3,
    allow_reproducible: Annotated[
        bool,
        typer.Option(
            "--allow-reproducible",
            help="Policy: seed the DP noise from the run's public seed when a run asks for it "
            "(insecure: anyone with the seed can recompute the noise; for tests only).",
        ),
    ] = False,
    tasks: Annotated[
        str | None,
        typer.Option(help="Policy: the tasks answered, comma-separated (default: all)."),
    ] = None,
    min_secure_participants: Annotated[
        int,
        typer.Option(
            "--min-secure-participants",
            help="Refuse SecAgg+ rounds of fewer institutions than this (at least 2).",
        ),
    ] = 3,
) -> None:
    """Start this institution's SuperNode: its data and its own budget, over TLS, with its key."""
    from client.join import JoinSettings, NodeHistory, default_state_dir, join, node_history
    from client.secagg_guard import min_secure_participants as check_min_participants
    from privacy.errors import ConfigError

    config: dict[str, Any] = {}
    if data is not None:
        if schema is None:
            raise ConfigError("--data needs --schema")
        config |= {"data-path": str(data.resolve()), "schema-path": str(schema.resolve())}
        if delimiter:
            config["delimiter"] = delimiter
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
        "allow-non-dp": allow_non_dp,
        "min-noise-multiplier": min_noise_multiplier,
        "allow-reproducible": allow_reproducible,
    }
    if tasks is not None:
        config["tasks"] = tasks
    state_dir = (state or default_state_dir()).expanduser()
    # The node's own SecAgg+ rule, and where it records the requests it refuses.
    config |= {
        "min-secure-participants": min_secure_participants,
        "audit-log": str(state_dir.resolve() / "audit.jsonl"),
    }
    check_min_participants(config)
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
        fast_poll=fast_poll,
        connect_attempts=connect_attempts,
        connect_wait_s=connect_wait,
    )
    from privacy.keyring import load_keyring

    def budget(history: NodeHistory) -> None:
        left = history.budget.epsilon - history.epsilon_spent
        typer.echo(
            f"privacy budget of {kept.institution}: ε {history.epsilon_spent:.4g} spent of "
            f"{history.budget.epsilon:g} ({max(left, 0.0):.4g} left, δ={history.budget.delta:g})"
        )

    raise typer.Exit(join(settings, keyring=load_keyring(), on_budget=budget))
