"""A simulation scenario: which data, how many institutions, how it is split, their budgets.

``Scenario`` is what ``fedwarden simulate`` builds from its flags; it yields the
node config and the rows of each simulated institution, the same way a real
institution's node config and file would.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from client.contract.schema import TableSchema
from client.data import InstitutionData, holdout_split
from client.datasets import get_dataset
from client.history import FileHistory, history_file, settings_fingerprint
from client.node import DEFAULT_BUDGET_DELTA, DEFAULT_BUDGET_EPSILON
from privacy.account import InstitutionAccount
from privacy.config import PrivacyBudget
from privacy.errors import ConfigError
from simulations.own_data import OwnData, load_own_institution
from simulations.partitioners import get_partitioner


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """The data side of a simulation.

    Parameters
    ----------
    dataset : str
        An embedded dataset's name.
    institutions : int | None
        How many institutions; ``None`` means the dataset's natural split, or 5
        for a pooled dataset. A natural split may be cut to its first institutions.
    partition : str
        ``iid`` or ``dirichlet`` (pooled datasets only).
    alpha : float
        Dirichlet concentration: smaller is more skewed.
    seed : int
        Fixes the split of rows, the held-out test rows and everything downstream.
    budget : PrivacyBudget
        Every institution's (ε, δ) unless ``budgets`` names it.
    budgets : dict[str, float]
        Per-institution ε budgets by institution name.
    own_data : OwnData | None
        The consortium's own files instead of an embedded dataset: one
        institution per file, or per value of a column.
    history_dir : Path | None
        A folder keeping each institution's privacy history across runs (a file
        per institution and partition); ``None``: every run starts from ε = 0.
    """

    dataset: str = "heart-disease"
    institutions: int | None = None
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    budget: PrivacyBudget = field(
        default_factory=lambda: PrivacyBudget(
            epsilon=DEFAULT_BUDGET_EPSILON, delta=DEFAULT_BUDGET_DELTA
        )
    )
    budgets: dict[str, float] = field(default_factory=dict)
    own_data: OwnData | None = None
    node_policy: dict[str, Any] = field(default_factory=dict)
    """Every simulated node's own policy keys (``allow-non-dp``, ...): ``privacy.policy``."""
    history_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.own_data is not None:
            self._check_own_data(self.own_data)
            return
        source = get_dataset(self.dataset)  # raises on an unknown name
        get_partitioner(self.partition, alpha=self.alpha)  # idem, and checks alpha
        natural = source.institutions()
        if natural is not None:
            if self.partition != "iid" or self.institutions not in (
                None,
                *range(2, len(natural) + 1),
            ):
                raise ConfigError(
                    f"dataset {self.dataset!r} comes split into {len(natural)} real institutions "
                    f"({', '.join(sorted(natural))}); choose 2 to {len(natural)} of them and "
                    "no partitioner",
                    dataset=self.dataset,
                )
        elif self.institutions is not None and self.institutions < 2:
            raise ConfigError(f"a federation needs >= 2 institutions, got {self.institutions}")
        names = self.institution_names()
        unknown = sorted(set(self.budgets) - set(names))
        if unknown:
            raise ConfigError(f"budgets name unknown institutions: {', '.join(unknown)}")

    def _check_own_data(self, own: OwnData) -> None:
        if self.institutions is not None or self.partition != "iid":
            raise ConfigError(
                "with --data the files say who the institutions are: drop --institutions "
                "and --partition"
            )
        own.check()  # every file read and validated now, as `client join` would
        unknown = sorted(set(self.budgets) - set(own.institution_names()))
        if unknown:
            raise ConfigError(f"budgets name unknown institutions: {', '.join(unknown)}")

    @property
    def name(self) -> str:
        """What the run is about: the dataset's name, or the own data's schema name."""
        return self.own_data.schema.name if self.own_data is not None else self.dataset

    @property
    def schema(self) -> TableSchema:
        if self.own_data is not None:
            return self.own_data.schema
        return get_dataset(self.dataset).schema

    @property
    def num_institutions(self) -> int:
        if self.own_data is not None:
            return len(self.own_data.institution_names())
        natural = get_dataset(self.dataset).institutions()
        if natural is not None:
            return self.institutions or len(natural)
        return self.institutions or 5

    def institution_names(self) -> list[str]:
        if self.own_data is not None:
            return self.own_data.institution_names()
        natural = get_dataset(self.dataset).institutions()
        if natural is not None:
            return sorted(natural)[: self.num_institutions]
        # Checks that the rows can feed this many institutions.
        _pooled_parts(self.dataset, self.partition, self.alpha, self.num_institutions, self.seed)
        return [f"inst-{i:02d}" for i in range(self.num_institutions)]

    def node_config(self, flower_node_config: Mapping[str, Any]) -> dict[str, Any]:
        """Complete Flower's simulated node config (``partition-id``) into an institution's."""
        index = int(flower_node_config["partition-id"])
        name = self.institution_names()[index]
        if self.own_data is not None:
            config: dict[str, Any] = {
                **flower_node_config,
                **self.own_data.node_config(name),
                "seed": self.seed,
                "budget-epsilon": self.budget_of(name).epsilon,
                "budget-delta": self.budget.delta,
                **self.node_policy,
            }
        else:
            config = {
                **flower_node_config,
                "institution": name,
                "dataset": self.dataset,
                "partition": self.partition,
                "alpha": self.alpha,
                "num-institutions": self.num_institutions,
                "seed": self.seed,
                "budget-epsilon": self.budget_of(name).epsilon,
                "budget-delta": self.budget.delta,
                **self.node_policy,
            }
        history = self.history_path(name)
        if history is not None:
            config["history-path"] = str(history)
        return config

    def budget_of(self, institution: str) -> PrivacyBudget:
        return PrivacyBudget(
            epsilon=self.budgets.get(institution, self.budget.epsilon), delta=self.budget.delta
        )

    def history_path(self, institution: str) -> Path | None:
        """The file keeping ``institution``'s history, keyed by its partition (or ``None``).

        The key covers what picks its rows: the dataset and its schema, the split
        (partitioner, α, number of institutions) and the seed.
        """
        if self.history_dir is None:
            return None
        natural = get_dataset(self.dataset).institutions() is not None
        key = {
            "dataset": self.dataset,
            "institution": institution,
            "seed": self.seed,
            "partition": None
            if natural
            else {
                "name": self.partition,
                "alpha": self.alpha if self.partition != "iid" else None,
                "institutions": self.num_institutions,
            },
        }
        fingerprint = settings_fingerprint(
            key, schema_fingerprint=get_dataset(self.dataset).schema.fingerprint()
        )
        return history_file(self.history_dir, institution=institution, fingerprint=fingerprint)

    def epsilon_spent(self, *, accountant: str) -> dict[str, float]:
        """Each institution's ε in its kept history (0 without ``history_dir``)."""
        spent: dict[str, float] = {}
        for name in self.institution_names():
            path = self.history_path(name)
            if path is None:
                spent[name] = 0.0
                continue
            account = InstitutionAccount(
                institution=name,
                budget=self.budget_of(name),
                history=FileHistory(path),
                accountant=accountant,
            )
            spent[name] = account.epsilon()
        return spent

    def load(self, node_config: Mapping[str, Any]) -> InstitutionData:
        """The rows of the institution ``node_config`` describes (see ``node_config``)."""
        return load_simulated_institution(node_config)

    def all_institutions(self) -> list[InstitutionData]:
        return [
            self.load(self.node_config({"partition-id": i})) for i in range(self.num_institutions)
        ]


def load_simulated_institution(node_config: Mapping[str, Any]) -> InstitutionData:
    """Rows of a simulated institution from a node config completed by ``Scenario``."""
    if "data-path" in node_config:
        return load_own_institution(node_config, seed=int(node_config["seed"]))
    dataset = get_dataset(str(node_config["dataset"]))
    index = int(node_config["partition-id"])
    seed = int(node_config["seed"])
    natural = dataset.institutions()
    if natural is not None:
        name = sorted(natural)[index]
        return holdout_split(name, natural[name], dataset.schema, seed=seed)
    parts = _pooled_parts(
        dataset.name,
        str(node_config["partition"]),
        float(node_config["alpha"]),
        int(node_config["num-institutions"]),
        seed,
    )
    rows = _pooled_rows(dataset.name).iloc[parts[index]].reset_index(drop=True)
    return holdout_split(str(node_config["institution"]), rows, dataset.schema, seed=seed)


@functools.lru_cache(maxsize=2)
def _pooled_rows(dataset: str) -> pd.DataFrame:
    """A dataset's validated rows, read once a process (each Ray actor serves many
    institutions of the same dataset)."""
    return get_dataset(dataset).load()


@functools.lru_cache(maxsize=8)
def _pooled_parts(
    dataset: str, partition: str, alpha: float, institutions: int, seed: int
) -> list[np.ndarray]:
    labels = _pooled_rows(dataset)[get_dataset(dataset).schema.target.name].to_numpy()
    partitioner = get_partitioner(partition, alpha=alpha)
    return partitioner.partition(labels, num_institutions=institutions, seed=seed)
