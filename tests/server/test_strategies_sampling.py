"""Cross-device style sampling: fraction-fit picks a share of institutions to train and evaluate."""

from __future__ import annotations

import numpy as np
from flwr.common import ndarrays_to_parameters

from server.strategies import StrategySettings, build_strategy


def test_fraction_fit_samples_training_and_evaluation_alike():
    initial = ndarrays_to_parameters([np.zeros(3)])

    strategy = build_strategy(
        StrategySettings(fraction_fit=0.1), initial_parameters=initial, min_clients=2
    )

    assert strategy.num_fit_clients(1000) == (100, 2)  # type: ignore[attr-defined]
    assert strategy.num_evaluation_clients(1000)[0] == 100  # type: ignore[attr-defined]
