"""``fedwarden drift``: drift of served models from their training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from simulations.cli.common import ApiKey, DatabaseUrl, authenticated, console

drift_app = typer.Typer(
    help="Drift of served models from their training data.", no_args_is_help=True
)


@drift_app.command("report")
def drift_report_command(
    model: Annotated[str, typer.Option("--model", help="The model's name.")],
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="CSV, Parquet or NPZ rows in the model's schema to score (default: the service's "
            "latest stored drift state).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Report file: .html (default drift-<model>.html) or .png."),
    ] = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Per-feature drift of the production version against its reference profile (needs
    model:read; ε left per institution needs ledger:read)."""
    from deploy.drift_report import summarize, write_report
    from privacy.keyring import load_keyring

    with authenticated(database_url, api_key) as (session, actor):
        summary = summarize(
            session, actor=actor, model=model, input_path=input_path, keyring=load_keyring()
        )
    table = Table(Column("feature", no_wrap=True), "kind", "detector", "score", "p-value", "status")
    colours = {"ok": "green", "warning": "yellow", "drift": "red"}
    for item in summary.features:
        p_value = item.get("p_value")
        table.add_row(
            item["name"],
            item["kind"],
            item["detector"],
            f"{item['score']:.4g}",
            "" if p_value is None else f"{p_value:.3g}",
            f"[{colours[item['status']]}]{item['status']}[/]",
        )
    console.print(
        f"{summary.model} v{summary.version}: [{colours[summary.status]}]{summary.status}[/] "
        f"over {summary.rows} rows ({summary.source})"
    )
    if summary.features:
        console.print(table)
    for note in summary.notes:
        console.print(note)
    if summary.recommends_retraining:
        console.print(
            "[red]The data has drifted from what the federation trained on: "
            "a retraining run is recommended.[/]"
        )
        if summary.epsilon:
            budget = Table("institution", "ε spent", "ε budget", "ε left")
            for entry in summary.epsilon:
                budget.add_row(
                    entry.institution,
                    f"{entry.spent:.3g}",
                    "" if entry.budget is None else f"{entry.budget:.3g}",
                    "no budget" if entry.left is None else f"{entry.left:.3g}",
                )
            console.print(budget)
    path = write_report(summary, out or Path(f"drift-{model}.html"))
    console.print(f"report written to {path}")
