"""``fedwarden coordinator``: run the coordinator (a Flower SuperLink)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from simulations.cli.common import DatabaseUrl, StateDir, console, opened

coordinator_app = typer.Typer(
    help="Run the coordinator (a Flower SuperLink).", no_args_is_help=True
)


@coordinator_app.command("start")
def coordinator_start_command(
    pki: Annotated[Path, typer.Option("--pki", help="The folder `pki init` wrote.")],
    state: StateDir,
    database_url: DatabaseUrl = None,
    host: Annotated[
        str, typer.Option(help="Address institutions reach (the Fleet API only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the Fleet API.")] = 9093,
    operator_host: Annotated[
        str,
        typer.Option(
            help="Address of the Control and ServerAppIo APIs (`fedwarden run`, the "
            "ServerApp); never reachable by institutions. Keep it on loopback."
        ),
    ] = "127.0.0.1",
    operator_port: Annotated[
        int, typer.Option(help="Port of the Control and ServerAppIo APIs.")
    ] = 9091,
) -> None:
    """Start the SuperLink (TLS, node authentication, state database, no runtime installs),
    push the registered node keys to it, and run in the foreground (Ctrl-C stops it)."""
    from server.engine.coordinator import run_coordinator
    from server.engine.superlink import SuperLinkSettings

    settings = SuperLinkSettings(
        pki_dir=pki, state_dir=state, host=host, port=port,
        operator_host=operator_host, operator_port=operator_port,
    )  # fmt: skip

    def ready(nodes: int) -> None:
        console.print(
            f"coordinator ready on {settings.address} with {nodes} registered node(s); "
            f"operator APIs on {settings.operator_address}"
        )
        sys.stdout.flush()

    with opened(database_url) as store:
        code = run_coordinator(settings=settings, store=store, on_ready=ready)
    raise typer.Exit(code)
