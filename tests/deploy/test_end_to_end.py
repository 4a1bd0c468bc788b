"""simulate → export → promote → serve (a real uvicorn process) → predict over HTTP.

Every step goes through the ``fedwarden`` command line, as an operator would;
the served probabilities must match the PyTorch model rebuilt from the run's
checkpoint. Slow (Ray and a server process), and run in CI.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from client.contract.architecture import ModelSpec
from client.contract.preprocessing import PreprocessingSpec
from client.models import build_model, set_weights
from deploy.serving_model import frame_to_rows
from privacy.policy import DEFAULT_COUNT_NOISE
from server.checkpoint_format import RunCheckpoint
from server.store import repository as repo
from server.store.engine import open_store
from simulations.cli.app import main
from simulations.scenario import Scenario

pytestmark = pytest.mark.slow


def cli(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["fedwarden", *args])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr()
    return capsys.readouterr().out


def test_simulate_export_promote_serve_predict(tmp_path, monkeypatch, capsys, serve):
    out = tmp_path / "run"
    simulated = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "simulate", "--institutions", "3", "--rounds", "2",
         "--no-baseline", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert simulated.returncode == 0, simulated.stderr[-3000:]
    assert "registered model 'heart-disease' version 1 (staging)" in " ".join(simulated.stdout.split())
    url = f"sqlite:///{out / 'fedwarden.db'}"

    cli(monkeypatch, capsys, "admin", "init", "--database-url", url)
    keys = {}
    for name, role in (("ops", "operator"), ("frontend", "consumer")):
        keys[name] = cli(monkeypatch, capsys, "admin", "enroll", name, role, "--database-url", url).strip().splitlines()[-1]
    assert "heart-disease" in cli(monkeypatch, capsys, "models", "list", "--database-url", url, "--api-key", keys["ops"])
    cli(monkeypatch, capsys, "models", "promote", "heart-disease", "1", "--database-url", url, "--api-key", keys["ops"])

    scenario = Scenario(institutions=3)
    test_rows = pd.concat([i.test for i in scenario.all_institutions()], ignore_index=True)
    store = open_store(url)
    with store.session() as session:
        ops = repo.authenticate(session, keys["ops"])
        checkpoint = RunCheckpoint.from_bytes(repo.latest_checkpoint(session=session, actor=ops, run_id=_run_id(session)).blob)
        profile = repo.get_model_version(session=session, actor=ops, name="heart-disease").profile
    store.dispose()
    # The run's reference profile travelled with the registered model: every training row, counted
    # as the nodes publish them (noised, σ = 20 rows each: no exact count leaves a node).
    assert profile is not None and profile["round"] == 2
    training_rows = sum(len(i.train) for i in scenario.all_institutions())
    assert abs(profile["rows"] - training_rows) <= 6 * DEFAULT_COUNT_NOISE * np.sqrt(3)
    spec = PreprocessingSpec.from_json(checkpoint.preprocessing)
    network = build_model(ModelSpec.from_dict(checkpoint.model_spec))
    set_weights(network, checkpoint.weights)
    with torch.no_grad():
        expected = torch.softmax(network(torch.as_tensor(spec.transform(test_rows))), dim=1).numpy()

    with serve(url, tmp_path / "serve.log") as live:
        response = httpx.post(
            f"{live.url}/v1/models/heart-disease/predict",
            json={"rows": frame_to_rows(test_rows, spec)},
            headers={"Authorization": f"Bearer {keys['frontend']}"},
            timeout=30,
        )
        denied = httpx.get(f"{live.url}/v1/models/heart-disease", headers={"Authorization": f"Bearer {keys['frontend']}"})
        drift = httpx.get(f"{live.url}/v1/models/heart-disease/drift", headers={"Authorization": f"Bearer {keys['ops']}"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 1 and len(body["predictions"]) == len(test_rows)
    served = np.array([[p["probabilities"][label] for label in spec.schema.target.labels] for p in body["predictions"]])
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert denied.status_code == 403
    assert drift.status_code == 200, drift.text
    assert drift.json()["window_rows"] == len(test_rows) and drift.json()["status"] in ("ok", "warning", "drift")
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rounds"]) == 2


def _run_id(session) -> str:
    from sqlalchemy import select

    from server.store.models import Run

    return str(session.scalars(select(Run.id)).one())
