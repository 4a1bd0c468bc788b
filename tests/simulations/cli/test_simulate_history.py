"""``fedwarden simulate --history``: budgets that survive from one run to the next."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_consecutive_runs_continue_the_history_until_the_budget_is_spent(tmp_path, cli):
    history = tmp_path / "history"

    def run(number: int) -> tuple[int, str]:
        return cli(
            "simulate", "--dataset", "heart-disease", "--institutions", "3", "--rounds", "1",
            "--no-baseline", "--no-register", "--history", str(history),
            "--budget", "3", "--target-epsilon", "1", "--out", str(tmp_path / f"run-{number}"),
        )  # fmt: skip

    summaries = []
    for number in (1, 2, 3):
        code, output = run(number)
        assert code == 0, output
        summaries.append(json.loads((tmp_path / f"run-{number}" / "summary.json").read_text()))
    code, output = run(4)

    kept = [s["privacy_history"] for s in summaries]
    for number, run_history in enumerate(kept, start=1):
        assert run_history["kept_in"] == str(history)
        for name, after in run_history["epsilon_after"].items():
            assert after == pytest.approx(number, abs=0.05), (number, name)
            assert after <= 3.0 + 1e-6
    assert kept[1]["epsilon_before"] == kept[0]["epsilon_after"]
    assert kept[2]["epsilon_before"] == kept[1]["epsilon_after"]
    assert code == 3
    assert "not training" in output
    assert not (tmp_path / "run-4" / "summary.json").exists()
    assert len(list(history.glob("*.jsonl"))) == 3  # one history per institution


def _spend(scenario, name: str, *, epsilon: float) -> None:
    from client.history import FileHistory
    from privacy.accounting import AccountingStep, noise_multiplier_for

    sigma = noise_multiplier_for(
        target_epsilon=epsilon, target_delta=1e-5, sample_rate=0.1, steps=40
    )
    path = scenario.history_path(name)
    FileHistory(path).append(AccountingStep(noise_multiplier=sigma, sample_rate=0.1, steps=40))


def test_without_a_history_the_output_says_every_run_starts_afresh(capsys):
    from simulations.cli.simulate import _report_history
    from simulations.scenario import Scenario

    scenario = Scenario(dataset="heart-disease", institutions=2)

    before = _report_history(scenario, accountant="prv", dp=True)

    assert set(before.values()) == {0.0}
    assert "no --history" in capsys.readouterr().out


def test_a_spent_budget_is_reported_per_institution_and_stops_the_run_before_training(
    tmp_path, capsys
):
    from privacy.config import PrivacyBudget
    from privacy.errors import BudgetSpentError
    from simulations.cli.simulate import _report_history
    from simulations.scenario import Scenario

    scenario = Scenario(
        dataset="heart-disease",
        institutions=3,
        budget=PrivacyBudget(epsilon=1.0, delta=1e-5),
        history_dir=tmp_path,
    )
    first, second, third = scenario.institution_names()
    _spend(scenario, first, epsilon=0.5)
    _spend(scenario, second, epsilon=1.0)

    before = _report_history(scenario, accountant="prv", dp=True)
    _spend(scenario, third, epsilon=1.0)
    with pytest.raises(BudgetSpentError, match="not training: only 1 of 3") as stopped:
        _report_history(scenario, accountant="prv", dp=True)

    output = " ".join(capsys.readouterr().out.split())  # rich wraps at 80 columns
    assert before[first] == pytest.approx(0.5, abs=0.01)
    assert output.count("budget spent: will refuse this run") == 1 + 2
    assert stopped.value.exit_code == 3
    assert stopped.value.context["institutions"] == sorted([second, third])
