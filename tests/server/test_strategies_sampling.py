"""Cross-device style sampling: fraction-fit picks a share of institutions to train and evaluate."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from flwr.common import ndarrays_to_parameters

from server.config import federation_settings_from_run_config
from server.federation import Federation
from server.strategies import StrategySettings, build_strategy


def test_fraction_fit_samples_training_and_evaluation_alike():
    initial = ndarrays_to_parameters([np.zeros(3)])

    strategy = build_strategy(
        StrategySettings(fraction_fit=0.1), initial_parameters=initial, min_clients=2
    )

    assert strategy.num_fit_clients(1000) == (100, 2)  # type: ignore[attr-defined]
    assert strategy.num_evaluation_clients(1000)[0] == 100  # type: ignore[attr-defined]


def _sample(fraction: float, institutions: int, server_round: int, seed: int = 0) -> set[int]:
    settings = federation_settings_from_run_config(
        {"fraction-fit": fraction, "seed": seed, "secagg": True}
    )
    strategy = SimpleNamespace(institutions={1000 + i: object() for i in range(institutions)})
    return Federation(settings)._evaluation_sample(strategy, server_round)  # type: ignore[arg-type]


def test_the_federated_evaluation_samples_as_training_does():
    """1,000 institutions at fraction 0.1: 100 evaluate a round, a fresh seeded draw each round."""
    first, second = _sample(0.1, 1000, 1), _sample(0.1, 1000, 2)

    assert len(first) == len(second) == 100
    assert first != second
    assert first <= set(range(1000, 2000))
    assert _sample(0.1, 1000, 1) == first  # the run's seed fixes the draw
    assert _sample(0.1, 1000, 1, seed=1) != first
    assert _sample(1.0, 7, 1) == set(range(1000, 1007))  # everyone, without sampling
    assert len(_sample(0.1, 12, 1)) == 3  # never fewer than a secure sum's k
