"""Errors of data that does not match the federation's contract (its schema).

::

    FedwardenError (privacy.errors)
     └── DataError                    the institution's data cannot be used (exit 4)
          ├── SchemaError             a file or schema does not match    (exit 4)
          └── DataChangedError        the rows changed during a run      (exit 4)
     ConfigError (privacy.errors)
     └── FlowerSeamError              this Flower lacks a hooked function (exit 2)
"""

from __future__ import annotations

from typing import Any, ClassVar

from privacy.errors import ConfigError, FedwardenError


class DataError(FedwardenError):
    """The institution's data cannot be read or used."""

    exit_code: ClassVar[int] = 4


class SchemaError(DataError):
    """A table or a schema file does not match what the schema declares.

    The message names the column and the problem, and where it can, the first
    offending row (counted from 1, header excluded) and value; read from a
    file, the message starts with the file's name (``prefix``).
    """

    def __init__(
        self, problem: str, *, column: str | None = None, prefix: str = "", **context: Any
    ) -> None:
        where = f"column {column!r}: " if column is not None else ""
        super().__init__(f"{prefix}{where}{problem}", column=column, **context)
        self.column = column
        self.problem = problem


class DataChangedError(DataError):
    """The node's rows differ from those its run began with: it sits the run out."""


class FlowerSeamError(ConfigError):
    """The installed Flower lacks the function a fedwarden seam hooks (``client.contract.polling``,
    ``client.warm_exec``): an upgrade moved or rewrote it; check the seam against the release."""
