"""Errors raised on an institution's node (its data's errors are ``client.contract.errors``).

::

    FedwardenError (privacy.errors)
     ├── JoinError                    the node cannot join the federation (exit 11)
     └── ConfigError (privacy.errors)
          └── FlowerSeamError         this Flower release lacks a hooked function (exit 2)
"""

from __future__ import annotations

from typing import ClassVar

from privacy.errors import ConfigError, FedwardenError


class JoinError(FedwardenError):
    """The node cannot join: the coordinator's certificate does not verify with the CA,
    or the coordinator refuses the node's key, or the SuperNode stopped."""

    exit_code: ClassVar[int] = 11


class FlowerSeamError(ConfigError):
    """The installed Flower lacks the function a fedwarden seam hooks (``client.fast_poll``):
    an upgrade moved or rewrote it, and the seam must be checked against the new release."""
