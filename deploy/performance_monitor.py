"""Performance monitoring in the inference service: realised and estimated, per version.

Off the predict path (on ``GET /v1/models/{name}/performance`` and every
``performance_check_interval_s``), the newest ``performance_window_rows``
predictions served in the last ``performance_window_s`` are read back from the
store. Per version, those with an outcome are scored (``deploy.performance``:
the *realised* metrics); for the version being served, all of them are scored
by confidence-based estimation against the federation's calibration
(``deploy.estimation``: the *estimated* metrics, known the day the inputs move,
before any label).

A kind's status is ``insufficient_data`` below ``performance_min_rows`` rows
(labelled rows for realised, served rows for estimated), ``alert`` when
accuracy or AUC is under its threshold, ``ok`` otherwise. A threshold is the
reference's accuracy (what the federation's own rows scored, from the profile's
calibration counts) less ``performance_max_drop``, or the absolute floor
``performance_min_accuracy`` / ``performance_min_auc``, whichever is higher. A
change between ``ok`` and ``alert`` is stored and audited once
(``performance.change``); ``fedwarden_performance{model,metric,kind}`` holds the
last values.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from client.contract.errors import DataError
from client.contract.profile import ReferenceProfile
from deploy.estimation import FederatedCalibration
from deploy.metrics import ServiceMetrics
from deploy.performance import METRICS, realised_metrics
from deploy.predictor import LoadedModel
from server.store import repository as repo
from server.store.engine import Store

logger = logging.getLogger(__name__)

GUARDED = ("accuracy", "auc")
STATUS_CODES = {"insufficient_data": -1, "ok": 0, "alert": 1}


@dataclass(frozen=True, kw_only=True)
class PerformancePlan:
    """Window and thresholds of performance monitoring (from ``ServeSettings``)."""

    window_s: float = 7 * 86400.0
    window_rows: int = 10000
    min_rows: int = 100
    max_drop: float = 0.1
    min_accuracy: float | None = None
    min_auc: float | None = None

    def thresholds(self, calibration: FederatedCalibration) -> dict[str, float]:
        bounds: dict[str, float] = {}
        reference = calibration.reference.get("accuracy")
        if reference is not None:
            bounds["accuracy"] = reference - self.max_drop
        for name, floor in (("accuracy", self.min_accuracy), ("auc", self.min_auc)):
            if floor is not None:
                bounds[name] = max(floor, bounds.get(name, floor))
        return bounds

    def status(self, metrics: dict[str, Any], rows: int, thresholds: dict[str, float]) -> str:
        if rows < self.min_rows:
            return "insufficient_data"
        for name, bound in thresholds.items():
            value = metrics.get(name)
            if value is not None and value < bound:
                return "alert"
        return "ok"


class PerformanceMonitors:
    """Scores served versions' windows, keeps the gauges, stores changes of status."""

    def __init__(
        self, store: Store, metrics: ServiceMetrics, *, plan: PerformancePlan, enabled: bool = True
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.plan = plan
        self.enabled = enabled
        self._calibrations: dict[tuple[str, int], FederatedCalibration] = {}
        self._persisted: dict[tuple[str, int, str], str] = {}
        self._lock = threading.Lock()

    def calibration(self, model: LoadedModel) -> FederatedCalibration:
        key = (model.name, model.version)
        if key not in self._calibrations:
            profile = None
            stored = model.details.get("profile")
            if stored:
                try:
                    profile = ReferenceProfile.from_dict(dict(stored))
                except DataError as exc:
                    logger.error("profile of %s v%d is unreadable: %s", *key, exc)
            self._calibrations[key] = FederatedCalibration.from_profile(
                profile, classes=len(model.labels)
            )
        return self._calibrations[key]

    def evaluate(self, model: LoadedModel, *, persist: bool = True) -> dict[str, Any]:
        """The performance report of ``model``'s window (the endpoint's response body)."""
        with self.store.session() as session:
            rows = repo.window_predictions(
                session,
                model=model.name,
                since=datetime.fromtimestamp(time.time() - self.plan.window_s, UTC),
                limit=self.plan.window_rows,
            )
        report = performance_report(
            rows,
            model=model.name,
            version=model.version,
            calibration=self.calibration(model),
            plan=self.plan,
        )
        realised, estimated = report["realised"], report["estimated"]
        self._gauges(model.name, realised, estimated)
        if persist:
            for kind, part in (("realised", realised), ("estimated", estimated)):
                self._persist(model, kind, part, report["thresholds"])
        return report

    def evaluate_all(self, models: list[LoadedModel]) -> None:
        for model in models:
            try:
                self.evaluate(model)
            except Exception:
                logger.exception("could not check the performance of %s", model.name)

    def _gauges(self, name: str, realised: dict[str, Any], estimated: dict[str, Any]) -> None:
        for kind, part, names in (
            ("realised", realised, METRICS),
            ("estimated", estimated, GUARDED),
        ):
            for metric in names:
                value = part.get(metric)
                gauge = self.metrics.performance.labels(model=name, metric=metric, kind=kind)
                gauge.set(float("nan") if value is None else float(value))
            self.metrics.performance_status.labels(model=name, kind=kind).set(
                STATUS_CODES[part["status"]]
            )
            self.metrics.performance_rows.labels(model=name, kind=kind).set(part["rows"])

    def _persist(
        self, model: LoadedModel, kind: str, part: dict[str, Any], thresholds: dict[str, float]
    ) -> bool:
        status = part["status"]
        if status == "insufficient_data":
            return False
        key = (model.name, model.version, kind)
        with self._lock:
            if key not in self._persisted:
                with self.store.session() as session:
                    latest = repo.latest_performance_event(
                        session, model=model.name, version=model.version, kind=kind
                    )
                    self._persisted[key] = latest.status if latest is not None else "ok"
            previous = self._persisted[key]
            if status == previous:
                return False
            metrics = {k: v for k, v in part.items() if k not in ("status",)}
            with self.store.session() as session:
                repo.record_performance_change(
                    session,
                    model=model.name,
                    version=model.version,
                    kind=kind,
                    previous=previous,
                    status=status,
                    rows=int(part["rows"]),
                    metrics=metrics,
                    thresholds=thresholds,
                )
            logger.warning(
                "%s performance of %s v%d: %s -> %s", kind, model.name, model.version,
                previous, status,
            )  # fmt: skip
            self._persisted[key] = status
            return True


def performance_report(
    rows: list[tuple[int, list[Any], int | None]],
    *,
    model: str,
    version: int,
    calibration: FederatedCalibration,
    plan: PerformancePlan,
) -> dict[str, Any]:
    """Realised metrics per version and the served ``version``'s estimate, from window rows
    (``(version, probabilities, label)``, as ``repo.window_predictions`` returns them)."""
    thresholds = plan.thresholds(calibration)
    versions = []
    served: dict[str, Any] = {}
    for number in sorted({v for v, _, _ in rows}, reverse=True):
        probabilities = np.array([p for v, p, _ in rows if v == number], dtype=np.float64)
        labelled = [(p, y) for v, p, y in rows if v == number and y is not None]
        realised = realised_metrics(
            np.array([p for p, _ in labelled], dtype=np.float64).reshape(
                len(labelled), probabilities.shape[1]
            ),
            np.array([y for _, y in labelled], dtype=np.int64),
        )
        realised["status"] = plan.status(realised, realised["rows"], thresholds)
        versions.append(
            {"version": number, "served_rows": len(probabilities), "realised": realised}
        )
        if number == version:
            served = {"probabilities": probabilities, "realised": realised}
    estimated = calibration.estimate(served.get("probabilities", np.zeros((0, 2))))
    estimated["status"] = plan.status(estimated, estimated["rows"], thresholds)
    realised = served.get("realised") or {
        "rows": 0, **dict.fromkeys(METRICS), "calibration": [], "status": "insufficient_data"
    }  # fmt: skip
    return {
        "model": model,
        "version": version,
        "window_s": plan.window_s,
        "served_rows": len(served.get("probabilities", ())),
        "thresholds": thresholds,
        "reference": {
            "accuracy": calibration.reference.get("accuracy"),
            "calibrated": calibration.calibrated,
        },
        "realised": realised,
        "estimated": estimated,
        "versions": versions,
    }
