"""End to end on Flower's simulation engine (Ray): slow, and run in CI."""

from __future__ import annotations

import json
import math

import pytest

from privacy.accounting import AccountingStep, compute_epsilon
from privacy.config import PrivacyBudget
from privacy.ledger import PrivacyLedger
from server.ledger import LedgerObserver
from simulations.report import composed_epsilon, write_outputs
from simulations.runner import prepare, simulate
from simulations.scenario import Scenario

pytestmark = pytest.mark.slow


class Recorder:
    def __init__(self) -> None:
        self.starts: list = []
        self.rounds: list = []
        self.ends: list = []

    def on_run_start(self, start) -> None:
        self.starts.append(start)

    def on_round_end(self, record) -> None:
        self.rounds.append(record)

    def on_run_end(self, result) -> None:
        self.ends.append(result)


def test_three_hospitals_two_rounds_end_to_end(tmp_path):
    scenario = Scenario(institutions=3, seed=1, budget=PrivacyBudget(epsilon=1.0, delta=1e-5))
    recorder = Recorder()
    ledger = LedgerObserver(tmp_path)

    outcome = simulate(scenario, prepare(scenario, {"num-server-rounds": 2, "secagg": False}), observers=[recorder, ledger])

    names = ["Cleveland", "Hungary", "Switzerland"]
    assert [i.name for i in recorder.starts[0].institutions] == names
    assert [r.round for r in recorder.rounds] == [1, 2]
    for record in outcome.result.rounds:
        assert sorted(record.participants) == names
        assert record.accuracy is not None and 0.5 < record.accuracy <= 1.0
        assert all(0 < record.epsilon[n] <= 1.0 for n in names)
    first, second = outcome.result.rounds
    assert all(second.epsilon[n] > first.epsilon[n] for n in names)
    assert outcome.baseline is not None and outcome.baseline.accuracy > 0.7
    assert recorder.ends[0].stopped_reason == "completed every round"

    summary_path, plot_path = write_outputs(outcome, tmp_path)
    summary = json.loads(summary_path.read_text())
    assert summary["dataset"] == "heart-disease" and summary["strategy"] == "fedavg"
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert set(summary["final"]["epsilon"]) == set(names)
    assert summary["final"]["accuracy"] == pytest.approx(second.accuracy)
    assert math.isfinite(summary["centralized_baseline"]["accuracy"])
    assert plot_path.stat().st_size > 10_000

    written = PrivacyLedger.read_jsonl(tmp_path / "ledger.jsonl")
    # every release is on the books: the noisy summary (round 0), the rounds, the profile
    assert {e.release for e in written.entries()} == {"summary", "training", "profile"}
    assert sorted(
        (e.institution, e.round) for e in written.entries() if e.release == "training"
    ) == sorted(
        (n, r) for n in names for r in (1, 2)
    )
    composed = composed_epsilon(outcome)  # every release, the profile's last
    assert all(written.spent(n) == pytest.approx(composed[n]) for n in names)
    assert all(composed[n] >= second.epsilon[n] for n in names)
    assert summary["final"]["epsilon"] == pytest.approx(composed)


def test_secure_aggregation_with_central_dp_reports_institution_level_epsilon():
    scenario = Scenario(institutions=3, seed=2)

    outcome = simulate(
        scenario,
        prepare(scenario, {"num-server-rounds": 2, "secagg": True, "central-dp": True,
         "central-noise-multiplier": 0.8, "central-delta": 1e-3}),
        baseline=False,
    )

    first, second = outcome.result.rounds
    for count, record in ((1, first), (2, second)):
        expected = compute_epsilon(
            [AccountingStep(noise_multiplier=0.8, sample_rate=1.0, steps=count)], delta=1e-3
        )
        assert record.central_epsilon == pytest.approx(expected)
        assert record.secagg is not None and record.secagg["max_weight"] == 1.0
        assert len(record.participants) == 3
    assert 0 < first.central_epsilon < second.central_epsilon
