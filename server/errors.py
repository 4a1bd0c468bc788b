"""Errors raised by the coordinator and its governance store.

::

    FedwardenError (privacy.errors)
     └── ServerError                                              (exit 5)
          ├── FederationError        the run cannot go on: too few institutions,
          │    │                     schemas that disagree, a failed phase
          │    └── NodeFailedError   a node gave no reply (an error, a time-out)
          ├── FlowerCliError         a ``flwr`` command failed       (exit 12)
          └── StoreError             the governance store refuses    (exit 8)
               ├── StoreUnavailableError   the database cannot be reached (exit 8)
               ├── NotFoundError           no such institution, principal, key,
               │                           run or model version      (exit 8)
               ├── ConflictError           it already exists, or the change
               │                           would break an invariant  (exit 8)
               ├── AuthenticationError     no, wrong, revoked or expired API key
               │    │                                                 (exit 6)
               │    └── SignInRequiredError   no live console session (exit 6)
               ├── PermissionDeniedError   the principal lacks the permission
               │    │                                                 (exit 7)
               │    └── CsrfError            a console form without its token (exit 7)
               └── AuditChainError         the audit log was tampered with
                                                                      (exit 9)
"""

from __future__ import annotations

from typing import ClassVar

from privacy.errors import FedwardenError


class ServerError(FedwardenError):
    """The coordinator cannot do what was asked."""

    exit_code: ClassVar[int] = 5


class FederationError(ServerError):
    """A federation run cannot go on."""


class NodeFailedError(FederationError):
    """A node that was asked for a reply gave none (an error, or no reply in time)."""

    def __init__(self, node_id: int, reason: str) -> None:
        super().__init__(reason, node_id=node_id)
        self.node_id = node_id
        self.reason = reason


class FlowerCliError(ServerError):
    """A ``flwr`` command (Flower's own deployment tool) failed."""

    exit_code: ClassVar[int] = 12


class StoreError(ServerError):
    """The governance store refuses a request or cannot serve it."""

    exit_code: ClassVar[int] = 8


class StoreUnavailableError(StoreError):
    """The store's database cannot be reached (refused, timed out, locked, not a database)."""


class NotFoundError(StoreError):
    """A named institution, principal, key, run or model version does not exist."""


class ConflictError(StoreError):
    """The thing exists already, or the change would break one of the store's invariants."""


class AuthenticationError(StoreError):
    """An API key is missing, unknown, wrong, revoked or expired.

    The message is the same for every cause, so a caller learns nothing from it;
    the specific reason goes to the audit log.
    """

    exit_code: ClassVar[int] = 6


class PermissionDeniedError(StoreError):
    """An authenticated principal lacks the permission an action needs."""

    exit_code: ClassVar[int] = 7


class SignInRequiredError(AuthenticationError):
    """A console request has no session, or its session expired or its key was revoked."""


class CsrfError(PermissionDeniedError):
    """A console form came without the session's anti-forgery token, or with a wrong one."""


class AuditChainError(StoreError):
    """The audit log's hash chain is broken: an event was modified, deleted, inserted or moved."""

    exit_code: ClassVar[int] = 9
