"""Preprocessing fitted from federated aggregates, never from pooled rows.

Each institution summarises its training rows as a vector of per-row averages
(``summarize``): for every numeric feature the mean of its range-scaled value
``u = (x - low) / (high - low)``, of ``u**2`` and the share of rows where it is
present. Every entry lies in [0, 1], so the vectors fit secure aggregation's
quantization range; weighted by row counts their average is the federation's
pooled average, from which ``PreprocessingSpec`` takes means and standard
deviations. Categories come from the schema, so no vocabulary is learned from data,
and nothing about them is summarised: the summary is a DP release, and every entry
it carries widens one row's contribution bound (``summary_sensitivity``), hence
its noise or its share of the budget.

The spec travels with the model: ``transform`` is the same function at training
time and at serving time.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from client.contract.errors import DataError
from client.contract.schema import CategoricalFeature, NumericFeature, TableSchema

_MIN_STD = 1e-6


def summary_size(schema: TableSchema) -> int:
    """Length of the summary vector ``summarize`` returns for ``schema``."""
    return 3 * sum(isinstance(f, NumericFeature) for f in schema.features)


def summary_sensitivity(schema: TableSchema) -> float:
    """L2 bound of one row's contribution to the summed summary.

    A numeric feature adds three values in [0, 1] (its scaled value, its square and
    whether it is present). (At least 1, so that an empty summary's noise is defined.)
    """
    return max(1.0, math.sqrt(summary_size(schema)))


def summarize(frame: pd.DataFrame, schema: TableSchema) -> np.ndarray:
    """Per-row averages of ``frame`` (validated against ``schema``), each in [0, 1]."""
    if len(frame) == 0:
        raise DataError("cannot summarise an empty table")
    features = [f for f in schema.features if isinstance(f, NumericFeature)]
    if not features:
        return np.zeros(0, dtype=np.float64)
    # One array operation over every numeric column (784 of them for an image), in order.
    low = np.array([f.range[0] for f in features], dtype=float)
    high = np.array([f.range[1] for f in features], dtype=float)
    values = frame[[f.name for f in features]].to_numpy(dtype=float)
    u = np.clip((values - low) / (high - low), 0.0, 1.0)
    present = ~np.isnan(u)
    filled = np.where(present, u, 0.0)
    parts = np.stack([filled.mean(axis=0), (filled**2).mean(axis=0), present.mean(axis=0)], axis=1)
    return parts.reshape(-1).astype(np.float64)


def _unit(values: np.ndarray, feature: NumericFeature) -> np.ndarray:
    low, high = feature.range
    return np.clip((values - low) / (high - low), 0.0, 1.0)


@dataclass(frozen=True)
class NumericScaling:
    """Mean and standard deviation of a feature's range-scaled value across the federation."""

    mean: float
    std: float


@dataclass(frozen=True)
class PreprocessingSpec:
    """How raw rows become model inputs: schema plus federated scaling statistics."""

    schema: TableSchema
    scaling: dict[str, NumericScaling]
    label_shares: tuple[float, ...] = ()
    """No longer summarised (empty); kept so that specs written before still load."""

    @classmethod
    def from_summary(cls, schema: TableSchema, summary: np.ndarray) -> PreprocessingSpec:
        """Build the spec from a pooled summary (the weighted average of ``summarize`` vectors)."""
        if summary.shape != (summary_size(schema),) or not np.all(np.isfinite(summary)):
            raise DataError(
                f"summary has shape {summary.shape}; schema {schema.name!r} needs "
                f"({summary_size(schema)},) finite values"
            )
        scaling: dict[str, NumericScaling] = {}
        offset = 0
        for feature in schema.features:
            if isinstance(feature, NumericFeature):
                sum_u, sum_u2, share = summary[offset : offset + 3]
                offset += 3
                if share <= 0:
                    scaling[feature.name] = NumericScaling(mean=0.5, std=1.0)
                    continue
                mean = float(sum_u / share)
                variance = max(float(sum_u2 / share) - mean**2, 0.0)
                std = math.sqrt(variance)
                scaling[feature.name] = NumericScaling(
                    mean=mean, std=std if std > _MIN_STD else 1.0
                )
        return cls(schema=schema, scaling=scaling, label_shares=())

    @classmethod
    def fit(cls, frame: pd.DataFrame, schema: TableSchema) -> PreprocessingSpec:
        """The spec of one table on its own (the pooled baseline, and tests)."""
        return cls.from_summary(schema, summarize(frame, schema))

    @property
    def output_names(self) -> list[str]:
        """Names of the model's input columns, in order."""
        names: list[str] = []
        for feature in self.schema.features:
            if isinstance(feature, NumericFeature):
                names.append(feature.name)
            else:
                names += [f"{feature.name}={c}" for c in feature.categories]
            if feature.nullable:
                names.append(f"{feature.name}:missing")
        return names

    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Model inputs for validated rows: standardised numerics, one-hot categories,
        a missing-indicator per nullable feature (a missing numeric becomes the mean)."""
        if self._all_plain_numeric():
            return self._transform_numeric(frame)
        columns: list[np.ndarray] = []
        for feature in self.schema.features:
            column = frame[feature.name]
            if isinstance(feature, NumericFeature):
                u = _unit(column.to_numpy(dtype=float), feature)
                missing = np.isnan(u)
                scale = self.scaling[feature.name]
                z = np.where(missing, 0.0, (u - scale.mean) / scale.std)
                columns.append(z)
            else:
                assert isinstance(feature, CategoricalFeature)
                values = column.to_numpy(dtype=object)
                missing = pd.isna(values)
                columns += [(values == c).astype(float) for c in feature.categories]
            if feature.nullable:
                columns.append(missing.astype(float))
        matrix: np.ndarray = np.stack(columns, axis=1).astype(np.float32)
        return matrix

    def _all_plain_numeric(self) -> bool:
        return all(isinstance(f, NumericFeature) and not f.nullable for f in self.schema.features)

    def _transform_numeric(self, frame: pd.DataFrame) -> np.ndarray:
        """``transform`` for numeric, never-missing features (images): one array operation,
        not one per column (784 columns of pandas work per call, otherwise)."""
        features = [f for f in self.schema.features if isinstance(f, NumericFeature)]
        low = np.array([f.range[0] for f in features])
        high = np.array([f.range[1] for f in features])
        mean = np.array([self.scaling[f.name].mean for f in features])
        std = np.array([self.scaling[f.name].std for f in features])
        values = frame[[f.name for f in features]].to_numpy(dtype=float)
        u = np.clip((values - low) / (high - low), 0.0, 1.0)
        matrix: np.ndarray = ((u - mean) / std).astype(np.float32)
        return matrix

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        """Class indices of the target column."""
        index = {label: i for i, label in enumerate(self.schema.target.labels)}
        labels: np.ndarray = frame[self.schema.target.name].map(index).to_numpy(dtype=np.int64)
        return labels

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.model_dump(mode="json"),
            "scaling": {k: [v.mean, v.std] for k, v in self.scaling.items()},
            "label_shares": list(self.label_shares),
        }

    @classmethod
    def from_json(cls, text: str) -> PreprocessingSpec:
        """The spec in ``text`` (the last few parsed are kept: every message of a run
        carries the same one, and an image's schema has hundreds of features)."""
        return _spec_from_json(text)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessingSpec:
        return cls(
            schema=TableSchema.model_validate(data["schema"]),
            scaling={k: NumericScaling(mean=v[0], std=v[1]) for k, v in data["scaling"].items()},
            label_shares=tuple(data["label_shares"]),
        )


@functools.lru_cache(maxsize=4)
def _spec_from_json(text: str) -> PreprocessingSpec:
    return PreprocessingSpec.from_dict(json.loads(text))
