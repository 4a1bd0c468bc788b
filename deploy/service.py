"""What one running inference service holds: store, models, keys, metrics.

Built once by the app factory and kept on ``app.state.service``; routes reach
it through the dependencies in ``deploy.deps``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from deploy.auth import Authenticator, UsageCounter
from deploy.catalog import ModelCatalog
from deploy.drift import drift_plan
from deploy.metrics import ServiceMetrics
from deploy.monitor import DriftMonitors
from deploy.predictor import ModelHolder, choose_providers
from deploy.settings import ServeSettings
from deploy.validation import RequestLimits
from server.store.engine import Store, open_store
from server.store.settings import StoreSettings

logger = logging.getLogger(__name__)


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
    _owns_store: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _flusher: threading.Thread | None = None
    _drift_checker: threading.Thread | None = None

    @classmethod
    def build(cls, settings: ServeSettings, *, store: Store | None = None) -> Service:
        owns = store is None
        if store is None:
            from privacy.keyring import load_keyring

            store = open_store(StoreSettings.load(settings.database_url), keyring=load_keyring())
        holder = ModelHolder()
        metrics = ServiceMetrics()
        return cls(
            settings=settings,
            store=store,
            holder=holder,
            metrics=metrics,
            authenticator=Authenticator(store, ttl_s=settings.auth_cache_ttl_s),
            usage=UsageCounter(),
            catalog=ModelCatalog(
                store,
                holder,
                metrics,
                providers=choose_providers(settings.providers),
                threads=settings.threads,
                poll_interval_s=settings.poll_interval_s,
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

    def stop(self) -> None:
        self.catalog.stop()
        self._stop.set()
        for thread in (self._flusher, self._drift_checker):
            if thread is not None:
                thread.join(timeout=5)
        try:
            self.usage.flush(self.store)
        except Exception:
            logger.exception("could not write the last prediction counts")
        if self._owns_store:
            self.store.dispose()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.settings.usage_flush_interval_s):
            try:
                self.usage.flush(self.store)
            except Exception:
                logger.exception("could not write prediction counts; keeping them for later")

    def _drift_loop(self) -> None:
        while not self._stop.wait(self.settings.drift_check_interval_s):
            served = {}
            for name in self.holder.names():
                model = self.holder.get(name)
                if model is not None:
                    served[name] = model.version
            self.drift.evaluate_all(served)
