"""Artifacts kept in the store by digest, and rollouts (canary, shadow, roll back), on both
backends."""

from __future__ import annotations

import hashlib

import pytest

from privacy.errors import ConfigError
from server.errors import ConflictError, NotFoundError, PermissionDeniedError
from server.store import artifacts, audit, registry, rollouts
from server.store.models import ModelRollout

PLAINTEXT = b"onnx bytes" * 1000
SHA = hashlib.sha256(PLAINTEXT).hexdigest()


@pytest.fixture
def operator(principal_factory):
    return principal_factory("olga", "operator")[0]


def _register(store, actor, name="heart"):
    with store.session() as session:
        return registry.register_model_version(
            session=session, actor=actor, name=name, artifact_path="gone.onnx",
            artifact_sha256=SHA, input_schema={}, output_labels=["no", "yes"], preprocessing={},
            model_spec={},
        ).version


def _promote(store, actor, version, name="heart"):
    with store.session() as session:
        registry.promote_model_version(session=session, actor=actor, name=name, version=version)


def _last_event(store):
    with store.session() as session:
        return audit.tail(session, limit=1)[0]


def test_an_artifact_is_kept_once_by_digest_and_read_back_whole(store):
    with store.session() as session:
        added = artifacts.save_artifact(session=session, sha256=SHA, blob=PLAINTEXT, size=10000)
    with store.session() as session:
        again = artifacts.save_artifact(session=session, sha256=SHA, blob=b"other", size=5)
        blob = artifacts.artifact_blob(session=session, sha256=SHA)
        absent = artifacts.artifact_blob(session=session, sha256="0" * 64)

    assert (added, again) == (True, False)
    assert blob == PLAINTEXT and absent is None


@pytest.mark.parametrize("digest", ["ABC", "g" * 64, SHA.upper()])
def test_an_artifact_needs_a_lowercase_hex_digest(store, digest):
    with store.session() as session, pytest.raises(ConfigError, match="64 lowercase hex"):
        artifacts.save_artifact(session=session, sha256=digest, blob=b"x", size=1)


def test_a_canary_is_started_replaced_and_ended_with_an_audit_each(store, operator):
    for _ in range(3):
        _register(store, operator)
    _promote(store, operator, 1)

    with store.session() as session:
        rollouts.start_rollout(session=session, actor=operator, name="heart", version=2,
                               mode="canary", percent=10)
    started = _last_event(store)
    with store.session() as session:
        rollouts.start_rollout(session=session, actor=operator, name="heart", version=3,
                               mode="shadow", percent=100)
    replaced = _last_event(store)
    with store.session() as session:
        running = [(r.name, r.version, r.mode) for r, _ in rollouts.active_rollouts(session=session)]
        ended = rollouts.end_rollout(session=session, actor=operator, name="heart")
    with store.session() as session:
        none = rollouts.end_rollout(session=session, actor=operator, name="heart")

    assert (started["action"], started["target"], started["details"]) == (
        "model.rollout", "model:heart@2", {"mode": "canary", "percent": 10.0, "replaced": None})
    assert replaced["details"]["replaced"] == {"version": 2, "mode": "canary", "percent": 10.0}
    assert running == [("heart", 3, "shadow")]
    assert ended is not None and ended.version == 3 and none is None
    assert _last_event(store)["action"] == "model.rollout.end"


@pytest.mark.parametrize(
    ("version", "mode", "percent", "error", "message"),
    [
        (1, "canary", 10, ConflictError, "already in production"),
        (9, "canary", 10, NotFoundError, "no model version heart@9"),
        (2, "blue-green", 10, ConfigError, "canary, shadow"),
        (2, "canary", 0, ConfigError, r"\(0, 100\]"),
        (2, "canary", float("nan"), ConfigError, r"\(0, 100\]"),
    ],
)
def test_a_bad_rollout_is_refused_and_audited(store, operator, version, mode, percent, error,
                                              message):
    _register(store, operator), _register(store, operator)
    _promote(store, operator, 1)

    with store.session() as session, pytest.raises(error, match=message):
        rollouts.start_rollout(session=session, actor=operator, name="heart", version=version,
                               mode=mode, percent=percent)

    last = _last_event(store)
    assert (last["action"], last["outcome"]) == ("model.rollout", "error")


def test_a_consumer_cannot_start_a_rollout(store, operator, principal_factory):
    consumer = principal_factory("carl", "consumer")[0]
    _register(store, operator)

    with store.session() as session, pytest.raises(PermissionDeniedError):
        rollouts.start_rollout(session=session, actor=consumer, name="heart", version=1,
                               mode="canary", percent=10)


def test_promoting_the_canary_ends_its_rollout(store, operator):
    _register(store, operator), _register(store, operator)
    _promote(store, operator, 1)
    with store.session() as session:
        rollouts.start_rollout(session=session, actor=operator, name="heart", version=2,
                               mode="canary", percent=25)

    _promote(store, operator, 2)

    with store.session() as session:
        assert session.get(ModelRollout, "heart") is None
    assert _last_event(store)["details"] == {"archived": [1], "rollout_ended": "canary"}


def test_rollback_ends_a_rollout_first_then_brings_back_the_previous_production(store, operator):
    for _ in range(3):
        _register(store, operator)
    for version in (1, 2):
        _promote(store, operator, version)
    with store.session() as session:
        rollouts.start_rollout(session=session, actor=operator, name="heart", version=3,
                               mode="shadow", percent=50)

    with store.session() as session:
        first = rollouts.roll_back(session=session, actor=operator, name="heart")
    with store.session() as session:
        second = rollouts.roll_back(session=session, actor=operator, name="heart")
    promoted = _last_event(store)
    with store.session() as session:
        stages = {v.version: v.stage for v in registry.list_model_versions(
            session=session, actor=operator, name="heart")}

    assert (first, second) == (("rollout", 3), ("promote", 1))
    assert stages == {1: "production", 2: "archived", 3: "staging"}
    assert promoted["details"] == {"archived": [2], "rollback": True}


def test_rollback_with_nothing_to_undo_is_refused_and_audited(store, operator):
    _register(store, operator)
    _promote(store, operator, 1)

    with store.session() as session, pytest.raises(ConflictError, match="nothing to roll back"):
        rollouts.roll_back(session=session, actor=operator, name="heart")

    last = _last_event(store)
    assert (last["action"], last["outcome"]) == ("model.rollback", "error")


def test_the_lineage_carries_the_federated_evaluation_of_the_exported_round(store, two_runs):
    a, _ = two_runs
    with store.session() as session:
        lineage = registry.run_lineage(session=session, run_id=a, up_to_round=1)

    assert lineage["evaluation"] == {
        "round": 1, "accuracy": 0.8, "loss": 0.5, "accuracy_by_institution": {}}
