"""Split a pooled table's rows across simulated institutions.

Each partitioner returns one array of row indices per institution; every row
lands in exactly one institution. Choose by name from ``PARTITIONERS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from privacy.errors import ConfigError, UnknownNameError

MIN_ROWS_PER_INSTITUTION = 6
"""Enough rows to hold out a test third and still train."""


class Partitioner(ABC):
    """Assigns rows to ``num_institutions`` institutions."""

    @abstractmethod
    def partition(
        self, labels: np.ndarray, *, num_institutions: int, seed: int
    ) -> list[np.ndarray]:
        """Row indices of each institution, sorted, disjoint and covering every row."""


class IidPartitioner(Partitioner):
    """A uniform random split into near-equal parts."""

    def partition(
        self, labels: np.ndarray, *, num_institutions: int, seed: int
    ) -> list[np.ndarray]:
        _check(len(labels), num_institutions)
        order = np.random.default_rng(seed).permutation(len(labels))
        return [np.sort(part) for part in np.array_split(order, num_institutions)]


class DirichletPartitioner(Partitioner):
    """Label skew: each class is split across institutions by proportions drawn from
    Dirichlet(``alpha``). Small ``alpha`` gives each institution few classes; large
    ``alpha`` approaches IID. Draws are repeated until every institution holds at
    least ``MIN_ROWS_PER_INSTITUTION`` rows."""

    def __init__(self, alpha: float, *, max_attempts: int = 200) -> None:
        if not alpha > 0:
            raise ConfigError(f"Dirichlet alpha must be > 0, got {alpha}", alpha=alpha)
        self.alpha = alpha
        self.max_attempts = max_attempts

    def partition(
        self, labels: np.ndarray, *, num_institutions: int, seed: int
    ) -> list[np.ndarray]:
        _check(len(labels), num_institutions)
        rng = np.random.default_rng(seed)
        classes = np.unique(labels)
        for _ in range(self.max_attempts):
            parts: list[list[int]] = [[] for _ in range(num_institutions)]
            for label in classes:
                rows = rng.permutation(np.flatnonzero(labels == label))
                shares = rng.dirichlet(np.full(num_institutions, self.alpha))
                cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
                for institution, chunk in enumerate(np.split(rows, cuts)):
                    parts[institution].extend(chunk.tolist())
            if min(len(p) for p in parts) >= MIN_ROWS_PER_INSTITUTION:
                return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
        raise ConfigError(
            f"could not split {len(labels)} rows into {num_institutions} institutions of at "
            f"least {MIN_ROWS_PER_INSTITUTION} rows with alpha={self.alpha}; use fewer "
            "institutions or a larger alpha",
            alpha=self.alpha,
        )


def _check(num_rows: int, num_institutions: int) -> None:
    if num_institutions < 1:
        raise ConfigError(f"need at least one institution, got {num_institutions}")
    if num_rows < num_institutions * MIN_ROWS_PER_INSTITUTION:
        raise ConfigError(
            f"{num_rows} rows cannot feed {num_institutions} institutions "
            f"({MIN_ROWS_PER_INSTITUTION} rows each at least)",
            rows=num_rows,
            institutions=num_institutions,
        )


def _iid(alpha: float) -> Partitioner:
    return IidPartitioner()


PARTITIONERS: dict[str, Callable[[float], Partitioner]] = {
    "iid": _iid,
    "dirichlet": DirichletPartitioner,
}


def get_partitioner(name: str, *, alpha: float = 0.5) -> Partitioner:
    """The partitioner registered as ``name``; raise on an unknown name."""
    try:
        factory = PARTITIONERS[name]
    except KeyError:
        raise UnknownNameError("partitioner", name, PARTITIONERS) from None
    return factory(alpha)


def label_skew(parts: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance between each institution's label distribution and
    the pooled one: 0 for identical distributions, towards 1 for disjoint classes."""
    classes = np.unique(labels)
    pooled = np.array([(labels == c).mean() for c in classes])
    distances = []
    for part in parts:
        local = np.array([(labels[part] == c).mean() for c in classes])
        distances.append(0.5 * np.abs(local - pooled).sum())
    return float(np.mean(distances))
