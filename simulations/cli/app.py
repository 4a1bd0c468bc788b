"""``fedwarden``: the one command line in front of the whole platform.

This module only imports the command groups (one module each in this package)
and registers them; it turns fedwarden's errors into one-line messages and exit
codes, in one place.
"""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console
from rich.markup import escape

from privacy.errors import FedwardenError
from privacy.redaction import install_log_redaction, mask
from simulations.cli.admin import admin_app
from simulations.cli.audit import audit_app
from simulations.cli.client import client_app
from simulations.cli.console import console_command
from simulations.cli.coordinator import coordinator_app
from simulations.cli.db import db_app
from simulations.cli.drift import drift_app
from simulations.cli.keys import keys_app
from simulations.cli.models import export_command, models_app
from simulations.cli.performance import performance_app
from simulations.cli.pki import pki_app
from simulations.cli.privacy import privacy_app
from simulations.cli.run import run_app
from simulations.cli.serve import serve_command
from simulations.cli.simulate import simulate_command

app = typer.Typer(
    name="fedwarden",
    help="Privacy-preserving federated learning: train together, share no rows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, soft_wrap=True)  # one error, one line, in a file too


@app.callback()
def root() -> None:
    """Privacy-preserving federated learning: train together, share no rows."""
    install_log_redaction()  # every command: no key, token or password in a log line


app.command("simulate")(simulate_command)
app.add_typer(privacy_app, name="privacy")
app.add_typer(client_app, name="client")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(audit_app, name="audit")
app.add_typer(pki_app, name="pki")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(run_app, name="run")
app.command("export")(export_command)
app.add_typer(models_app, name="models")
app.command("serve")(serve_command)
app.add_typer(drift_app, name="drift")
app.command("console")(console_command)
app.add_typer(performance_app, name="performance")
app.add_typer(keys_app, name="keys")


def main() -> None:
    """Entry point: run the CLI; fedwarden errors become one line and their exit code."""
    install_log_redaction()
    try:
        app(standalone_mode=False)
    except FedwardenError as exc:
        err_console.print(f"[red]error:[/] {escape(mask(str(exc)))}", highlight=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)  # EXIT_CODES[130]
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
