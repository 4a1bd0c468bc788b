"""An institution's preprocessing summary: per-row averages of its training rows, noised.

The summary is what the coordinator fits the federation's scaling from (before the
first round). It is a sum over rows, so it is released like any other: with Gaussian
noise of σ times one row's contribution bound (``summary_sensitivity``), checked
against the institution's budget first and recorded in its history, then divided by
the row count and clipped (post-processing). An exact summary leaves only where the
node's own policy allows it.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass, replace

import numpy as np

from client.contract.preprocessing import summarize, summary_sensitivity
from client.contract.profile import PROFILE_NOISY_RANGE
from client.contract.report import FitReport
from client.data import InstitutionData
from privacy.account import InstitutionAccount
from privacy.accounting import AccountingStep
from privacy.errors import BudgetExceededError, PolicyRefusalError
from privacy.policy import NodePolicy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SummaryReply:
    """What the institution sends: the (noisy) averages, their weight (0 if refused), a report."""

    shares: np.ndarray
    weight: int
    report: FitReport


def institution_summary(
    *,
    data: InstitutionData,
    published_rows: int,
    noise_multiplier: float | None,
    report: FitReport,
    account: InstitutionAccount,
    policy: NodePolicy,
    seed: int | None = None,
) -> SummaryReply:
    """The institution's summary under ``noise_multiplier`` (``None``: exact, if allowed).

    The noise comes from the OS's secure source, unless ``seed`` is given (a reproducible
    run the node's policy allows). The noisy sum is divided by ``published_rows``, the
    node's noisy count of its training rows (``client.count_release``), which is also its
    weight: the coordinator's weighted average is the federation's noisy sum over its
    published rows, and no exact count leaves.
    """
    rows = len(data.train)
    exact = summarize(data.train, data.schema)
    sensitivity = summary_sensitivity(data.schema)
    report = replace(report, num_examples=published_rows, max_grad_norm=sensitivity)
    refused = np.zeros_like(exact)
    if noise_multiplier is None:
        try:
            policy.check_exact_release("preprocessing summary", institution=data.name)
        except PolicyRefusalError as exc:
            logger.warning("%s", exc)
            return SummaryReply(refused, 0, replace(report, refused=True, reason=str(exc)))
        return SummaryReply(exact, published_rows, report)
    step = AccountingStep(noise_multiplier=noise_multiplier, sample_rate=1.0, steps=1)
    try:
        account.check([step])
    except BudgetExceededError as exc:
        logger.warning("%s refuses to send its summary: %s", data.name, exc)
        return SummaryReply(
            refused,
            0,
            replace(
                report, refused=True, reason=str(exc), epsilon=exc.epsilon_spent, num_examples=0
            ),
        )
    rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)
    noisy_sum = exact * rows + rng.normal(0.0, noise_multiplier * sensitivity, exact.shape)
    epsilon = account.record([step])
    shares = np.clip(noisy_sum / published_rows, -PROFILE_NOISY_RANGE, PROFILE_NOISY_RANGE)
    logger.info(
        "%s sends a noisy summary (σ %.3g): ε now %.4g", data.name, noise_multiplier, epsilon
    )
    spent = replace(
        report,
        epsilon=epsilon if report.dp else math.inf,
        noise_multiplier=noise_multiplier,
        sample_rate=1.0,
        steps=1,
    )
    return SummaryReply(shares, published_rows, spent)
