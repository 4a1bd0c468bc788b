"""simulate → export → serve → 2,000 predictions → outcomes fed back → performance falls, alerted.

The world changes in two ways at once, as it does: the service starts seeing
patients near the model's decision boundary (the estimate, from probabilities
alone, calibrated on the federation's reference, must drop before any label
comes back), and the outcomes follow a world where one feature's effect is
flipped (each label is what the model would say with that feature mirrored).
Half of the predictions get their outcome; realised accuracy falls below its
threshold; the alert is stored and audited exactly once, and ``/metrics``
shows it. Slow (Ray and a real uvicorn process), and run in CI.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from sqlalchemy import select

from client.contract.architecture import ModelSpec
from client.contract.preprocessing import PreprocessingSpec
from client.contract.schema import CategoricalFeature, NumericFeature
from client.models import build_model, set_weights
from deploy.serving_model import frame_to_rows
from server.checkpoint_format import RunCheckpoint
from server.store import repository as repo
from server.store.engine import open_store
from server.store.models import AuditEvent, PerformanceEvent, Run
from simulations.scenario import Scenario

from .test_end_to_end import cli

pytestmark = pytest.mark.slow
MODEL = "heart-disease"


def mirrored(frame: pd.DataFrame, feature, pool: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``feature``'s value reflected (numeric) or swapped (two categories)."""
    out = frame.copy()
    if isinstance(feature, NumericFeature):
        low, high = pool[feature.name].min(), pool[feature.name].max()
        out[feature.name] = low + high - frame[feature.name]
    else:
        first, second = feature.categories[:2]
        out[feature.name] = frame[feature.name].map({first: second, second: first}).where(
            frame[feature.name].notna(), None)
    return out


def simulated(tmp_path, monkeypatch, capsys) -> tuple[str, dict[str, str], PreprocessingSpec, torch.nn.Module]:
    """A simulated run's store with version 1 in production, keys, and the model in torch."""
    out = tmp_path / "run"
    run = subprocess.run(
        # An exact profile (the simulation's user is every party, and allows it): the CBPE
        # calibration of 600 rows does not survive the default profile noise.
        [sys.executable, "-m", "simulations.cli", "simulate", "--institutions", "3", "--rounds", "2",
         "--no-baseline", "--profile-noise-multiplier", "0", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    url = f"sqlite:///{out / 'fedwarden.db'}"
    cli(monkeypatch, capsys, "admin", "init", "--database-url", url)
    keys = {}
    for name, role in (("ops", "operator"), ("clinic", "consumer")):
        keys[name] = cli(monkeypatch, capsys, "admin", "enroll", name, role, "--database-url", url).strip().splitlines()[-1]
    cli(monkeypatch, capsys, "models", "promote", MODEL, "1", "--database-url", url, "--api-key", keys["ops"])
    store = open_store(url)
    with store.session() as session:
        ops = repo.authenticate(session, keys["ops"])
        run_id = str(session.scalars(select(Run.id)).one())
        checkpoint = RunCheckpoint.from_bytes(repo.latest_checkpoint(session=session, actor=ops, run_id=run_id).blob)
        profile = repo.get_model_version(session=session, actor=ops, name=MODEL).profile
    store.dispose()
    assert profile is not None and any(b["kind"] == "calibration" for b in profile["blocks"])
    spec = PreprocessingSpec.from_json(checkpoint.preprocessing)
    network = build_model(ModelSpec.from_dict(checkpoint.model_spec))
    set_weights(network, checkpoint.weights)
    return url, keys, spec, network


def changed_world(spec: PreprocessingSpec, network: torch.nn.Module):  # type: ignore[no-untyped-def]
    """Ordinary rows, rows near the boundary, and the labelling with one feature's effect flipped."""

    def positive(frame: pd.DataFrame) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(network(torch.as_tensor(spec.transform(frame))), dim=1).numpy()[:, 1]

    institutions = Scenario(institutions=3).all_institutions()
    pool = pd.concat([d.train for d in institutions] + [d.test for d in institutions], ignore_index=True)
    ordinary = pool.sample(1000, replace=True, random_state=1).reset_index(drop=True)
    near = pool.iloc[np.argsort(np.abs(positive(pool) - 0.5))[:150]]
    uncertain = near.sample(1000, replace=True, random_state=2).reset_index(drop=True)
    # The feature whose mirroring changes the most of the model's answers near the boundary.
    candidates = [f for f in spec.schema.features
                  if isinstance(f, NumericFeature) or (isinstance(f, CategoricalFeature) and len(f.categories) == 2)]
    flips = {f.name: np.mean((positive(uncertain) > 0.5) != (positive(mirrored(uncertain, f, pool)) > 0.5))
             for f in candidates}
    flipped = next(f for f in candidates if f.name == max(flips, key=flips.__getitem__))
    assert flips[flipped.name] > 0.4, flips
    labels = spec.schema.target.labels

    def world(frame: pd.DataFrame) -> list[str]:
        return [labels[int(p > 0.5)] for p in positive(mirrored(frame, flipped, pool))]

    return ordinary, uncertain, world


def test_performance_falls_is_estimated_first_and_alerted_once(tmp_path, monkeypatch, capsys, serve):
    url, keys, spec, network = simulated(tmp_path, monkeypatch, capsys)
    ordinary, uncertain, world = changed_world(spec, network)
    monkeypatch.setenv("FEDWARDEN_PERFORMANCE_MIN_ROWS", "200")
    monkeypatch.setenv("FEDWARDEN_PERFORMANCE_CHECK_INTERVAL_S", "0.5")
    with serve(url, tmp_path / "serve.log") as live:
        clinic = {"Authorization": f"Bearer {keys['clinic']}"}
        operator = {"Authorization": f"Bearer {keys['ops']}"}

        def predict(frame: pd.DataFrame) -> list[str]:
            ids = []
            for start in range(0, len(frame), 100):
                rows = frame_to_rows(frame.iloc[start:start + 100], spec)
                response = httpx.post(f"{live.url}/v1/models/{MODEL}/predict", json={"rows": rows}, headers=clinic, timeout=30)
                assert response.status_code == 200, response.text
                ids += [p["prediction_id"] for p in response.json()["predictions"]]
            return ids

        def performance() -> dict:
            response = httpx.get(f"{live.url}/v1/models/{MODEL}/performance", headers=operator, timeout=30)
            assert response.status_code == 200, response.text
            return response.json()

        def feed(ids: list[str], frame: pd.DataFrame) -> None:
            outcomes = [{"prediction_id": i, "label": y} for i, y in zip(ids, world(frame), strict=True)]
            response = httpx.post(f"{live.url}/v1/models/{MODEL}/feedback", json={"outcomes": outcomes}, headers=clinic, timeout=60)
            assert response.status_code == 200 and response.json()["accepted"] == len(ids), response.text

        ordinary_ids = predict(ordinary)
        before = performance()
        uncertain_ids = predict(uncertain)
        shifted = performance()
        feed(ordinary_ids[:500], ordinary.head(500))
        early = performance()
        feed(uncertain_ids[:500], uncertain.head(500))
        late = performance()
        time.sleep(1.5)  # the service's own periodic checks run too: still one alert
        performance()
        metrics = httpx.get(f"{live.url}/metrics", timeout=10).text

    # The estimate moved before any label arrived.
    assert before["estimated"]["calibrated"] and before["realised"]["status"] == "insufficient_data"
    assert shifted["realised"]["rows"] == 0
    assert shifted["estimated"]["accuracy"] < before["estimated"]["accuracy"] - 0.05
    # Realised accuracy fell with the outcomes, below the threshold.
    assert early["realised"]["rows"] == 500 and late["realised"]["rows"] == 1000
    assert late["realised"]["accuracy"] < early["realised"]["accuracy"] - 0.1
    assert late["realised"]["accuracy"] < late["thresholds"]["accuracy"]
    assert late["realised"]["status"] == "alert"
    # Stored and audited once.
    store = open_store(url)
    with store.session() as session:
        events = session.scalars(select(PerformanceEvent).where(PerformanceEvent.kind == "realised")).all()
        audited = [e for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "performance.change"))
                   if e.details["kind"] == "realised"]
    store.dispose()
    assert [(e.previous, e.status) for e in events] == [("ok", "alert")]
    assert len(audited) == 1 and audited[0].details["breached"] == ["accuracy"]
    assert f'fedwarden_performance_status{{kind="realised",model="{MODEL}"}} 1.0' in metrics
    gauge = next(line for line in metrics.splitlines()
                 if line.startswith(f'fedwarden_performance{{kind="realised",metric="accuracy",model="{MODEL}"}}'))
    assert float(gauge.split()[-1]) == pytest.approx(late["realised"]["accuracy"], abs=0.02)
