"""Attack (b): a coordinator that differences the summaries, or the profiles, of two
federations whose data differ by one row sees that row only under noise of the declared
scale.

The coordinator's view of a federation's summary (or profile) is the sum of the
institutions' noisy sums (their shares times their published rows, which SecAgg+ sums).
Two federations identical but for one row differ by that row's contribution plus the
difference of two draws of the federation's noise: standardised by the declared scale
(σ × the release's sensitivity, per institution), the residual must look like N(0, 1).
The same check on exact releases (noise switched off) must fail: it is the check that
catches a release without noise.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from client.contract.preprocessing import summarize, summary_sensitivity
from client.contract.profile import encode_frame, federation_layout
from client.contract.report import FitReport
from client.contract.schema import validate_frame
from client.data import InstitutionData, holdout_split
from client.profile_release import institution_profile
from client.summary_release import institution_summary
from privacy.account import InstitutionAccount, MemoryHistory
from privacy.config import PrivacyBudget
from privacy.policy import NodePolicy
from tests.conftest import make_rows

TRIALS = 60
SUMMARY_SIGMA = 6.0
PROFILE_SIGMA = 12.0


def _federation(schema) -> list[InstitutionData]:
    return [
        holdout_split(f"I{k}", validate_frame(make_rows(240, seed=k), schema), schema, seed=0)
        for k in range(3)
    ]


def _without_last_row(data: InstitutionData) -> InstitutionData:
    return dataclasses.replace(data, train=data.train.iloc[:-1])


def _account(name: str) -> InstitutionAccount:
    return InstitutionAccount(
        institution=name,
        budget=PrivacyBudget(epsilon=1e6, delta=1e-5),
        history=MemoryHistory(),
        accountant="rdp",
    )


def _report(name: str) -> FitReport:
    return FitReport(institution=name, round=0, delta=1e-5, epsilon_budget=1e6)


def _probabilities(data: InstitutionData) -> np.ndarray:
    # a fixed "model": its predictions depend on each row's age only
    age = data.train["age"].to_numpy(dtype=float)
    p = np.clip((age - 20) / 70, 0, 1).astype(np.float32)
    return np.stack([1 - p, p], axis=1)


def summary_sum(federation: list[InstitutionData], sigma: float | None) -> np.ndarray:
    """What the coordinator unmasks: Σ published rows × shares = the federation's noisy sum."""
    policy = NodePolicy(allow_exact_releases=sigma is None)
    total = 0.0
    for data in federation:
        rows = len(data.train)
        reply = institution_summary(
            data=data, published_rows=rows, noise_multiplier=sigma,
            report=_report(data.name), account=_account(data.name), policy=policy,
        )
        total = total + reply.shares * rows
    return np.asarray(total)


def profile_sum(federation: list[InstitutionData], sigma: float | None) -> np.ndarray:
    policy = NodePolicy(allow_exact_releases=sigma is None)
    total = 0.0
    for data in federation:
        rows = len(data.train)
        reply = institution_profile(
            data=data, published_rows=rows, probabilities=_probabilities(data),
            report=_report(data.name), noise_multiplier=sigma,
            account=_account(data.name), policy=policy,
        )
        total = total + reply.shares * reply.weight
    return np.asarray(total)


def only_declared_noise(residuals: np.ndarray) -> bool:
    """Whether standardised residuals look like N(0, 1) (Kolmogorov–Smirnov, α = 0.001)."""
    return bool(stats.kstest(residuals.ravel(), "norm").pvalue > 1e-3)


@pytest.fixture
def federations(small_schema):
    first = _federation(small_schema)
    second = [*first[:2], _without_last_row(first[2])]  # one patient fewer
    return first, second


@pytest.mark.parametrize("noise", [True, False], ids=["noised", "noise-off"])
def test_differencing_two_summaries_shows_only_declared_noise(federations, small_schema, noise):
    first, second = federations
    sigma = SUMMARY_SIGMA if noise else None
    row = first[2].train.iloc[[-1]]
    contribution = summarize(row, small_schema)  # what the one row adds to the sum
    scale = SUMMARY_SIGMA * summary_sensitivity(small_schema) * math.sqrt(2 * len(first))

    residuals = np.array(
        [
            (summary_sum(first, sigma) - summary_sum(second, sigma) - contribution) / scale
            for _ in range(TRIALS)
        ]
    )

    assert only_declared_noise(residuals) is noise
    if noise:  # the attacker's guess of the row's scaled age is no better than noise allows
        guesses = residuals[:, 0] * scale + contribution[0]
        assert np.mean(np.abs(guesses - contribution[0]) < 0.05) < 0.05


@pytest.mark.parametrize("noise", [True, False], ids=["noised", "noise-off"])
def test_differencing_two_profiles_shows_only_declared_noise(federations, small_schema, noise):
    first, second = federations
    sigma = PROFILE_SIGMA if noise else None
    layout = federation_layout(small_schema)
    row = dataclasses.replace(first[2], train=first[2].train.iloc[[-1]])
    numeric, categorical = encode_frame(row.train, small_schema)
    labels = row.train["outcome"].map({"no": 0, "yes": 1}).to_numpy(dtype=np.int64)
    contribution = layout.counts(numeric, categorical, _probabilities(row), labels)
    scale = PROFILE_SIGMA * layout.sensitivity * math.sqrt(2 * len(first))

    residuals = np.array(
        [
            (profile_sum(first, sigma) - profile_sum(second, sigma) - contribution) / scale
            for _ in range(TRIALS // 3)
        ]
    )

    assert only_declared_noise(residuals) is noise
