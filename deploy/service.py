"""What one running inference service holds: store, models, keys, metrics.

Built once by the app factory and kept on ``app.state.service``; routes reach
it through the dependencies in ``deploy.deps``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from deploy.auth import Authenticator, FailureLimiter, UsageCounter
from deploy.catalog import ModelCatalog
from deploy.drift import drift_plan
from deploy.metrics import ServiceMetrics
from deploy.monitor import DriftMonitors
from deploy.outcomes import OutcomeLog
from deploy.performance_monitor import PerformanceMonitors, PerformancePlan
from deploy.predictor import LoadedModel, ModelHolder, choose_providers
from deploy.rollout import ShadowComparison
from deploy.settings import ServeSettings
from deploy.validation import RequestLimits
from server.store.engine import Store, open_store

logger = logging.getLogger(__name__)

EXPIRY_INTERVAL_S = 3600.0


@dataclass
class Service:
    settings: ServeSettings
    store: Store
    holder: ModelHolder
    metrics: ServiceMetrics
    authenticator: Authenticator
    usage: UsageCounter
    catalog: ModelCatalog
    limits: RequestLimits
    drift: DriftMonitors
    outcomes: OutcomeLog
    performance: PerformanceMonitors
    shadow: ShadowComparison = field(default_factory=ShadowComparison)
    _owns_store: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _flusher: threading.Thread | None = None
    _drift_checker: threading.Thread | None = None
    _outcome_writer: threading.Thread | None = None
    _performance_checker: threading.Thread | None = None

    @classmethod
    def build(cls, settings: ServeSettings, *, store: Store | None = None) -> Service:
        owns = store is None
        if store is None:
            from privacy.keyring import load_keyring

            store = open_store(settings.store, keyring=load_keyring())
        holder = ModelHolder()
        metrics = ServiceMetrics()
        return cls(
            settings=settings,
            store=store,
            holder=holder,
            metrics=metrics,
            authenticator=Authenticator(
                store,
                ttl_s=settings.auth_cache_ttl_s,
                limiter=FailureLimiter(
                    per_client=settings.auth_failures_per_client,
                    window_s=settings.auth_failure_window_s,
                    total_per_s=settings.auth_failures_total_per_s,
                ),
            ),
            usage=UsageCounter(),
            catalog=ModelCatalog(
                store,
                holder,
                metrics,
                providers=choose_providers(settings.providers),
                threads=settings.threads,
                poll_interval_s=settings.poll_interval_s,
                artifact_cache_dir=settings.artifact_cache_dir,
            ),
            limits=RequestLimits(
                max_rows=settings.max_rows, max_body_bytes=settings.max_body_bytes
            ),
            drift=DriftMonitors(
                store,
                metrics,
                plan=drift_plan(settings),
                window_rows=settings.drift_window_rows,
                window_s=settings.drift_window_s,
                enabled=settings.drift_monitoring,
            ),
            outcomes=OutcomeLog(
                store,
                retention_s=settings.performance_retention_s,
                enabled=settings.performance_monitoring,
            ),
            performance=PerformanceMonitors(
                store,
                metrics,
                plan=performance_plan(settings),
                enabled=settings.performance_monitoring,
            ),
            _owns_store=owns,
        )

    def start(self) -> None:
        self.catalog.refresh()
        self.catalog.start()
        self._flusher = threading.Thread(target=self._flush_loop, name="usage-flush", daemon=True)
        self._flusher.start()
        if self.settings.drift_monitoring:
            self._drift_checker = threading.Thread(
                target=self._drift_loop, name="drift-check", daemon=True
            )
            self._drift_checker.start()
        if self.settings.performance_monitoring:
            self._outcome_writer = threading.Thread(
                target=self._outcome_loop, name="outcome-writer", daemon=True
            )
            self._outcome_writer.start()
            self._performance_checker = threading.Thread(
                target=self._performance_loop, name="performance-check", daemon=True
            )
            self._performance_checker.start()

    def served_models(self) -> list[LoadedModel]:
        """The versions being served now."""
        return [m for m in (self.holder.get(n) for n in self.holder.names()) if m is not None]

    def stop(self) -> None:
        self.catalog.stop()
        self._stop.set()
        threads = (self._flusher, self._drift_checker, self._outcome_writer)
        for thread in (*threads, self._performance_checker):
            if thread is not None:
                thread.join(timeout=5)
        try:
            self.outcomes.flush()
        except Exception:
            logger.exception("could not write the last served predictions")
        self._flush_counts()
        if self._owns_store:
            self.store.dispose()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.settings.usage_flush_interval_s):
            self._flush_counts()

    def _flush_counts(self) -> None:
        """Usage and failed authentications since the last flush, one audit event each."""
        try:
            self.usage.flush(self.store)
        except Exception:
            logger.exception("could not write prediction counts; keeping them for later")
        try:
            self.authenticator.limiter.flush(
                self.store, interval_s=self.settings.usage_flush_interval_s
            )
        except Exception:
            logger.exception("could not write failed-authentication counts; keeping them")

    def _drift_loop(self) -> None:
        while not self._stop.wait(self.settings.drift_check_interval_s):
            served = {}
            for name in self.holder.names():
                model = self.holder.get(name)
                if model is not None:
                    served[name] = model.version
            self.drift.evaluate_all(served)

    def _outcome_loop(self) -> None:
        last_expiry = 0.0
        while not self._stop.wait(self.settings.feedback_flush_interval_s):
            try:
                self.outcomes.flush()
                if time.monotonic() - last_expiry > EXPIRY_INTERVAL_S:
                    last_expiry = time.monotonic()
                    self.outcomes.expire()
            except Exception:
                logger.exception("could not write served predictions; keeping them for later")

    def _performance_loop(self) -> None:
        while not self._stop.wait(self.settings.performance_check_interval_s):
            self.performance.evaluate_all(self.served_models())


def performance_plan(settings: ServeSettings) -> PerformancePlan:
    """The performance window and thresholds the settings ask for."""
    return PerformancePlan(
        window_s=settings.performance_window_s,
        window_rows=settings.performance_window_rows,
        min_rows=settings.performance_min_rows,
        max_drop=settings.performance_max_drop,
        min_accuracy=settings.performance_min_accuracy,
        min_auc=settings.performance_min_auc,
    )
