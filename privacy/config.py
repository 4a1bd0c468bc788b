"""Algorithm settings for privacy, as frozen dataclasses validated at construction.

Privacy fails closed: an impossible setting raises ``ConfigError`` here, before
any data is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privacy.accounting import ACCOUNTANTS
from privacy.errors import ConfigError, UnknownNameError


def check_release_noise(noise_multiplier: float | None, *, release: str) -> None:
    """A Gaussian release's σ must be positive and finite (``None``: no noisy release).

    Raises
    ------
    ConfigError
        Otherwise, naming the release (``"profile"``).
    """
    if noise_multiplier is not None and not (
        noise_multiplier > 0 and math.isfinite(noise_multiplier)
    ):
        raise ConfigError(
            f"{release} noise multiplier must be > 0, got {noise_multiplier}",
            noise_multiplier=noise_multiplier,
        )


@dataclass(frozen=True, kw_only=True)
class PrivacyBudget:
    """An institution's total (ε, δ) budget for everything it trains."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not self.epsilon > 0 or math.isnan(self.epsilon):
            raise ConfigError(f"budget ε must be > 0, got {self.epsilon}", epsilon=self.epsilon)
        if not 0 < self.delta < 1:
            raise ConfigError(f"budget δ must be in (0, 1), got {self.delta}", delta=self.delta)


@dataclass(frozen=True, kw_only=True)
class DPConfig:
    """Settings of local DP-SGD.

    Either ``noise_multiplier`` is given, or it is derived per institution so that
    the whole run (``num_rounds`` × local steps) spends ``target_epsilon``; when
    neither is given the institution's budget ε is the target.

    Parameters
    ----------
    enabled : bool
        ``False`` trains without privacy (a baseline); ε is then reported as infinite.
    noise_multiplier : float | None
        σ, the Gaussian noise standard deviation relative to ``max_grad_norm``.
    target_epsilon : float | None
        ε the whole run should spend at ``target_delta``; used to derive σ.
    max_grad_norm : float
        Per-sample gradient clipping bound C.
    target_delta : float
        δ at which ε is reported and budgets are enforced.
    accountant : str
        ``"prv"`` or ``"rdp"``.
    """

    enabled: bool = True
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    target_delta: float = 1e-5
    accountant: str = "prv"

    def __post_init__(self) -> None:
        if self.noise_multiplier is not None and (
            self.noise_multiplier < 0 or math.isnan(self.noise_multiplier)
        ):
            raise ConfigError(
                f"noise multiplier must be >= 0, got {self.noise_multiplier}",
                noise_multiplier=self.noise_multiplier,
            )
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ConfigError(
                f"target ε must be > 0, got {self.target_epsilon}",
                target_epsilon=self.target_epsilon,
            )
        if not self.max_grad_norm > 0:
            raise ConfigError(
                f"max grad norm must be > 0, got {self.max_grad_norm}",
                max_grad_norm=self.max_grad_norm,
            )
        if not 0 < self.target_delta < 1:
            raise ConfigError(
                f"δ must be in (0, 1), got {self.target_delta}", target_delta=self.target_delta
            )
        if self.accountant not in ACCOUNTANTS:
            raise UnknownNameError("accountant", self.accountant, ACCOUNTANTS)
        if self.enabled and self.noise_multiplier == 0:
            raise ConfigError(
                "a noise multiplier of 0 gives no privacy; use --no-dp to train without DP",
                noise_multiplier=0.0,
            )
