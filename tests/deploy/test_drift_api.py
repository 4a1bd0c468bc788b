"""``GET /v1/models/{name}/drift`` over the real store, onnxruntime and the fixture's profile."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from deploy.api import create_app
from deploy.serving_model import frame_to_rows
from server.store import repository as repo
from server.store.models import DriftEvent
from tests.deploy.conftest import settings_for


def auth(model_store, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {model_store.keys[who]}"}


@pytest.fixture
def drift_client(model_store) -> Iterator[TestClient]:
    settings = settings_for(model_store.url, drift_window_rows=200, drift_check_interval_s=3600.0)
    with TestClient(create_app(settings)) as client:
        yield client


def send(client: TestClient, model_store, frame) -> None:
    rows = frame_to_rows(frame, model_store.spec)
    for start in range(0, len(rows), 64):
        response = client.post("/v1/models/heart/predict", json={"rows": rows[start : start + 64]},
                               headers=auth(model_store, "app"))
        assert response.status_code == 200


def drift_changes(model_store) -> tuple[list[DriftEvent], list[dict]]:
    with model_store.store.session() as session:
        eve = repo.authenticate(session, model_store.keys["eve"])
        events = repo.drift_events(session=session, actor=eve, model="heart")
        audited = [e for e in repo.tail_audit_log(session=session, actor=eve, limit=1000)
                   if e["action"] == "drift.change"]
        session.expunge_all()
    return events, audited


def test_ok_on_familiar_traffic_then_drift_once_after_a_shift(drift_client, model_store):
    send(drift_client, model_store, model_store.train_rows.sample(200, random_state=0))
    calm = drift_client.get("/v1/models/heart/drift", headers=auth(model_store, "ops"))
    shifted = model_store.test_rows.sample(200, replace=True, random_state=1)
    shifted["age"] = (shifted["age"] + 15).clip(upper=120)
    send(drift_client, model_store, shifted)
    answers = [drift_client.get("/v1/models/heart/drift", headers=auth(model_store, "eve")) for _ in range(3)]
    metrics = drift_client.get("/metrics").text

    assert calm.status_code == 200
    body = calm.json()
    assert body["model"] == "heart" and body["version"] == 1
    assert body["status"] == "ok" and body["window_rows"] == 200 and body["window_span_s"] >= 0
    # Version 1 is an earlier round than the profile's model: its feature blocks only.
    assert {f["name"] for f in body["features"]} == set(model_store.spec.schema.feature_names)
    assert {(f["kind"], f["detector"]) for f in body["features"]} == {
        ("numeric", "psi"), ("numeric", "ks"), ("categorical", "chi2")}
    assert all(a.status_code == 200 and a.json()["status"] == "drift" for a in answers)
    age = [f for f in answers[0].json()["features"] if f["name"] == "age"]
    assert all(f["status"] == "drift" for f in age) and age[1]["p_value"] < 1e-6
    events, audited = drift_changes(model_store)
    assert [(e.version, e.previous, e.status, e.window_rows) for e in events] == [(1, "ok", "drift", 200)]
    assert len(audited) == 1 and audited[0]["target"] == "model:heart@1"
    assert 'fedwarden_drift_status{model="heart"} 2.0' in metrics
    assert 'fedwarden_drift_score{detector="ks",feature="age",model="heart"}' in metrics


def test_drift_needs_model_read_and_a_served_model(drift_client, model_store):
    consumer = drift_client.get("/v1/models/heart/drift", headers=auth(model_store, "app"))
    unknown = drift_client.get("/v1/models/lungs/drift", headers=auth(model_store, "ops"))

    assert consumer.status_code == 403
    assert unknown.status_code == 404


def test_drift_is_a_conflict_when_monitoring_is_off(model_store):
    settings = settings_for(model_store.url, drift_monitoring=False)
    with TestClient(create_app(settings)) as client:
        response = client.get("/v1/models/heart/drift", headers=auth(model_store, "ops"))

    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_registered_versions_carry_the_runs_profile(model_store):
    with model_store.store.session() as session:
        ops = repo.authenticate(session, model_store.keys["ops"])
        profiles = {v: repo.get_model_version(session=session, actor=ops, name="heart", version=v).profile
                    for v in (1, 2)}

    names = {v: [b["name"] for b in p["blocks"]] for v, p in profiles.items()}
    # The profile's model is round 2's: version 2 keeps its output blocks, version 1 (round 1) not.
    assert names[2][-3:] == ["prediction", "probability:disease", "calibration:disease"]
    assert names[1] == list(model_store.spec.schema.feature_names)
    assert profiles[1]["rows"] == profiles[2]["rows"] == len(model_store.train_rows)
