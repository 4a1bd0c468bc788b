"""The CLI's answers to bad input: one line, a non-zero exit, no traceback."""

from __future__ import annotations

import sys

import pytest

from simulations.cli.app import main


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["fedwarden", *args])
    with pytest.raises(SystemExit) as caught:
        main()
    captured = capsys.readouterr()
    return int(caught.value.code or 0), captured.out + captured.err


@pytest.mark.parametrize(
    ("args", "code", "phrase"),
    [
        (["--dataset", "mnist"], 2, "unknown dataset 'mnist'"),
        (["--strategy", "fedsgd"], 2, "unknown strategy 'fedsgd'"),
        (["--model", "resnet"], 2, "unknown model 'resnet'"),
        (["--noise-multiplier", "-1"], 2, "noise multiplier must be >= 0"),
        (["--delta", "1.5"], 2, "budget δ must be in (0, 1)"),
        (["--budget", "0"], 2, "budget ε must be > 0"),
        (["--dataset", "digits", "--institutions", "400"], 2, "cannot feed 400 institutions"),
        (["--institutions", "9"], 2, "comes split into 4 real institutions"),
        (["--partition", "shards"], 2, "unknown partitioner 'shards'"),
        (
            ["--dataset", "digits", "--partition", "dirichlet", "--alpha", "0"],
            2,
            "alpha must be > 0",
        ),
        (["--rounds", "0"], 2, "rounds must be >= 1"),
        (["--sample-rate", "1.5"], 2, "sample rate must be in (0, 1]"),
        (["--budget-for", "Nowhere=1"], 2, "budgets name unknown institutions: Nowhere"),
        (
            ["--noise-multiplier", "0.2", "--budget", "0.05"],
            3,
            "one round already costs more than the budget",
        ),
        (["--institutions", "2"], 3, "a secure sum needs at least 3"),
    ],
)
def test_bad_input_gets_one_line_and_an_exit_code(
    monkeypatch, capsys, tmp_path, args, code, phrase
):
    exit_code, output = run_cli(monkeypatch, capsys, "simulate", "--out", str(tmp_path), *args)

    assert exit_code == code
    assert phrase in " ".join(output.split())
    assert "Traceback" not in output
    assert not (tmp_path / "summary.json").exists()


def test_unknown_option_is_a_usage_error(monkeypatch, capsys):
    exit_code, output = run_cli(monkeypatch, capsys, "simulate", "--frobnicate")
    assert exit_code == 2 and "No such option" in output


def test_a_node_cannot_set_k_below_two(monkeypatch, capsys, tmp_path):
    exit_code, output = run_cli(
        monkeypatch, capsys, "client", "join", "--coordinator", "127.0.0.1:1",
        "--ca", str(tmp_path / "ca.pem"), "--key", str(tmp_path / "node.key"),
        "--budget-epsilon", "1", "--dataset", "heart-disease", "--no-check-data",
        "--history", str(tmp_path / "h.json"), "--state", str(tmp_path / "state"),
        "--min-secure-participants", "1",
    )

    assert exit_code == 2 and "'min-secure-participants' must be an integer >= 2" in output
