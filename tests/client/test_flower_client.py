from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from flwr.app import RecordDict
from opacus.accountants import PRVAccountant

from client.contract.errors import DataError
from client.contract.plan import TrainingPlan
from client.contract.preprocessing import PreprocessingSpec
from client.contract.report import FitReport
from client.contract.schema import validate_frame
from client.contract.wire import TASK_INIT, TASK_KEY, TASK_SUMMARY
from client.data import holdout_split
from client.flower_client import InstitutionClient
from client.history import FileHistory, StateHistory
from client.node import NodeSettings
from privacy.accounting import AccountingStep
from privacy.config import DPConfig, PrivacyBudget
from privacy.policy import NodePolicy


@pytest.fixture
def institution(small_schema, rows_factory):
    def build(schema=small_schema, name: str = "A", seed: int = 0):
        rows = validate_frame(rows_factory(240, seed=seed), schema)
        return holdout_split(name, rows, schema, seed=0)

    return build


def client_for(data, *, budget: float = 100.0, history=None, policy=None) -> InstitutionClient:
    return InstitutionClient(
        data=data,
        settings=NodeSettings(budget=PrivacyBudget(epsilon=budget, delta=1e-5), policy=policy or NodePolicy()),
        history=history if history is not None else StateHistory(RecordDict()),
    )


def round_config(data, plan: TrainingPlan, server_round: int) -> dict:
    spec = PreprocessingSpec.fit(data.train, data.schema)
    return {
        **plan.to_config(),
        "fw.preprocessing": spec.to_json(),
        TASK_KEY: "train",
        "fw.round": server_round,
    }


def initial(client: InstitutionClient, config: dict) -> list[np.ndarray]:
    return client.get_parameters({**config, TASK_KEY: TASK_INIT})


PLAN = TrainingPlan(num_rounds=3, dp=DPConfig(noise_multiplier=1.2, accountant="prv"))


def test_epsilon_accumulates_across_rounds_like_an_accountant_over_the_same_steps(institution):
    data = institution()
    client = client_for(data)
    reference = PRVAccountant()
    # The run's first release is the node's noisy row counts (one Gaussian, sensitivity 1).
    reference.step(noise_multiplier=NodePolicy().count_noise_multiplier, sample_rate=1.0)
    weights = initial(client, round_config(data, PLAN, 0))
    reported = []

    for server_round in (1, 2, 3):
        delta, _, metrics = client.fit(weights, round_config(data, PLAN, server_round))
        report = FitReport.from_metrics(metrics)
        for _ in range(report.steps):
            reference.step(noise_multiplier=report.noise_multiplier, sample_rate=report.sample_rate)
        reported.append(report.epsilon)
        assert report.epsilon == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-3)
        weights = [w + d for w, d in zip(weights, delta, strict=True)]

    assert reported[0] < reported[1] < reported[2]


def test_the_next_rounds_accounting_is_left_for_after_the_reply(institution, monkeypatch):
    from client import deferred
    from privacy import accounting

    monkeypatch.setattr(deferred, "_queue", [])
    monkeypatch.setattr(deferred, "_enabled", [True])  # as in the warm executor's child
    data = institution()
    client = client_for(data)
    weights = initial(client, round_config(data, PLAN, 0))
    client.fit(weights, round_config(data, PLAN, 1))
    assert [what for what, _ in deferred._queue] == ["the next round's accounting"]
    assert deferred.run_deferred() == 1

    def no_accounting(*args, **kwargs):
        raise AssertionError("the second round recomputed ε")

    monkeypatch.setattr(accounting, "get_accountant", no_accounting)
    _, _, metrics = client.fit(weights, round_config(data, PLAN, 2))  # every ε it needs: known

    report = FitReport.from_metrics(metrics)
    assert not report.refused and report.epsilon < report.epsilon_next


def test_a_round_past_the_budget_is_refused_without_training(institution):
    data = institution()
    history = StateHistory(RecordDict())
    client = client_for(data, budget=1.0, history=history)
    plan = TrainingPlan(num_rounds=10, dp=DPConfig(noise_multiplier=4.0))
    weights = initial(client, round_config(data, plan, 0))

    reports = []
    for server_round in range(1, 11):
        delta, examples, metrics = client.fit(weights, round_config(data, plan, server_round))
        report = FitReport.from_metrics(metrics)
        reports.append(report)
        if report.refused:
            break

    refused = reports[-1]
    assert refused.refused and examples == 0
    assert all(not np.any(d) for d in delta)
    assert "refuses to train" in refused.reason and "past its budget of 1" in refused.reason
    trained = [r for r in reports if not r.refused]
    assert trained and max(r.epsilon for r in trained) <= 1.0
    assert refused.epsilon == pytest.approx(trained[-1].epsilon)
    assert refused.epsilon_next > 1.0
    # the last trained round already announced that no further round fits
    assert trained[-1].epsilon_next > 1.0
    assert len(history.load()) == 1 + len(trained)  # the published row counts, then the rounds


def test_derived_noise_spends_the_budget_over_the_planned_rounds(institution):
    data = institution()
    client = client_for(data, budget=1.0)
    plan = TrainingPlan(num_rounds=3)  # no noise given: derived from the budget
    weights = initial(client, round_config(data, plan, 0))

    reports = [
        FitReport.from_metrics(client.fit(weights, round_config(data, plan, r))[2])
        for r in (1, 2, 3)
    ]

    assert not any(r.refused for r in reports)
    assert reports[-1].epsilon <= 1.0 + 1e-6
    assert reports[-1].epsilon > 0.95
    assert reports[-1].epsilon_next > 1.0


def test_updates_are_deltas_bounded_by_the_plan(institution):
    data = institution()
    client = client_for(data)
    plan = TrainingPlan(num_rounds=3, update_clip_norm=0.05, dp=DPConfig(noise_multiplier=1.0))
    weights = initial(client, round_config(data, plan, 0))

    delta, examples, metrics = client.fit(weights, round_config(data, plan, 1))

    report = FitReport.from_metrics(metrics)
    norm = math.sqrt(sum(float((d**2).sum()) for d in delta))
    # the weight is the node's published (noisy) row count, the census's
    assert examples == client.get_properties({})["fw.num-train"] >= 1
    assert norm == pytest.approx(0.05) and report.update_clipped and report.update_norm > 0.05


def test_no_dp_reports_infinite_epsilon_where_the_node_allows_it(institution):
    data = institution()
    client = client_for(data, policy=NodePolicy(allow_non_dp=True))
    plan = TrainingPlan(dp=DPConfig(enabled=False))
    weights = initial(client, round_config(data, plan, 0))

    report = FitReport.from_metrics(client.fit(weights, round_config(data, plan, 1))[2])

    assert not report.dp and math.isinf(report.epsilon) and report.steps == 0


def test_a_different_schema_is_refused(institution, small_schema):
    data = institution()
    client = client_for(data)
    other = small_schema.model_copy(update={"name": "other"})
    spec = PreprocessingSpec.fit(data.train, other)
    config = {
        **PLAN.to_config(),
        "fw.preprocessing": spec.to_json(),
        TASK_KEY: "train",
        "fw.round": 1,
    }
    weights = initial(client, round_config(data, PLAN, 0))

    _, examples, metrics = client.fit(weights, config)

    assert examples == 0 and "schema differs" in FitReport.from_metrics(metrics).reason


def test_summary_census_and_evaluation(institution, small_schema):
    data = institution()
    client = client_for(data)

    noisy = dataclasses.replace(PLAN, summary_noise_multiplier=6.0)
    summary, rows, report = client.fit([], {**noisy.to_config(), TASK_KEY: TASK_SUMMARY, "fw.round": 0})
    exact, refused_rows, refusal = client.fit([], {**PLAN.to_config(), TASK_KEY: TASK_SUMMARY, "fw.round": 0})
    census = client.get_properties({})
    config = round_config(data, PLAN, 1)
    (vector,), test_rows, _ = client.fit(initial(client, config), {**config, TASK_KEY: "evaluate"})
    accuracy, loss = vector

    # every count that leaves is the run's one noisy draw, never the exact count
    assert rows == census["fw.num-train"] and np.all(np.isfinite(summary[0]))
    assert FitReport.from_metrics(report).noise_multiplier == 6.0 and FitReport.from_metrics(report).epsilon > 0
    assert refused_rows == 0 and not np.any(exact[0])  # an exact summary needs the node's consent
    assert "refuses to send an exact preprocessing summary" in FitReport.from_metrics(refusal).reason
    assert (
        census["fw.schema-fingerprint"] == small_schema.fingerprint()
    )
    assert test_rows == census["fw.num-test"] and 0 <= accuracy <= 1 and loss > 0


def test_initial_weights_depend_only_on_the_seed(institution):
    a, b = institution(name="A"), institution(name="B", seed=4)
    config = round_config(a, PLAN, 0)

    first = initial(client_for(a), config)
    second = initial(client_for(b), config)

    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(x, y)


def test_file_history_survives_a_new_client_and_refuses_when_corrupt(tmp_path, small_schema):
    path = tmp_path / "ledger.jsonl"
    history = FileHistory(path)
    history.append(AccountingStep(noise_multiplier=1.0, sample_rate=0.2, steps=5))

    assert FileHistory(path).load() == [
        AccountingStep(noise_multiplier=1.0, sample_rate=0.2, steps=5)
    ]
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DataError, match="corrupt at line 2"):
        FileHistory(path).load()
