"""The training plan the coordinator sends with each round, and its wire format.

The coordinator decides the plan (model, rounds, learning rate, DP settings);
each institution decides its own data, device and budget, and enforces the
budget whatever the plan says. ``TrainingPlan`` travels inside Flower's
``FitIns``/``EvaluateIns`` config as flat ``fw.*`` keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from client.contract.architecture import MODEL_NAMES, ModelSpec
from client.contract.preprocessing import PreprocessingSpec
from client.contract.wire import PROFILE_NOISE_KEY
from privacy.config import DPConfig, check_release_noise
from privacy.errors import ConfigError, UnknownNameError
from privacy.sampling import batches_per_epoch


@dataclass(frozen=True, kw_only=True)
class TrainingPlan:
    """What every institution runs in a round."""

    model: str = "logreg"
    hidden: int = 32
    num_rounds: int = 5
    local_epochs: int = 1
    learning_rate: float = 1.0
    sample_rate: float = 0.2
    seed: int = 0
    update_clip_norm: float | None = None
    uniform_weights: bool = False
    dp: DPConfig = field(default_factory=DPConfig)
    profile_noise_multiplier: float | None = None
    """σ of the noisy reference profile released after the last round, if the run makes
    one: derived training noise leaves room for it in each institution's budget."""
    summary_noise_multiplier: float | None = None
    """σ of the noisy preprocessing summary released before the first round (relative to
    one row's contribution); ``None`` asks for an exact one, which a node sends only where
    its own policy allows."""
    reproducible: bool = False
    """The run asks for seeded DP randomness (``insecure-reproducible``): a node honours it
    only where its own policy allows, and then its noise is predictable from the seed."""

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise UnknownNameError("model", self.model, MODEL_NAMES)
        if self.hidden < 1:
            raise ConfigError(f"hidden units must be >= 1, got {self.hidden}")
        if self.num_rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.num_rounds}")
        if self.local_epochs < 1:
            raise ConfigError(f"local epochs must be >= 1, got {self.local_epochs}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"learning rate must be > 0, got {self.learning_rate}")
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"sample rate must be in (0, 1], got {self.sample_rate}")
        if self.update_clip_norm is not None and not self.update_clip_norm > 0:
            raise ConfigError(f"update clip norm must be > 0, got {self.update_clip_norm}")
        check_release_noise(self.profile_noise_multiplier, release="profile")
        check_release_noise(self.summary_noise_multiplier, release="summary")

    @property
    def effective_update_clip_norm(self) -> float:
        """Bound on the L2 norm of an institution's update.

        Defaults to the largest norm the non-noise part of DP-SGD can reach:
        ``learning_rate * max_grad_norm`` per step, over the steps of one epoch
        at this sample rate, times the local epochs.
        """
        if self.update_clip_norm is not None:
            return self.update_clip_norm
        steps = self.local_epochs * batches_per_epoch(self.sample_rate)
        return self.learning_rate * self.dp.max_grad_norm * steps

    def to_config(self) -> dict[str, Any]:
        """Flat ``fw.*`` keys for Flower's config records (``None`` travels as -1)."""
        values = {
            **{name: getattr(self, name) for name in _PLAN_FIELDS},
            **{name: getattr(self.dp, name) for name in _DP_FIELDS},
            "update_clip_norm": self.effective_update_clip_norm,
            "dp": self.dp.enabled,
        }
        return {
            _key(name): -1.0 if value is None else value for name, value in values.items()
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainingPlan:
        """Parse the ``fw.*`` keys; a missing or malformed key raises ``ConfigError``."""
        try:
            required = [n for n in (*_PLAN_FIELDS, *_DP_FIELDS, "dp") if n not in _DEFAULTED]
            raw = {name: config[_key(name)] for name in required}
            raw["profile_noise_multiplier"] = config.get(PROFILE_NOISE_KEY, -1.0)
            raw["reproducible"] = config.get(_key("reproducible"), False)
            raw["summary_noise_multiplier"] = config.get(_key("summary_noise_multiplier"), -1.0)
            values = {name: _TYPES[name](value) for name, value in raw.items()}
        except KeyError as exc:
            raise ConfigError(f"round config lacks {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"round config is malformed: {exc}") from exc
        for name in _OPTIONAL:
            if values[name] <= 0:
                values[name] = None
        dp = DPConfig(enabled=values.pop("dp"), **{name: values.pop(name) for name in _DP_FIELDS})
        return cls(**values, dp=dp)

    def model_spec(self, preprocessing: PreprocessingSpec) -> ModelSpec:
        """The architecture this plan trains on data preprocessed by ``preprocessing``."""
        return ModelSpec(
            name=self.model,
            num_features=preprocessing.num_outputs,
            num_classes=len(preprocessing.schema.target.labels),
            hidden=self.hidden,
            image_shape=_image_shape(preprocessing),
        )


_PLAN_FIELDS = (
    "model",
    "hidden",
    "num_rounds",
    "local_epochs",
    "learning_rate",
    "sample_rate",
    "seed",
    "update_clip_norm",
    "uniform_weights",
    "profile_noise_multiplier",
    "summary_noise_multiplier",
    "reproducible",
)
_DP_FIELDS = ("noise_multiplier", "target_epsilon", "max_grad_norm", "target_delta", "accountant")
_DEFAULTED = ("profile_noise_multiplier", "summary_noise_multiplier", "reproducible")
"""Fields an older coordinator may not send."""
_OPTIONAL = (
    "noise_multiplier",
    "target_epsilon",
    "profile_noise_multiplier",
    "summary_noise_multiplier",
)
"""Fields where ``None`` ("not set") travels as -1."""
_TYPES: dict[str, Any] = {
    "model": str,
    "hidden": int,
    "num_rounds": int,
    "local_epochs": int,
    "learning_rate": float,
    "sample_rate": float,
    "seed": int,
    "update_clip_norm": float,
    "uniform_weights": bool,
    "profile_noise_multiplier": float,
    "summary_noise_multiplier": float,
    "reproducible": bool,
    "noise_multiplier": float,
    "target_epsilon": float,
    "max_grad_norm": float,
    "target_delta": float,
    "accountant": str,
    "dp": bool,
}


def _key(name: str) -> str:
    """A plan field's key on the wire: ``num_rounds`` travels as ``fw.num-rounds``."""
    return "fw." + name.replace("_", "-")


def _image_shape(preprocessing: PreprocessingSpec) -> tuple[int, int] | None:
    shape = preprocessing.schema.image_shape
    if shape is None or math.prod(shape) != preprocessing.num_outputs:
        return None
    return shape
