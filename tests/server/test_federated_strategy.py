from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.common import (
    Code,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy

from client.contract.plan import TrainingPlan
from client.contract.report import FitReport
from privacy.config import DPConfig
from privacy.errors import ConfigError
from server.config import FederationSettings, SecAggSettings
from server.errors import NodeFailedError
from server.federated_strategy import FedwardenStrategy, SchedulingClientManager
from server.run_events import Institution
from server.strategies import StrategySettings, build_strategy

GLOBAL = [np.zeros((2, 3), dtype=np.float32), np.zeros(2, dtype=np.float32)]
OK = Status(code=Code.OK, message="")


def proxy(node_id: int) -> GridClientProxy:
    return GridClientProxy(node_id=node_id, grid=None, run_id=1)  # type: ignore[arg-type]


def institutions(n: int) -> dict[int, Institution]:
    return {
        i: Institution(
            node_id=i,
            name=f"inst-{i}",
            num_train=1000,
            num_test=50,
            budget_epsilon=1.0,
            budget_delta=1e-5,
            require_secagg=False,
        )
        for i in range(1, n + 1)
    }


def strategy(n: int = 3, name: str = "fedavg", **kwargs) -> FedwardenStrategy:
    inner = build_strategy(
        StrategySettings(name=name),
        initial_parameters=ndarrays_to_parameters(GLOBAL),
        min_clients=2,
    )
    return FedwardenStrategy(
        inner,
        plan=TrainingPlan(update_clip_norm=10.0, dp=DPConfig(noise_multiplier=1.0)),
        preprocessing="{}",
        institutions=institutions(n),
        secure=kwargs.pop("secure", False),
        **kwargs,
    )


def manager(n: int) -> SimpleClientManager:
    cm = SimpleClientManager()
    for i in range(1, n + 1):
        cm.register(proxy(i))
    return cm


def reply(
    node_id: int, delta: list[np.ndarray], examples: int, **report
) -> tuple[GridClientProxy, FitRes]:
    fields = {"epsilon": 0.5, "epsilon_next": 0.8, "epsilon_budget": 1.0, **report}
    metrics = FitReport(
        institution=f"inst-{node_id}", round=1, num_examples=examples, **fields
    ).to_metrics()
    return proxy(node_id), FitRes(OK, ndarrays_to_parameters(delta), examples, metrics)


def configured(s: FedwardenStrategy, n: int = 3) -> None:
    pairs = s.configure_fit(1, ndarrays_to_parameters(GLOBAL), manager(n))
    assert len(pairs) == n
    assert pairs[0][1].config["fw.task"] == "train" and pairs[0][1].config["fw.round"] == 1


def test_deltas_become_weights_and_are_averaged_by_examples():
    s = strategy()
    configured(s)
    ones = [np.ones((2, 3)), np.ones(2)]

    params, _ = s.aggregate_fit(1, [reply(1, ones, 100), reply(2, [2 * a for a in ones], 300)], [])

    merged = parameters_to_ndarrays(params)
    np.testing.assert_allclose(merged[0], np.full((2, 3), 1.75))
    assert s.logs[1].trained == ["inst-1", "inst-2"]
    assert s.logs[1].dropped == {"inst-3": "no reply (dropped out of the round)"}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ([np.full((2, 3), np.nan), np.zeros(2)], "NaN or Inf"),
        ([np.zeros((3, 2)), np.zeros(2)], "has shape (3, 2)"),
        ([np.full((2, 3), 100.0), np.zeros(2)], "exceeds the plan's bound"),
    ],
)
def test_a_malformed_update_is_dropped_and_the_rest_aggregated(bad, reason):
    s = strategy()
    configured(s)
    good = [np.ones((2, 3)), np.ones(2)]

    params, _ = s.aggregate_fit(
        1, [reply(1, good, 100), reply(2, bad, 100), reply(3, good, 100)], []
    )

    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], np.ones((2, 3)))
    assert reason in s.logs[1].rejected["inst-2"]
    assert s.logs[1].trained == ["inst-1", "inst-3"]


def test_refusals_are_recorded_and_not_aggregated():
    s = strategy()
    configured(s)
    good = [np.ones((2, 3)), np.ones(2)]
    zero = [np.zeros((2, 3)), np.zeros(2)]

    params, _ = s.aggregate_fit(
        1, [reply(1, good, 100), reply(2, zero, 0, refused=True, reason="over budget")], []
    )

    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], np.ones((2, 3)))
    assert s.logs[1].refused == {"inst-2": "over budget"}


def test_nothing_to_aggregate_keeps_the_global_model():
    s = strategy()
    configured(s)
    params, _ = s.aggregate_fit(1, [], [NodeFailedError(1, "timed out")])
    assert params is None
    assert s.logs[1].dropped["inst-1"] == "timed out"


def test_institutions_that_cannot_afford_another_round_are_not_scheduled():
    s = strategy(epsilon_cap=0.7)
    configured(s)
    good = [np.ones((2, 3)), np.ones(2)]
    s.aggregate_fit(
        1, [reply(1, good, 100), reply(2, good, 100), reply(3, good, 100, epsilon_next=0.6)], []
    )

    pairs = s.configure_fit(2, ndarrays_to_parameters(GLOBAL), manager(3))

    # 1 and 2 would reach 0.8 > cap 0.7; 3 reports 0.6 but cannot train alone (min 2)
    assert pairs == []
    assert set(s.exhausted) == {1, 2}
    assert [i.name for i in s.schedulable()] == ["inst-3"]
    assert s.epsilon == {"inst-1": 0.5, "inst-2": 0.5, "inst-3": 0.5}


def test_an_unreadable_report_is_rejected():
    s = strategy()
    configured(s)
    res = FitRes(
        OK, ndarrays_to_parameters([np.ones((2, 3)), np.ones(2)]), 10, {"fw.institution": "x"}
    )
    params, _ = s.aggregate_fit(1, [(proxy(1), res)], [])
    assert params is None and "unreadable report" in s.logs[1].rejected["inst-1"]


def test_scheduling_manager_never_blocks_and_offers_only_allowed_nodes():
    view = SchedulingClientManager(manager(4), allowed={2, 4}, seed=0)

    assert view.num_available() == 2
    assert sorted(p.node_id for p in view.sample(5)) == [2, 4]
    assert view.sample(2, min_num_clients=3) == []
    assert not view.wait_for(3, timeout=86400)


def test_robust_strategies_are_refused_with_secure_aggregation():
    with pytest.raises(ConfigError, match="needs each institution's update"):
        FederationSettings(strategy=StrategySettings(name="fedmedian"), secagg=SecAggSettings())
    assert math.isfinite(
        FederationSettings(
            strategy=StrategySettings(name="fedadam"), secagg=SecAggSettings()
        ).min_institutions
    )
