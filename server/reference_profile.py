"""The coordinator's side of a run's reference profile: settings, the task it sends, the result.

After the last round the coordinator sends the final global weights with a
``profile`` task; each institution replies with per-row shares of its training
rows and of the model's predictions on them (``client.profile_release``), averaged by
rows through secure aggregation where the run uses it. The average times the
rows that contributed is the federation's count vector: no row, and no single
institution's histogram, reaches the coordinator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from client.contract.plan import TrainingPlan
from client.contract.profile import ReferenceProfile, federation_layout
from client.contract.report import FitReport
from client.contract.schema import TableSchema
from client.contract.wire import (
    PREPROCESSING_KEY,
    PROFILE_NOISE_KEY,
    ROUND_KEY,
    TASK_KEY,
    TASK_PROFILE,
)
from privacy.errors import ConfigError
from server.config import ProfileSettings

logger = logging.getLogger(__name__)


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
