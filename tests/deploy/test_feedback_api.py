"""Outcomes fed back, performance, columnar requests and the one error format, in-process."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import accuracy_score, roc_auc_score
from sqlalchemy import func, select

from deploy.api import create_app
from deploy.outcomes import new_prediction_ids
from deploy.serving_model import frame_to_rows
from server.store.models import AuditEvent, ServedPrediction

from .conftest import settings_for


@pytest.fixture(scope="module")
def api(model_store):
    settings = settings_for(model_store.url, max_rows=256, performance_min_rows=20,
                            performance_retention_s=86400.0)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def auth(model_store, who: str = "app") -> dict[str, str]:
    return {"Authorization": f"Bearer {model_store.keys[who]}"}


def predict(api, model_store, frame, **extra):
    body = {"rows": frame_to_rows(frame, model_store.spec), **extra}
    response = api.post("/v1/models/heart/predict", json=body, headers=auth(model_store))
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def labelled(model_store, count: int):
    frame = model_store.test_rows.head(count)
    return frame, [str(v) for v in frame[model_store.spec.schema.target.name]]


def stored_labels(model_store) -> int:
    with model_store.store.session() as session:
        return int(session.scalar(select(func.count()).where(ServedPrediction.label.is_not(None))))


def test_every_prediction_has_an_id_and_the_callers_request_id(api, model_store):
    one = predict(api, model_store, model_store.test_rows.head(1), request_id="visit-1")
    three = predict(api, model_store, model_store.test_rows.head(3), request_id="batch-7")

    assert len(one[0]["prediction_id"]) == 32 and one[0]["request_id"] == "visit-1"
    assert [p["request_id"] for p in three] == ["batch-7:0", "batch-7:1", "batch-7:2"]
    assert len({p["prediction_id"] for p in one + three}) == 4


def test_outcomes_join_once_duplicates_count_and_contradictions_are_refused(api, model_store):
    frame, truth = labelled(model_store, 5)
    served = predict(api, model_store, frame)
    outcomes = [{"prediction_id": p["prediction_id"], "label": y} for p, y in zip(served, truth, strict=True)]
    other = "disease" if truth[0] == "no disease" else "no disease"

    first = api.post("/v1/models/heart/feedback", json={"outcomes": outcomes}, headers=auth(model_store))
    again = api.post("/v1/models/heart/feedback", json={"outcomes": outcomes[:2]}, headers=auth(model_store))
    contradiction = api.post("/v1/models/heart/feedback", headers=auth(model_store),
                             json={"outcomes": [{"prediction_id": served[0]["prediction_id"], "label": other}]})

    assert first.json() == {"model": "heart", "accepted": 5, "duplicates": 0}
    assert again.json() == {"model": "heart", "accepted": 0, "duplicates": 2}
    assert contradiction.status_code == 409 and "first outcome stands" in contradiction.json()["error"]["message"]


def test_outcomes_by_request_id(api, model_store):
    frame, truth = labelled(model_store, 1)
    predict(api, model_store, frame, request_id="admission-42")

    response = api.post("/v1/models/heart/feedback", headers=auth(model_store),
                        json={"outcomes": [{"request_id": "admission-42", "label": truth[0]}]})

    assert response.status_code == 200 and response.json()["accepted"] == 1


def test_unknown_and_expired_ids_are_404_and_410_and_nothing_is_written(api, model_store):
    frame, truth = labelled(model_store, 1)
    fresh = predict(api, model_store, frame)[0]["prediction_id"]
    before = stored_labels(model_store)
    unknown = new_prediction_ids(1)[0]
    expired = new_prediction_ids(1, now=time.time() - 2 * 86400)[0]

    responses = {
        name: api.post("/v1/models/heart/feedback", headers=auth(model_store), json={"outcomes": [
            {"prediction_id": fresh, "label": truth[0]}, {"prediction_id": bad, "label": truth[0]}]})
        for name, bad in (("unknown", unknown), ("expired", expired))
    }
    wrong_label = api.post("/v1/models/heart/feedback", headers=auth(model_store),
                           json={"outcomes": [{"prediction_id": fresh, "label": "maybe"}]})

    assert responses["unknown"].status_code == 404
    assert responses["unknown"].json()["error"] == {
        "code": "not_found", "message": f"outcomes[1]: no prediction {unknown!r} of model 'heart'"}
    assert responses["expired"].status_code == 410 and responses["expired"].json()["error"]["code"] == "gone"
    assert wrong_label.status_code == 422 and "unknown label 'maybe'" in wrong_label.text
    assert stored_labels(model_store) == before  # all or nothing


def test_feedback_needs_the_feedback_permission(api, model_store):
    response = api.post("/v1/models/heart/feedback", headers=auth(model_store, "eve"),
                        json={"outcomes": [{"prediction_id": "0" * 32, "label": "disease"}]})
    assert response.status_code == 403 and "feedback" in response.json()["error"]["message"]


def test_performance_reports_realised_metrics_beside_the_estimate(api, model_store):
    frame, truth = labelled(model_store, 200)
    served = predict(api, model_store, frame)
    outcomes = [{"prediction_id": p["prediction_id"], "label": y} for p, y in zip(served, truth, strict=True)]
    api.post("/v1/models/heart/feedback", json={"outcomes": outcomes}, headers=auth(model_store))

    denied = api.get("/v1/models/heart/performance", headers=auth(model_store))
    report = api.get("/v1/models/heart/performance", headers=auth(model_store, "ops")).json()

    assert denied.status_code == 403  # consumers predict and report outcomes; they do not read
    realised, estimated = report["realised"], report["estimated"]
    assert realised["rows"] >= 200 and realised["status"] in ("ok", "alert")
    # The rows labelled in this test are most of the window: their accuracy dominates it.
    labels = model_store.spec.schema.target.labels
    mine_accuracy = accuracy_score(truth, [p["label"] for p in served])
    assert abs(realised["accuracy"] - mine_accuracy) < 0.05
    assert 0.0 <= realised["brier"] <= 1.0 and realised["log_loss"] > 0 and realised["calibration"]
    mine_auc = roc_auc_score([labels.index(y) for y in truth], [p["probabilities"][labels[1]] for p in served])
    assert abs(realised["auc"] - mine_auc) < 0.05
    assert estimated["rows"] >= realised["rows"] and 0.5 < estimated["accuracy"] < 1.0
    # Version 1 is round 1's model; the run's profile (and its calibration) describes round 2's,
    # so the estimate trusts the raw probabilities and there is no reference to fall from.
    assert not estimated["calibrated"] and report["reference"]["accuracy"] is None
    assert report["thresholds"] == {}
    metrics = api.get("/metrics").text
    assert 'fedwarden_performance{kind="realised",metric="accuracy",model="heart"}' in metrics
    assert 'fedwarden_performance{kind="estimated",metric="accuracy",model="heart"}' in metrics


def test_columns_give_the_rows_answers_and_name_column_and_row(api, model_store):
    frame = model_store.test_rows.head(20)
    rows = frame_to_rows(frame, model_store.spec)
    columns = {name: [row.get(name) for row in rows] for name in model_store.spec.schema.feature_names}

    by_rows = predict(api, model_store, frame)
    by_columns = api.post("/v1/models/heart/predict", json={"columns": columns}, headers=auth(model_store))
    bad = dict(columns, age=[*columns["age"][:3], 410, *columns["age"][4:]])
    out_of_range = api.post("/v1/models/heart/predict", json={"columns": bad}, headers=auth(model_store))
    short = api.post("/v1/models/heart/predict", json={"columns": dict(columns, sex=columns["sex"][:5])},
                     headers=auth(model_store))
    unknown = api.post("/v1/models/heart/predict", json={"columns": dict(columns, cp=["sharp"] * 20)},
                       headers=auth(model_store))
    wrong_type = api.post("/v1/models/heart/predict", json={"columns": dict(columns, age=["old"] * 20)},
                          headers=auth(model_store))

    assert by_columns.status_code == 200
    served = [[p["probabilities"][k] for k in sorted(p["probabilities"])] for p in by_columns.json()["predictions"]]
    expected = [[p["probabilities"][k] for k in sorted(p["probabilities"])] for p in by_rows]
    np.testing.assert_allclose(served, expected, atol=1e-7)
    assert out_of_range.json()["error"]["message"] == "columns.age[3]: 410 is outside [0, 120]"
    assert short.status_code == 422 and "columns.sex: 5 values" in short.text
    assert "columns.cp[0]: unknown category 'sharp'" in unknown.text
    assert "columns.age[0]: expected a number, got str" in wrong_type.text


def test_one_error_format_for_bad_methods_and_bodies(api, model_store):
    wrong_method = api.get("/v1/models/heart/predict", headers=auth(model_store))
    not_json = api.post("/v1/models/heart/predict", content=b"age=63", headers={**auth(model_store), "content-type": "application/json"})
    both = api.post("/v1/models/heart/predict", json={"rows": [], "columns": {}}, headers=auth(model_store))
    feedback_not_json = api.post("/v1/models/heart/feedback", content=b"{", headers={**auth(model_store), "content-type": "application/json"})

    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert not_json.status_code == 422 and not_json.json()["error"]["message"].startswith("body: not valid JSON")
    assert both.status_code == 422 and "exactly one of 'rows' and 'columns'" in both.text
    assert feedback_not_json.json()["error"]["message"] == "body: not valid JSON"


def test_consumers_read_the_full_input_schema(api, model_store):
    response = api.get("/v1/models/heart/schema", headers=auth(model_store))

    assert response.status_code == 200
    features = {f["name"]: f for f in response.json()["input_schema"]["features"]}
    assert features["age"]["range"] == [0, 120] and "Male" in features["sex"]["categories"]


def test_a_performance_change_is_audited_once(model_store):
    with model_store.store.session() as session:
        changes = session.scalars(select(AuditEvent).where(AuditEvent.action == "performance.change")).all()
    # Realised and estimated each change at most once from their initial "ok" here.
    assert len({(c.details["kind"], c.details["to"]) for c in changes}) == len(changes)


def test_the_performance_report_recommends_retraining_and_shows_the_budget_left(
    api, model_store, cli, tmp_path, monkeypatch
):
    frame, truth = labelled(model_store, 150)
    served = predict(api, model_store, frame)
    api.post("/v1/models/heart/feedback", headers=auth(model_store),
             json={"outcomes": [{"prediction_id": p["prediction_id"], "label": y} for p, y in zip(served, truth, strict=True)]})
    api.get("/v1/models/heart/performance", headers=auth(model_store, "ops"))  # flushes what was served
    common = ("--database-url", model_store.url, "--api-key", model_store.keys["ops"])

    code, calm = cli("performance", "report", "--model", "heart", "--out", str(tmp_path / "calm.png"), *common)
    monkeypatch.setenv("FEDWARDEN_PERFORMANCE_MIN_ACCURACY", "0.99")
    alarm_code, alarmed = cli("performance", "report", "--model", "heart", "--out", str(tmp_path / "alarm.html"), *common)

    assert code == 0 and alarm_code == 0, calm + alarmed
    assert "realised" in calm and "retraining" not in calm
    assert (tmp_path / "calm.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy ≥ 0.990" in alarmed and "a retraining run is recommended" in alarmed
    assert "VA Long Beach" in alarmed and "no institution has ε left" in " ".join(alarmed.split())
    assert "<h2>Performance fell: a retraining run is recommended</h2>" in (tmp_path / "alarm.html").read_text()


def test_the_docs_load_without_the_internet(api):
    page = api.get("/docs")
    script = api.get("/docs/assets/swagger-ui-bundle.js")
    document = api.get("/docs/openapi.json").json()

    assert page.status_code == 200 and "cdn" not in page.text.lower()
    assert "/docs/assets/swagger-ui-bundle.js" in page.text and "/docs/assets/swagger-ui.css" in page.text
    assert script.status_code == 200 and len(script.content) > 100_000
    assert document["openapi"] == "3.0.3" and "/v1/models/{name}/feedback" in document["paths"]
