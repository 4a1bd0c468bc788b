"""A model's architecture as the federation describes it: a name and its sizes, no torch.

The coordinator, the registry and the exporter pass ``ModelSpec`` around;
``client.models`` builds the torch module it names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from privacy.errors import ConfigError, UnknownNameError

MODEL_NAMES = ("logreg", "mlp", "cnn", "dpcnn")
"""The architectures ``client.models`` can build."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything needed to rebuild a model's architecture (its weights travel apart)."""

    name: str
    num_features: int
    num_classes: int
    hidden: int = 32
    image_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise UnknownNameError("model", self.name, MODEL_NAMES)
        if self.num_features < 1 or self.num_classes < 2 or self.hidden < 1:
            raise ConfigError(
                f"model {self.name!r} needs >= 1 feature, >= 2 classes and a hidden size >= 1",
                num_features=self.num_features,
                num_classes=self.num_classes,
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        shape = data.get("image_shape")
        return cls(**{**data, "image_shape": tuple(shape) if shape is not None else None})
