from __future__ import annotations

import pytest

from privacy.accounting import AccountingStep, compute_epsilon
from privacy.budget import ensure_within_budget
from privacy.config import DPConfig, PrivacyBudget
from privacy.errors import BudgetExceededError, ConfigError

ROUND = AccountingStep(noise_multiplier=1.0, sample_rate=0.2, steps=5)


def test_a_round_within_budget_returns_its_projected_epsilon():
    budget = PrivacyBudget(epsilon=10.0, delta=1e-5)

    projected = ensure_within_budget(
        institution="A", history=[ROUND], planned=ROUND, budget=budget, accountant="rdp"
    )

    assert projected == pytest.approx(compute_epsilon([ROUND, ROUND], delta=1e-5, accountant="rdp"))


def test_a_round_past_the_budget_is_refused_with_the_numbers():
    one_round = compute_epsilon([ROUND], delta=1e-5, accountant="rdp")
    budget = PrivacyBudget(epsilon=one_round * 1.05, delta=1e-5)

    with pytest.raises(BudgetExceededError) as caught:
        ensure_within_budget(
            institution="Hungary", history=[ROUND], planned=ROUND, budget=budget, accountant="rdp"
        )

    error = caught.value
    assert error.institution == "Hungary"
    assert error.epsilon_spent == pytest.approx(one_round)
    assert error.epsilon_projected > budget.epsilon
    assert "institution 'Hungary' refuses to train" in str(error)
    assert error.exit_code == 3


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"epsilon": 0.0, "delta": 1e-5}, "budget ε must be > 0"),
        ({"epsilon": float("nan"), "delta": 1e-5}, "budget ε must be > 0"),
        ({"epsilon": 1.0, "delta": 1.0}, "budget δ must be in"),
    ],
)
def test_impossible_budgets_are_refused(kwargs, phrase):
    with pytest.raises(ConfigError, match=phrase):
        PrivacyBudget(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"noise_multiplier": -0.5}, "noise multiplier must be >= 0"),
        ({"noise_multiplier": 0.0}, "gives no privacy"),
        ({"target_delta": 1.0}, "δ must be in"),
        ({"max_grad_norm": 0.0}, "max grad norm"),
        ({"accountant": "gdp"}, "unknown accountant"),
        ({"target_epsilon": -1.0}, "target ε"),
    ],
)
def test_impossible_dp_settings_are_refused(kwargs, phrase):
    with pytest.raises(ConfigError, match=phrase):
        DPConfig(**kwargs)


def test_zero_noise_is_fine_when_dp_is_off():
    assert not DPConfig(enabled=False, noise_multiplier=0.0).enabled
