"""What ``fedwarden drift report`` shows: a model's drift, per feature, as a table and a picture.

Either a file of rows in the model's schema is scored against the production
version's reference profile (the served artifact gives the predictions), or
the latest drift state the inference service stored is read back. When the
status is ``drift`` the report recommends a retraining run and lists the ε
each institution has left for it, from the privacy ledger.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from client.contract.errors import DataError
from client.contract.preprocessing import PreprocessingSpec
from client.contract.profile import ReferenceProfile, encode_frame
from client.contract.schema import TableSchema
from deploy.drift import STATUSES, drift_plan, score_windows, with_histograms
from deploy.errors import DeployError
from deploy.settings import ServeSettings
from privacy.envelope import Keyring
from server.errors import PermissionDeniedError
from server.store import repository as repo
from server.store.models import Principal

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EpsilonLeft:
    institution: str
    spent: float
    budget: float | None
    left: float | None


@dataclass(kw_only=True)
class DriftSummary:
    """A model version's drift: per feature and detector, with the histograms compared."""

    model: str
    version: int
    status: str
    rows: int
    source: str
    features: list[dict[str, Any]]
    epsilon: list[EpsilonLeft] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def recommends_retraining(self) -> bool:
        return self.status == "drift"


def summarize(
    session: Session,
    *,
    actor: Principal,
    model: str,
    input_path: Path | None,
    keyring: Keyring | None = None,
) -> DriftSummary:
    """Score ``input_path`` against the production version's profile, or read its stored state."""
    version = repo.get_model_version(session=session, actor=actor, name=model)
    if input_path is not None:
        summary = _score_file(
            name=model,
            version=version.version,
            stored=version.profile,
            preprocessing=PreprocessingSpec.from_dict(version.preprocessing),
            artifact=(Path(version.artifact_path), version.artifact_sha256),
            path=input_path,
            keyring=keyring,
        )
    else:
        events = [
            e
            for e in repo.drift_events(session=session, actor=actor, model=model)
            if e.version == version.version
        ]
        if events:
            latest = events[0]
            summary = DriftSummary(
                model=model,
                version=version.version,
                status=latest.status,
                rows=latest.window_rows,
                source=f"the service's window at {latest.time:%Y-%m-%d %H:%M:%S} "
                f"(status {latest.status} since then)",
                features=list(latest.features),
            )
        else:
            summary = DriftSummary(
                model=model,
                version=version.version,
                status="ok",
                rows=0,
                source="no drift status change recorded for this version",
                features=[],
            )
    if summary.recommends_retraining:
        summary.epsilon = epsilon_left(session, actor=actor, notes=summary.notes)
    return summary


def _score_file(
    *,
    name: str,
    version: int,
    stored: dict[str, Any] | None,
    preprocessing: PreprocessingSpec,
    artifact: tuple[Path, str],
    path: Path,
    keyring: Keyring | None,
) -> DriftSummary:
    if not stored:
        raise DeployError(
            f"{name} v{version} has no reference profile to measure drift against",
            model=name,
            version=version,
        )
    profile = ReferenceProfile.from_dict(stored).without_calibration()
    frame = _read_rows(path, preprocessing.schema)
    numeric, categorical = encode_frame(frame, preprocessing.schema)
    notes = []
    probabilities = None
    if profile.layout.has_predictions:
        probabilities = _predict(
            name=name,
            version=version,
            artifact=artifact,
            preprocessing=preprocessing,
            numeric=numeric,
            categorical=categorical,
            keyring=keyring,
        )
        if probabilities is None:
            profile = profile.without_predictions()
            notes.append("the artifact could not be loaded: model outputs are not compared")
    counts = profile.layout.counts(numeric, categorical, probabilities)
    # The service's own detectors and thresholds (FEDWARDEN_DRIFT_*), so both agree.
    scores = score_windows(profile, counts[None, :], plan=drift_plan(ServeSettings()))
    features = with_histograms(profile, scores.report(0), counts)
    return DriftSummary(
        model=name,
        version=version,
        status=STATUSES[int(scores.status[0])],
        rows=len(frame),
        source=str(path),
        features=features,
        notes=notes,
    )


def _read_rows(path: Path, schema: TableSchema) -> pd.DataFrame:
    """The features of a CSV, Parquet or NPZ file's rows, checked against ``schema`` (as an
    institution's file is). Served rows have no target: a target column, if any, is replaced
    by a placeholder nothing reads."""
    from client.contract.files import read_raw, validate_file_frame

    frame = read_raw(path, schema)
    unknown = sorted(
        set(map(str, frame.columns)) - set(schema.feature_names) - {schema.target.name}
    )
    if unknown:
        # As the inference API does: a column the model does not know is a mistake, not noise.
        raise DataError(
            f"{path}: unknown column {unknown[0]!r}; the model's features are "
            f"{', '.join(schema.feature_names)}",
            path=str(path),
        )
    mapping = schema.target.mapping
    placeholder = next(iter(mapping)) if mapping else schema.target.labels[0]
    frame = frame.assign(**{schema.target.name: placeholder})
    return validate_file_frame(frame, schema, path=path)


def _predict(
    *,
    name: str,
    version: int,
    artifact: tuple[Path, str],
    preprocessing: PreprocessingSpec,
    numeric: np.ndarray,
    categorical: np.ndarray,
    keyring: Keyring | None,
) -> np.ndarray | None:
    from deploy.predictor import LoadedModel

    try:
        model = LoadedModel(
            name=name,
            version=version,
            path=artifact[0],
            sha256=artifact[1],
            preprocessing=preprocessing,
            providers=["CPUExecutionProvider"],
            keyring=keyring,
        )
    except DeployError as exc:
        logger.warning("cannot run %s v%d: %s", name, version, exc)
        return None
    return model.run(numeric, categorical).probabilities


def epsilon_left(session: Session, *, actor: Principal, notes: list[str]) -> list[EpsilonLeft]:
    """The ε each institution has left for a retraining run (a note if none has any)."""
    try:
        totals = repo.epsilon_totals(session=session, actor=actor)
    except PermissionDeniedError:
        notes.append("ε left per institution needs the ledger:read permission")
        return []
    entries = [
        EpsilonLeft(institution=t.institution, spent=t.epsilon, budget=t.budget, left=t.left)
        for t in totals
    ]
    if entries and all(e.left is not None and e.left <= 0 for e in entries):
        notes.append(
            "no institution has ε left to take part in a retraining run: the consortium "
            "must agree new budgets first"
        )
    return entries


def plot(summary: DriftSummary) -> bytes:
    """PNG: reference vs current histogram of every feature (one panel per feature)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, dict[str, Any]] = {}
    for item in summary.features:
        if "bins" in item:
            worst = panels.get(item["name"])
            if worst is None or STATUSES.index(item["status"]) > STATUSES.index(worst["status"]):
                panels[item["name"]] = item
    columns = 3
    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3 * rows), squeeze=False)
    for axis, item in zip(axes.ravel(), panels.values(), strict=False):
        x = np.arange(len(item["bins"]))
        axis.bar(x - 0.2, item["reference"], width=0.4, label="reference")
        axis.bar(x + 0.2, item["current"], width=0.4, label="current")
        axis.set_title(f"{item['name']}: {item['status']} ({item['detector']} {item['score']:.3g})")
        axis.set_xticks(x, item["bins"], rotation=90, fontsize=6)
        axis.legend(fontsize=7)
    for axis in axes.ravel()[len(panels) :]:
        axis.axis("off")
    figure.suptitle(f"{summary.model} v{summary.version}: {summary.status} ({summary.source})")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def write_report(summary: DriftSummary, path: Path) -> Path:
    """``path`` as a PNG (``.png``) or an HTML page with the table and the picture."""
    picture = plot(summary)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        path.write_bytes(picture)
        return path
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (f["name"], f["detector"], _number(f["score"]), _number(f["p_value"]))
        )
        + f'<td class="{f["status"]}">{f["status"]}</td></tr>'
        for f in summary.features
    )
    advice = ""
    if summary.recommends_retraining:
        budget = "".join(
            f"<li>{html.escape(e.institution)}: ε left {_number(e.left)} "
            f"(spent {_number(e.spent)} of {_number(e.budget)})</li>"
            for e in summary.epsilon or []
        )
        advice = f"<h2>Drift: a retraining run is recommended</h2><ul>{budget}</ul>"
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in summary.notes)
    image = base64.b64encode(picture).decode()
    path.write_text(
        "<!doctype html><meta charset='utf-8'>"
        f"<title>Drift of {html.escape(summary.model)}</title>"
        "<style>td{padding:2px 8px}.drift{color:#b00}.warning{color:#b60}</style>"
        f"<h1>{html.escape(summary.model)} v{summary.version}: {summary.status}</h1>"
        f"<p>{summary.rows} rows from {html.escape(summary.source)}</p>{notes}{advice}"
        "<table><tr><th>feature</th><th>detector</th><th>score</th><th>p-value</th>"
        f"<th>status</th></tr>{rows}</table>"
        f"<img alt='reference vs current histograms' src='data:image/png;base64,{image}'>",
        encoding="utf-8",
    )
    return path


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
