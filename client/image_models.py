"""A CNN built for DP-SGD: tanh activations and GroupNorm, no batch statistics.

The architecture is Papernot et al.'s (2021, "Tempered sigmoid activations for
deep learning with differential privacy") MNIST CNN, the end-to-end CNN that
Tramèr & Boneh (2021, "Differentially private learning needs better features")
use for Fashion-MNIST: two strided convolutions, each followed by tanh and a
2x2 max-pool of stride 1, then a 32-unit tanh layer. Bounded activations keep
per-sample gradients small, so less of them is lost to clipping; GroupNorm
(per sample, unlike batch norm) is compatible with per-sample gradients.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from privacy.errors import ConfigError

if TYPE_CHECKING:
    from client.contract.architecture import ModelSpec


class DpCnn(nn.Module):
    """Papernot/Tramèr-Boneh tanh CNN with GroupNorm, for single-channel images."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.image_shape is None or math.prod(spec.image_shape) != spec.num_features:
            raise ConfigError(
                "model 'dpcnn' needs a dataset whose schema declares an image shape "
                "matching its features (e.g. fashion-mnist)",
                image_shape=spec.image_shape,
            )
        height, width = spec.image_shape
        if min(height, width) < 16:
            raise ConfigError(
                f"model 'dpcnn' needs images of at least 16x16 pixels, got {height}x{width} "
                "(use 'cnn' for small images such as digits)"
            )
        self.image_shape = (1, height, width)
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=8, stride=2, padding=3),
            nn.GroupNorm(4, 16),
            nn.Tanh(),
            nn.MaxPool2d(2, stride=1),
            nn.Conv2d(16, 32, kernel_size=4, stride=2),
            nn.GroupNorm(8, 32),
            nn.Tanh(),
            nn.MaxPool2d(2, stride=1),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *self.image_shape)).numel()
        self.head = nn.Sequential(nn.Linear(flat, 32), nn.Tanh(), nn.Linear(32, spec.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(x.shape[0], *self.image_shape)
        return self.head(self.features(images).flatten(1))  # type: ignore[no-any-return]
