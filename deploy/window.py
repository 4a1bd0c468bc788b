"""A served model's sliding window: the slot indices of the rows it served, and when.

``SlotBinner`` turns encoded batches into one slot index per row and block of
a reference profile's layout (the same bins institutions used for the
profile); ``DriftWindow`` keeps the last rows' slots and serving times in a
ring buffer of fixed size, and counts those within a time span.
"""

from __future__ import annotations

import threading

import numpy as np

from client.contract.errors import DataError
from client.contract.profile import ProfileLayout


class SlotBinner:
    """``ProfileLayout.slot_indices`` for one served batch, in about fifteen numpy operations.

    Numeric and probability blocks are binned together in one pass, with the
    same arithmetic as ``client.contract.profile`` (a test holds the slots equal). The
    columns come out grouped by kind, block ``block_order[j]`` in column ``j``:
    a window only counts slots, and every slot index is global, so the order
    of the columns does not matter.
    """

    def __init__(self, layout: ProfileLayout) -> None:
        self.layout = layout
        blocks = layout.blocks
        numeric = [b for b in blocks if b.kind == "numeric"]
        probability = [b for b in blocks if b.kind == "probability"]
        categorical = [b for b in blocks if b.kind == "categorical"]
        prediction = [b for b in blocks if b.kind == "prediction"]
        binned = numeric + probability
        order = binned + categorical + prediction
        self.block_order = np.array([blocks.index(b) for b in order], dtype=np.int64)
        self._numeric = _columns([b.column for b in numeric])
        self._probability = _columns([b.column for b in probability])
        self._has_probability = bool(probability)
        self._binned = bool(binned)
        self._low = np.array([b.low for b in binned], dtype=np.float64)
        self._width = np.array([b.high - b.low for b in binned], dtype=np.float64)
        self._bins = np.array([b.bins for b in binned], dtype=np.float64)
        self._last = self._bins - 1
        # A missing numeric value goes to the block's missing slot; a probability has none.
        self._absent = np.array([b.bins if b.has_missing_slot else 0 for b in binned], dtype=float)
        self._binned_offsets = np.array([b.offset for b in binned], dtype=np.float64)
        self._categorical = _columns([b.column for b in categorical])
        self._categorical_missing = np.array([len(b.labels) for b in categorical], dtype=np.int64)
        self._categorical_offsets = np.array([b.offset for b in categorical], dtype=np.int64)
        self._prediction = prediction[0].offset if prediction else None
        self._needs_probabilities = bool(probability or prediction)

    def __call__(
        self, numeric: np.ndarray, categorical: np.ndarray, probabilities: np.ndarray | None
    ) -> np.ndarray:
        """Slot indices, ``(rows, blocks)``, columns in ``block_order``."""
        if self._needs_probabilities and probabilities is None:
            raise DataError("this profile layout needs the model's probabilities")
        parts = []
        if self._binned:
            values = [numeric[:, self._numeric]]
            if self._has_probability:
                assert probabilities is not None
                values.append(probabilities[:, self._probability])
            # float32 as the served model receives them, then the arithmetic of ``_bin``.
            x = np.concatenate(values, axis=1, dtype=np.float32).astype(np.float64)
            x -= self._low
            x /= self._width
            x *= self._bins
            np.floor(x, out=x)
            np.clip(x, 0.0, self._last, out=x)  # NaN stays NaN
            absent = np.isnan(x)
            if absent.any():
                np.copyto(x, np.broadcast_to(self._absent, x.shape), where=absent)
            x += self._binned_offsets
            parts.append(x)
        if len(self._categorical_offsets):
            codes = categorical[:, self._categorical]
            codes = np.where(codes < 0, self._categorical_missing, codes)
            codes += self._categorical_offsets
            parts.append(codes)
        if self._prediction is not None:
            assert probabilities is not None
            best = probabilities.argmax(axis=1)
            best += self._prediction
            parts.append(best[:, None])
        return np.concatenate(parts, axis=1, dtype=np.int64, casting="unsafe")


def _columns(columns: list[int]) -> slice | np.ndarray:
    """A slice where the columns are consecutive (a view, no copy), else an index array."""
    if not columns:
        return slice(0, 0)
    if columns == list(range(columns[0], columns[0] + len(columns))):
        return slice(columns[0], columns[0] + len(columns))
    return np.array(columns, dtype=np.int64)


class DriftWindow:
    """The last ``capacity`` rows' slots and serving times, in a ring buffer."""

    def __init__(self, *, capacity: int, blocks: int) -> None:
        self.capacity = capacity
        self._slots = np.zeros((capacity, blocks), dtype=np.int32)
        self._times = np.full(capacity, -np.inf)
        self._next = 0
        self._lock = threading.Lock()

    def add(self, slots: np.ndarray, *, times: np.ndarray | float) -> None:
        """Append rows' slots and the times they were served (one time, or one per row)."""
        rows = len(slots)
        stamps = np.broadcast_to(np.asarray(times, dtype=np.float64), (rows,))
        if rows >= self.capacity:
            slots, stamps, rows = slots[-self.capacity :], stamps[-self.capacity :], self.capacity
        with self._lock:
            start = self._next
            end = start + rows
            if end <= self.capacity:
                self._slots[start:end] = slots
                self._times[start:end] = stamps
            else:
                first = self.capacity - start
                self._slots[start:] = slots[:first]
                self._slots[: rows - first] = slots[first:]
                self._times[start:] = stamps[:first]
                self._times[: rows - first] = stamps[first:]
            self._next = end % self.capacity

    def counts(self, *, size: int, now: float, span_s: float) -> tuple[np.ndarray, int, float]:
        """Counts per slot of the rows served in the last ``span_s``, their number and span."""
        with self._lock:
            recent = self._times >= now - span_s
            slots = self._slots[recent]
            times = self._times[recent]
        counts = np.bincount(slots.ravel(), minlength=size).astype(np.float64)
        span = float(now - times.min()) if len(times) else 0.0
        return counts, len(slots), span
