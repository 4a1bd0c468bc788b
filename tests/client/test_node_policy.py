"""The node's own policy against a coordinator that asks for more: attacks as tests.

(a) The DP noise cannot be recomputed from the run's public settings: two rounds with
the same plan, seed and weights give different updates unless the run asks for
reproducibility AND the node's own policy allows it. The coordinator cannot switch DP
off, ask for less noise than the node accepts, or read an exhausted node's rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import RecordDict

from client.contract.plan import TrainingPlan
from client.contract.preprocessing import PreprocessingSpec
from client.contract.report import FitReport
from client.contract.schema import validate_frame
from client.contract.wire import TASK_EVALUATE, TASK_INIT, TASK_KEY
from client.data import holdout_split
from client.flower_client import InstitutionClient
from client.history import StateHistory
from client.node import NodeSettings
from privacy.accounting import AccountingStep
from privacy.config import DPConfig, PrivacyBudget
from privacy.errors import ConfigError, PolicyRefusalError
from privacy.policy import NodePolicy

PLAN = TrainingPlan(num_rounds=3, dp=DPConfig(noise_multiplier=1.2, accountant="prv"))


@pytest.fixture
def data(small_schema, rows_factory):
    rows = validate_frame(rows_factory(240, seed=0), small_schema)
    return holdout_split("A", rows, small_schema, seed=0)


def node(data, *, policy: NodePolicy | None = None, budget: float = 100.0) -> InstitutionClient:
    return InstitutionClient(
        data=data,
        settings=NodeSettings(
            budget=PrivacyBudget(epsilon=budget, delta=1e-5), policy=policy or NodePolicy()
        ),
        history=StateHistory(RecordDict()),
    )


def config(data, plan: TrainingPlan, server_round: int = 1) -> dict:
    spec = PreprocessingSpec.fit(data.train, data.schema)
    return {**plan.to_config(), "fw.preprocessing": spec.to_json(), TASK_KEY: "train",
            "fw.round": server_round}


def update(client: InstitutionClient, data, plan: TrainingPlan) -> list[np.ndarray]:
    weights = client.get_parameters({**config(data, plan), TASK_KEY: TASK_INIT})
    delta, _, metrics = client.fit(weights, config(data, plan))
    assert not FitReport.from_metrics(metrics).refused
    return delta


def test_the_same_public_settings_give_different_noise(data):
    first = update(node(data), data, PLAN)
    second = update(node(data), data, PLAN)

    assert not all(np.allclose(a, b) for a, b in zip(first, second, strict=True))


def test_a_reproducible_run_needs_the_nodes_own_consent(data):
    asked = dataclasses.replace(PLAN, reproducible=True)

    refused_a = update(node(data), data, asked)
    refused_b = update(node(data), data, asked)
    allowed = NodePolicy(allow_reproducible=True)
    seeded_a = update(node(data, policy=allowed), data, asked)
    seeded_b = update(node(data, policy=allowed), data, asked)

    assert not all(np.allclose(a, b) for a, b in zip(refused_a, refused_b, strict=True))
    for a, b in zip(seeded_a, seeded_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_coordinator_cannot_switch_dp_off(data):
    plain = dataclasses.replace(PLAN, dp=DPConfig(enabled=False))
    client = node(data)
    weights = client.get_parameters({**config(data, plain), TASK_KEY: TASK_INIT})

    delta, weight, metrics = client.fit(weights, config(data, plain))

    report = FitReport.from_metrics(metrics)
    assert report.refused and "without differential privacy" in report.reason
    assert weight == 0 and all(not np.any(d) for d in delta)
    permissive = node(data, policy=NodePolicy(allow_non_dp=True))
    assert not FitReport.from_metrics(permissive.fit(weights, config(data, plain))[2]).refused


def test_noise_below_the_nodes_floor_is_refused(data):
    thin = dataclasses.replace(PLAN, dp=DPConfig(noise_multiplier=0.2, accountant="prv"))
    client = node(data, policy=NodePolicy(min_noise_multiplier=0.5))
    weights = client.get_parameters({**config(data, thin), TASK_KEY: TASK_INIT})

    _, weight, metrics = client.fit(weights, config(data, thin))

    report = FitReport.from_metrics(metrics)
    assert report.refused and weight == 0 and "lowest is 0.5" in report.reason


def test_the_training_loss_never_leaves_the_node(data):
    client = node(data)
    weights = client.get_parameters({**config(data, PLAN), TASK_KEY: TASK_INIT})

    _, _, metrics = client.fit(weights, config(data, PLAN))

    assert np.isnan(metrics["fw.train_loss"])


def test_an_exhausted_node_answers_no_evaluation(data):
    client = node(data, budget=0.3)
    weights = client.get_parameters({**config(data, PLAN), TASK_KEY: TASK_INIT})
    client.fit(weights, config(data, PLAN))  # refused or spent: either way nothing is left
    client.history.append(AccountingStep(noise_multiplier=0.5, sample_rate=1.0, steps=10))

    vector, weight, metrics = client.fit(weights, {**config(data, PLAN), TASK_KEY: TASK_EVALUATE})

    report = FitReport.from_metrics(metrics)
    assert report.refused and weight == 0 and "has spent its budget" in report.reason
    assert not np.any(vector[0])


def test_an_evaluation_in_the_clear_needs_the_nodes_consent(data):
    client = node(data)
    weights = client.get_parameters({**config(data, PLAN), TASK_KEY: TASK_INIT})

    with pytest.raises(PolicyRefusalError, match="refuses to send an exact evaluation"):
        client.evaluate(weights, config(data, PLAN))
    vector, weight, _ = client.fit(weights, {**config(data, PLAN), TASK_KEY: TASK_EVALUATE})
    assert weight >= 1 and 0 <= vector[0][0] <= 1  # its term of the secure sum


def test_a_task_outside_the_policy_is_refused(data):
    client = node(data, policy=NodePolicy(tasks=frozenset({"train", "init"})))
    weights = client.get_parameters({**config(data, PLAN), TASK_KEY: TASK_INIT})

    with pytest.raises(PolicyRefusalError, match="does not answer 'evaluate'"):
        client.evaluate(weights, config(data, PLAN))


def test_the_policy_comes_from_the_nodes_own_config():
    settings = NodeSettings.from_node_config(
        {"budget-epsilon": 2, "allow-non-dp": "yes", "min-noise-multiplier": 0.8,
         "tasks": "train,init,summary"}
    )

    assert settings.policy == NodePolicy(
        allow_non_dp=True, min_noise_multiplier=0.8, tasks=frozenset({"train", "init", "summary"})
    )
    with pytest.raises(ConfigError, match="unknown task"):
        NodeSettings.from_node_config({"tasks": "train,exfiltrate"})
