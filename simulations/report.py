"""A simulation's outputs: ``summary.json`` and ``accuracy_epsilon.png``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.run_events import json_safe
from simulations.runner import SimulationOutcome

SUMMARY_FILE = "summary.json"
PLOT_FILE = "accuracy_epsilon.png"


@dataclass(frozen=True, kw_only=True)
class PrivacyHistory:
    """Each institution's ε before and after a run, and where its history is kept.

    Parameters
    ----------
    folder : Path | None
        The ``--history`` folder; ``None``: the run started from ε = 0 and kept nothing.
    before, after : Mapping[str, float]
        ε by institution when the run began and when it ended.
    """

    folder: Path | None = None
    before: Mapping[str, float] = field(default_factory=dict)
    after: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept_in": str(self.folder) if self.folder is not None else None,
            "epsilon_before": dict(self.before),
            "epsilon_after": dict(self.after),
        }


def summary(outcome: SimulationOutcome, *, history: PrivacyHistory | None = None) -> dict[str, Any]:
    """The run as a JSON-ready dict (infinite ε written as ``"inf"``)."""
    settings = outcome.settings
    plan = settings.plan
    rounds = outcome.result.rounds
    last = rounds[-1] if rounds else None
    dp = plan.dp
    data: dict[str, Any] = {
        "dataset": outcome.scenario.dataset,
        "institutions": outcome.scenario.institution_names(),
        "partition": (
            {"name": outcome.scenario.partition, "alpha": outcome.scenario.alpha}
            if outcome.scenario.institutions is not None or outcome.scenario.partition != "iid"
            else None
        ),
        "strategy": settings.strategy.name,
        "model": plan.model,
        "seed": plan.seed,
        "insecure_reproducible": plan.reproducible,
        "num_rounds": plan.num_rounds,
        "dp": {
            "enabled": dp.enabled,
            "noise_multiplier": dp.noise_multiplier,
            "noise": "given" if dp.noise_multiplier is not None else "derived from the budget",
            "target_epsilon": dp.target_epsilon,
            "max_grad_norm": dp.max_grad_norm,
            "target_delta": dp.target_delta,
            "accountant": dp.accountant,
            "budget_epsilon": {
                name: outcome.scenario.budgets.get(name, outcome.scenario.budget.epsilon)
                for name in outcome.scenario.institution_names()
            },
            "budget_delta": outcome.scenario.budget.delta,
        },
        "secagg": settings.secagg is not None,
        "rounds": [_round(r) for r in rounds],
        "final": {
            "accuracy": last.accuracy if last else None,
            "loss": last.loss if last else None,
            "epsilon": composed_epsilon(outcome),
        },
        "releases": releases(outcome),
        "centralized_baseline": (
            {
                "accuracy": outcome.baseline.accuracy,
                "loss": outcome.baseline.loss,
                "epochs": outcome.baseline.epochs,
                "note": outcome.baseline.note,
            }
            if outcome.baseline is not None
            else None
        ),
        "privacy_history": (history or PrivacyHistory()).to_dict(),
        "stopped_reason": outcome.result.stopped_reason,
        "wall_time_s": round(outcome.wall_time_s, 2),
    }
    return dict(json_safe(data))


def composed_epsilon(outcome: SimulationOutcome) -> dict[str, float]:
    """Each institution's ε after every release of the run (its noisy counts, summary,
    rounds and profile): the largest cumulative ε it reported, which only grows."""
    result = outcome.result
    reports = [
        *result.summary_reports,
        *(r for record in result.rounds for r in record.reports),
        *result.profile_reports,
    ]
    composed = dict(result.rounds[-1].epsilon) if result.rounds else {}
    for report in reports:
        value = report.epsilon if report.dp else math.inf
        composed[report.institution] = max(composed.get(report.institution, 0.0), value)
    return composed


def releases(outcome: SimulationOutcome) -> dict[str, list[dict[str, Any]]]:
    """Every release each institution reported, in order: what it was, its σ, ε after it."""
    result = outcome.result
    kinds = [
        *(("summary", r) for r in result.summary_reports),
        *(("training", r) for record in result.rounds for r in record.reports),
        *(("profile", r) for r in result.profile_reports),
    ]
    table: dict[str, list[dict[str, Any]]] = {}
    for kind, report in kinds:
        table.setdefault(report.institution, []).append(
            {
                "release": kind,
                "round": report.round,
                "refused": report.refused,
                "noise_multiplier": report.noise_multiplier,
                "sensitivity": report.max_grad_norm,
                "sample_rate": report.sample_rate,
                "steps": report.steps,
                "epsilon_after": report.epsilon,
            }
        )
    return table


def _round(record: Any) -> dict[str, Any]:
    data = record.to_dict()
    keep = (
        "round",
        "loss",
        "accuracy",
        "epsilon",
        "accuracy_by_institution",
        "participants",
        "refused",
        "rejected",
        "dropped",
        "secagg",
        "duration_s",
    )
    return {k: data[k] for k in keep}


def write_outputs(
    outcome: SimulationOutcome, out_dir: Path, *, history: PrivacyHistory | None = None
) -> tuple[Path, Path]:
    """Write ``summary.json`` and the accuracy/ε plot into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / SUMMARY_FILE
    summary_path.write_text(json.dumps(summary(outcome, history=history), indent=2) + "\n")
    plot_path = out_dir / PLOT_FILE
    plot_accuracy_epsilon(outcome, plot_path)
    return summary_path, plot_path


def plot_accuracy_epsilon(outcome: SimulationOutcome, path: Path) -> None:
    """Accuracy per round (with the pooled baseline) beside each institution's ε per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = outcome.result.rounds
    xs = [r.round for r in rounds]
    fig, (ax_acc, ax_eps) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_acc.plot(
        xs,
        [r.accuracy if r.accuracy is not None else math.nan for r in rounds],
        marker="o",
        label="federated (test)",
    )
    if outcome.baseline is not None:
        ax_acc.axhline(
            outcome.baseline.accuracy,
            linestyle="--",
            color="grey",
            label="pooled, non-private baseline",
        )
    ax_acc.set_xlabel("round")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title(f"{outcome.scenario.dataset}: accuracy")
    ax_acc.legend(loc="best")
    ax_acc.grid(alpha=0.3)
    names = outcome.scenario.institution_names()
    finite = any(math.isfinite(r.epsilon.get(n, 0.0)) for r in rounds for n in names)
    if outcome.settings.plan.dp.enabled and finite:
        for name in names:
            ax_eps.plot(xs, [r.epsilon.get(name, math.nan) for r in rounds], marker=".", label=name)
        budgets = {outcome.scenario.budgets.get(n, outcome.scenario.budget.epsilon) for n in names}
        for budget in budgets:
            ax_eps.axhline(budget, linestyle=":", color="red")
        ax_eps.set_ylabel(f"ε spent (δ={outcome.scenario.budget.delta:g})")
        if len(names) <= 12:
            ax_eps.legend(loc="lower right", fontsize="small")
    else:
        ax_eps.text(
            0.5,
            0.5,
            "DP off: ε = ∞",
            ha="center",
            va="center",
            fontsize=14,
            transform=ax_eps.transAxes,
        )
    ax_eps.set_xlabel("round")
    for axis in (ax_acc, ax_eps):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_eps.set_title("privacy spent per institution")
    ax_eps.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
