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

from client.models import MODELS, ModelSpec
from client.preprocessing import PreprocessingSpec
from privacy.config import DPConfig
from privacy.errors import ConfigError, UnknownNameError

TASK_KEY = "fw.task"
TASK_SUMMARY = "summary"
TASK_TRAIN = "train"
TASK_EVALUATE = "evaluate"
TASK_INIT = "init"
TASK_PROFILE = "profile"
PROFILE_NOISE_KEY = "fw.profile-noise-multiplier"


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

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise UnknownNameError("model", self.model, MODELS)
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
        if self.profile_noise_multiplier is not None and not (
            self.profile_noise_multiplier > 0 and math.isfinite(self.profile_noise_multiplier)
        ):
            raise ConfigError(
                f"profile noise multiplier must be > 0, got {self.profile_noise_multiplier}"
            )

    @property
    def effective_update_clip_norm(self) -> float:
        """Bound on the L2 norm of an institution's update.

        Defaults to the largest norm the non-noise part of DP-SGD can reach:
        ``learning_rate * max_grad_norm`` per step, over the steps of one epoch
        at this sample rate, times the local epochs.
        """
        if self.update_clip_norm is not None:
            return self.update_clip_norm
        steps = self.local_epochs * max(1, int(1 / self.sample_rate))
        return self.learning_rate * self.dp.max_grad_norm * steps

    def to_config(self) -> dict[str, Any]:
        """Flat ``fw.*`` keys for Flower's config records."""
        dp = self.dp
        return {
            "fw.model": self.model,
            "fw.hidden": self.hidden,
            "fw.num-rounds": self.num_rounds,
            "fw.local-epochs": self.local_epochs,
            "fw.learning-rate": self.learning_rate,
            "fw.sample-rate": self.sample_rate,
            "fw.seed": self.seed,
            "fw.update-clip-norm": self.effective_update_clip_norm,
            "fw.uniform-weights": self.uniform_weights,
            "fw.dp": dp.enabled,
            "fw.noise-multiplier": -1.0 if dp.noise_multiplier is None else dp.noise_multiplier,
            "fw.target-epsilon": -1.0 if dp.target_epsilon is None else dp.target_epsilon,
            "fw.max-grad-norm": dp.max_grad_norm,
            "fw.target-delta": dp.target_delta,
            "fw.accountant": dp.accountant,
            PROFILE_NOISE_KEY: (
                -1.0 if self.profile_noise_multiplier is None else self.profile_noise_multiplier
            ),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainingPlan:
        """Parse the ``fw.*`` keys; a missing or malformed key raises ``ConfigError``."""
        try:
            noise = float(config["fw.noise-multiplier"])
            target = float(config["fw.target-epsilon"])
            profile_noise = float(config.get(PROFILE_NOISE_KEY, -1.0))
            return cls(
                model=str(config["fw.model"]),
                hidden=int(config["fw.hidden"]),
                num_rounds=int(config["fw.num-rounds"]),
                local_epochs=int(config["fw.local-epochs"]),
                learning_rate=float(config["fw.learning-rate"]),
                sample_rate=float(config["fw.sample-rate"]),
                seed=int(config["fw.seed"]),
                update_clip_norm=float(config["fw.update-clip-norm"]),
                uniform_weights=bool(config["fw.uniform-weights"]),
                dp=DPConfig(
                    enabled=bool(config["fw.dp"]),
                    noise_multiplier=None if noise < 0 else noise,
                    target_epsilon=None if target < 0 else target,
                    max_grad_norm=float(config["fw.max-grad-norm"]),
                    target_delta=float(config["fw.target-delta"]),
                    accountant=str(config["fw.accountant"]),
                ),
                profile_noise_multiplier=None if profile_noise <= 0 else profile_noise,
            )
        except KeyError as exc:
            raise ConfigError(f"round config lacks {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"round config is malformed: {exc}") from exc

    def model_spec(self, preprocessing: PreprocessingSpec) -> ModelSpec:
        """The architecture this plan trains on data preprocessed by ``preprocessing``."""
        return ModelSpec(
            name=self.model,
            num_features=preprocessing.num_outputs,
            num_classes=len(preprocessing.schema.target.labels),
            hidden=self.hidden,
            image_shape=_image_shape(preprocessing),
        )


def _image_shape(preprocessing: PreprocessingSpec) -> tuple[int, int] | None:
    shape = preprocessing.schema.image_shape
    if shape is None or math.prod(shape) != preprocessing.num_outputs:
        return None
    return shape
