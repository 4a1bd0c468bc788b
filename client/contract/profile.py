"""Reference profiles: how a federation's training rows, and its model's predictions on them, look.

A profile is one histogram per block: each numeric feature over ``FINE_BINS``
equal-width bins of its declared range (plus a missing slot), each categorical
feature over its declared categories (plus a missing slot), the model's
predicted class, and the predicted probability of each class over ``FINE_BINS``
bins of [0, 1]. The bins come from the schema, the consortium's data
dictionary, so every institution bins alike without a first federated pass;
they are fine enough that a monitor can merge them into quantile-like bins of
the pooled reference afterwards.

Each institution sends ``profile_shares``: its per-block counts divided by its
training rows, so every entry lies in [0, 1] and a row-weighted average of the
institutions' vectors, times the rows they hold together, is the federation's
count vector (``ProfileLayout.decode``). One row adds exactly one count to each
block: the L2 sensitivity of the count vector is ``sqrt(len(blocks))``.

The same layout bins what an inference service sees (``slot_indices``), from
the encoded arrays the served model takes: numeric values as float32 with NaN
where missing, category indices with -1 where missing.

The federation's layout (``federation_layout``) also has a ``calibration``
block per probability block: over the same bins, how many rows whose true
label is that class fell in each bin of its predicted probability, and one
last slot for the rows of other classes (so one row still adds exactly one
count per block). Divided by the probability block's counts it is the
federation's calibration curve, from which the inference service estimates
its accuracy before any label comes back (``deploy.estimation``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from client.contract.errors import DataError
from client.contract.schema import CategoricalFeature, NumericFeature, TableSchema

FINE_BINS = 100
PROFILE_FORMAT = 1
MISSING = -1

BlockKind = Literal["numeric", "categorical", "prediction", "probability", "calibration"]
BINNED_KINDS = ("numeric", "probability", "calibration")


PROFILE_NOISY_RANGE = 4.0
"""Bound on a noisy share (noise can push a share past [0, 1]); secure aggregation's range."""


@dataclass(frozen=True, kw_only=True)
class Block:
    """One histogram of a profile: which slots of the vector it owns and what they mean.

    ``numeric`` and ``probability`` blocks have ``bins`` equal-width bins over
    ``[low, high]``; ``categorical`` and ``prediction`` blocks one slot per
    label. ``numeric`` and ``categorical`` blocks end with a missing slot, a
    ``calibration`` block (bins of class ``column``'s probability, rows of that
    class only) with a slot for the rows of other classes. ``column`` is the
    block's column in the encoded numeric or categorical array, or the class
    index of a ``probability`` or ``calibration`` block.
    """

    name: str
    kind: BlockKind
    column: int
    offset: int
    low: float = 0.0
    high: float = 1.0
    bins: int = 0
    labels: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        if self.kind in BINNED_KINDS:
            return self.bins + (0 if self.kind == "probability" else 1)
        return len(self.labels) + (1 if self.kind == "categorical" else 0)

    @property
    def has_missing_slot(self) -> bool:
        return self.kind in ("numeric", "categorical")

    @property
    def edges(self) -> np.ndarray:
        """Bin edges of a numeric or probability block (``bins + 1`` values)."""
        return np.linspace(self.low, self.high, self.bins + 1)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "column": self.column}
        if self.kind in BINNED_KINDS:
            data.update(low=self.low, high=self.high, bins=self.bins)
        else:
            data["labels"] = list(self.labels)
        return data


class ProfileLayout:
    """Where each block sits in a profile vector; built from the schema alone."""

    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks
        self.size = sum(block.size for block in blocks)

    @classmethod
    def for_schema(
        cls,
        schema: TableSchema,
        *,
        bins: int = FINE_BINS,
        predictions: bool = True,
        calibration: bool = False,
    ) -> ProfileLayout:
        """Blocks for every feature and, with ``predictions``, for the model's outputs;
        with ``calibration`` (and ``predictions``), the true labels per probability bin."""
        if bins < 2:
            raise DataError(f"a profile needs at least 2 bins per feature, got {bins}")
        blocks: list[Block] = []
        offset = numeric = categorical = 0

        def add(block: Block) -> None:
            nonlocal offset
            blocks.append(block)
            offset += block.size

        for feature in schema.features:
            if isinstance(feature, NumericFeature):
                low, high = feature.range
                add(Block(name=feature.name, kind="numeric", column=numeric, offset=offset,
                          low=low, high=high, bins=bins))  # fmt: skip
                numeric += 1
            else:
                assert isinstance(feature, CategoricalFeature)
                add(Block(name=feature.name, kind="categorical", column=categorical,
                          offset=offset, labels=feature.categories))  # fmt: skip
                categorical += 1
        if predictions:
            labels = schema.target.labels
            add(Block(name="prediction", kind="prediction", column=0, offset=offset, labels=labels))
            # With two classes one probability says everything.
            for index in range(1 if len(labels) == 2 else 0, len(labels)):
                add(Block(name=f"probability:{labels[index]}", kind="probability",
                          column=index, offset=offset, bins=bins))  # fmt: skip
            if calibration:
                for index in range(1 if len(labels) == 2 else 0, len(labels)):
                    add(Block(name=f"calibration:{labels[index]}", kind="calibration",
                              column=index, offset=offset, bins=bins))  # fmt: skip
        return cls(blocks)

    @property
    def sensitivity(self) -> float:
        """L2 norm of one row's contribution to the count vector."""
        return math.sqrt(len(self.blocks))

    @property
    def has_predictions(self) -> bool:
        return any(block.kind == "prediction" for block in self.blocks)

    @property
    def has_calibration(self) -> bool:
        return any(block.kind == "calibration" for block in self.blocks)

    def slot_indices(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        probabilities: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """The slot each row fills in each block: shape ``(..., rows, len(blocks))``.

        Arrays may carry leading batch axes (``(windows, rows, columns)``);
        ``labels`` (class indices) are needed by ``calibration`` blocks only.
        """
        columns = []
        for block in self.blocks:
            if block.kind == "numeric":
                slot = _bin(numeric[..., block.column], block, missing=True)
            elif block.kind == "categorical":
                codes = categorical[..., block.column].astype(np.int64)
                slot = np.where(codes < 0, len(block.labels), codes)
            elif probabilities is None:
                raise DataError("this profile layout needs the model's probabilities")
            elif block.kind == "prediction":
                slot = probabilities.argmax(axis=-1).astype(np.int64)
            elif block.kind == "calibration":
                if labels is None:
                    raise DataError("this profile layout needs the rows' true labels")
                binned = _bin(probabilities[..., block.column], block, missing=False)
                slot = np.where(np.asarray(labels) == block.column, binned, block.bins)
            else:
                slot = _bin(probabilities[..., block.column], block, missing=False)
            columns.append(slot + block.offset)
        return np.stack(columns, axis=-1)

    def counts(
        self,
        numeric: np.ndarray,
        categorical: np.ndarray,
        probabilities: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """Counts per slot; with a leading windows axis, one count vector per window."""
        slots = self.slot_indices(numeric, categorical, probabilities, labels)
        if slots.ndim == 2:
            return np.bincount(slots.ravel(), minlength=self.size).astype(np.float64)
        windows = slots.shape[0]
        shifted = slots.reshape(windows, -1) + (np.arange(windows) * self.size)[:, None]
        flat = np.bincount(shifted.ravel(), minlength=windows * self.size)
        return flat.reshape(windows, self.size).astype(np.float64)

    def decode(
        self,
        average: np.ndarray,
        *,
        rows: float,
        noisy: bool,
        round: int | None = None,
        institutions: tuple[str, ...] = (),
        noise_multiplier: float | None = None,
    ) -> ReferenceProfile:
        """The federation's profile from the row-weighted average of ``profile_shares``."""
        if average.shape != (self.size,) or not np.all(np.isfinite(average)) or rows <= 0:
            raise DataError(
                f"profile average has shape {average.shape} over {rows} rows; "
                f"the layout needs ({self.size},) finite values over a positive row count"
            )
        counts = average * rows
        # Without noise the counts are whole numbers up to SecAgg's quantization error.
        counts = np.clip(counts, 0.0, None) if noisy else np.rint(counts).clip(0.0, None)
        return ReferenceProfile(
            layout=self,
            counts=counts,
            rows=float(rows),
            round=round,
            institutions=institutions,
            noise_multiplier=noise_multiplier,
        )


def federation_layout(schema: TableSchema) -> ProfileLayout:
    """The layout of a run's reference profile: features, outputs and calibration."""
    return ProfileLayout.for_schema(schema, calibration=True)


def _bin(values: np.ndarray, block: Block, *, missing: bool) -> np.ndarray:
    # Binned from float32, as the served model receives them, so that an institution
    # and the inference service put a value on a bin edge into the same bin.
    x = np.asarray(values, dtype=np.float32).astype(np.float64)
    scaled = np.floor((x - block.low) / (block.high - block.low) * block.bins)
    absent = np.isnan(scaled)
    index = np.clip(np.where(absent, 0, scaled), 0, block.bins - 1).astype(np.int64)
    if missing:
        return np.where(absent, block.bins, index)
    return index


def encode_frame(frame: pd.DataFrame, schema: TableSchema) -> tuple[np.ndarray, np.ndarray]:
    """A validated frame as the served model's inputs: float32 numerics (NaN = missing),
    int64 category indices (-1 = missing), each in the schema's order of that kind."""
    numeric = [f for f in schema.features if isinstance(f, NumericFeature)]
    categorical = [f for f in schema.features if isinstance(f, CategoricalFeature)]
    rows = len(frame)
    values = np.empty((rows, len(numeric)), dtype=np.float32)
    for j, feature in enumerate(numeric):
        values[:, j] = frame[feature.name].to_numpy(dtype=np.float64)
    codes = np.empty((rows, len(categorical)), dtype=np.int64)
    for j, cat in enumerate(categorical):
        index = {c: i for i, c in enumerate(cat.categories)}
        codes[:, j] = [MISSING if v is None else index.get(v, MISSING) for v in frame[cat.name]]
    return values, codes


def profile_shares(layout: ProfileLayout, counts: np.ndarray, rows: int) -> np.ndarray:
    """An institution's per-row shares (counts over its rows): each entry in [0, 1]."""
    if rows <= 0:
        raise DataError("cannot profile an empty table")
    shares: np.ndarray = counts / float(rows)
    return shares


@dataclass(frozen=True, kw_only=True)
class ReferenceProfile:
    """The federation's counts per block; ``noise_multiplier`` is set when DP noise was added."""

    layout: ProfileLayout
    counts: np.ndarray
    rows: float
    round: int | None = None
    institutions: tuple[str, ...] = ()
    noise_multiplier: float | None = None

    def block_counts(self, block: Block) -> np.ndarray:
        return self.counts[block.offset : block.offset + block.size]

    def without_predictions(self) -> ReferenceProfile:
        """The feature blocks only (for a model other than the one profiled)."""
        return self._keeping(("numeric", "categorical"))

    def without_calibration(self) -> ReferenceProfile:
        """Every block but the calibration ones (what drift detection compares)."""
        return self._keeping(("numeric", "categorical", "prediction", "probability"))

    def _keeping(self, kinds: tuple[str, ...]) -> ReferenceProfile:
        kept, pieces, offset = [], [], 0
        for block in self.layout.blocks:
            if block.kind in kinds:
                kept.append(replace(block, offset=offset))
                pieces.append(self.block_counts(block))
                offset += block.size
        return replace(
            self,
            layout=ProfileLayout(kept),
            counts=np.concatenate(pieces) if pieces else self.counts[:0],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "rows": self.rows,
            "round": self.round,
            "institutions": list(self.institutions),
            "noise_multiplier": self.noise_multiplier,
            "blocks": [
                {**block.to_dict(), "counts": self.block_counts(block).tolist()}
                for block in self.layout.blocks
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceProfile:
        """Read a profile written by ``to_dict``; a malformed one raises ``DataError``."""
        try:
            if data.get("format") != PROFILE_FORMAT:
                raise DataError(f"unknown profile format {data.get('format')!r}")
            blocks, pieces, offset = [], [], 0
            for item in data["blocks"]:
                kind = item["kind"]
                if kind not in (
                    "numeric",
                    "categorical",
                    "prediction",
                    "probability",
                    "calibration",
                ):
                    raise DataError(f"unknown profile block kind {kind!r}")
                block = Block(
                    name=str(item["name"]),
                    kind=kind,
                    column=int(item["column"]),
                    offset=offset,
                    low=float(item.get("low", 0.0)),
                    high=float(item.get("high", 1.0)),
                    bins=int(item.get("bins", 0)),
                    labels=tuple(str(v) for v in item.get("labels", ())),
                )
                counts = np.asarray(item["counts"], dtype=np.float64)
                if counts.shape != (block.size,) or not np.all(np.isfinite(counts)):
                    raise DataError(f"profile block {block.name!r} has malformed counts")
                blocks.append(block)
                pieces.append(counts)
                offset += block.size
            noise = data.get("noise_multiplier")
            return cls(
                layout=ProfileLayout(blocks),
                counts=np.concatenate(pieces) if pieces else np.zeros(0),
                rows=float(data["rows"]),
                round=None if data.get("round") is None else int(data["round"]),
                institutions=tuple(str(v) for v in data.get("institutions", ())),
                noise_multiplier=None if noise is None else float(noise),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"profile is malformed: {exc}") from exc
