"""``fedwarden simulate --history``: budgets that survive from one run to the next."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_consecutive_runs_continue_the_history_until_the_budget_is_spent(tmp_path, cli):
    history = tmp_path / "history"

    def run(number: int) -> tuple[int, str]:
        return cli(
            "simulate", "--dataset", "heart-disease", "--institutions", "4", "--rounds", "2",
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
    assert len(list(history.glob("*.jsonl"))) == 4
