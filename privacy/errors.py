"""Every fedwarden error, and the one table of exit codes.

``privacy`` is the lowest layer of the import graph, so the root of every
fedwarden error lives here; each package hangs its own branch from it in its
own ``errors.py`` (``client.contract.errors``, ``client.errors``,
``server.errors``, ``deploy.errors``). Every error carries an ``exit_code``
from ``EXIT_CODES`` (the CLI turns it into the process's exit status, in one
place: ``simulations.cli.app``) and keyword context (``institution=``,
``epsilon=``) for logs and the one-line message a user sees::

    FedwardenError                                   something unexpected        1
     ├── ConfigError                                 bad settings or names       2
     │    └── UnknownNameError                       a registry lookup failed    2
     ├── PrivacyError                                a guarantee cannot be kept  3
     │    ├── BudgetExceededError                    a release would pass ε      3
     │    ├── BudgetSpentError                       no run fits the budgets     3
     │    ├── AccountingError                        ε cannot be computed        3
     │    ├── UpdateRejectedError                    a malformed update          3
     │    ├── PolicyRefusalError                     against the node's policy   3
     │    ├── UndeclaredReleaseError                 not in the release manifest 3
     │    ├── SecureAggregationRequiredError         no update in the clear      3
     │    └── UnsafeSecureAggregationError           a SecAgg+ step would leak   3
     │         └── TooFewParticipantsError           a sum of fewer than k       3
     ├── DataError (client.contract.errors)          unusable data               4
     │    └── SchemaError                            data ≠ its schema           4
     ├── JoinError (client.errors)                   a node cannot join          11
     ├── ServerError (server.errors)                 the coordinator cannot      5
     │    ├── FederationError                        a run cannot go on          5
     │    │    └── NodeFailedError                   a node gave no reply        5
     │    ├── FlowerCliError                         Flower's own tool failed    12
     │    └── StoreError                             the store refuses           8
     │         ├── StoreUnavailableError, NotFoundError, ConflictError           8
     │         ├── AuthenticationError               no or a bad API key         6
     │         ├── PermissionDeniedError             a role is missing           7
     │         └── AuditChainError                   the audit log was altered   9
     ├── DeployError (deploy.errors)                 export or serving fails     10
     │    ├── ExportError, ServingError                                          10
     │    └── InvalidRequestError                    a bad request (HTTP 4xx)    10
     └── EncryptionError                             data at rest won't open     70
          ├── KeyUnavailableError                    no (or not the right) KEK   71
          └── DecryptionError                        wrong key or altered bytes  72

A test holds every error class to this table: a code means one thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

EXIT_CODES: dict[int, str] = {
    1: "unexpected error",
    2: "bad settings or an unknown name",
    3: "a privacy guarantee cannot be kept (budget, accounting, an unsafe update)",
    4: "the institution's data cannot be used",
    5: "the coordinator cannot run the federation",
    6: "authentication failed (no, wrong, revoked or expired API key)",
    7: "permission denied (the principal lacks a role)",
    8: "the governance store refuses or cannot be reached",
    9: "the audit log was tampered with",
    10: "a model cannot be exported or served",
    11: "the node cannot join the federation",
    12: "a Flower deployment command failed",
    70: "data at rest cannot be encrypted or decrypted",
    71: "no key-encryption key is configured, or not the one the data was sealed with",
    72: "an envelope does not open: wrong key, or the ciphertext was altered",
    130: "interrupted (Ctrl-C)",
}
"""Exit codes of ``fedwarden``, by meaning (the README lists them)."""


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


class BudgetSpentError(PrivacyError):
    """Too few institutions could afford even one round of the requested run."""


class PolicyRefusalError(PrivacyError):
    """A task or a release asked of a node goes against the institution's own policy."""


class UndeclaredReleaseError(PrivacyError):
    """A node was about to send something the release manifest (``privacy.releases``) does
    not declare; it is stopped before it leaves."""


class SecureAggregationRequiredError(PrivacyError):
    """The coordinator asked for an update in the clear, and this institution refuses."""


class UnsafeSecureAggregationError(PrivacyError):
    """A SecAgg+ request would reveal more than the sum; the node refuses to answer it.

    Raised by the node's guard in front of Flower's ``secaggplus_mod`` (an unmask
    request whose lists overlap, name strangers or drop too many nodes) and by
    the coordinator when it would have to release a sum of too few institutions.
    """


class TooFewParticipantsError(UnsafeSecureAggregationError):
    """Fewer than k institutions take part, so their sum would say too much about each."""

    def __init__(self, message: str, *, participants: int, minimum: int, **context: object) -> None:
        super().__init__(message, participants=participants, minimum=minimum, **context)
        self.participants = participants
        self.minimum = minimum


class EncryptionError(FedwardenError):
    """Data at rest cannot be encrypted or decrypted (see ``privacy.envelope``)."""

    exit_code: ClassVar[int] = 70


class KeyUnavailableError(EncryptionError):
    """No key-encryption key is configured, or not the one an envelope was sealed with."""

    exit_code: ClassVar[int] = 71


class DecryptionError(EncryptionError):
    """An envelope does not open: the key is wrong or the bytes were altered."""

    exit_code: ClassVar[int] = 72
