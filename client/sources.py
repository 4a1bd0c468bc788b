"""What every dataset is: a named table with a schema, and the settings it trains well with.

Kept apart from ``client.datasets`` (the registry) so that sources in other
modules (``client.image_datasets``) can build on it without an import cycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd

from client.contract.schema import TableSchema


@dataclass(frozen=True, kw_only=True)
class TrainingDefaults:
    """What a dataset trains well with when the user says nothing."""

    model: str
    num_rounds: int
    learning_rate: float
    local_epochs: int = 1
    sample_rate: float = 0.2


class DatasetSource(ABC):
    """A named table with a schema, and optionally its natural split into institutions."""

    name: ClassVar[str]
    defaults: ClassVar[TrainingDefaults]

    @property
    @abstractmethod
    def schema(self) -> TableSchema:
        """The schema every row satisfies."""

    @abstractmethod
    def load(self) -> pd.DataFrame:
        """All rows, validated: the schema's features and target, in order."""

    def institutions(self) -> dict[str, pd.DataFrame] | None:
        """The natural split by institution, or ``None`` for a pooled table."""
        return None
