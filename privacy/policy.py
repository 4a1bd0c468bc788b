"""An institution's own privacy policy: what its node will do, whatever a run asks.

The coordinator proposes (the run configuration, the plan in every instruction);
the node's operator disposes. ``NodePolicy`` is read from the node's own config
(``fedwarden client join`` flags, or a policy file), never from a message, and
every task is checked against it before any row is read (``check_task``).
In ``fedwarden simulate`` the user is every party, so its flags set the simulated
nodes' policies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from privacy.errors import ConfigError, PolicyRefusalError

TASKS = frozenset({"train", "evaluate", "summary", "profile", "init"})
"""What a coordinator can ask a node to do (``client.contract.wire``'s task names)."""

DEFAULT_COUNT_NOISE = 20.0
"""σ, in rows, of the noise on a node's published row counts."""


@dataclass(frozen=True, kw_only=True)
class NodePolicy:
    """What an institution allows, set by its operator.

    Parameters
    ----------
    allow_non_dp : bool
        Train a round without DP-SGD when a run asks for it (default: never).
    min_noise_multiplier : float
        The lowest DP-SGD noise multiplier σ the node accepts, whatever a run asks.
    allow_reproducible : bool
        Seed the node's DP randomness from the run's public seed when a run asks
        for a reproducible run (``--insecure-reproducible``): anyone who knows the
        seed can then recompute the noise. Default: the node draws it from the OS.
    allow_exact_releases : bool
        Send an exact (noise-free) preprocessing summary or reference profile when a
        run asks for one (default: never; each is an aggregate of the rows).
    tasks : frozenset[str]
        The tasks the node answers at all.
    allow_clear_evaluation : bool
        Send its own evaluation (accuracy and loss on its held-out rows) outside a secure
        sum, when a run has no secure aggregation (default: never).
    count_noise_multiplier : float
        σ, in rows, of the Gaussian noise on the row counts the node publishes (its
        training and held-out rows, drawn once per run and accounted: exact counts
        are a statistic of the rows under add-or-remove-one neighbours).
    """

    allow_non_dp: bool = False
    min_noise_multiplier: float = 0.3
    allow_reproducible: bool = False
    allow_exact_releases: bool = False
    tasks: frozenset[str] = field(default_factory=lambda: TASKS)
    allow_clear_evaluation: bool = False
    count_noise_multiplier: float = DEFAULT_COUNT_NOISE

    def __post_init__(self) -> None:
        if not (self.count_noise_multiplier > 0 and math.isfinite(self.count_noise_multiplier)):
            raise ConfigError(
                f"the row counts' noise multiplier must be > 0, got {self.count_noise_multiplier}"
            )
        if not (self.min_noise_multiplier >= 0 and math.isfinite(self.min_noise_multiplier)):
            raise ConfigError(
                f"the lowest accepted noise multiplier must be >= 0, got "
                f"{self.min_noise_multiplier}"
            )
        unknown = sorted(set(self.tasks) - TASKS)
        if unknown:
            raise ConfigError(
                f"unknown task(s) in the node policy: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(TASKS))}"
            )

    def check_task(self, task: str, *, institution: str) -> None:
        """Refuse a task the node does not answer."""
        if task not in self.tasks:
            raise PolicyRefusalError(
                f"{institution} does not answer {task!r} tasks (its policy allows: "
                f"{', '.join(sorted(self.tasks))})",
                institution=institution,
                task=task,
            )

    def check_training(
        self, *, dp: bool, noise_multiplier: float | None, institution: str
    ) -> None:
        """Refuse a round without DP unless allowed, and noise below the node's floor."""
        if not dp:
            if not self.allow_non_dp:
                raise PolicyRefusalError(
                    f"{institution} refuses to train without differential privacy (its "
                    "policy does not allow non-DP rounds)",
                    institution=institution,
                )
            return
        if noise_multiplier is not None and noise_multiplier < self.min_noise_multiplier:
            raise PolicyRefusalError(
                f"{institution} refuses a noise multiplier of {noise_multiplier:.4g}: its "
                f"policy's lowest is {self.min_noise_multiplier:.4g}",
                institution=institution,
                noise_multiplier=noise_multiplier,
            )

    def check_exact_release(self, what: str, *, institution: str) -> None:
        """Refuse an exact (noise-free) aggregate of the rows unless allowed."""
        if not self.allow_exact_releases:
            raise PolicyRefusalError(
                f"{institution} refuses to send an exact {what}: its policy allows only "
                "noised releases (a run asks for noise with summary-noise-multiplier / "
                "profile-noise-multiplier)",
                institution=institution,
                release=what,
            )
