"""The published row counts: noised once per run, accounted, never exact."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict

from client.count_release import count_release_step, published_counts
from privacy.account import InstitutionAccount, MemoryHistory
from privacy.config import PrivacyBudget
from privacy.errors import BudgetExceededError


def account(history: MemoryHistory, *, budget: float = 1.0) -> InstitutionAccount:
    return InstitutionAccount(
        institution="A",
        budget=PrivacyBudget(epsilon=budget, delta=1e-5),
        history=history,
        accountant="rdp",
    )


def draw(state: RecordDict, history: MemoryHistory, *, sigma: float = 20.0, budget: float = 1.0):
    return published_counts(
        institution="A",
        num_train=200,
        num_test=100,
        noise_multiplier=sigma,
        account=account(history, budget=budget),
        state=state,
    )


def test_one_draw_per_run_recorded_once():
    state, history = RecordDict(), MemoryHistory()

    first = draw(state, history)
    again = draw(state, history)

    assert first == again
    assert history.load() == [count_release_step(20.0)]


def test_counts_carry_gaussian_noise_of_the_declared_scale():
    # Fresh runs: the published counts scatter around the true ones with σ = 20 rows
    # (a node that sent its exact counts would fail both checks).
    draws = np.array(
        [[c.train, c.test] for c in (draw(RecordDict(), MemoryHistory()) for _ in range(400))]
    )

    assert np.abs(draws.mean(axis=0) - [200, 100]).max() < 4 * 20 / np.sqrt(400)
    assert draws.std(axis=0) == pytest.approx([20, 20], rel=0.15)


def test_a_spent_budget_publishes_nothing():
    state, history = RecordDict(), MemoryHistory()

    with pytest.raises(BudgetExceededError):
        draw(state, history, sigma=0.5, budget=0.1)

    assert history.load() == [] and not state.config_records
