"""Errors of fedwarden.

``privacy`` is the lowest layer of the import graph, so the root of every
fedwarden error lives here; each package adds its own branch in its own
``errors.py``. Every error carries an ``exit_code`` that the CLI turns into the
process exit status, and keyword context (``institution=``, ``epsilon=``) that
ends up in logs and in the one-line message a user sees::

    FedwardenError
     ├── ConfigError                       bad settings or names        (exit 2)
     │    └── UnknownNameError             a registry lookup failed     (exit 2)
     ├── PrivacyError                                                    (exit 3)
     │    ├── BudgetExceededError          a round would pass a budget  (exit 3)
     │    ├── AccountingError              ε cannot be computed         (exit 3)
     │    └── UpdateRejectedError          an update is not acceptable  (exit 3)
     └── EncryptionError                   data at rest cannot be sealed/opened (exit 70)
          ├── KeyUnavailableError          no key-encryption key, or not the one needed (exit 71)
          └── DecryptionError              wrong key, or the ciphertext was altered (exit 72)

``client.errors``, ``server.errors`` and ``deploy.errors`` hang their own
errors from ``FedwardenError``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar


class FedwardenError(Exception):
    """Root of all fedwarden errors.

    Parameters
    ----------
    message : str
        A one-line explanation for a human.
    **context : Any
        Facts that explain the error (``institution="Cleveland"``); kept on the
        instance as ``context`` for logs and structured output.
    """

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class ConfigError(FedwardenError, ValueError):
    """A setting is missing, malformed or impossible."""

    exit_code: ClassVar[int] = 2


class UnknownNameError(ConfigError, KeyError):
    """A name given to a registry (dataset, strategy, model, ...) is not known."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known_list = sorted(known)
        super().__init__(
            f"unknown {kind} {name!r}; choose one of: {', '.join(known_list)}",
            kind=kind,
            name=name,
            known=known_list,
        )

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.message


class PrivacyError(FedwardenError):
    """A privacy guarantee cannot be kept."""

    exit_code: ClassVar[int] = 3


class BudgetExceededError(PrivacyError):
    """Training would take an institution past its privacy budget."""

    def __init__(
        self,
        *,
        institution: str,
        epsilon_spent: float,
        epsilon_projected: float,
        epsilon_budget: float,
        delta: float,
    ) -> None:
        super().__init__(
            f"institution {institution!r} refuses to train: the round would raise its ε "
            f"from {epsilon_spent:.4g} to {epsilon_projected:.4g}, past its budget of "
            f"{epsilon_budget:.4g} (δ={delta:g})",
            institution=institution,
            epsilon_spent=epsilon_spent,
            epsilon_projected=epsilon_projected,
            epsilon_budget=epsilon_budget,
            delta=delta,
        )
        self.institution = institution
        self.epsilon_spent = epsilon_spent
        self.epsilon_projected = epsilon_projected
        self.epsilon_budget = epsilon_budget


class AccountingError(PrivacyError):
    """ε or a noise multiplier cannot be computed for the given settings."""


class UpdateRejectedError(PrivacyError):
    """A model update is malformed (wrong shape, NaN/Inf) and must not be aggregated."""


class EncryptionError(FedwardenError):
    """Data at rest cannot be encrypted or decrypted (see ``privacy.envelope``)."""

    exit_code: ClassVar[int] = 70


class KeyUnavailableError(EncryptionError):
    """No key-encryption key is configured, or not the one an envelope was sealed with."""

    exit_code: ClassVar[int] = 71


class DecryptionError(EncryptionError):
    """An envelope does not open: the key is wrong or the bytes were altered."""

    exit_code: ClassVar[int] = 72
