"""The institution's side of a reference profile: its training rows and its model's predictions.

The coordinator sends the final global weights with the plan and the
preprocessing; the institution runs the model on its own training rows, counts
every block of ``client.contract.profile.ProfileLayout`` and replies with per-row shares.

With a noise multiplier σ the institution adds Gaussian noise of standard
deviation ``σ * sqrt(blocks)`` to its counts before dividing (the Gaussian
mechanism on a count vector whose L2 sensitivity to adding or removing one row
is ``sqrt(blocks)``), after checking that one more such release keeps it within
its budget: it is accounted as one step at sample rate 1 in the institution's
own history, composed with its DP-SGD steps. Without σ the shares are exact,
like the preprocessing summary: protected by secure aggregation only.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass

import numpy as np
import torch

from client.contract.plan import TrainingPlan
from client.contract.preprocessing import PreprocessingSpec
from client.contract.profile import (
    PROFILE_NOISY_RANGE,
    encode_frame,
    federation_layout,
    profile_shares,
)
from client.contract.report import FitReport
from client.contract.wire import PROFILE_NOISE_KEY
from client.data import InstitutionData
from client.models import build_model, set_weights
from privacy.account import InstitutionAccount
from privacy.accounting import AccountingStep
from privacy.errors import BudgetExceededError, ConfigError, PolicyRefusalError
from privacy.policy import NodePolicy

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class ProfileReply:
    """What the institution sends: shares, their weight (its rows; 0 if refused), its report."""

    shares: np.ndarray
    weight: int
    report: FitReport


def noise_multiplier_of(config: dict[str, object]) -> float | None:
    """σ for the profile's counts from the task config (absent or negative: no noise)."""
    value = config.get(PROFILE_NOISE_KEY, -1.0)
    try:
        sigma = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{PROFILE_NOISE_KEY} must be a number, got {value!r}") from exc
    if math.isnan(sigma):
        raise ConfigError(f"{PROFILE_NOISE_KEY} is NaN")
    return sigma if sigma > 0 else None


def model_probabilities(
    *,
    plan: TrainingPlan,
    spec: PreprocessingSpec,
    weights: list[np.ndarray],
    data: InstitutionData,
    device: torch.device,
) -> np.ndarray:
    """Class probabilities of the global model on the institution's training rows."""
    model = build_model(plan.model_spec(spec)).to(device)
    set_weights(model, weights)
    model.eval()
    with torch.no_grad():
        inputs = torch.as_tensor(spec.transform(data.train), device=device)
        probabilities = torch.softmax(model(inputs), dim=1)
    result: np.ndarray = probabilities.cpu().numpy().astype(np.float32)
    return result


def institution_profile(
    *,
    data: InstitutionData,
    published_rows: int,
    probabilities: np.ndarray,
    report: FitReport,
    noise_multiplier: float | None,
    account: InstitutionAccount,
    policy: NodePolicy,
    seed: int | None = None,
) -> ProfileReply:
    """Count the institution's training rows and predictions; add noise if asked.

    Parameters
    ----------
    data : InstitutionData
        The institution's rows; only the training rows are profiled.
    published_rows : int
        The node's noisy count of its training rows (``client.count_release``): the
        shares are counts over it, and it is the reply's weight.
    probabilities : np.ndarray
        The global model's class probabilities on those rows.
    report : FitReport
        The report to fill (institution, round, δ, budget).
    noise_multiplier : float, optional
        σ of the Gaussian noise relative to the counts' L2 sensitivity; ``None``
        sends exact shares.
    account : InstitutionAccount
        The institution's privacy account: a noisy release is checked against
        the budget first and then recorded.
    """
    layout = federation_layout(data.schema)
    numeric, categorical = encode_frame(data.train, data.schema)
    index = {label: i for i, label in enumerate(data.schema.target.labels)}
    labels = data.train[data.schema.target.name].map(index).to_numpy(dtype=np.int64)
    counts = layout.counts(numeric, categorical, probabilities, labels)
    rows = published_rows
    report = _with(report, num_examples=rows, max_grad_norm=layout.sensitivity)
    if noise_multiplier is None:
        try:
            policy.check_exact_release("reference profile", institution=data.name)
        except PolicyRefusalError as exc:
            logger.warning("%s", exc)
            refused = _with(report, refused=True, reason=str(exc), num_examples=0)
            return ProfileReply(np.zeros(layout.size), 0, refused)
        # An exact profile (the operator's consent) is exact throughout: its own rows.
        exact_rows = len(data.train)
        return ProfileReply(
            profile_shares(layout, counts, exact_rows),
            exact_rows,
            _with(report, num_examples=exact_rows),
        )

    step = AccountingStep(noise_multiplier=noise_multiplier, sample_rate=1.0, steps=1)
    try:
        account.check([step])
    except BudgetExceededError as exc:
        reason = (
            f"releasing a noisy profile would raise ε from {exc.epsilon_spent:.4g} to "
            f"{exc.epsilon_projected:.4g}, past the budget of {exc.epsilon_budget:.4g}"
        )
        logger.warning("%s refuses to send its profile: %s", data.name, reason)
        refused = _with(
            report, refused=True, reason=reason, num_examples=0, epsilon=exc.epsilon_spent
        )
        return ProfileReply(np.zeros(layout.size), 0, refused)

    rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)
    noisy = counts + rng.normal(0.0, noise_multiplier * layout.sensitivity, size=counts.shape)
    epsilon = account.record([step])
    shares = np.clip(profile_shares(layout, noisy, rows), -PROFILE_NOISY_RANGE, PROFILE_NOISY_RANGE)
    logger.info(
        "%s sends a noisy profile (σ %.3g): ε now %.4g", data.name, noise_multiplier, epsilon
    )
    spent = _with(
        report,
        epsilon=epsilon if report.dp else math.inf,
        noise_multiplier=noise_multiplier,
        sample_rate=1.0,
        steps=1,
    )
    return ProfileReply(shares, rows, spent)


def _with(report: FitReport, **changes: object) -> FitReport:
    import dataclasses

    return dataclasses.replace(report, **changes)  # type: ignore[arg-type]
