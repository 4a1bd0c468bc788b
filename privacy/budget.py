"""Budget enforcement: refuse a round before it would pass an institution's (ε, δ)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from privacy.accounting import AccountingStep, compute_epsilon
from privacy.config import PrivacyBudget
from privacy.errors import BudgetExceededError

logger = logging.getLogger(__name__)

# PRV accounting carries a small numerical error; a projection this close to the
# budget is treated as within it (it is far below the accountant's own error bound).
_EPSILON_SLACK = 1e-6


def ensure_within_budget(
    *,
    institution: str,
    history: Sequence[AccountingStep],
    planned: AccountingStep,
    budget: PrivacyBudget,
    accountant: str,
) -> float:
    """Return the ε the institution would have spent after ``planned``.

    Raises
    ------
    BudgetExceededError
        If that ε would pass ``budget.epsilon`` at ``budget.delta``. Nothing is
        trained in that case: the check runs before the first step.
    """
    spent = compute_epsilon(history, delta=budget.delta, accountant=accountant)
    projected = compute_epsilon([*history, planned], delta=budget.delta, accountant=accountant)
    if projected > budget.epsilon + _EPSILON_SLACK:
        logger.warning(
            "institution %s refuses a round: ε %.4g -> %.4g would pass budget %.4g",
            institution,
            spent,
            projected,
            budget.epsilon,
        )
        raise BudgetExceededError(
            institution=institution,
            epsilon_spent=spent,
            epsilon_projected=projected,
            epsilon_budget=budget.epsilon,
            delta=budget.delta,
        )
    return projected
