"""Errors raised on an institution's node (its data's errors are ``client.contract.errors``).

::

    FedwardenError (privacy.errors)
     └── JoinError                    the node cannot join the federation (exit 11)
"""

from __future__ import annotations

from typing import ClassVar

from privacy.errors import FedwardenError


class JoinError(FedwardenError):
    """The node cannot join: the coordinator's certificate does not verify with the CA,
    or the coordinator refuses the node's key, or the SuperNode stopped."""

    exit_code: ClassVar[int] = 11

