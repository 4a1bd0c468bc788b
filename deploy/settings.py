"""The inference service's settings, read once in the entry point (``FEDWARDEN_`` variables).

One settings tree: ``ServeSettings`` nests the store's own ``StoreSettings`` (the
database URL and its one default live there).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.store.settings import StoreSettings


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fedwarden/artifacts`` (``~/.cache/fedwarden/artifacts``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedwarden" / "artifacts"


class ServeSettings(BaseSettings):
    """How ``fedwarden serve`` runs.

    Every field can be set as ``FEDWARDEN_<NAME>`` (``FEDWARDEN_MAX_ROWS=256``);
    ``fedwarden serve`` flags win over the environment.
    """

    model_config = SettingsConfigDict(env_prefix="FEDWARDEN_", extra="ignore", frozen=True)

    store: StoreSettings = Field(default_factory=StoreSettings)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    max_rows: int = Field(default=1024, ge=1)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    poll_interval_s: float = Field(default=2.0, gt=0)
    auth_cache_ttl_s: float = Field(default=30.0, ge=0)
    usage_flush_interval_s: float = Field(default=5.0, gt=0)
    auth_failures_per_client: int = Field(default=20, ge=1)
    auth_failure_window_s: float = Field(default=10.0, gt=0)
    auth_failures_total_per_s: int = Field(default=200, ge=1)
    public_docs: bool = True
    """Serve /docs and /openapi.json without a key: they describe the routes, hold no data."""
    providers: str = Field(default="auto", pattern="^(auto|cpu|cuda)$")
    threads: int = Field(default=1, ge=1)
    drift_window_rows: int = Field(default=5000, ge=50)
    drift_window_s: float = Field(default=3600.0, gt=0)
    drift_monitoring: bool = True
    drift_check_interval_s: float = Field(default=30.0, gt=0)
    drift_numeric_detectors: tuple[str, ...] = ("psi", "ks")
    drift_categorical_detectors: tuple[str, ...] = ("chi2",)
    drift_prediction_detectors: tuple[str, ...] = ("js",)
    drift_psi_warning: float = Field(default=0.1, gt=0)
    drift_psi_alert: float = Field(default=0.25, gt=0)
    drift_p_value: float = Field(default=0.01, gt=0, lt=1)
    drift_min_rows: int = Field(default=100, ge=1)
    performance_monitoring: bool = True
    performance_window_s: float = Field(default=7 * 86400.0, gt=0)
    performance_window_rows: int = Field(default=10000, ge=10)
    performance_min_rows: int = Field(default=100, ge=1)
    performance_max_drop: float = Field(default=0.1, ge=0, le=1)
    performance_min_accuracy: float | None = Field(default=None, ge=0, le=1)
    performance_min_auc: float | None = Field(default=None, ge=0, le=1)
    performance_check_interval_s: float = Field(default=60.0, gt=0)
    performance_retention_s: float = Field(default=90 * 86400.0, gt=0)
    feedback_flush_interval_s: float = Field(default=1.0, gt=0)
    artifact_cache_dir: Path | None = Field(default_factory=default_cache_dir)
    """Where this host caches model artifacts fetched from the store, by SHA-256 (kept as
    the store keeps them: sealed when it seals); ``None``: fetch from the store each load."""
