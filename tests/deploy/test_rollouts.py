"""Safe rollouts through the real service: a canary answers its share of the traffic,
sticky by request id; a shadow is scored unseen and compared with production; promote and
roll back reach the service without a restart."""

from __future__ import annotations

import sys

import pytest
from fastapi.testclient import TestClient

from deploy.api import create_app
from deploy.serving_model import frame_to_rows
from server.store import audit
from server.store import repository as repo
from server.store.models import ModelRollout
from simulations.cli.app import main

from .conftest import settings_for


@pytest.fixture
def service(model_store):
    """A service over the fixture's store (v1 production, v2 staging); the rollout is ended
    and v1 put back afterwards."""
    settings = settings_for(model_store.url, drift_monitoring=False, poll_interval_s=3600)
    with TestClient(create_app(settings)) as client:
        yield client
    with model_store.store.session() as session:
        ops = repo.authenticate(session, model_store.keys["ops"])
        repo.end_rollout(session=session, actor=ops, name="heart")
        if repo.get_model_version(session=session, actor=ops, name="heart").version != 1:
            repo.promote_model_version(session=session, actor=ops, name="heart", version=1)


def _as_ops(model_store, work):
    with model_store.store.session() as session:
        return work(session, repo.authenticate(session, model_store.keys["ops"]))


def _refresh(client: TestClient) -> None:
    client.app.state.service.catalog.refresh()  # what the poll does, now


def _predict(client, model_store, request_id=None, rows=2):
    body = {"rows": frame_to_rows(model_store.test_rows.head(rows), model_store.spec)}
    if request_id is not None:
        body["request_id"] = request_id
    response = client.post("/v1/models/heart/predict", json=body,
                           headers={"Authorization": f"Bearer {model_store.keys['app']}"})
    assert response.status_code == 200, response.text
    return response.json()


def _get(client, model_store, path):
    return client.get(path, headers={"Authorization": f"Bearer {model_store.keys['ops']}"})


def test_a_canary_answers_its_share_sticky_by_request_id(service, model_store):
    _as_ops(model_store, lambda s, ops: repo.start_rollout(
        session=s, actor=ops, name="heart", version=2, mode="canary", percent=30))
    _refresh(service)

    first = {f"req-{i}": _predict(service, model_store, f"req-{i}")["version"] for i in range(200)}
    again = {rid: _predict(service, model_store, rid)["version"] for rid in list(first)[:40]}
    report = _get(service, model_store, "/v1/models/heart/rollout").json()
    metrics = _get(service, model_store, "/metrics").text

    canary_share = sum(v == 2 for v in first.values()) / len(first)
    assert set(first.values()) == {1, 2}
    assert 0.2 < canary_share < 0.4
    assert all(first[rid] == version for rid, version in again.items())
    assert report == {"name": "heart", "production_version": 1, "version": 2, "mode": "canary",
                      "percent": 30.0, "shadow": None}
    assert 'fedwarden_rollout_rows_total{mode="canary",model="heart",version="2"}' in metrics


def test_canary_answers_are_kept_per_version_for_feedback(service, model_store):
    _as_ops(model_store, lambda s, ops: repo.start_rollout(
        session=s, actor=ops, name="heart", version=2, mode="canary", percent=100))
    _refresh(service)

    answer = _predict(service, model_store, "patient-7")
    service.app.state.service.outcomes.flush()

    with model_store.store.session() as session:
        by_id, _ = repo.find_predictions(
            session, model="heart", prediction_ids=[answer["predictions"][0]["prediction_id"]])
    assert answer["version"] == 2
    assert [p.version for p in by_id.values()] == [2]


def test_a_shadow_never_answers_and_is_compared_with_production(service, model_store):
    _as_ops(model_store, lambda s, ops: repo.start_rollout(
        session=s, actor=ops, name="heart", version=2, mode="shadow", percent=100))
    _refresh(service)

    versions = {_predict(service, model_store, f"s-{i}", rows=4)["version"] for i in range(25)}
    report = _get(service, model_store, "/v1/models/heart/rollout").json()
    metrics = _get(service, model_store, "/metrics").text

    assert versions == {1}
    assert report["mode"] == "shadow" and report["version"] == 2
    shadow = report["shadow"]
    assert (shadow["requests"], shadow["rows"], shadow["errors"]) == (25, 100, 0)
    assert 0.0 <= shadow["agreement"] <= 1.0 and shadow["max_abs_diff"] > 0
    assert 'fedwarden_shadow_agreement{model="heart",version="2"}' in metrics


def test_promote_then_roll_back_reach_the_service_and_are_audited(service, model_store):
    _as_ops(model_store, lambda s, ops: repo.start_rollout(
        session=s, actor=ops, name="heart", version=2, mode="canary", percent=10))
    _as_ops(model_store, lambda s, ops: repo.promote_model_version(
        session=s, actor=ops, name="heart", version=2))
    _refresh(service)
    promoted = _predict(service, model_store, "x")["version"]
    rollout_after_promote = _get(service, model_store, "/v1/models/heart/rollout").json()

    undone = _as_ops(model_store, lambda s, ops: repo.roll_back(
        session=s, actor=ops, name="heart"))
    _refresh(service)
    restored = _predict(service, model_store, "x")["version"]
    with model_store.store.session() as session:
        events = [e for e in audit.tail(session, limit=40)
                  if e["action"] in ("model.rollout", "model.promote")]

    assert (promoted, restored, undone) == (2, 1, ("promote", 1))
    assert rollout_after_promote["mode"] is None
    by_key = {"via_key", "key_issuer"}  # who issued the operator's key: not this test's point
    assert [(e["action"], e["target"], {k: v for k, v in e["details"].items() if k not in by_key})
            for e in events[-3:]] == [
        ("model.rollout", "model:heart@2", {"mode": "canary", "percent": 10.0, "replaced": None}),
        ("model.promote", "model:heart@2", {"archived": [1], "rollout_ended": "canary"}),
        ("model.promote", "model:heart@1", {"archived": [2], "rollback": True}),
    ]


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["fedwarden", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_cli_compares_versions_and_starts_and_rolls_back_a_canary(
    model_store, monkeypatch, capsys
):
    store = ("--database-url", model_store.url, "--api-key", model_store.keys["ops"])

    compared = _cli(monkeypatch, capsys, "models", "compare", "heart", "1", "2", *store)
    canary = _cli(monkeypatch, capsys, "models", "canary", "heart", "2", "--percent", "5", *store)
    with model_store.store.session() as session:
        running = session.get(ModelRollout, "heart")
        started = (running.mode, running.percent) if running is not None else None
    undone = _cli(monkeypatch, capsys, "models", "rollback", "heart", *store)
    refused = _cli(monkeypatch, capsys, "models", "canary", "heart", "1", *store)

    assert compared[0] == 0
    assert "accuracy (pooled)" in compared[1] and "0.8000" in compared[1]
    assert "v1" in compared[1] and "v2" in compared[1]
    assert canary[0] == 0 and started == ("canary", 5.0)
    assert undone[0] == 0 and "stopped the rollout of heart version 2" in undone[1]
    assert refused[0] != 0 and "already in production" in refused[1]
