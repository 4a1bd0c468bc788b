from __future__ import annotations

import pytest

from privacy.account import InstitutionAccount, MemoryHistory
from privacy.accounting import AccountingStep, compute_epsilon
from privacy.config import PrivacyBudget
from privacy.errors import BudgetExceededError

ROUND = AccountingStep(noise_multiplier=1.0, sample_rate=0.2, steps=5)


def _account(epsilon: float, history: MemoryHistory) -> InstitutionAccount:
    return InstitutionAccount(
        institution="Hungary",
        budget=PrivacyBudget(epsilon=epsilon, delta=1e-5),
        history=history,
        accountant="rdp",
    )


def test_a_release_within_budget_returns_its_projected_epsilon_and_spends_nothing():
    history = MemoryHistory([ROUND])

    projected = _account(10.0, history).check([ROUND])

    assert projected == pytest.approx(compute_epsilon([ROUND, ROUND], delta=1e-5, accountant="rdp"))
    assert history.load() == [ROUND]


def test_a_release_past_the_budget_is_refused_with_the_numbers():
    one_round = compute_epsilon([ROUND], delta=1e-5, accountant="rdp")
    history = MemoryHistory([ROUND])

    with pytest.raises(BudgetExceededError) as caught:
        _account(one_round * 1.05, history).check([ROUND])

    error = caught.value
    assert error.institution == "Hungary"
    assert error.epsilon_spent == pytest.approx(one_round)
    assert error.epsilon_projected > error.epsilon_budget
    assert "institution 'Hungary' refuses" in str(error)
    assert error.exit_code == 3
    assert history.load() == [ROUND]


def test_recording_a_release_composes_it_with_the_history():
    history = MemoryHistory()
    account = _account(10.0, history)
    profile = AccountingStep(noise_multiplier=5.0, sample_rate=1.0, steps=1)

    after = account.record([ROUND, profile])

    assert history.load() == [ROUND, profile]
    assert after == pytest.approx(
        compute_epsilon([ROUND, profile], delta=1e-5, accountant="rdp")
    )
    assert account.epsilon() == after > compute_epsilon([ROUND], delta=1e-5, accountant="rdp")
