"""Serving a rollout: which version answers a request, and how a shadow compares.

A ``canary`` answers ``percent`` of the requests. The choice is sticky by the
caller's ``request_id``: the id's SHA-256 places it on a 0–100 scale once and
for all, so a caller retrying (or a patient's series of requests under one id)
always meets the same version; a request without an id is drawn at random. A
``shadow`` scores ``percent`` of the requests after the answer is sent (a
background task: it adds nothing to the caller's latency), its answers are
never returned, and ``ShadowComparison`` keeps how often it agrees with
production and how far its probabilities are.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deploy.errors import InvalidRequestError
from deploy.metrics import ServiceMetrics
from deploy.predictor import LoadedModel
from deploy.validation import RequestLimits

logger = logging.getLogger(__name__)

_SCALE = float(1 << 64)


def traffic_point(request_id: str | None) -> float:
    """Where a request falls on the 0–100 scale: fixed by its id, random without one."""
    if request_id is None:
        return 100.0 * random.random()  # traffic splitting, not a secret
    digest = hashlib.sha256(request_id.encode()).digest()
    return 100.0 * int.from_bytes(digest[:8], "big") / _SCALE


@dataclass(frozen=True)
class ServedRollout:
    """A version served beside production: ``canary`` or ``shadow`` on ``percent`` %."""

    model: LoadedModel
    mode: str
    percent: float

    def takes(self, request_id: str | None) -> bool:
        return traffic_point(request_id) < self.percent


@dataclass
class _Tally:
    requests: int = 0
    rows: int = 0
    agreeing: int = 0
    abs_diff_sum: float = 0.0
    max_abs_diff: float = 0.0
    errors: int = 0


@dataclass
class ShadowComparison:
    """Per (model, shadow version): requests and rows scored, agreement with production."""

    _tallies: dict[tuple[str, int], _Tally] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def score(
        self,
        rollout: ServedRollout,
        *,
        body: Any,
        production: np.ndarray,
        limits: RequestLimits,
        metrics: ServiceMetrics,
    ) -> None:
        """Score ``body`` on the shadow and compare with production's ``probabilities``.

        The shadow checks the body with its own schema: a row it cannot take is
        counted as an error, never reported to the caller.
        """
        model = rollout.model
        key = (model.name, model.version)
        try:
            if body.columns is not None:
                encoded = model.encode_columns(body.columns, limits=limits)
            else:
                encoded = model.encode(body.rows or [], limits=limits)
            shadow = model.run(*encoded).probabilities
        except InvalidRequestError as exc:
            logger.debug("shadow %s v%d refused a request: %s", model.name, model.version, exc)
            with self._lock:
                self._tallies.setdefault(key, _Tally()).errors += 1
            return
        same_labels = shadow.shape == production.shape
        agreeing = int((shadow.argmax(1) == production.argmax(1)).sum()) if same_labels else 0
        diff = np.abs(shadow - production) if same_labels else np.zeros(1)
        with self._lock:
            tally = self._tallies.setdefault(key, _Tally())
            tally.requests += 1
            tally.rows += len(shadow)
            tally.agreeing += agreeing
            tally.abs_diff_sum += float(diff.max(axis=1).sum()) if same_labels else 0.0
            tally.max_abs_diff = max(tally.max_abs_diff, float(diff.max()))
            agreement = tally.agreeing / tally.rows
        metrics.rollout_rows.labels(
            model=model.name, version=str(model.version), mode="shadow"
        ).inc(len(shadow))
        metrics.shadow_agreement.labels(model=model.name, version=str(model.version)).set(agreement)

    def summary(self, name: str, version: int) -> dict[str, Any]:
        """``requests``, ``rows``, ``agreement`` (share of rows with production's class),
        ``mean_max_abs_diff`` and ``max_abs_diff`` of the probabilities, ``errors``."""
        with self._lock:
            tally = self._tallies.get((name, version), _Tally())
            rows = tally.rows
            return {
                "requests": tally.requests,
                "rows": rows,
                "agreement": tally.agreeing / rows if rows else None,
                "mean_max_abs_diff": tally.abs_diff_sum / rows if rows else None,
                "max_abs_diff": tally.max_abs_diff if rows else None,
                "errors": tally.errors,
            }


class RolloutHolder:
    """The rollouts being served, by model name; replaced as a whole, atomically."""

    def __init__(self) -> None:
        self._rollouts: dict[str, ServedRollout] = {}

    def get(self, name: str) -> ServedRollout | None:
        return self._rollouts.get(name)

    def all(self) -> dict[str, ServedRollout]:
        return dict(self._rollouts)

    def replace(self, rollouts: dict[str, ServedRollout]) -> None:
        self._rollouts = dict(rollouts)  # one reference swap
