"""``fedwarden``: the one command line in front of the whole platform.

Each package contributes its own commands (``register(app)`` in its ``cli.py``);
this wiring layer assembles them and turns fedwarden's errors into one-line
messages and exit codes, in one place.
"""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console
from rich.markup import escape

from privacy.errors import FedwardenError
from simulations.simulate_command import simulate_command

app = typer.Typer(
    name="fedwarden",
    help="Privacy-preserving federated learning: train together, share no rows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


@app.callback()
def root() -> None:
    """Privacy-preserving federated learning: train together, share no rows."""


app.command("simulate")(simulate_command)


def _register_package_commands() -> None:
    from client import cli as client_cli
    from deploy import cli as deploy_cli
    from privacy import cli as privacy_cli
    from server import cli as server_cli

    for module in (privacy_cli, client_cli, server_cli, deploy_cli):
        module.register(app)


_register_package_commands()


def main() -> None:
    """Entry point: run the CLI; fedwarden errors become one line and their exit code."""
    try:
        app(standalone_mode=False)
    except FedwardenError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
