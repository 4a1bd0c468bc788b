from __future__ import annotations

import json
import sys

import pytest

from privacy.accounting import AccountingStep, compute_epsilon
from simulations.cli.app import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fedwarden", "privacy", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_epsilon_prints_json_matching_the_accountant(monkeypatch, capsys, accountant):
    code, out, _ = run_cli(
        monkeypatch, capsys, "epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1.1",
        "--steps", "1000", "--delta", "1e-5", "--accountant", accountant, "--json",
    )

    result = json.loads(out)
    expected = compute_epsilon(
        [AccountingStep(noise_multiplier=1.1, sample_rate=0.01, steps=1000)], delta=1e-5, accountant=accountant
    )
    assert code == 0
    assert result["epsilon"] == pytest.approx(expected)
    assert result["accountant"] == accountant and result["steps"] == 1000


def test_noise_finds_the_multiplier_that_meets_the_target(monkeypatch, capsys):
    code, out, _ = run_cli(
        monkeypatch, capsys, "noise", "--target-epsilon", "1.0", "--sample-rate", "0.2",
        "--steps", "25", "--delta", "1e-5", "--json",
    )

    result = json.loads(out)
    assert code == 0
    assert result["epsilon"] <= 1.0 < result["epsilon"] * 1.02
    spent = compute_epsilon(
        [AccountingStep(noise_multiplier=result["noise_multiplier"], sample_rate=0.2, steps=25)], delta=1e-5
    )
    assert spent == pytest.approx(result["epsilon"])


def test_plain_output_is_one_readable_line(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "epsilon", "-q", "0.1", "-s", "2", "-t", "100")
    assert code == 0 and out.startswith("ε = ") and "δ = 1e-05" in out


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["epsilon", "-q", "1.5", "-s", "1", "-t", "10"], "sample rate must be in (0, 1]"),
        (["epsilon", "-q", "0.1", "-s", "-1", "-t", "10"], "noise multiplier must be >= 0"),
        (["epsilon", "-q", "0.1", "-s", "1", "-t", "0"], "steps must be >= 1"),
        (["epsilon", "-q", "0.1", "-s", "1", "-t", "10", "-d", "1"], "δ must be in (0, 1)"),
        (["epsilon", "-q", "0.1", "-s", "1", "-t", "10", "--accountant", "gdp"], "unknown accountant 'gdp'"),
        (["noise", "-e", "0", "-q", "0.1", "-t", "10"], "target ε must be > 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, args, phrase):
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and phrase in err and "Traceback" not in out + err
