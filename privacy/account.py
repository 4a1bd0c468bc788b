"""An institution's privacy account: its budget, what it has spent, and the check before
every release.

``InstitutionAccount`` is the one front door for spending ε. Whatever reads an
institution's rows and sends something derived from them (a training round, a
noisy profile) asks the account first (``check``), and records what it released
(``record``) before the result leaves the node. ε is always recomputed from the
history, so it cannot drift from what was really spent::

    account = InstitutionAccount(institution="Cleveland", budget=budget,
                                 history=history, accountant="prv")
    projected = account.check([planned])     # raises BudgetExceededError, nothing spent
    ...                                      # train, noise the release
    epsilon = account.record([taken])        # ε after the release
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

from privacy.accounting import AccountingStep, compute_epsilon
from privacy.config import PrivacyBudget
from privacy.errors import BudgetExceededError

logger = logging.getLogger(__name__)

# PRV accounting carries a small numerical error; a projection this close to the
# budget is treated as within it (it is far below the accountant's own error bound).
_EPSILON_SLACK = 1e-6


class HistoryStore(ABC):
    """Reads and appends an institution's accounting history (``client.history`` has the
    implementations: a node's Flower state, a file on the institution's disk)."""

    @abstractmethod
    def load(self) -> list[AccountingStep]:
        """Every release accounted so far, oldest first."""

    @abstractmethod
    def append(self, step: AccountingStep) -> None:
        """Record a release that was made."""


class MemoryHistory(HistoryStore):
    """A history held in memory (a fresh account, a planning check, a test)."""

    def __init__(self, steps: Sequence[AccountingStep] = ()) -> None:
        self._steps = list(steps)

    def load(self) -> list[AccountingStep]:
        return list(self._steps)

    def append(self, step: AccountingStep) -> None:
        self._steps.append(step)


class InstitutionAccount:
    """One institution's (ε, δ) budget over its whole history of releases.

    Parameters
    ----------
    institution : str
        Whose account it is (for messages and logs).
    budget : PrivacyBudget
        The institution's total (ε, δ).
    history : HistoryStore
        Where its releases are kept.
    accountant : str
        The accountant's name (``privacy.accounting``).
    """

    def __init__(
        self,
        *,
        institution: str,
        budget: PrivacyBudget,
        history: HistoryStore,
        accountant: str,
    ) -> None:
        self.institution = institution
        self.budget = budget
        self.history = history
        self.accountant = accountant

    def epsilon(self, extra: Sequence[AccountingStep] = ()) -> float:
        """ε spent so far, or after ``extra`` releases were added."""
        return compute_epsilon(
            [*self.history.load(), *extra], delta=self.budget.delta, accountant=self.accountant
        )

    def check(self, planned: Sequence[AccountingStep]) -> float:
        """The ε the institution would have spent after ``planned``.

        Raises
        ------
        BudgetExceededError
            If that ε would pass the budget. Nothing has been spent then: the
            check runs before any row is read.
        """
        past = self.history.load()
        spent = compute_epsilon(past, delta=self.budget.delta, accountant=self.accountant)
        projected = compute_epsilon(
            [*past, *planned], delta=self.budget.delta, accountant=self.accountant
        )
        if projected > self.budget.epsilon + _EPSILON_SLACK:
            logger.warning(
                "institution %s refuses a release: ε %.4g -> %.4g would pass budget %.4g",
                self.institution,
                spent,
                projected,
                self.budget.epsilon,
            )
            raise BudgetExceededError(
                institution=self.institution,
                epsilon_spent=spent,
                epsilon_projected=projected,
                epsilon_budget=self.budget.epsilon,
                delta=self.budget.delta,
            )
        return projected

    def record(self, taken: Sequence[AccountingStep]) -> float:
        """Record releases that were made; return ε after them."""
        for step in taken:
            self.history.append(step)
        return self.epsilon()
