"""Which versions the service serves: the store's production versions, polled.

A promotion in the registry reaches the service within one poll interval, with
no restart: the new version is loaded (its artifact from the host's cache or the
store, ``deploy.artifacts.ArtifactFetcher``, its SHA-256 checked) beside
the old one and swapped in atomically. A version that cannot be loaded is
logged and audited, and the previous one keeps serving.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from client.contract.preprocessing import PreprocessingSpec
from deploy.artifacts import ArtifactFetcher
from deploy.errors import ServingError
from deploy.metrics import ServiceMetrics
from deploy.predictor import LoadedModel, ModelHolder
from deploy.rollout import RolloutHolder, ServedRollout
from server.store import audit
from server.store import repository as repo
from server.store.engine import Store

logger = logging.getLogger(__name__)

SERVICE_ACTOR = "inference-service"


def _served(version: Any) -> tuple[Any, ...]:
    """What the catalog reads of a model version, copied out of its session."""
    return (
        version.name, version.version, version.artifact_path, version.artifact_sha256,
        version.preprocessing, version.lineage, version.stage, version.profile,
    )  # fmt: skip


class ModelCatalog:
    """Keeps ``holder`` in step with the registry's production versions."""

    def __init__(
        self,
        store: Store,
        holder: ModelHolder,
        metrics: ServiceMetrics,
        *,
        providers: list[str],
        threads: int,
        poll_interval_s: float,
        artifact_cache_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.holder = holder
        self.metrics = metrics
        self.providers = providers
        self.threads = threads
        self.poll_interval_s = poll_interval_s
        self.fetcher = ArtifactFetcher(store, cache_dir=artifact_cache_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: set[tuple[str, int]] = set()
        self.rollouts = RolloutHolder()

    def refresh(self) -> None:
        """Load what changed since the last look (one transaction, no audit per poll)."""
        with self.store.session() as session:
            rows = [_served(v) for v in repo.serving_catalog(session=session)]
            rollouts = [
                (
                    (r.mode, r.percent),
                    _served(v),
                )
                for r, v in repo.active_rollouts(session=session)
            ]
        wanted = {name for name, *_ in rows}
        for row in rows:
            name, version = row[0], row[1]
            current = self.holder.get(name)
            if (current is not None and current.version == version) or (
                name,
                version,
            ) in self._failed:
                continue
            model = self._load(row)
            if model is None:
                continue
            self.holder.put(model)
            self.metrics.version.labels(model=name).set(version)
        self._refresh_rollouts(rollouts)
        for name in set(self.holder.names()) - wanted:
            logger.info("no production version of %s any more: no longer serving it", name)
            self.holder.remove(name)
            self.metrics.version.remove(name)

    def _refresh_rollouts(self, rows: list[tuple[tuple[str, float], tuple[Any, ...]]]) -> None:
        """Serve the store's rollouts: versions already loaded are kept, others loaded."""
        loaded = {(r.model.name, r.model.version): r.model for r in self.rollouts.all().values()}
        served: dict[str, ServedRollout] = {}
        for (mode, percent), row in rows:
            name, version = row[0], row[1]
            model = loaded.get((name, version))
            if model is None and (name, version) not in self._failed:
                model = self._load(row)
                if model is not None:
                    logger.info("serving %s v%d as a %s on %.1f%%", name, version, mode, percent)
            if model is not None:
                served[name] = ServedRollout(model=model, mode=mode, percent=percent)
        self.rollouts.replace(served)

    def _load(self, row: tuple[Any, ...]) -> LoadedModel | None:
        """A version loaded (audited ``model.load``), or ``None`` once it failed (audited too)."""
        name, version, path, sha256, preprocessing, lineage, stage, profile = row
        try:
            data = self.fetcher.fetch(
                sha256=sha256, path=Path(path) if path else None, what=f"{name} v{version}"
            )
            model = LoadedModel(
                name=name,
                version=version,
                data=data,
                sha256=sha256,
                preprocessing=PreprocessingSpec.from_dict(preprocessing),
                providers=self.providers,
                threads=self.threads,
                details={"lineage": lineage, "stage": stage, "profile": profile},
                keyring=self.store.keyring,
            )
        except (ServingError, ValueError, KeyError, OSError) as exc:
            self._failed.add((name, version))
            logger.error("cannot serve %s v%d: %s", name, version, exc)
            self._audit("model.load", f"model:{name}@{version}", "error", {"error": str(exc)})
            return None
        self._audit(
            "model.load", f"model:{name}@{version}", "success", {"providers": model.providers}
        )
        return model

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="model-catalog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.refresh()
            except Exception:  # keep serving what is loaded; say why in the log
                logger.exception("could not refresh the served models")

    def _audit(self, action: str, target: str, outcome: str, details: dict[str, object]) -> None:
        try:
            with self.store.session() as session:
                audit.append(
                    session,
                    actor=SERVICE_ACTOR,
                    action=action,
                    target=target,
                    outcome=outcome,
                    details=details,
                )
        except Exception:
            logger.exception("could not audit %s of %s", action, target)
