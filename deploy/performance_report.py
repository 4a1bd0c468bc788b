"""What ``fedwarden performance report`` shows: a model's realised and estimated performance.

Computed from the store, as the service computes it (``performance_report``):
the production version's served predictions in the window, their outcomes,
and its calibration from the federation's reference profile. When either
status is ``alert`` the report recommends a retraining run and lists the ε
each institution has left for it (as the drift report does).
"""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from client.contract.errors import DataError
from client.contract.profile import ReferenceProfile
from deploy.drift_report import EpsilonLeft, epsilon_left
from deploy.estimation import FederatedCalibration
from deploy.performance_monitor import PerformancePlan, performance_report
from server.store import repository as repo
from server.store.models import Principal


@dataclass(kw_only=True)
class PerformanceSummary:
    report: dict[str, Any]
    calibration: FederatedCalibration
    events: list[dict[str, Any]]
    epsilon: list[EpsilonLeft] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def recommends_retraining(self) -> bool:
        return "alert" in (self.report["realised"]["status"], self.report["estimated"]["status"])


def summarize(
    session: Session, *, actor: Principal, model: str, plan: PerformancePlan
) -> PerformanceSummary:
    """The production version's performance over ``plan``'s window (needs ``model:read``)."""
    version = repo.get_model_version(session=session, actor=actor, name=model)
    rows = repo.window_predictions(
        session,
        model=model,
        since=datetime.fromtimestamp(time.time() - plan.window_s, UTC),
        limit=plan.window_rows,
    )
    notes = []
    profile = None
    if version.profile:
        try:
            profile = ReferenceProfile.from_dict(version.profile)
        except DataError as exc:
            notes.append(f"the reference profile is unreadable: {exc}")
    calibration = FederatedCalibration.from_profile(profile, classes=len(version.output_labels))
    if not calibration.calibrated:
        notes.append("no federated calibration for this version: the estimate trusts the raw "
                     "probabilities")  # fmt: skip
    report = performance_report(
        rows, model=model, version=version.version, calibration=calibration, plan=plan
    )
    events = [
        {"time": f"{e.time:%Y-%m-%d %H:%M:%S}", "version": e.version, "kind": e.kind,
         "from": e.previous, "to": e.status, "rows": e.rows}
        for e in repo.performance_events(session=session, actor=actor, model=model)
    ]  # fmt: skip
    summary = PerformanceSummary(report=report, calibration=calibration, events=events, notes=notes)
    if summary.recommends_retraining:
        summary.epsilon = epsilon_left(session, actor=actor, notes=summary.notes)
    return summary


def plot(summary: PerformanceSummary) -> bytes:
    """PNG: the calibration curves (served outcomes, federation) and the metrics vs thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = summary.report
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    curve = report["realised"]["calibration"]
    if curve:
        label = f"served, outcomes fed back ({report['realised']['rows']} rows)"
        predicted, observed = [b["predicted"] for b in curve], [b["observed"] for b in curve]
        left.plot(predicted, observed, marker="o", label=label)
    for column, mapping in summary.calibration.maps.items():
        centres = (np.arange(len(mapping.rates)) + 0.5) / len(mapping.rates)
        left.plot(centres, mapping.rates, marker="s", linestyle="--",
                  label=f"federation's reference (class {column})")  # fmt: skip
    left.set_xlabel("predicted probability")
    left.set_ylabel("observed frequency")
    left.set_title("calibration")
    left.legend(fontsize=7)
    names = ["accuracy", "auc"]
    x = np.arange(len(names))
    for offset, kind in ((-0.2, "realised"), (0.2, "estimated")):
        values = [report[kind].get(n) or 0.0 for n in names]
        right.bar(x + offset, values, width=0.4, label=f"{kind} ({report[kind]['status']})")
    for i, name in enumerate(names):
        if name in report["thresholds"]:
            right.hlines(report["thresholds"][name], i - 0.45, i + 0.45, colors="red",
                         label="threshold" if i == 0 else None)  # fmt: skip
    right.set_xticks(x, names)
    right.set_ylim(0, 1)
    right.legend(fontsize=7)
    right.set_title("over the window")
    figure.suptitle(f"{report['model']} v{report['version']}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def write_report(summary: PerformanceSummary, path: Path) -> Path:
    """``path`` as a PNG (``.png``) or an HTML page with the figures and the picture."""
    picture = plot(summary)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        path.write_bytes(picture)
        return path
    report = summary.report
    rows = "".join(
        f"<tr><td>{kind}</td><td>{report[kind]['rows']}</td>"
        + "".join(f"<td>{_number(report[kind].get(m))}</td>" for m in METRIC_COLUMNS)
        + f"<td class='{report[kind]['status']}'>{report[kind]['status']}</td></tr>"
        for kind in ("realised", "estimated")
    )
    advice = ""
    if summary.recommends_retraining:
        budget = "".join(
            f"<li>{html.escape(e.institution)}: ε left {_number(e.left)} "
            f"(spent {_number(e.spent)} of {_number(e.budget)})</li>"
            for e in summary.epsilon or []
        )
        advice = f"<h2>Performance fell: a retraining run is recommended</h2><ul>{budget}</ul>"
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in summary.notes)
    header = "".join(f"<th>{m}</th>" for m in METRIC_COLUMNS)
    image = base64.b64encode(picture).decode()
    path.write_text(
        "<!doctype html><meta charset='utf-8'>"
        f"<title>Performance of {html.escape(report['model'])}</title>"
        "<style>td{padding:2px 8px}.alert{color:#b00}</style>"
        f"<h1>{html.escape(report['model'])} v{report['version']}</h1>{notes}{advice}"
        f"<table><tr><th>kind</th><th>rows</th>{header}<th>status</th></tr>{rows}</table>"
        f"<p>thresholds: {html.escape(str(report['thresholds']))}</p>"
        f"<img alt='calibration and metrics' src='data:image/png;base64,{image}'>",
        encoding="utf-8",
    )
    return path


METRIC_COLUMNS = ("accuracy", "balanced_accuracy", "auc", "log_loss", "brier")


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
