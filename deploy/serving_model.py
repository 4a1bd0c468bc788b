"""The served model: raw feature values in, class probabilities out, in one graph.

``ServingModule`` puts the federation's preprocessing (``PreprocessingSpec``) in
front of the trained network, in torch operations that export to ONNX, so the
artifact takes values in the schema's own units: numeric features as floats
(NaN where missing), categorical features as category indices (-1 where
missing). ``encode_rows`` turns rows by feature name into those two arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from client.contract.preprocessing import PreprocessingSpec
from client.contract.schema import CategoricalFeature, NumericFeature
from deploy.validation import UNLIMITED, RowEncoder


class ServingModule(nn.Module):
    """``softmax(model(transform(rows)))`` where ``transform`` is ``spec.transform``."""

    low: torch.Tensor
    span: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    order: torch.Tensor

    def __init__(self, spec: PreprocessingSpec, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        numeric = [f for f in spec.schema.features if isinstance(f, NumericFeature)]
        categorical = [f for f in spec.schema.features if isinstance(f, CategoricalFeature)]
        self.num_numeric = len(numeric)
        self.num_categorical = len(categorical)
        self.register_buffer("low", _tensor([f.range[0] for f in numeric]))
        self.register_buffer("span", _tensor([f.range[1] - f.range[0] for f in numeric]))
        self.register_buffer("mean", _tensor([spec.scaling[f.name].mean for f in numeric]))
        self.register_buffer("std", _tensor([spec.scaling[f.name].std for f in numeric]))
        self.category_counts = [len(f.categories) for f in categorical]
        # Blocks are built grouped by kind, then reordered to the spec's column order.
        names = [f.name for f in numeric]
        names += [f"{f.name}:missing" for f in numeric]
        for feature in categorical:
            names += [f"{feature.name}={c}" for c in feature.categories]
        names += [f"{f.name}:missing" for f in categorical]
        position = {name: i for i, name in enumerate(names)}
        order = [position[name] for name in spec.output_names]
        self.register_buffer("order", torch.tensor(order, dtype=torch.long))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        blocks = []
        if self.num_numeric:
            unit = torch.clamp((numeric - self.low) / self.span, 0.0, 1.0)
            missing = torch.isnan(numeric)
            z = (unit - self.mean) / self.std
            blocks += [torch.where(missing, torch.zeros_like(z), z), missing.to(numeric.dtype)]
        if self.num_categorical:
            hot = [
                (categorical[:, j : j + 1] == torch.arange(count, device=categorical.device))
                for j, count in enumerate(self.category_counts)
            ]
            blocks += [h.to(torch.float32) for h in hot]
            blocks.append((categorical < 0).to(torch.float32))
        features = torch.cat(blocks, dim=1).index_select(1, self.order)
        return torch.softmax(self.model(features), dim=1)


def _tensor(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float32).reshape(1, -1)


def encode_rows(
    rows: Sequence[Mapping[str, Any]], spec: PreprocessingSpec
) -> tuple[np.ndarray, np.ndarray]:
    """``numeric`` (float32, NaN = missing) and ``categorical`` (int64, -1 = missing) arrays,
    through the same checks the inference API applies (``deploy.validation``)."""
    return RowEncoder(spec.schema).encode(rows, limits=UNLIMITED)


def frame_to_rows(frame: Any, spec: PreprocessingSpec) -> list[dict[str, Any]]:
    """Validated table rows (as ``validate_frame`` returns them) as request-style dicts."""
    rows = []
    for record in frame[spec.schema.feature_names].to_dict(orient="records"):
        rows.append({k: (None if _missing(v) else v) for k, v in record.items()})
    return rows


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
