"""Central DP: Flower's noise has the scale the update bound gives the average, and only there.

``FedwardenStrategy`` wraps the chosen Flower strategy in Flower's
``DifferentialPrivacyClientSideFixedClipping``, which adds N(0, (σ·S/n)²) to what
the strategy returns. That is the right noise for an average of n updates each
clipped to S (one institution moves it by at most S/n), and only for that.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

from client.contract.plan import TrainingPlan
from privacy.config import DPConfig
from server.config import CentralDPSettings
from server.federated_strategy import FedwardenStrategy
from server.strategies import CENTRAL_DP_STRATEGIES, StrategySettings, build_strategy
from tests.server.test_federated_strategy import GLOBAL, configured, institutions, reply


def central(name: str, *, n: int, bound: float, sigma: float | None) -> FedwardenStrategy:
    inner = build_strategy(
        StrategySettings(name=name),
        initial_parameters=ndarrays_to_parameters(GLOBAL),
        min_clients=2,
    )
    return FedwardenStrategy(
        inner,
        plan=TrainingPlan(update_clip_norm=bound, dp=DPConfig(noise_multiplier=1.0)),
        preprocessing="{}",
        institutions=institutions(n),
        secure=False,
        central_dp=None if sigma is None else CentralDPSettings(noise_multiplier=sigma),
    )


def deltas(n: int, bound: float, seed: int) -> list[list[np.ndarray]]:
    """n updates of L2 norm exactly ``bound`` (the worst case the clipping allows)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        parts = [rng.normal(size=a.shape) for a in GLOBAL]
        norm = np.sqrt(sum(float(np.sum(p**2)) for p in parts))
        out.append([(p * bound / norm).astype(np.float32) for p in parts])
    return out


def aggregate(s: FedwardenStrategy, updates: list[list[np.ndarray]]) -> np.ndarray:
    n = len(updates)
    configured(s, n)
    params, _ = s.aggregate_fit(1, [reply(i + 1, d, 100) for i, d in enumerate(updates)], [])
    assert params is not None
    return np.concatenate([a.ravel() for a in parameters_to_ndarrays(params)])


@pytest.mark.parametrize("name", sorted(CENTRAL_DP_STRATEGIES))
def test_the_noise_on_the_average_is_sigma_times_bound_over_contributors(name):
    n, bound, sigma = 4, 2.0, 1.5
    updates = deltas(n, bound, seed=1)
    exact = aggregate(central(name, n=n, bound=bound, sigma=None), updates)
    np.random.seed(7)  # Flower draws the noise from numpy's global generator

    noise = np.concatenate(
        [
            aggregate(central(name, n=n, bound=bound, sigma=sigma), updates) - exact
            for _ in range(300)
        ]
    )

    expected = sigma * bound / n
    assert abs(noise.mean()) < 4 * expected / np.sqrt(noise.size)
    assert noise.std() == pytest.approx(expected, rel=0.06)


@pytest.mark.parametrize("name", sorted(CENTRAL_DP_STRATEGIES))
def test_one_institution_moves_the_allowed_strategies_output_by_at_most_bound_over_n(name):
    n, bound = 4, 0.01
    updates = deltas(n, bound, seed=2)
    neighbour = [*updates[:-1], [np.zeros_like(a) for a in updates[-1]]]

    moved = np.linalg.norm(
        aggregate(central(name, n=n, bound=bound, sigma=None), updates)
        - aggregate(central(name, n=n, bound=bound, sigma=None), neighbour)
    )

    assert moved <= bound / n * (1 + 1e-5)


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_an_adaptive_server_step_moves_far_more_than_the_noise_is_scaled_for(name):
    """Why fedadam and fedyogi are refused: the noise would be added after this step."""
    n, bound = 4, 0.01
    zeros = [[np.zeros_like(a) for a in GLOBAL] for _ in range(n)]
    neighbour = [*zeros[:-1], deltas(1, bound, seed=3)[0]]

    moved = np.linalg.norm(
        aggregate(central(name, n=n, bound=bound, sigma=None), neighbour)
        - aggregate(central(name, n=n, bound=bound, sigma=None), zeros)
    )

    assert name not in CENTRAL_DP_STRATEGIES
    assert moved > 5 * bound / n
