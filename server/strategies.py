"""Aggregation strategies by name: Flower's own implementations, never re-written here.

The coordinator wraps whichever one is chosen in ``FedwardenStrategy`` (deltas,
validation, budgets); the algorithm itself is Flower's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.common import Parameters, Scalar
from flwr.server.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)

from privacy.errors import ConfigError, UnknownNameError


@dataclass(frozen=True, kw_only=True)
class StrategySettings:
    """Which Flower strategy aggregates, and its own knobs."""

    name: str = "fedavg"
    proximal_mu: float = 0.1
    server_learning_rate: float = 0.1
    trim_beta: float = 0.2
    byzantine: int = 0
    fraction_fit: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise UnknownNameError("strategy", self.name, STRATEGIES)
        if self.proximal_mu < 0:
            raise ConfigError(f"proximal mu must be >= 0, got {self.proximal_mu}")
        if not self.server_learning_rate > 0:
            raise ConfigError(f"server learning rate must be > 0, got {self.server_learning_rate}")
        if not 0 <= self.trim_beta < 0.5:
            raise ConfigError(f"trim beta must be in [0, 0.5), got {self.trim_beta}")
        if self.byzantine < 0:
            raise ConfigError(f"byzantine count must be >= 0, got {self.byzantine}")
        if not 0 < self.fraction_fit <= 1:
            raise ConfigError(f"fraction fit must be in (0, 1], got {self.fraction_fit}")


def _common(settings: StrategySettings, initial: Parameters, min_clients: int) -> dict[str, object]:
    return {
        "fraction_fit": settings.fraction_fit,
        # Cross-device style runs (fraction fit < 1) evaluate on a sample of the same size.
        "fraction_evaluate": settings.fraction_fit,
        "min_fit_clients": min_clients,
        "min_evaluate_clients": 1,
        "min_available_clients": min_clients,
        "initial_parameters": initial,
        "accept_failures": True,
        # fedwarden aggregates metrics itself; these keep Flower from warning each run.
        "fit_metrics_aggregation_fn": _no_metrics,
        "evaluate_metrics_aggregation_fn": _no_metrics,
    }


def _no_metrics(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    return {}


def _fedavg(s: StrategySettings, initial: Parameters, n: int) -> Strategy:
    return FedAvg(**_common(s, initial, n))  # type: ignore[arg-type]


def _fedprox(s: StrategySettings, initial: Parameters, n: int) -> Strategy:
    return FedProx(proximal_mu=s.proximal_mu, **_common(s, initial, n))  # type: ignore[arg-type]


def _fedadam(s: StrategySettings, initial: Parameters, n: int) -> Strategy:
    return FedAdam(eta=s.server_learning_rate, **_common(s, initial, n))  # type: ignore[arg-type]


def _fedyogi(s: StrategySettings, initial: Parameters, n: int) -> Strategy:
    return FedYogi(eta=s.server_learning_rate, **_common(s, initial, n))  # type: ignore[arg-type]


def _fedmedian(s: StrategySettings, initial: Parameters, n: int) -> Strategy:
    return FedMedian(**_common(s, initial, n))  # type: ignore[arg-type]


def _fedtrimmedavg(s: StrategySettings, initial: Parameters, n: int) -> Strategy:
    return FedTrimmedAvg(beta=s.trim_beta, **_common(s, initial, n))  # type: ignore[arg-type]


def _krum(s: StrategySettings, initial: Parameters, n: int) -> Strategy:
    return Krum(num_malicious_clients=s.byzantine, **_common(s, initial, n))  # type: ignore[arg-type]


STRATEGIES: dict[str, Callable[[StrategySettings, Parameters, int], Strategy]] = {
    "fedavg": _fedavg,
    "fedprox": _fedprox,
    "fedadam": _fedadam,
    "fedyogi": _fedyogi,
    "fedmedian": _fedmedian,
    "fedtrimmedavg": _fedtrimmedavg,
    "krum": _krum,
}

ROBUST_STRATEGIES = frozenset({"fedmedian", "fedtrimmedavg", "krum"})
"""Strategies that must see each institution's update (not only their sum)."""

CENTRAL_DP_STRATEGIES = frozenset({"fedavg", "fedprox"})
"""Strategies whose server step is the plain average that Flower's central-DP wrapper noises.

Flower's ``DifferentialPrivacyClientSideFixedClipping`` adds its noise to what the
wrapped strategy returns: for FedAvg and FedProx that is the average of updates
clipped to the bound (sensitivity bound / contributors); for FedAdam, FedYogi or
any other server optimiser it is the optimiser's output, whose sensitivity the
noise no longer matches. An allow-list, so a new strategy is refused until checked.
"""


def build_strategy(
    settings: StrategySettings, *, initial_parameters: Parameters, min_clients: int
) -> Strategy:
    """Flower's strategy for ``settings.name``, starting from ``initial_parameters``."""
    try:
        factory = STRATEGIES[settings.name]
    except KeyError:
        raise UnknownNameError("strategy", settings.name, STRATEGIES) from None
    return factory(settings, initial_parameters, min_clients)
