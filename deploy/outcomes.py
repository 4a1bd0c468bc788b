"""Prediction ids, and the true outcomes fed back for them.

Every answered row gets a ``prediction_id``: 32 hex digits, the first 12 the
millisecond it was served (so an id alone says whether it has expired), the
rest random. The predict path only appends ``(id, request id, version,
probabilities)`` to a list; ``flush`` writes the list to the store in one
statement (every ``feedback_flush_interval_s``, and before outcomes are joined).
Nothing else of a row is kept, and rows older than ``performance_retention_s``
are deleted.

``OutcomeLog.feed`` joins outcomes (``prediction_id`` or the caller's
``request_id``, and the true label) to what was served, all or nothing:

* an id nobody served: 404 (``UnknownPredictionError``); one older than the
  retention limit: 410 (``ExpiredPredictionError``);
* the same label again: counted as a duplicate, nothing changes;
* another label for an already labelled prediction: 409, nothing changes
  (the first outcome stands: an outcome is a fact, not a vote);
* late labels are welcome up to the retention limit: metrics are computed over
  the predictions *served* in the window, whenever their labels came.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from deploy.errors import ExpiredPredictionError, InvalidRequestError, UnknownPredictionError
from server.errors import ConflictError
from server.store import repository as repo
from server.store.engine import Store

logger = logging.getLogger(__name__)


def new_prediction_ids(count: int, *, now: float | None = None) -> list[str]:
    """``count`` fresh ids: the serving millisecond in hex, then 80 random bits."""
    if count < 1:
        return []
    stamp = f"{int((time.time() if now is None else now) * 1000):012x}"[-12:]
    noise = os.urandom(10 * count).hex(" ", 10).split(" ")  # 20 hex digits apiece
    return list(map(stamp.__add__, noise))


def served_at(prediction_id: str) -> float | None:
    """When the prediction was served (epoch seconds), or ``None`` for a malformed id."""
    if len(prediction_id) != 32:
        return None
    try:
        return int(prediction_id[:12], 16) / 1000.0
    except ValueError:
        return None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One outcome fed back: which prediction (by id or request id), and its true label."""

    label: str
    prediction_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class FeedbackResult:
    accepted: int
    duplicates: int


class OutcomeLog:
    """The service's served predictions on their way to the store, and outcomes joined to them."""

    def __init__(self, store: Store, *, retention_s: float, enabled: bool = True) -> None:
        self.store = store
        self.retention_s = retention_s
        self.enabled = enabled
        self._pending: list[tuple[str, int, float, list[str], list[str | None], np.ndarray]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def record(
        self,
        *,
        model: str,
        version: int,
        probabilities: np.ndarray,
        request_id: str | None,
    ) -> tuple[list[str], list[str | None]]:
        """Ids for a served batch (and each row's request id), kept for ``flush``."""
        rows = len(probabilities)
        ids = new_prediction_ids(rows)
        if request_id is None:
            requests: list[str | None] = [None] * rows
        elif rows == 1:
            requests = [request_id]
        else:
            requests = [f"{request_id}:{i}" for i in range(rows)]
        if self.enabled:
            with self._lock:  # expanded into rows when flushed, off the predict path
                self._pending.append((model, version, time.time(), ids, requests, probabilities))
        return ids, requests

    def flush(self) -> int:
        """Write the kept predictions to the store; on failure they wait for the next flush."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending:
                return 0
            rows = [
                {"id": i, "request_id": r, "model": model, "version": version,
                 "served_at": datetime.fromtimestamp(stamp, UTC), "probabilities": p,
                 "label": None, "labelled_at": None}
                for model, version, stamp, ids, requests, probabilities in pending
                for i, r, p in zip(ids, requests, probabilities.tolist(), strict=True)
            ]  # fmt: skip
            try:
                with self.store.session() as session:
                    repo.record_predictions(session, rows=rows)
            except Exception:
                with self._lock:
                    self._pending = pending + self._pending
                raise
            return len(rows)

    def expire(self) -> int:
        """Delete what is older than the retention limit."""
        before = datetime.fromtimestamp(time.time() - self.retention_s, UTC)
        with self.store.session() as session:
            return repo.expire_predictions(session, before=before)

    def feed(
        self, *, model: str, labels: Sequence[str], outcomes: Sequence[Outcome]
    ) -> FeedbackResult:
        """Join ``outcomes`` to ``model``'s served predictions (all or nothing); see the module."""
        index = {label: i for i, label in enumerate(labels)}
        for position, outcome in enumerate(outcomes):
            if outcome.label not in index:
                raise InvalidRequestError(
                    f"outcomes[{position}].label: unknown label {outcome.label!r}; expected one "
                    f"of {', '.join(labels)}"
                )
            if (outcome.prediction_id is None) == (outcome.request_id is None):
                raise InvalidRequestError(
                    f"outcomes[{position}]: give exactly one of prediction_id and request_id"
                )
        self.flush()
        with self.store.session() as session:
            by_id, by_request = repo.find_predictions(
                session,
                model=model,
                prediction_ids=[o.prediction_id for o in outcomes if o.prediction_id],
                request_ids=[o.request_id for o in outcomes if o.request_id],
            )
            wanted: dict[str, int] = {}
            duplicates = 0
            for position, outcome in enumerate(outcomes):
                row = (
                    by_id.get(outcome.prediction_id)
                    if outcome.prediction_id is not None
                    else by_request.get(str(outcome.request_id))
                )
                if row is None:
                    self._missing(model, position, outcome)
                assert row is not None
                label = index[outcome.label]
                known = row.label if row.label is not None else wanted.get(row.id)
                if known is None:
                    wanted[row.id] = label
                elif known == label:
                    duplicates += 1
                else:
                    raise ConflictError(
                        f"outcomes[{position}]: prediction {row.id} already has the label "
                        f"{labels[known]!r}; the first outcome stands",
                        model=model,
                    )
            repo.set_labels(session, labels=wanted, at=datetime.now(UTC))
        return FeedbackResult(accepted=len(wanted), duplicates=duplicates)

    def _missing(self, model: str, position: int, outcome: Outcome) -> None:
        if outcome.prediction_id is not None:
            stamp = served_at(outcome.prediction_id)
            if stamp is not None and stamp < time.time() - self.retention_s:
                raise ExpiredPredictionError(
                    f"outcomes[{position}]: prediction {outcome.prediction_id} was served "
                    f"{datetime.fromtimestamp(stamp, UTC):%Y-%m-%d}, past the retention of "
                    f"{self.retention_s / 86400:g} days: its outcome can no longer be joined",
                    model=model,
                )
            raise UnknownPredictionError(
                f"outcomes[{position}]: no prediction {outcome.prediction_id!r} of model {model!r}",
                model=model,
            )
        raise UnknownPredictionError(
            f"outcomes[{position}]: no prediction of model {model!r} with request id "
            f"{outcome.request_id!r} (or it is past the retention limit)",
            model=model,
        )
