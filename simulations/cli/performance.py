"""``fedwarden performance``: how right served models still are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simulations.cli.common import ApiKey, DatabaseUrl, authenticated, console

performance_app = typer.Typer(
    help="Realised and estimated performance of served models.", no_args_is_help=True
)


@performance_app.command("report")
def performance_report_command(
    model: Annotated[str, typer.Option("--model", help="The model's name.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Report file: .html (default performance-<model>.html) or .png."),
    ] = None,
    window_days: Annotated[
        float, typer.Option(min=0.001, help="The window: predictions served in the last days.")
    ] = 7.0,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Realised (outcomes fed back) and estimated (CBPE) performance of the production version,
    with its calibration curves (needs model:read; ε left per institution needs ledger:read)."""
    from deploy.performance_monitor import PerformancePlan
    from deploy.performance_report import METRIC_COLUMNS, summarize, write_report
    from deploy.service import performance_plan
    from deploy.settings import ServeSettings

    defaults = performance_plan(ServeSettings())
    plan = PerformancePlan(
        window_s=window_days * 86400.0,
        window_rows=defaults.window_rows,
        min_rows=defaults.min_rows,
        max_drop=defaults.max_drop,
        min_accuracy=defaults.min_accuracy,
        min_auc=defaults.min_auc,
    )
    with authenticated(database_url, api_key) as (session, actor):
        summary = summarize(session, actor=actor, model=model, plan=plan)
    report = summary.report
    colours = {"ok": "green", "alert": "red", "insufficient_data": "yellow"}
    table = Table("kind", "rows", *METRIC_COLUMNS, "status")
    for kind in ("realised", "estimated"):
        part = report[kind]
        table.add_row(
            kind,
            str(part["rows"]),
            *("" if part.get(m) is None else f"{part[m]:.3f}" for m in METRIC_COLUMNS),
            f"[{colours[part['status']]}]{part['status']}[/]",
        )
    reference = report["reference"]["accuracy"]
    console.print(
        f"{model} v{report['version']}: {report['served_rows']} rows served in the window; "
        f"the federation's own accuracy {'unknown' if reference is None else f'{reference:.3f}'}"
    )
    console.print(table)
    if report["thresholds"]:
        console.print("thresholds: " + ", ".join(f"{k} ≥ {v:.3f}" for k, v in
                                                  report["thresholds"].items()))  # fmt: skip
    for note in summary.notes:
        console.print(note)
    if summary.recommends_retraining:
        console.print(
            "[red]Performance fell below its threshold: a retraining run is recommended.[/]"
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
    path = write_report(summary, out or Path(f"performance-{model}.html"))
    console.print(f"report written to {path}")
