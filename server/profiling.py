"""The coordinator's side of a run's reference profile: settings, the task it sends, the result.

After the last round the coordinator sends the final global weights with a
``profile`` task; each institution replies with per-row shares of its training
rows and of the model's predictions on them (``client.profiling``), averaged by
rows through secure aggregation where the run uses it. The average times the
rows that contributed is the federation's count vector: no row, and no single
institution's histogram, reaches the coordinator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.flower_client import PREPROCESSING_KEY, ROUND_KEY
from client.plan import PROFILE_NOISE_KEY, TASK_KEY, TASK_PROFILE, TrainingPlan
from client.profile import ReferenceProfile, federation_layout
from client.profiling import PROFILE_NOISY_RANGE
from client.report import FitReport
from client.schema import TableSchema
from privacy.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ProfileSettings:
    """Whether a run ends with a reference profile, and the DP noise on its counts.

    Parameters
    ----------
    enabled : bool
        Compute the profile after the last round (run config ``profile``).
    noise_multiplier : float, optional
        σ of the Gaussian noise each institution adds to its counts, relative
        to their L2 sensitivity (run config ``profile-noise-multiplier``);
        ``None`` sends exact counts, protected by secure aggregation only.
    """

    enabled: bool = True
    noise_multiplier: float | None = None

    def __post_init__(self) -> None:
        if self.noise_multiplier is not None and not (
            self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)
        ):
            raise ConfigError(
                f"profile noise multiplier must be > 0, got {self.noise_multiplier}",
                noise_multiplier=self.noise_multiplier,
            )

    @property
    def value_range(self) -> float:
        """Largest absolute share an institution sends (SecAgg+'s clipping range)."""
        return 1.0 if self.noise_multiplier is None else PROFILE_NOISY_RANGE


def profile_settings_from_run_config(run_config: Mapping[str, Any]) -> ProfileSettings:
    """``profile`` (default true) and ``profile-noise-multiplier`` ("" = none) of a run config."""
    enabled = run_config.get("profile", True)
    if isinstance(enabled, str):
        if enabled.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ConfigError(f"run config 'profile' must be true or false, got {enabled!r}")
        enabled = enabled.lower() in ("true", "1", "yes", "on")
    noise = run_config.get("profile-noise-multiplier", "")
    try:
        sigma = None if noise in ("", None) else float(noise)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"run config 'profile-noise-multiplier' must be float, got {noise!r}"
        ) from exc
    return ProfileSettings(enabled=bool(enabled), noise_multiplier=sigma)


def profile_task(
    *, plan: TrainingPlan, preprocessing: str, server_round: int, settings: ProfileSettings
) -> dict[str, Any]:
    """The config of the profile task (the weights travel as the instruction's parameters)."""
    return {
        **plan.to_config(),
        TASK_KEY: TASK_PROFILE,
        PREPROCESSING_KEY: preprocessing,
        ROUND_KEY: server_round,
        PROFILE_NOISE_KEY: -1.0 if settings.noise_multiplier is None else settings.noise_multiplier,
    }


def assemble_profile(
    *,
    schema: TableSchema,
    average: np.ndarray,
    rows: float,
    metrics: Sequence[Mapping[str, Any]],
    server_round: int,
    settings: ProfileSettings,
) -> tuple[ReferenceProfile | None, list[FitReport]]:
    """The federation's profile from the averaged shares, and each institution's report.

    ``rows`` is the sum of the weights that went into ``average``: the rows of
    the institutions that sent their shares (a refusal weighs 0). A report that
    cannot be read is logged and left out.
    """
    reports = []
    for item in metrics:
        try:
            reports.append(FitReport.from_metrics(dict(item)))
        except ConfigError as exc:
            logger.error("ignoring an unreadable profile report: %s", exc)
    contributors = [r for r in reports if not r.refused and r.num_examples > 0]
    for report in reports:
        if report.refused:
            logger.warning("%s sent no profile: %s", report.institution, report.reason)
    if rows <= 0:
        logger.warning("no institution contributed to the reference profile")
        return None, reports
    profile = federation_layout(schema).decode(
        average,
        rows=rows,
        noisy=settings.noise_multiplier is not None,
        round=server_round,
        institutions=tuple(sorted(r.institution for r in contributors)),
        noise_multiplier=settings.noise_multiplier,
    )
    logger.info("reference profile of %d rows from %s", rows, ", ".join(profile.institutions))
    return profile, reports
