"""One round in which every institution sends a vector, and the coordinator keeps their average.

The federated summary (from which the preprocessing is fitted) and the
reference profile are such rounds: ``federated_average`` runs one through a
workflow (Flower's SecAgg+, or in the clear) with ``AverageStrategy``, which
checks each vector's shape and range and averages them by the rows behind them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from flwr.server.strategy.aggregate import aggregate
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp.grid import Grid

from server.federated_strategy import SchedulingClientManager
from server.workflows import Workflow, fresh_context

logger = logging.getLogger(__name__)

_SUMMARY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FederatedAverage:
    """A row-weighted average of the institutions' vectors, the rows behind it, their reports."""

    vector: np.ndarray
    rows: float
    metrics: list[dict[str, Scalar]]


class AverageStrategy(Strategy):
    """One fit round in which every institution sends a vector; keep their weighted average."""

    def __init__(
        self,
        *,
        size: int,
        allowed: set[int],
        config: dict[str, Scalar],
        parameters: list[np.ndarray],
        value_range: tuple[float, float],
    ) -> None:
        self.size = size
        self.allowed = allowed
        self.config = config
        self.parameters = parameters
        self.low, self.high = value_range
        self.result: FederatedAverage | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        scheduler = SchedulingClientManager(client_manager, allowed=self.allowed, seed=0)
        proxies = sorted(scheduler.all().values(), key=lambda p: p.node_id)
        ins = FitIns(ndarrays_to_parameters(self.parameters), dict(self.config))
        return [(proxy, ins) for proxy in proxies]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        accepted = []
        metrics = []
        for proxy, res in results:
            if res.num_examples <= 0:
                # A refusal weighs nothing: its report counts, its vector does not. (Under
                # SecAgg+ every result carries the unmasked aggregate, which is not finite
                # when every institution refused.)
                metrics.append(dict(res.metrics))
                continue
            arrays = parameters_to_ndarrays(res.parameters)
            if (
                len(arrays) != 1
                or arrays[0].shape != (self.size,)
                or not np.all(np.isfinite(arrays[0]))
                or arrays[0].min() < self.low - _SUMMARY_TOLERANCE
                or arrays[0].max() > self.high + _SUMMARY_TOLERANCE
            ):
                logger.error("dropping a malformed vector from node %d", proxy.node_id)
                continue
            metrics.append(dict(res.metrics))
            accepted.append((arrays, res.num_examples))
        for failure in failures:
            logger.warning("a node's vector failed: %s", failure)
        if accepted:
            self.result = FederatedAverage(
                vector=np.clip(aggregate(accepted)[0], self.low, self.high),
                rows=float(sum(weight for _, weight in accepted)),
                metrics=metrics,
            )
        elif metrics:
            self.result = FederatedAverage(vector=np.zeros(self.size), rows=0.0, metrics=metrics)
        return None, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[Any]:
        return []

    def aggregate_evaluate(
        self, server_round: int, results: list[Any], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


def federated_average(
    grid: Grid,
    context: Context,
    manager: ClientManager,
    *,
    allowed: set[int],
    config: dict[str, Scalar],
    parameters: list[np.ndarray],
    size: int,
    value_range: tuple[float, float],
    workflow: Workflow,
) -> FederatedAverage | None:
    """The row-weighted average of one vector per institution, in one fit round.

    Each institution answers the task in ``config`` (with ``parameters`` as
    the instruction's arrays) with a vector of ``size`` values within
    ``value_range``, weighted by its rows, through ``workflow`` (with secure
    aggregation only the weighted sum is ever unmasked); only the nodes in
    ``allowed`` are asked. ``None`` when no vector arrived.
    """
    strategy = AverageStrategy(
        size=size,
        allowed=allowed,
        config=config,
        parameters=parameters,
        value_range=value_range,
    )
    legacy = LegacyContext(
        context=fresh_context(context),
        config=ServerConfig(num_rounds=0),
        strategy=strategy,
        client_manager=manager,
    )
    legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord(parameters)
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 0})
    workflow(grid, legacy)
    return strategy.result
