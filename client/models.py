"""Models by name: logistic regression and a small MLP for tables, CNNs for images.

``cnn`` is a small ReLU CNN for 8x8 digits; ``dpcnn`` (``client.image_models``)
is the tanh/GroupNorm CNN of the DP-SGD literature for 28x28 images.

``ModelSpec`` (the torch-free description both sides exchange) lives in
``client.contract.architecture``; this module builds the torch modules from it.

Every model takes the preprocessed feature matrix ``(batch, num_features)`` and
returns class logits; all are compatible with Opacus (no batch norm).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from client.contract.architecture import MODEL_NAMES, ModelSpec
from privacy.errors import ConfigError


class LogisticRegression(nn.Module):
    """Multinomial logistic regression with the first class as reference.

    Only ``num_classes - 1`` logits are free (the first is fixed at 0): the
    identifiable parametrisation. For two classes it is binary logistic
    regression, with half the parameters (and half the DP noise) of a softmax
    over two free logits, and per-sample gradients a factor √2 smaller, so less
    of them is lost to clipping.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.linear = nn.Linear(spec.num_features, spec.num_classes - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        free = self.linear(x)
        return torch.cat([torch.zeros_like(free[:, :1]), free], dim=1)


class Mlp(nn.Module):
    """Two hidden ReLU layers of ``spec.hidden`` units."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(spec.num_features, spec.hidden),
            nn.ReLU(),
            nn.Linear(spec.hidden, spec.hidden),
            nn.ReLU(),
            nn.Linear(spec.hidden, spec.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # type: ignore[no-any-return]


class SmallCnn(nn.Module):
    """Two 3x3 convolutions and a linear head for small single-channel images."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.image_shape is None or math.prod(spec.image_shape) != spec.num_features:
            raise ConfigError(
                "model 'cnn' needs a dataset whose schema declares an image shape "
                "matching its features (e.g. digits)",
                image_shape=spec.image_shape,
            )
        height, width = spec.image_shape
        self.image_shape = (1, height, width)
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(32 * (height // 2) * (width // 2), spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(x.shape[0], *self.image_shape)
        return self.head(self.features(images).flatten(1))  # type: ignore[no-any-return]


def _dp_cnn(spec: ModelSpec) -> nn.Module:
    from client.image_models import DpCnn

    return DpCnn(spec)


MODELS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "logreg": LogisticRegression,
    "mlp": Mlp,
    "cnn": SmallCnn,
    "dpcnn": _dp_cnn,
}
"""The architectures by name; the names are the contract's ``MODEL_NAMES``."""
assert tuple(MODELS) == MODEL_NAMES, "client.models and the contract name different models"


IMAGE_MODELS = ("cnn", "dpcnn")
"""Models that read a row as an image (the schema must declare its shape)."""


def build_model(spec: ModelSpec, *, seed: int | None = None) -> nn.Module:
    """A fresh model for ``spec``; a given ``seed`` makes its initial weights reproducible."""
    if seed is None:
        return MODELS[spec.name](spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[spec.name](spec)


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's state as numpy arrays, in state-dict order."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load arrays (in state-dict order) into ``model``; shapes must match exactly."""
    state = model.state_dict()
    if len(weights) != len(state):
        raise ConfigError(f"expected {len(state)} arrays, got {len(weights)}")
    new_state = {}
    for (key, current), array in zip(state.items(), weights, strict=True):
        if tuple(array.shape) != tuple(current.shape):
            raise ConfigError(
                f"array for {key!r} has shape {tuple(array.shape)}, expected {tuple(current.shape)}"
            )
        new_state[key] = torch.as_tensor(np.asarray(array), dtype=current.dtype)
    model.load_state_dict(new_state)
