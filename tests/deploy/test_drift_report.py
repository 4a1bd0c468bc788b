"""``fedwarden drift report``: a file scored against the profile, or the stored state."""

from __future__ import annotations

import sys

import pytest

from server.errors import PermissionDeniedError
from server.store import repository as repo
from simulations.cli.app import main


def cli(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["fedwarden", *args])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr()
    return " ".join(capsys.readouterr().out.split())


def test_a_shifted_file_is_drift_with_a_retraining_advice_and_epsilon_left(model_store, tmp_path, monkeypatch, capsys):
    shifted = model_store.test_rows.drop(columns=[model_store.spec.schema.target.name])
    shifted["oldpeak"] = (shifted["oldpeak"] + 1.5).clip(upper=10)
    shifted.to_csv(tmp_path / "served.csv", index=False)
    familiar = model_store.train_rows.sample(300, random_state=0)
    familiar.to_parquet(tmp_path / "familiar.parquet")
    common = ("--database-url", model_store.url, "--api-key", model_store.keys["ops"])

    drifted = cli(monkeypatch, capsys, "drift", "report", "--model", "heart", "--input", str(tmp_path / "served.csv"),
                  "--out", str(tmp_path / "report.png"), *common)
    calm = cli(monkeypatch, capsys, "drift", "report", "--model", "heart", "--input", str(tmp_path / "familiar.parquet"),
               "--out", str(tmp_path / "calm.html"), *common)

    assert f"heart v1: drift over {len(shifted)} rows" in drifted
    assert "oldpeak │ numeric │ ks" in drifted and "a retraining run is recommended" in drifted
    for institution in ("Cleveland", "Hungary", "Switzerland", "VA Long Beach"):
        assert f"{institution} │ 1 │ 1 │ 0" in drifted  # ε spent 1 of its budget 1: none left
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "heart v1: ok over 300 rows" in calm and "retraining" not in calm
    page = (tmp_path / "calm.html").read_text()
    assert "<td>age</td><td>ks</td>" in page and "data:image/png;base64," in page


def test_without_a_file_the_services_latest_state_is_reported(model_store, tmp_path, monkeypatch, capsys):
    features = [{"name": "age", "kind": "numeric", "detector": "psi", "score": 0.4, "p_value": None,
                 "status": "drift", "bins": ["0–60", "60–120", "missing"], "reference": [0.5, 0.5, 0.0],
                 "current": [0.1, 0.9, 0.0]}]
    with model_store.store.session() as session:
        repo.record_drift_change(session=session, model="heart", version=1, previous="ok", status="drift",
                                 window_rows=500, window_span_s=60.0, features=features)

    out = cli(monkeypatch, capsys, "drift", "report", "--model", "heart", "--out", str(tmp_path / "state.html"),
              "--database-url", model_store.url, "--api-key", model_store.keys["eve"])

    assert "heart v1: drift over 500 rows (the service's window" in out
    assert "age │ numeric │ psi │ 0.4" in out and "a retraining run is recommended" in out
    assert "VA Long Beach" in out
    assert "<h2>Drift: a retraining run is recommended</h2>" in (tmp_path / "state.html").read_text()


def test_a_consumer_cannot_read_drift(model_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["fedwarden", "drift", "report", "--model", "heart", "--out",
                                      str(tmp_path / "x.html"), "--database-url", model_store.url,
                                      "--api-key", model_store.keys["app"]])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == PermissionDeniedError.exit_code
    assert "lacks permission 'model:read'" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
