"""Drift monitoring in the inference service: a sliding window per served model version.

The predict path only keeps a reference to each served batch's encoded inputs
and predicted probabilities. Every ``flush_rows`` rows (4,096), and before the
window is scored, the kept batches become one slot index per row and block of
the version's reference profile (``SlotBinner``: about fifteen numpy operations
for all of them), written into a ring buffer with the times they were served
(``DriftWindow``). Memory is bounded by ``drift_window_rows`` rows of small
integers, plus the batches waiting; rows older than ``drift_window_s`` are
left out when the window is scored.

Scoring (``DriftMonitor.evaluate``) happens off the predict path: when
``GET /v1/models/{name}/drift`` asks and every ``drift_check_interval_s`` in
the service's own thread. A change of status is written to the store, and
audited, once per change (``server.store.drift.record_drift_change``); a
window of fewer than the plan's ``min_rows`` rows changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.contract.errors import DataError
from client.contract.profile import ReferenceProfile
from deploy.drift import STATUSES, DriftPlan, WindowScores, score_windows, with_histograms
from deploy.metrics import ServiceMetrics
from deploy.predictor import LoadedModel
from deploy.window import DriftWindow, SlotBinner
from server.store import repository as repo
from server.store.engine import Store

logger = logging.getLogger(__name__)

INSUFFICIENT = "insufficient_data"


_Batch = tuple[np.ndarray, np.ndarray, np.ndarray | None, float]


@dataclass(frozen=True)
class DriftState:
    """One evaluation of a window: the response body of the drift endpoint."""

    model: str
    version: int
    status: str
    window_rows: int
    window_span_s: float
    features: list[dict[str, Any]]
    min_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "window_rows": self.window_rows,
            "window_span_s": self.window_span_s,
            "min_rows": self.min_rows,
            "features": self.features,
        }


class DriftMonitor:
    """One served version's window, scored against its reference profile."""

    def __init__(
        self,
        *,
        model: str,
        version: int,
        profile: ReferenceProfile,
        plan: DriftPlan,
        window_rows: int,
        window_s: float,
        flush_rows: int = 4096,
    ) -> None:
        self.model = model
        self.version = version
        self.profile = profile
        self.plan = plan
        self.window_s = window_s
        self.binner = SlotBinner(profile.layout)
        self.window = DriftWindow(capacity=window_rows, blocks=len(profile.layout.blocks))
        self.flush_rows = min(flush_rows, window_rows)
        self._pending: list[_Batch] = []
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        self._persisted: str | None = None
        self._persist_lock = threading.Lock()

    def record(
        self, numeric: np.ndarray, categorical: np.ndarray, probabilities: np.ndarray | None
    ) -> None:
        """Keep one served batch for the window (the predict path's only drift work).

        Batches wait, by reference, until ``flush_rows`` rows have come (or the
        window is scored), then are binned together: one request in many pays
        for binning all of them, the others for appending to a list.
        """
        with self._pending_lock:
            self._pending.append((numeric, categorical, probabilities, time.time()))
            self._pending_rows += len(numeric)
            full = self._pending_rows >= self.flush_rows
        if full:
            self.flush()

    def flush(self) -> None:
        """Bin the batches kept since the last flush into the window."""
        with self._pending_lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        numeric = np.concatenate([batch[0] for batch in pending])
        categorical = np.concatenate([batch[1] for batch in pending])
        probabilities = (
            None if pending[0][2] is None else np.concatenate([batch[2] for batch in pending])
        )
        times = np.repeat([batch[3] for batch in pending], [len(batch[0]) for batch in pending])
        self.window.add(self.binner(numeric, categorical, probabilities), times=times)

    def evaluate(
        self, *, now: float | None = None
    ) -> tuple[DriftState, WindowScores | None, np.ndarray]:
        """The window's scores now; also its counts (for histograms).

        A window of fewer than the plan's ``min_rows`` rows is not scored at all:
        its status is ``insufficient_data`` (the minimum is stated beside it), with
        no feature scores, rather than ``ok`` on a handful of rows.
        """
        self.flush()
        now = time.time() if now is None else now
        counts, rows, span = self.window.counts(
            size=self.profile.layout.size, now=now, span_s=self.window_s
        )
        min_rows = self.plan.thresholds.min_rows
        if rows < min_rows:
            state = DriftState(model=self.model, version=self.version, status=INSUFFICIENT,
                               window_rows=rows, window_span_s=span, features=[],
                               min_rows=min_rows)  # fmt: skip
            return state, None, counts
        scores = score_windows(self.profile, counts[None, :], plan=self.plan)
        state = DriftState(
            model=self.model,
            version=self.version,
            status=STATUSES[int(scores.status[0])],
            window_rows=rows,
            window_span_s=span,
            features=scores.report(0),
            min_rows=min_rows,
        )
        return state, scores, counts

    def persist(self, store: Store, state: DriftState, counts: np.ndarray) -> bool:
        """Write ``state``'s status if it changed since the last written one; ``True`` if so."""
        if state.status == INSUFFICIENT or state.window_rows < self.plan.thresholds.min_rows:
            return False
        with self._persist_lock:
            if self._persisted is None:
                with store.session() as session:
                    latest = repo.latest_drift_event(
                        session=session, model=self.model, version=self.version
                    )
                    self._persisted = latest.status if latest is not None else "ok"
            if state.status == self._persisted:
                return False
            with store.session() as session:
                repo.record_drift_change(
                    session=session,
                    model=self.model,
                    version=self.version,
                    previous=self._persisted,
                    status=state.status,
                    window_rows=state.window_rows,
                    window_span_s=state.window_span_s,
                    features=self.with_histograms(state.features, counts),
                )
            logger.warning(
                "drift status of %s v%d: %s -> %s",
                self.model,
                self.version,
                self._persisted,
                state.status,
            )
            self._persisted = state.status
            return True

    def with_histograms(
        self, features: list[dict[str, Any]], counts: np.ndarray
    ) -> list[dict[str, Any]]:
        """``features`` with each block's reference and current histogram (for reports)."""
        return with_histograms(self.profile, features, counts)


class DriftMonitors:
    """The service's monitors, one per served model (a new version starts a new window)."""

    def __init__(
        self,
        store: Store,
        metrics: ServiceMetrics,
        *,
        plan: DriftPlan,
        window_rows: int,
        window_s: float,
        enabled: bool = True,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.plan = plan
        self.window_rows = window_rows
        self.window_s = window_s
        self.enabled = enabled
        self._monitors: dict[str, DriftMonitor | None] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def monitor(self, model: LoadedModel) -> DriftMonitor | None:
        """The monitor of the served ``model`` (``None``: its version has no usable profile)."""
        name, version = model.name, model.version
        if self._versions.get(name) == version:
            return self._monitors[name]
        with self._lock:
            if self._versions.get(name) != version:
                self._monitors[name] = self._build(model)
                self._versions[name] = version
        return self._monitors[name]

    def record(
        self,
        model: LoadedModel,
        *,
        numeric: np.ndarray,
        categorical: np.ndarray,
        probabilities: np.ndarray,
    ) -> None:
        """Bin a served batch into its model's window, when monitoring is on."""
        if not self.enabled:
            return
        try:
            monitor = self.monitor(model)
            if monitor is not None:
                monitor.record(numeric, categorical, probabilities)
        except Exception:
            # Monitoring must never turn an answered prediction into an error.
            logger.exception("could not record a batch of %s for drift", model.name)

    def evaluate(self, monitor: DriftMonitor, *, persist: bool = True) -> DriftState:
        """Score ``monitor``'s window, update the gauges, write a status change."""
        state, _, counts = monitor.evaluate()
        for item in state.features:
            self.metrics.drift_score.labels(
                model=monitor.model, feature=item["name"], detector=item["detector"]
            ).set(item["score"])
        code = -1 if state.status == INSUFFICIENT else STATUSES.index(state.status)
        self.metrics.drift_status.labels(model=monitor.model).set(code)
        self.metrics.drift_window_rows.labels(model=monitor.model).set(state.window_rows)
        if persist:
            monitor.persist(self.store, state, counts)
        return state

    def evaluate_all(self, served: dict[str, int]) -> None:
        """Every monitor of a version still ``served`` (name: version): the periodic check."""
        for monitor in list(self._monitors.values()):
            if monitor is not None and served.get(monitor.model) == monitor.version:
                try:
                    self.evaluate(monitor)
                except Exception:
                    logger.exception("could not check drift of %s", monitor.model)

    def _build(self, model: LoadedModel) -> DriftMonitor | None:
        name, version, stored = model.name, model.version, model.details.get("profile")
        if not stored:
            logger.info("%s v%d has no reference profile: no drift monitoring", name, version)
            return None
        try:
            profile = ReferenceProfile.from_dict(dict(stored)).without_calibration()
        except DataError as exc:
            logger.error("reference profile of %s v%d is unreadable: %s", name, version, exc)
            return None
        features = [b.name for b in profile.layout.blocks if b.kind in ("numeric", "categorical")]
        if features != model.preprocessing.schema.feature_names:
            logger.error("reference profile of %s v%d is of other features", name, version)
            return None
        if profile.layout.has_predictions and len(model.labels) != len(
            next(b for b in profile.layout.blocks if b.kind == "prediction").labels
        ):
            profile = profile.without_predictions()
        return DriftMonitor(
            model=name,
            version=version,
            profile=profile,
            plan=self.plan,
            window_rows=self.window_rows,
            window_s=self.window_s,
        )
