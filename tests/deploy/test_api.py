"""The inference API in-process (FastAPI's TestClient over the real store and onnxruntime)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch

from client.contract.architecture import ModelSpec
from client.models import build_model, set_weights
from deploy.serving_model import frame_to_rows
from server.store import repository as repo


def rows(model_store, count: int = 3) -> list[dict]:
    return frame_to_rows(model_store.test_rows.head(count), model_store.spec)


def auth(model_store, who: str = "app") -> dict[str, str]:
    return {"Authorization": f"Bearer {model_store.keys[who]}"}


def torch_probabilities(model_store, round_: int, frame) -> np.ndarray:
    network = build_model(ModelSpec.from_dict(model_store.model_spec))
    set_weights(network, model_store.weights[round_])
    with torch.no_grad():
        return torch.softmax(network(torch.as_tensor(model_store.spec.transform(frame))), dim=1).numpy()


def test_predictions_match_the_pytorch_model(client, model_store):
    frame = model_store.test_rows.head(50)

    response = client.post("/v1/models/heart/predict", json={"rows": frame_to_rows(frame, model_store.spec)}, headers=auth(model_store))

    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "heart" and body["version"] == 1
    served = np.array([[p["probabilities"][label] for label in ("no disease", "disease")] for p in body["predictions"]])
    np.testing.assert_allclose(served, torch_probabilities(model_store, 1, frame), atol=1e-5)
    assert [p["label"] for p in body["predictions"]] == [
        "no disease" if row[0] > row[1] else "disease" for row in served
    ]


@pytest.mark.parametrize(
    ("change", "status", "phrase"),
    [
        (lambda r: {**r, "weight": 70}, 422, "rows[0]: unknown feature 'weight'"),
        (lambda r: {k: v for k, v in r.items() if k != "age"}, 422, "rows[0].age: missing"),
        (lambda r: {**r, "age": "sixty"}, 422, "rows[0].age: expected a number, got str"),
        (lambda r: {**r, "age": True}, 422, "rows[0].age: expected a number, got bool"),
        (lambda r: {**r, "age": 150}, 422, "rows[0].age: 150 is outside [0, 120]"),
        (lambda r: {**r, "cp": "sharp"}, 422, "rows[0].cp: unknown category 'sharp'"),
        (lambda r: {**r, "sex": None}, 422, "rows[0].sex: missing"),
        (lambda r: {**r, "age": [1, 2]}, 422, "rows[0].age: expected a number"),
    ],
)
def test_bad_rows_get_a_4xx_that_names_the_problem(client, model_store, change, status, phrase):
    row = change(rows(model_store, 1)[0])

    response = client.post("/v1/models/heart/predict", json={"rows": [row]}, headers=auth(model_store))

    assert response.status_code == status
    assert phrase in response.json()["error"]["message"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(client, model_store, token):
    row = rows(model_store, 1)[0]
    body = json.dumps({"rows": [row]}).replace(f'"age": {json.dumps(row["age"])}', f'"age": {token}')

    response = client.post("/v1/models/heart/predict", content=body, headers={**auth(model_store), "content-type": "application/json"})

    assert response.status_code == 422
    assert "rows[0].age" in response.json()["error"]["message"]


def test_too_many_rows_and_too_large_bodies_are_413(client, model_store):
    many = client.post("/v1/models/heart/predict", json={"rows": rows(model_store, 1) * 65}, headers=auth(model_store))
    large = client.post("/v1/models/heart/predict", content=b"{" + b" " * 70_000 + b"}", headers={**auth(model_store), "content-type": "application/json"})

    assert many.status_code == 413 and "limit is 64" in many.json()["error"]["message"]
    assert large.status_code == 413 and large.json()["error"]["code"] == "too_large"


def test_malformed_bodies_are_422_not_500(client, model_store):
    for body in (b"not json", b"[]", b'{"rows": 5}', b'{"rows": []}', b'{"rows": [1]}', b'{"row": []}'):
        response = client.post("/v1/models/heart/predict", content=body, headers={**auth(model_store), "content-type": "application/json"})
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid_request"


def test_keys_and_roles(client, model_store):
    no_key = client.post("/v1/models/heart/predict", json={"rows": rows(model_store, 1)})
    wrong = client.post("/v1/models/heart/predict", json={"rows": rows(model_store, 1)}, headers={"Authorization": "Bearer fw_0123456789abcdef_nottherightsecretatall"})
    auditor_predicts = client.post("/v1/models/heart/predict", json={"rows": rows(model_store, 1)}, headers=auth(model_store, "eve"))
    consumer_reads = client.get("/v1/models/heart", headers=auth(model_store, "app"))
    auditor_reads = client.get("/v1/models/heart", headers=auth(model_store, "eve"))
    listing = client.get("/v1/models", headers=auth(model_store, "app"))

    assert no_key.status_code == 401 and wrong.status_code == 401
    assert auditor_predicts.status_code == 403 and consumer_reads.status_code == 403
    assert auditor_reads.status_code == 200
    details = auditor_reads.json()
    assert details["version"] == 1 and details["lineage"]["round"] == 1
    assert set(details["lineage"]["epsilon"]) == {"Cleveland", "Hungary", "Switzerland", "VA Long Beach"}
    assert listing.json()["models"][0]["features"][:2] == ["age", "sex"]
    deadline = time.monotonic() + 10
    while True:  # failures are audited as counts per flush interval (0.5 s here)
        with model_store.store.session() as session:
            events = [e for e in repo.tail_audit_log(session=session, actor=repo.authenticate(session, model_store.keys["eve"]), limit=200)]
        if any(e["action"] == "authenticate.failures" for e in events) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert any(e["action"] == "authenticate.failures" and e["outcome"] == "failure" for e in events)
    assert any(e["action"] == "authorize" and e["outcome"] == "denied" and e["actor"] == "app" for e in events)


def test_unknown_model_is_404_and_health_endpoints_answer(client, model_store):
    missing = client.post("/v1/models/lungs/predict", json={"rows": rows(model_store, 1)}, headers=auth(model_store))
    assert missing.status_code == 404
    assert client.get("/healthz").json() == {"status": "ok", "models": {"heart": 1}}  # as /readyz says
    assert client.get("/readyz").json() == {"status": "ready", "models": {"heart": 1}}
    client.post("/v1/models/heart/predict", json={"rows": rows(model_store, 4)}, headers=auth(model_store))
    metrics = client.get("/metrics").text
    assert 'fedwarden_http_requests_total{method="POST",route="/v1/models/{name}/predict",status="200"}' in metrics
    assert 'fedwarden_model_version_served{model="heart"} 1.0' in metrics
    assert "fedwarden_predict_batch_rows_bucket" in metrics
    assert client.get("/openapi.json").json()["paths"]["/v1/models/{name}/predict"]["post"]


def test_predictions_are_counted_per_key_not_audited_per_request(model_store):
    from fastapi.testclient import TestClient

    from deploy.api import create_app
    from deploy.settings import ServeSettings
    from server.store.settings import StoreSettings

    def usage_events() -> list[dict]:
        with model_store.store.session() as session:
            eve = repo.authenticate(session, model_store.keys["eve"])
            return [e for e in repo.tail_audit_log(session=session, actor=eve, limit=500) if e["action"] == "predict.usage"]

    before = len(usage_events())
    settings = ServeSettings(store=StoreSettings.load(model_store.url), usage_flush_interval_s=3600)
    with TestClient(create_app(settings)) as app_client:
        for _ in range(7):
            assert app_client.post("/v1/models/heart/predict", json={"rows": rows(model_store, 2)}, headers=auth(model_store)).status_code == 200
    # shutting down flushes the counts: one event for seven predictions
    events = usage_events()
    assert len(events) == before + 1
    prefix = model_store.keys["app"].split("_")[1]
    assert events[-1]["details"]["keys"][prefix] == {"requests": 7, "rows": 14}
    assert model_store.keys["app"] not in json.dumps(events)


# Runs last in this module: it leaves version 2 in production.
def test_promotion_switches_versions_under_load_without_a_failed_request(client, model_store):
    frame = model_store.test_rows.head(8)
    payload = {"rows": frame_to_rows(frame, model_store.spec)}
    statuses: list[int] = []
    answers: list[tuple[float, float, int]] = []  # (sent, answered, version)
    lock = threading.Lock()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            response = client.post("/v1/models/heart/predict", json=payload, headers=auth(model_store))
            answered = time.monotonic()
            with lock:
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answers.append((sent, answered, response.json()["version"]))

    def latest_version() -> int | None:
        with lock:
            return max(answers, key=lambda a: a[1])[2] if answers else None

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        with model_store.store.session() as session:
            repo.promote_model_version(session=session, actor=repo.authenticate(session, model_store.keys["ops"]), name="heart", version=2)
        deadline = time.monotonic() + 10
        while latest_version() != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join()

    assert statuses and set(statuses) == {200}
    by_sending = sorted(answers)
    assert by_sending[0][2] == 1 and latest_version() == 2
    # Never back to the old one once switched: no request sent after a version-2
    # answer came back is served by version 1 (threads overlap, so the order in
    # which answers are appended alone proves nothing).
    first_new_answer = min(answered for _, answered, version in answers if version == 2)
    assert [sent for sent, _, version in answers if version == 1 and sent > first_new_answer] == []
